"""The float network of host training: binary forward with BatchNorm, straight-through
backward (Courbariaux & Hubara et al.), and its fold into the integer model.

Hidden layers output ``sign`` (sign(0) = +1) of BatchNorm'd integer pre-activations; the
first layer sees the exact integers the device sees: in input mode 0 ``input_values``
(the bit-plane values with shared weights), in input mode 1 (per-plane weights,
docs/FORMAT.md) :func:`plane_inputs`, ``K * n_inputs`` values of +-2^(n - low), one
segment per kept plane, each with its own latent weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..format.model import (
    INPUT_PER_PLANE,
    INPUT_SHARED,
    Model,
    input_values,
    kept_planes,
    plane_shifts,
)
from . import fold

if TYPE_CHECKING:
    from .fit import TrainConfig

_ONE = np.float32(1.0)


def plane_inputs(x: np.ndarray, plane_mask: int) -> np.ndarray:
    """The first layer's inputs in input mode 1: float32 (n, K * n_inputs).

    Segment ``k`` (the kept planes, highest first, as in the packed input) holds
    ``2^(n_k - low) * (2 * bit - 1)`` of plane ``n_k``, so that ``plane_inputs(x) @ w.T``
    is the exact integer ``s`` of docs/FORMAT.md (Semantics, input mode 1).
    """
    x = np.asarray(x, dtype=np.int32)
    segs = [((2 * ((x >> n) & 1) - 1) << sh) for n, sh in zip(kept_planes(plane_mask), plane_shifts(plane_mask),
                                                               strict=True)]  # fmt: skip
    return np.concatenate(segs, axis=-1).astype(np.float32)


# What the first layer reads, per input mode (docs/FORMAT.md).
FIRST_INPUTS = {INPUT_SHARED: input_values, INPUT_PER_PLANE: plane_inputs}


@dataclass
class FloatNet:
    """The float network: latent weights and BatchNorm parameters of every layer.

    ``weights[l]`` is float32 (out, in); the layer uses ``sign(weights[l])``. ``gamma``,
    ``beta``, ``mean``, ``var`` are float32 (out,) per layer.
    """

    n_inputs: int
    plane_mask: int
    weights: list[np.ndarray]
    gamma: list[np.ndarray]
    beta: list[np.ndarray]
    mean: list[np.ndarray]
    var: list[np.ndarray]
    eps: float
    input_mode: int = INPUT_SHARED  # 1: per-plane first-layer weights, (out, K * n_inputs)

    @property
    def sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights]

    def binary_weights(self, layer: int) -> np.ndarray:
        """``sign`` of the latent weights, sign(0) = +1: float32 (out, in) of +-1."""
        return np.where(self.weights[layer] >= 0, _ONE, -_ONE)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The first layer's float32 inputs of uint8 samples (n, n_inputs)."""
        return FIRST_INPUTS[self.input_mode](x, self.plane_mask)

    def smax(self, layer: int) -> int:
        """Largest possible |s| of a layer (docs/FORMAT.md)."""
        if layer == 0:
            return self.n_inputs * sum(1 << s for s in plane_shifts(self.plane_mask))
        return int(self.weights[layer].shape[1])

    def _bn(self, layer: int) -> tuple:
        return (self.mean[layer], self.var[layer], self.gamma[layer], self.beta[layer], self.eps)

    def scores(self, x: np.ndarray, batch: int = 2000) -> np.ndarray:
        """Float class scores of the inference network, computed in float64.

        Hidden layers output ``+1`` where ``fold.bn_eval(s) >= 0``: the function the folded
        thresholds reproduce exactly, so only the output layer's rounding separates this
        from the integer model.

        Parameters
        ----------
        x : ndarray of uint8, shape (n, n_inputs)

        Returns
        -------
        ndarray of float64, shape (n, n_classes)
        """
        n_layers = len(self.weights)
        out = np.empty((len(x), self.sizes[-1]), np.float64)
        for lo in range(0, len(x), batch):
            a = self.inputs(x[lo : lo + batch])
            for lay in range(n_layers):
                s = self.dot(a, lay)
                y = fold.bn_eval(s, *self._bn(lay))
                a = np.where(y >= 0, 1.0, -1.0).astype(np.float32) if lay < n_layers - 1 else y
            out[lo : lo + batch] = a
        return out

    def dot(self, a: np.ndarray, layer: int) -> np.ndarray:
        """Exact integer pre-activations ``a @ sign(W).T`` as float64 (n, out).

        float32 BLAS is exact while every partial sum stays below 2^24; wider layers
        fall back to float64 (exact below 2^53).
        """
        wb = self.binary_weights(layer)
        if self.smax(layer) < 2**24:
            return (np.asarray(a, np.float32) @ wb.T).astype(np.float64)
        return np.asarray(a, np.float64) @ wb.T.astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class per sample (ties to the lowest index): int64 (n,)."""
        return np.argmax(self.scores(x), axis=1)

    def fold(self, meta: dict | None = None, bound: int = fold.OUTPUT_BOUND, q_max: int = 1000) -> Model:
        """The integer model: thresholds and flips per hidden neuron, output scale/offset
        whose score bound is at most ``bound`` (``meta["output_q"]``: the exponent used)."""
        thr, flips, scale, offset, q = fold.fold_layers(self, bound, q_max)
        meta = dict(meta or {})
        meta["output_q"] = q
        return Model.plain(
            self.n_inputs, self.plane_mask, [w >= 0 for w in self.weights], thr, flips, scale, offset, meta,
            input_mode=self.input_mode,
        )


def loss_grad(y: np.ndarray, labels: np.ndarray, kind: str) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and its gradient w.r.t. the output scores y (B, C)."""
    b, c = y.shape
    if kind == "hinge":
        t = -np.ones_like(y)
        t[np.arange(b), labels] = 1.0
        m = np.maximum(0.0, 1.0 - t * y)
        return float(np.mean(m * m)), (-2.0 / (b * c)) * t * m
    z = y - y.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -float(np.mean(np.log(p[np.arange(b), labels] + 1e-12)))
    p[np.arange(b), labels] -= 1.0
    return loss, p / b


