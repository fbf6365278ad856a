"""The float binary CNN of host training: binary 2-D convolutions (im2col), BatchNorm per
channel, 2x2 max-pool, sign with the straight-through estimator, then the dense layers.

Per conv layer, in this order (eBNN, McDanel et al. 2017): ``conv -> BN -> maxpool ->
sign``. Pooling after BatchNorm is what the integer fold reproduces: a position's bit is
``bn(s) >= 0`` (``(s >= t) XOR flip``), and the pooled bit is the OR of its four bits,
which is ``max(bn(s)) >= 0``, the sign of the pooled float value.

Feature maps are NHWC float32 (sample, y, x, channel); conv weights are (out, ky, kx,
in); flatten is in (y, x, c) order. Stride 1, odd kernels, zero-based padding ``pad``
on every side whose positions hold the value of an input bit 0: -1 between layers, and
in the first layer the value ``input_values`` gives a feature 0 (every kept bit-plane
bit 0). Pooling needs even maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..format.model import MAX_KERNEL, Layer, Model, input_values, plane_shifts
from . import fold
from .net import _ONE, bn_backward, loss_grad, ste_sign

if TYPE_CHECKING:
    from .fit import TrainConfig


class ArchError(ValueError):
    """A conv architecture whose shapes do not chain (the message names the layer)."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer: output channels, odd kernel, padding, and a 2x2 max-pool or not."""

    channels: int
    kernel: int = 3
    pad: int = 1
    pool: bool = False


def conv_shapes(shape: tuple[int, int, int], convs: list[ConvSpec]) -> list[tuple[int, int, int]]:
    """(h, w, c) of every conv layer's output map (after its pool), the input first.

    Raises ArchError naming the first layer whose shapes do not chain.
    """
    h, w, c = shape
    out = [(h, w, c)]
    for i, cv in enumerate(convs, 1):
        if not (1 <= cv.kernel <= MAX_KERNEL and cv.kernel % 2):
            raise ArchError(f"conv layer {i}: kernel {cv.kernel} must be odd, 1..{MAX_KERNEL}")
        if not 0 <= cv.pad <= cv.kernel // 2:
            raise ArchError(f"conv layer {i}: padding {cv.pad} must be 0..{cv.kernel // 2} (kernel {cv.kernel})")
        if not 1 <= cv.channels <= 65535:
            raise ArchError(f"conv layer {i}: channels {cv.channels} must be 1..65535")
        h, w = h + 2 * cv.pad - cv.kernel + 1, w + 2 * cv.pad - cv.kernel + 1
        if h < 1 or w < 1:
            raise ArchError(f"conv layer {i}: a {cv.kernel}x{cv.kernel} kernel with padding {cv.pad} "
                            f"does not fit the {out[-1][0]}x{out[-1][1]} map")  # fmt: skip
        if cv.pool:
            if h % 2 or w % 2:
                raise ArchError(f"conv layer {i}: 2x2 max-pool needs an even map, found {h}x{w}")
            h, w = h // 2, w // 2
        c = cv.channels
        out.append((h, w, c))
    return out


# --- the building blocks ------------------------------------------------------------------
def im2col(a: np.ndarray, k: int, pad: int, fill: float) -> np.ndarray:
    """Patches of a map: (n * ho * wo, k * k * c) in (ky, kx, c) order, padded with ``fill``.

    Parameters
    ----------
    a : float32 (n, h, w, c)
    k : odd kernel size
    pad : padding on every side
    fill : the value of a padded position
    """
    n, h, w, c = a.shape
    if pad:
        ap = np.full((n, h + 2 * pad, w + 2 * pad, c), fill, np.float32)
        ap[:, pad : pad + h, pad : pad + w] = a
    else:
        ap = a
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    cols = np.empty((n, ho, wo, k, k, c), np.float32)
    for dy in range(k):  # k*k slice copies: cheaper than a strided view's copy in numpy
        for dx in range(k):
            cols[:, :, :, dy, dx, :] = ap[:, dy : dy + ho, dx : dx + wo, :]
    return cols.reshape(n * ho * wo, k * k * c)