def ste_sign(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sign with sign(0) = +1, and the straight-through gate ``|y| <= 1``.

    Returns float32 +-1 of the shape of ``y`` and the bool gate that multiplies the
    incoming gradient (hard-tanh derivative: zero where ``|y| > 1``).
    """
    return np.where(y >= 0, _ONE, -_ONE), np.abs(y) <= 1.0


def bn_backward(
    dy: np.ndarray, xh: np.ndarray, inv: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of training-mode BatchNorm ``y = gamma * (z - mean) * inv + beta``.

    Parameters
    ----------
    dy : float32 (B, n)
        Gradient of the loss w.r.t. ``y``.
    xh : float32 (B, n)
        Normalised input ``(z - mean) * inv`` from the forward pass.
    inv : float32 (n,)
        ``1 / sqrt(var + eps)`` of the batch.
    gamma : float32 (n,)

    Returns
    -------
    dz : float32 (B, n), dgamma : float32 (n,), dbeta : float32 (n,)
    """
    dxh = dy * gamma
    dz = inv * (dxh - dxh.mean(axis=0) - xh * np.mean(dxh * xh, axis=0))
    return dz, np.sum(dy * xh, axis=0), np.sum(dy, axis=0)


def train_step(
    net: FloatNet,
    x: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[float, float, list[np.ndarray]]:
    """One forward/backward pass in training mode; updates running BN statistics.

    Returns the loss, the batch accuracy and the gradients (weights, gammas, betas).
    """
    n_layers = len(net.weights)
    cache = []
    a = x
    for lay in range(n_layers):
        wb = net.binary_weights(lay)
        z = a @ wb.T
        mu = z.mean(axis=0)
        var = z.var(axis=0)
        inv = 1.0 / np.sqrt(var + net.eps)
        xh = (z - mu) * inv
        y = net.gamma[lay] * xh + net.beta[lay]
        mo = cfg.momentum
        net.mean[lay] = (1 - mo) * net.mean[lay] + mo * mu
        unbiased = var * (len(z) / max(1, len(z) - 1))
        net.var[lay] = (1 - mo) * net.var[lay] + mo * unbiased
        gate = drop = None
        if lay < n_layers - 1:
            a_next, gate = ste_sign(y)
            if cfg.dropout:
                drop = (rng.random(a_next.shape) >= cfg.dropout).astype(np.float32) / (1 - cfg.dropout)
                a_next *= drop
        cache.append((a, wb, xh, inv, gate, drop))
        if lay < n_layers - 1:
            a = a_next
    loss, dy = loss_grad(y, labels, cfg.loss)
    acc = float(np.mean(np.argmax(y, axis=1) == labels))
    gw, gg, gb = [None] * n_layers, [None] * n_layers, [None] * n_layers
    for lay in range(n_layers - 1, -1, -1):
        a_in, wb, xh, inv, _, _ = cache[lay]
        dz, gg[lay], gb[lay] = bn_backward(dy, xh, inv, net.gamma[lay])
        gw[lay] = dz.T @ a_in  # straight through sign(w): no gate, clipping bounds w
        if lay:
            da = dz @ wb
            _, _, _, _, gate, drop = cache[lay - 1]
            if drop is not None:
                da *= drop
            dy = da * gate
    return loss, acc, gw + gg + gb


def init_net(
    rng: np.random.Generator,
    n_inputs: int,
    sizes: list[int],
    plane_mask: int,
    eps: float = 1e-4,
    input_mode: int = INPUT_SHARED,
) -> FloatNet:
    """Glorot-uniform latent weights, gamma 1, beta 0, running mean 0 and var 1.

    Input mode 1: the first layer has ``K * n_inputs`` inputs (one segment per kept plane)."""
    first = n_inputs * (bin(plane_mask).count("1") if input_mode == INPUT_PER_PLANE else 1)
    ins = [first] + sizes[:-1]
    ws = []
    for n_in, n_out in zip(ins, sizes, strict=True):
        lim = np.sqrt(6.0 / (n_in + n_out))
        ws.append(rng.uniform(-lim, lim, (n_out, n_in)).astype(np.float32))
    ones = [np.ones(s, np.float32) for s in sizes]
    zeros = [np.zeros(s, np.float32) for s in sizes]
    return FloatNet(n_inputs, plane_mask, ws, ones, [z.copy() for z in zeros], zeros, [o.copy() for o in ones], eps,
                    input_mode)  # fmt: skip


def recalibrate(net: FloatNet, x: np.ndarray, batch: int = 5000) -> None:
    """Set every layer's BatchNorm mean/var to its exact statistics over ``x`` (uint8 (n, in)).

    Runs layer by layer in inference mode, so each layer's statistics are those of the
    binary activations the folded model will really feed it.
    """
    n_layers = len(net.weights)
    for lay in range(n_layers):
        tot = np.zeros(net.sizes[lay], np.float64)
        tot2 = np.zeros(net.sizes[lay], np.float64)
        for lo in range(0, len(x), batch):
            a = net.inputs(x[lo : lo + batch])
            for i in range(lay + 1):
                s = net.dot(a, i)
                if i < lay:
                    y = fold.bn_eval(s, net.mean[i], net.var[i], net.gamma[i], net.beta[i], net.eps)
                    a = np.where(y >= 0, 1.0, -1.0).astype(np.float32)
            tot += s.sum(axis=0)
            tot2 += (s * s).sum(axis=0)
        mu = tot / len(x)
        var = np.maximum(tot2 / len(x) - mu * mu, 0.0)
        net.mean[lay] = mu.astype(np.float32)
        net.var[lay] = var.astype(np.float32)


def evaluate(net: FloatNet, x: np.ndarray, y: np.ndarray, kind: str) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    s = net.scores(x)
    loss = 0.0
    for lo in range(0, len(x), 5000):
        loss += loss_grad(s[lo : lo + 5000], y[lo : lo + 5000], kind)[0] * len(s[lo : lo + 5000])
    return loss / len(x), float(np.mean(np.argmax(s, axis=1) == y))