def col2im(dcols: np.ndarray, shape: tuple[int, int, int, int], k: int, pad: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: patch gradients summed back onto the map (n, h, w, c)."""
    n, h, w, c = shape
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    d = dcols.reshape(n, ho, wo, k, k, c)
    dp = np.zeros((n, h + 2 * pad, w + 2 * pad, c), np.float32)
    for dy in range(k):
        for dx in range(k):
            dp[:, dy : dy + ho, dx : dx + wo, :] += d[:, :, :, dy, dx, :]
    return dp[:, pad : pad + h, pad : pad + w, :]


def maxpool(y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """2x2 max-pool, stride 2 of (n, h, w, c): the pooled map and, for the backward pass,
    one bool mask per window position (dy, dx) in (0,0), (0,1), (1,0), (1,1) order that
    marks the first position holding the max (ties: the first)."""
    q = [y[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    m = np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3]))
    masks, taken = [], np.zeros(m.shape, bool)
    for part in q[:3]:
        hit = (part == m) & ~taken
        masks.append(hit)
        taken |= hit
    masks.append(~taken)
    return m, masks


def unpool(g: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Gradient of :func:`maxpool`: ``g`` routed to the max position of each window."""
    n, h2, w2, c = g.shape
    out = np.empty((n, 2 * h2, 2 * w2, c), np.float32)
    for (dy, dx), mk in zip(((0, 0), (0, 1), (1, 0), (1, 1)), masks, strict=True):
        out[:, dy::2, dx::2] = g * mk
    return out


def pool_max(y: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2 of (n, h, w, c) (inference: no argmax)."""
    n, h, w, c = y.shape
    return y.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# --- the network ----------------------------------------------------------------------------
@dataclass
class ConvNet:
    """Conv layers, then dense layers; every layer followed by BatchNorm.

    ``weights[l]`` is float32 (out, k, k, in) for the ``len(convs)`` conv layers and
    (out, in) for the dense ones; ``gamma``, ``beta``, ``mean``, ``var`` float32 (out,).
    ``shape`` is the input image (h, w, c); the features of a sample are in (y, x, c) order.
    """

    shape: tuple[int, int, int]
    plane_mask: int
    convs: list[ConvSpec]
    weights: list[np.ndarray]
    gamma: list[np.ndarray]
    beta: list[np.ndarray]
    mean: list[np.ndarray]
    var: list[np.ndarray]
    eps: float

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.shape))

    @property
    def sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights]

    @property
    def maps(self) -> list[tuple[int, int, int]]:
        """(h, w, c) of the input and of every conv layer's (pooled) output."""
        return conv_shapes(self.shape, self.convs)

    def binary_weights(self, layer: int) -> np.ndarray:
        """``sign`` of the latent weights (sign(0) = +1), 2-D: (out, k * k * in) or (out, in)."""
        w = self.weights[layer]
        return np.where(w >= 0, _ONE, -_ONE).reshape(w.shape[0], -1)

    def plane_sum(self) -> int:
        return sum(1 << s for s in plane_shifts(self.plane_mask))

    def smax(self, layer: int) -> int:
        """Largest possible |s| of a layer: its fan-in, times the plane weight sum in layer 0."""
        fan = int(np.prod(self.weights[layer].shape[1:]))
        return fan * self.plane_sum() if layer == 0 else fan

    def fill(self, layer: int) -> float:
        """Value of a padded position in a conv layer's input (an input bit 0)."""
        if layer == 0:
            return float(input_values(np.zeros(1, np.uint8), self.plane_mask)[0])
        return -1.0

    def _bn(self, layer: int) -> tuple:
        return (self.mean[layer], self.var[layer], self.gamma[layer], self.beta[layer], self.eps)

    def conv_sums(self, a: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact integer sums of a conv layer as float32 (n * ho * wo, out), and the patches.

        float32 BLAS is exact while every partial sum stays below 2^24 (checked by the caller).
        """
        cv = self.convs[layer]
        cols = im2col(a, cv.kernel, cv.pad, self.fill(layer))
        return cols @ self.binary_weights(layer).T, cols

    def _check_exact(self) -> None:
        if max(self.smax(lay) for lay in range(len(self.weights))) >= 2**24:
            raise ArchError("a layer's sums can reach 2^24: float32 sums would not be exact")

    def output_sums(self, x: np.ndarray, batch: int = 250) -> np.ndarray:
        """Exact integer sums ``s`` of the output layer, float64 (n, n_classes).

        Hidden positions output ``+1`` where ``fold.bn_eval(s) >= 0`` (pooled: where the
        largest of the window's four is), the function the folded thresholds reproduce,
        so these are the sums the integer model computes.

        Parameters
        ----------
        x : uint8 (n, h * w * c), features in (y, x, c) order
        """
        self._check_exact()
        n_conv, n_layers = len(self.convs), len(self.weights)
        out = np.empty((len(x), self.sizes[-1]), np.float64)
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch]
            a = input_values(xb, self.plane_mask).reshape(len(xb), *self.shape)
            for lay in range(n_conv):
                s, _ = self.conv_sums(a, lay)
                cv = self.convs[lay]
                ho, wo = a.shape[1] + 2 * cv.pad - cv.kernel + 1, a.shape[2] + 2 * cv.pad - cv.kernel + 1
                y = fold.bn_eval(s, *self._bn(lay)).reshape(len(xb), ho, wo, cv.channels)
                if cv.pool:
                    y = pool_max(y)
                a = np.where(y >= 0, _ONE, -_ONE)
            a = a.reshape(len(xb), -1)
            for lay in range(n_conv, n_layers):
                s = a @ self.binary_weights(lay).T
                if lay < n_layers - 1:
                    a = np.where(fold.bn_eval(s, *self._bn(lay)) >= 0, _ONE, -_ONE)
            out[lo : lo + len(xb)] = s
        return out

    def scores(self, x: np.ndarray, batch: int = 250) -> np.ndarray:
        """Float class scores of the inference network: float64 (n, n_classes), the output
        BatchNorm of :meth:`output_sums` (x: uint8 (n, h * w * c))."""
        return fold.bn_eval(self.output_sums(x, batch), *self._bn(len(self.weights) - 1))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class per sample (ties to the lowest index): int64 (n,)."""
        return np.argmax(self.scores(x), axis=1)

    def layer_specs(self) -> list[Layer]:
        """The file's layer table (docs/FORMAT.md, Version 3): conv layers, then dense."""
        convs = [Layer.conv(cv.channels, cv.kernel, cv.pad, cv.pool) for cv in self.convs]
        return convs + [Layer(s) for s in self.sizes[len(self.convs) :]]

    def fold(self, meta: dict | None = None, bound: int = fold.OUTPUT_BOUND, q_max: int = 1000) -> Model:
        """The integer model (file version 3): thresholds and flips per hidden channel or
        neuron, exact for every sum the layer can produce; output scale/offset whose score
        bound is at most ``bound`` (``meta["output_q"]``: the exponent used)."""
        thr, flips, scale, offset, q = fold.fold_layers(self, bound, q_max)
        meta = dict(meta or {})
        meta["output_q"] = q
        rows = [w.reshape(w.shape[0], -1) >= 0 for w in self.weights]  # conv rows in (ky, kx, c) order
        return Model.plain(self.n_inputs, self.plane_mask, rows, thr, flips, scale, offset, meta,
                           layers=self.layer_specs(), in_shape=tuple(self.shape))  # fmt: skip


def init_conv_net(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    convs: list[ConvSpec],
    dense: list[int],
    plane_mask: int,
    eps: float = 1e-4,
) -> ConvNet:
    """Glorot-uniform latent weights (fans: k*k*in and k*k*out for convs), gamma 1, beta 0,
    running mean 0 and var 1. ``dense`` ends with the number of classes."""
    maps = conv_shapes(shape, convs)
    ws = []
    for cv, (_, _, cin) in zip(convs, maps[:-1], strict=True):
        k = cv.kernel
        lim = np.sqrt(6.0 / (k * k * (cin + cv.channels)))
        ws.append(rng.uniform(-lim, lim, (cv.channels, k, k, cin)).astype(np.float32))
    n_in = int(np.prod(maps[-1]))
    for n_out in dense:
        lim = np.sqrt(6.0 / (n_in + n_out))
        ws.append(rng.uniform(-lim, lim, (n_out, n_in)).astype(np.float32))
        n_in = n_out
    sizes = [int(w.shape[0]) for w in ws]
    ones = [np.ones(s, np.float32) for s in sizes]
    zeros = [np.zeros(s, np.float32) for s in sizes]
    net = ConvNet(tuple(shape), plane_mask, list(convs), ws, ones, [z.copy() for z in zeros], zeros,
                  [o.copy() for o in ones], eps)  # fmt: skip
    net._check_exact()
    return net


def recalibrate(net: ConvNet, x: np.ndarray, batch: int = 500) -> None:
    """Set every layer's BatchNorm mean/var to its exact statistics over ``x`` (uint8
    (n, h * w * c)), layer by layer in inference mode.

    A conv layer's few weights per channel flip often while the learning rate is high,
    so the running averages of training lag far behind (measured: 56 % inference
    accuracy against 91 % with batch statistics after 120 steps); the trainer calls this
    before scoring each epoch and before the fold.
    """
    n_conv = len(net.convs)
    for lay in range(len(net.weights)):
        tot = np.zeros(net.sizes[lay], np.float64)
        tot2 = np.zeros(net.sizes[lay], np.float64)
        count = 0
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch]
            a = input_values(xb, net.plane_mask).reshape(len(xb), *net.shape)
            for i in range(lay + 1):
                if i == n_conv:
                    a = a.reshape(len(xb), -1)
                if i < n_conv:
                    s, _ = net.conv_sums(a, i)
                else:
                    s = a @ net.binary_weights(i).T
                if i == lay:
                    break
                y = fold.bn_eval(s, *net._bn(i))
                if i < n_conv:
                    cv = net.convs[i]
                    ho, wo = a.shape[1] + 2 * cv.pad - cv.kernel + 1, a.shape[2] + 2 * cv.pad - cv.kernel + 1
                    y = y.reshape(len(xb), ho, wo, cv.channels)
                    y = pool_max(y) if cv.pool else y
                a = np.where(y >= 0, _ONE, -_ONE)
            s64 = s.astype(np.float64)
            tot += s64.sum(axis=0)
            tot2 += (s64 * s64).sum(axis=0)
            count += len(s64)
        mu = tot / count
        net.mean[lay] = mu.astype(np.float32)
        net.var[lay] = np.maximum(tot2 / count - mu * mu, 0.0).astype(np.float32)


def _bn_train(net: ConvNet, lay: int, z: np.ndarray, momentum: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode BatchNorm over the rows of z (rows, out); updates the running stats.
    Returns (y, xh, inv)."""
    mu = z.mean(axis=0)
    var = z.var(axis=0)
    inv = (1.0 / np.sqrt(var + net.eps)).astype(np.float32)
    xh = (z - mu) * inv
    y = net.gamma[lay] * xh + net.beta[lay]
    net.mean[lay] = (1 - momentum) * net.mean[lay] + momentum * mu
    net.var[lay] = (1 - momentum) * net.var[lay] + momentum * var * (len(z) / max(1, len(z) - 1))
    return y, xh, inv


def train_step(
    net: ConvNet,
    x: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[float, float, list[np.ndarray]]:
    """One forward/backward pass in training mode; updates running BN statistics.

    ``x`` is float32 (B, h * w * c): the input values (``input_values``) in (y, x, c) order.
    Returns the loss, the batch accuracy and the gradients (weights, gammas, betas).
    """
    n_conv, n_layers = len(net.convs), len(net.weights)
    b = len(x)
    a = x.reshape(b, *net.shape)
    cache: list[tuple] = []
    for lay in range(n_conv):
        cv = net.convs[lay]
        z, cols = net.conv_sums(a, lay)
        y, xh, inv = _bn_train(net, lay, z, cfg.momentum)
        ho = a.shape[1] + 2 * cv.pad - cv.kernel + 1
        wo = a.shape[2] + 2 * cv.pad - cv.kernel + 1
        y = y.reshape(b, ho, wo, cv.channels)
        idx = None
        if cv.pool:
            y, idx = maxpool(y)
        a_next, gate = ste_sign(y)
        cache.append((a.shape, cols, xh, inv, idx, gate))
        a = a_next
    a = a.reshape(b, -1)
    for lay in range(n_conv, n_layers):
        wb = net.binary_weights(lay)
        y, xh, inv = _bn_train(net, lay, a @ wb.T, cfg.momentum)
        gate = None
        a_next = a
        if lay < n_layers - 1:
            a_next, gate = ste_sign(y)
        cache.append((a, wb, xh, inv, gate))
        a = a_next
    loss, dy = loss_grad(y, labels, cfg.loss)
    acc = float(np.mean(np.argmax(y, axis=1) == labels))
    gw, gg, gb = [None] * n_layers, [None] * n_layers, [None] * n_layers
    for lay in range(n_layers - 1, n_conv - 1, -1):
        a_in, wb, xh, inv, _ = cache[lay]
        dz, gg[lay], gb[lay] = bn_backward(dy, xh, inv, net.gamma[lay])
        gw[lay] = dz.T @ a_in  # straight through sign(w): no gate, clipping bounds w
        if lay:
            gate = cache[lay - 1][-1]
            dy = (dz @ wb).reshape(gate.shape) * gate
    for lay in range(n_conv - 1, -1, -1):
        in_shape, cols, xh, inv, idx, _ = cache[lay]
        if idx is not None:
            dy = unpool(dy, idx)
        dy = dy.reshape(-1, net.sizes[lay])
        dz, gg[lay], gb[lay] = bn_backward(dy, xh, inv, net.gamma[lay])
        gw[lay] = (dz.T @ cols).reshape(net.weights[lay].shape)
        if lay:
            cv = net.convs[lay]
            da = col2im(dz @ net.binary_weights(lay), in_shape, cv.kernel, cv.pad)
            dy = da * cache[lay - 1][-1]
    return loss, acc, gw + gg + gb


# --- the architecture text of `rbnn train --conv` -------------------------------------------
_ITEM = re.compile(r"(\d+)(?:k(\d+))?(p?)")


def parse_convs(text: str, kernel: int = 3, pad: str = "same") -> list[ConvSpec]:
    """``"32p,64p"`` -> conv layers: channels, then ``kK`` (kernel K, default ``kernel``),
    then ``p`` for a 2x2 max-pool. ``pad``: "same" (kernel // 2), "valid" (0) or a number.

    Raises ArchError naming the bad item.
    """
    specs = []
    for item in str(text).split(","):
        m = _ITEM.fullmatch(item.strip())
        if m is None:
            raise ArchError(f"--conv: expected comma-separated layers CHANNELS[kKERNEL][p] such as "
                            f"32p,64p (p: 2x2 max-pool), found {item.strip()!r} in {text!r}")  # fmt: skip
        k = int(m.group(2)) if m.group(2) else kernel
        if not (1 <= k <= MAX_KERNEL and k % 2):
            raise ArchError(f"--conv: kernel {k} in {item.strip()!r}: expected an odd size 1..{MAX_KERNEL} "
                            "such as 3 or 5")  # fmt: skip
        specs.append(ConvSpec(int(m.group(1)), k, _pad(pad, k), bool(m.group(3))))
    return specs


def _pad(pad: str, k: int) -> int:
    rules = {"same": k // 2, "valid": 0}
    if str(pad) in rules:
        return rules[str(pad)]
    if not str(pad).isdigit():
        raise ArchError(f"--pad: expected same, valid or a number of positions, found {pad!r}")
    return int(pad)
