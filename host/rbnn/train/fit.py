"""Train a binarized MLP on the host (numpy only), Courbariaux & Hubara et al. style.

Forward: weights and hidden activations are ``sign`` (sign(0) = +1) of real values;
every layer, the output one included, is followed by BatchNorm (batch statistics while
training, running averages for inference). Backward: the straight-through estimator,
gated where ``|a| > 1`` for activations; latent weights are real, updated by Adam and
clipped to [-1, 1]. The first layer sees the exact integers the device sees:
``rbnn.model.input_values(x, plane_mask)``, the bit-plane values with shared weights.

Everything random comes from one ``numpy.random.Generator`` seeded by ``seed``, and the
BLAS thread count is pinned (``threads``), so the same seed on the same machine gives a
byte-identical ``.rbnn`` file. Matrix products are float32 through BLAS (the forward
ones are exact: integer sums below 2^24). The model kept is the epoch with the best
validation accuracy. :func:`train` returns the folded integer :class:`rbnn.model.Model`
(via :mod:`rbnn.fold`), the float network and the per-epoch history.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from . import fold
from .data import Dataset
from .errors import RbnnError
from .model import Model, input_values, plane_shifts

LOSSES = ("hinge", "ce")
# A few seconds of training for tests and smoke runs (tests' `trained_mnist` fixture):
# 784-128-64-10 on the MSB plane, one epoch, no augmentation, one BLAS thread.
QUICK_RECIPE = {"hidden": [128, 64], "plane_mask": 0x80, "epochs": 1, "seed": 0, "shift": 0.0, "threads": 1}
SCHEDULES = ("exp", "cos")
_ONE = np.float32(1.0)


class TrainError(RbnnError, ValueError):
    """A training request that cannot be carried out (bad shapes, options or data)."""


_SET_THREADS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_THREADS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")


def _openblas() -> tuple | None:
    """(set, get) thread-count functions of the OpenBLAS numpy was built with, if found."""
    import ctypes
    import glob
    import os

    libdir = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(libdir, "numpy.libs", "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in zip(_SET_THREADS, _GET_THREADS, strict=True):
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                return getattr(lib, set_name), getattr(lib, get_name)
    return None


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenBLAS threads (None: leave as is), then restore.

    Training results depend on the thread count (BLAS splits the float sums of the
    gradients differently), so training pins it: same seed and threads, same bytes.
    """
    fns = _openblas() if n else None
    if fns is None:
        yield
        return
    set_fn, get_fn = fns
    before = int(get_fn())
    set_fn(int(n))
    try:
        yield
    finally:
        set_fn(before)


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in the history JSON)."""

    hidden: list[int]
    plane_mask: int = 0x80
    epochs: int = 20
    seed: int = 0
    batch: int = 100
    lr: float = 0.01
    lr_final: float = 1e-4
    schedule: str = "exp"  # per-step decay from lr to lr_final: exponential or cosine
    lr_scale: str = "none"  # "glorot": per-layer lr x sqrt((fan_in + fan_out) / 1.5), BNN paper
    loss: str = "ce"  # softmax cross-entropy, or "hinge": squared hinge (BNN paper)
    val: int = 5000  # training images held out for validation
    shift: float = 1.5  # augmentation: max translation in pixels (integer shifts unless rotate/zoom)
    rotate: float = 10.0  # augmentation: max rotation in degrees
    zoom: float = 0.1  # augmentation: max relative scale change
    dropout: float = 0.0  # on hidden activations while training
    momentum: float = 0.1  # BatchNorm running-average update weight
    eps: float = 1e-4
    keep_best: bool = True  # keep the epoch with the best validation accuracy
    recalibrate: bool = False  # replace running averages by exact training-set statistics
    limit: int | None = None  # use only the first N training images (tests, quick runs)
    threads: int = 1  # BLAS threads, pinned: the result depends on it (see blas_threads)

    def check(self, n_inputs: int, n_train: int) -> None:
        """Raise TrainError naming the first bad option."""
        if not self.hidden or any(int(h) < 1 or int(h) > 65535 for h in self.hidden):
            raise TrainError(f"hidden sizes: expected 1..65535 each, at least one, found {self.hidden}")
        if len(self.hidden) + 1 > 8:
            raise TrainError(f"hidden: at most 7 hidden layers (8 weight layers), found {len(self.hidden)}")
        if not 1 <= self.plane_mask <= 0xFF:
            raise TrainError(f"plane mask: expected 0x01..0xFF, found {self.plane_mask:#x}")
        if self.epochs < 1:
            raise TrainError(f"epochs: expected >= 1, found {self.epochs}")
        if self.batch < 2:
            raise TrainError(f"batch: expected >= 2 (BatchNorm needs batch statistics), found {self.batch}")
        if not (0 < self.lr < np.inf and 0 < self.lr_final < np.inf):  # NaN fails too
            raise TrainError(f"learning rates must be > 0, found lr={self.lr}, lr_final={self.lr_final}")
        if self.loss not in LOSSES:
            raise TrainError(f"loss: expected one of {', '.join(LOSSES)}, found {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"schedule: expected one of {', '.join(SCHEDULES)}, found {self.schedule!r}")
        if self.lr_scale not in ("glorot", "none"):
            raise TrainError(f"lr scale: expected glorot or none, found {self.lr_scale!r}")
        if not 0 <= self.dropout < 1:
            raise TrainError(f"dropout: expected 0 <= p < 1, found {self.dropout}")
        if not (0 <= self.shift < np.inf and 0 <= self.rotate < np.inf and 0 <= self.zoom < 1):
            raise TrainError(f"augmentation: shift and rotate must be finite and >= 0, zoom in [0, 1); "
                             f"found shift={self.shift}, rotate={self.rotate}, zoom={self.zoom}")  # fmt: skip
        if not 0 <= self.val < n_train:
            raise TrainError(f"validation split: expected 0..{n_train - 1} images, found {self.val}")
        if n_train - self.val < self.batch:
            raise TrainError(
                f"batch: {self.batch} is larger than the {n_train - self.val} training images left"
            )
        if not 1 <= self.threads <= 256:
            raise TrainError(f"threads: expected 1..256, found {self.threads}")
        if n_inputs > 65535:
            raise TrainError(f"data: at most 65535 features per sample, found {n_inputs}")


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

    @property
    def sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights]

    def binary_weights(self, layer: int) -> np.ndarray:
        """``sign`` of the latent weights, sign(0) = +1: float32 (out, in) of +-1."""
        return np.where(self.weights[layer] >= 0, _ONE, -_ONE)

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
            a = input_values(x[lo : lo + batch], self.plane_mask)
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

    def fold(self, meta: dict | None = None) -> Model:
        """The integer model: thresholds and flips per hidden neuron, output scale/offset."""
        thr, flips = [], []
        last = len(self.weights) - 1
        for lay in range(last):
            t, f = fold.fold_hidden(*self._bn(lay), smax=self.smax(lay))
            thr.append(t)
            flips.append(f)
        scale, offset, q = fold.fold_output(*self._bn(last), smax=self.smax(last))
        meta = dict(meta or {})
        meta["output_q"] = q
        return Model.plain(
            self.n_inputs, self.plane_mask, [w >= 0 for w in self.weights], thr, flips, scale, offset, meta
        )


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: Model  # folded integer model (rbnn.model.Model.plain)
    net: FloatNet  # the float network the model was folded from
    history: list[dict]  # one row per epoch: loss, acc, val_loss, val_acc, lr, seconds
    config: TrainConfig
    seconds: float  # wall time of the whole run
    best_epoch: int  # 1-based epoch whose weights the model holds
    split: dict = field(default_factory=dict)  # train/val indices into the training set


# --- augmentation ---------------------------------------------------------------------
def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int],
    shift: float,
    rotate: float = 0.0,
    zoom: float = 0.0,
) -> np.ndarray:
    """Random affine jitter of images with bilinear resampling (zero outside).

    Parameters
    ----------
    x : ndarray of uint8, shape (n, h * w)
    rng : numpy Generator
    shape : (h, w)
    shift : float
        Max translation in pixels, each axis uniform in [-shift, shift].
    rotate : float
        Max rotation in degrees.
    zoom : float
        Max relative scale change.

    Returns
    -------
    ndarray of uint8, shape (n, h * w)
    """
    n = len(x)
    h, w = shape
    if n == 0 or (shift == 0 and rotate == 0 and zoom == 0):
        return x
    if shift and not rotate and not zoom:
        # Integer shifts need no resampling; keep the pixel values (and bit-planes) exact.
        return _shift_int(x, rng, shape, int(round(shift)))
    ang = np.deg2rad(rng.uniform(-rotate, rotate, n)) if rotate else np.zeros(n)
    sc = 1.0 + (rng.uniform(-zoom, zoom, n) if zoom else np.zeros(n))
    tx = rng.uniform(-shift, shift, n)
    ty = rng.uniform(-shift, shift, n)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w]
    yy = (yy.reshape(-1) - cy).astype(np.float32)
    xx = (xx.reshape(-1) - cx).astype(np.float32)
    # Inverse map: output pixel -> source coordinate.
    cos = (np.cos(ang) / sc).astype(np.float32)[:, None]
    sin = (np.sin(ang) / sc).astype(np.float32)[:, None]
    sx = cos * xx + sin * yy + cx - tx[:, None].astype(np.float32)
    sy = -sin * xx + cos * yy + cy - ty[:, None].astype(np.float32)
    # Two pixels of zero border; coordinates clipped into it, so a source point outside
    # the image reads only zeros.
    p = 2
    sx = np.clip(sx, -p, w - 1 + p - 1)
    sy = np.clip(sy, -p, h - 1 + p - 1)
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = sx - x0
    fy = sy - y0
    wp = w + 2 * p
    img = np.zeros((n, h + 2 * p, wp), np.float32)
    img[:, p:-p, p:-p] = x.reshape(n, h, w)
    base = (y0.astype(np.int64) + p) * wp + (x0.astype(np.int64) + p)
    base += (np.arange(n, dtype=np.int64) * img[0].size)[:, None]
    flat = img.reshape(-1)
    v00 = flat[base]
    v01 = flat[base + 1]
    v10 = flat[base + wp]
    v11 = flat[base + wp + 1]
    out = (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _shift_int(x: np.ndarray, rng: np.random.Generator, shape: tuple[int, int], s: int) -> np.ndarray:
    n = len(x)
    h, w = shape
    pad = np.zeros((n, h + 2 * s, w + 2 * s), np.uint8)
    pad[:, s : s + h, s : s + w] = x.reshape(n, h, w)
    dy = rng.integers(0, 2 * s + 1, n)
    dx = rng.integers(0, 2 * s + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
    out = pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.reshape(n, h * w)


# --- the network while training -------------------------------------------------------
class _Adam:
    """Adam on a list of float32 arrays, with a learning-rate multiplier per array."""

    def __init__(self, params: list[np.ndarray], scales: list[float], b1=0.9, b2=0.999, eps=1e-8):
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.scales = scales
        self.b1, self.b2, self.eps = b1, b2, eps
        self.t = 0

    def step(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, g, m, v, sc in zip(params, grads, self.m, self.v, self.scales, strict=True):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * (g * g)
            p -= (lr * sc / c1) * m / (np.sqrt(v / c2) + self.eps)


def _loss(y: np.ndarray, labels: np.ndarray, kind: str) -> tuple[float, np.ndarray]:
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


def _step(
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
    loss, dy = _loss(y, labels, cfg.loss)
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
    rng: np.random.Generator, n_inputs: int, sizes: list[int], plane_mask: int, eps: float = 1e-4
) -> FloatNet:
    """Glorot-uniform latent weights, gamma 1, beta 0, running mean 0 and var 1."""
    ins = [n_inputs] + sizes[:-1]
    ws = []
    for n_in, n_out in zip(ins, sizes, strict=True):
        lim = np.sqrt(6.0 / (n_in + n_out))
        ws.append(rng.uniform(-lim, lim, (n_out, n_in)).astype(np.float32))
    ones = [np.ones(s, np.float32) for s in sizes]
    zeros = [np.zeros(s, np.float32) for s in sizes]
    return FloatNet(n_inputs, plane_mask, ws, ones, [z.copy() for z in zeros], zeros, [o.copy() for o in ones], eps)


def _lr_at(cfg: TrainConfig, frac: float) -> float:
    if cfg.schedule == "exp":
        return cfg.lr * (cfg.lr_final / cfg.lr) ** frac
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + np.cos(np.pi * frac))


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
            a = input_values(x[lo : lo + batch], net.plane_mask)
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


def _evaluate(net: FloatNet, x: np.ndarray, y: np.ndarray, kind: str) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    s = net.scores(x)
    loss = 0.0
    for lo in range(0, len(x), 5000):
        loss += _loss(s[lo : lo + 5000], y[lo : lo + 5000], kind)[0] * len(s[lo : lo + 5000])
    return loss / len(x), float(np.mean(np.argmax(s, axis=1) == y))


def train(
    ds: Dataset,
    hidden: list[int],
    plane_mask: int = 0x80,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    **options,
) -> TrainResult:
    """Train a binary MLP ``n_inputs - hidden... - n_classes`` and fold it to integers.

    Parameters
    ----------
    ds : rbnn.data.Dataset
        ``x_train`` uint8 (n, n_inputs), ``y_train`` uint8 (n,); the validation split is
        carved out of the training set (``val`` images, chosen by ``seed``).
    hidden : list of int
        Hidden layer widths.
    plane_mask : int
        Input bit-planes (docs/FORMAT.md); 0x80 is the thresholded MSB.
    epochs, seed : int
    progress : bool
        Show a tqdm bar with loss and accuracy.
    on_epoch : callable, optional
        Called with each epoch's history row.
    **options
        Any other :class:`TrainConfig` field (batch, lr, lr_final, loss, val, shift, ...).

    Returns
    -------
    TrainResult
    """
    try:
        cfg = TrainConfig(hidden=[int(h) for h in hidden], plane_mask=int(plane_mask), epochs=int(epochs),
                          seed=int(seed), **options)  # fmt: skip
    except TypeError as e:
        raise TrainError(f"unknown training option: {e}") from None
    x_all, y_all = ds.x_train, ds.y_train
    if cfg.limit is not None and cfg.limit < 1:  # a negative slice would silently drop images
        raise TrainError(f"limit: expected >= 1 training images, found {cfg.limit}")
    if cfg.limit is not None:
        x_all, y_all = x_all[: cfg.limit], y_all[: cfg.limit]
    if x_all.dtype != np.uint8 or x_all.ndim != 2:
        raise TrainError(f"training images: expected uint8 (n, features), found {x_all.dtype} {x_all.shape}")
    n_inputs = int(x_all.shape[1])
    cfg.check(n_inputs, len(x_all))
    _check_memory([n_inputs] + cfg.hidden + [int(ds.n_classes)])
    n_classes = int(ds.n_classes)
    if len(y_all) and int(y_all.max()) >= n_classes:
        raise TrainError(f"labels: expected 0..{n_classes - 1}, found {int(y_all.max())}")
    with blas_threads(cfg.threads):
        return _fit(cfg, x_all, y_all, n_classes, progress, on_epoch)


def _physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_memory(layers: list[int]) -> None:
    """Refuse a network whose training state cannot fit in RAM, before allocating it
    (an allocation that big gets the process killed, not a MemoryError)."""
    weights = sum(a * b for a, b in zip(layers[:-1], layers[1:], strict=False))
    need = 16 * weights  # at least float32 latent weights, gradients, Adam m and v
    ram = _physical_memory()
    if ram is not None and need > ram:
        raise TrainError(
            f"hidden {','.join(map(str, layers[1:-1]))}: training {weights:,} weights needs at least "
            f"{_mib(need)} (float32 weights, gradients and Adam state); this machine has {_mib(ram)}"
        )


def _fit(
    cfg: TrainConfig,
    x_all: np.ndarray,
    y_all: np.ndarray,
    n_classes: int,
    progress: bool,
    on_epoch: Callable[[dict], None] | None,
) -> TrainResult:
    n_inputs = int(x_all.shape[1])
    sizes = cfg.hidden + [n_classes]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(x_all))
    val_idx, tr_idx = np.sort(perm[: cfg.val]), np.sort(perm[cfg.val :])
    x_tr, y_tr = x_all[tr_idx], y_all[tr_idx].astype(np.int64)
    x_va, y_va = x_all[val_idx], y_all[val_idx].astype(np.int64)
    net = init_net(rng, n_inputs, sizes, cfg.plane_mask, cfg.eps)
    ins = [n_inputs] + sizes[:-1]
    wscale = [np.sqrt((i + o) / 1.5) if cfg.lr_scale == "glorot" else 1.0 for i, o in zip(ins, sizes, strict=True)]
    params = net.weights + net.gamma + net.beta
    opt = _Adam(params, wscale + [1.0] * (2 * len(sizes)))
    square = int(np.sqrt(n_inputs))
    shape = (square, square) if square * square == n_inputs else None
    augmenting = shape is not None and (cfg.shift or cfg.rotate or cfg.zoom)
    x_plain = None if augmenting else input_values(x_tr, cfg.plane_mask)
    steps_per_epoch = len(x_tr) // cfg.batch  # drop the ragged last batch: BN needs stats
    total = steps_per_epoch * cfg.epochs
    history: list[dict] = []
    best = (-1.0, 0, None)
    t_start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="batch", desc="train", leave=False, dynamic_ncols=True)
    step = 0
    # a diverging run is reported once, as a TrainError below, not as numpy warnings
    errstate = np.seterr(over="ignore", invalid="ignore")
    try:
        for ep in range(cfg.epochs):
            t_ep = time.perf_counter()
            order = rng.permutation(len(x_tr))
            sum_loss = sum_acc = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch : (i + 1) * cfg.batch]
                if augmenting:
                    xb = augment(x_tr[idx], rng, shape, cfg.shift, cfg.rotate, cfg.zoom)
                    xb = input_values(xb, cfg.plane_mask)
                else:
                    xb = x_plain[idx]
                lr = _lr_at(cfg, step / max(1, total - 1))
                loss, acc, grads = _step(net, xb, y_tr[idx], cfg, rng)
                opt.step(params, grads, lr)
                for w in net.weights:
                    np.clip(w, -1.0, 1.0, out=w)
                sum_loss += loss
                sum_acc += acc
                step += 1
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0:
                        bar.set_postfix(ep=f"{ep + 1}/{cfg.epochs}", loss=f"{sum_loss / (i + 1):.4f}",
                                        acc=f"{sum_acc / (i + 1):.4f}", refresh=False)  # fmt: skip
            if not all(np.isfinite(p).all() for p in params):
                raise TrainError(f"training diverged in epoch {ep + 1}: weights or BatchNorm parameters "
                                 f"are not finite; try a smaller --lr (was {cfg.lr:g})")  # fmt: skip
            val_loss, val_acc = _evaluate(net, x_va, y_va, cfg.loss)
            row = {
                "epoch": ep + 1,
                "loss": sum_loss / steps_per_epoch,
                "acc": sum_acc / steps_per_epoch,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - t_ep,
            }
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if bar is not None:
                bar.set_postfix(ep=f"{ep + 1}/{cfg.epochs}", loss=f"{row['loss']:.4f}",
                                acc=f"{row['acc']:.4f}", val=f"{val_acc:.4f}")  # fmt: skip
            if cfg.keep_best and len(x_va) and val_acc > best[0]:
                best = (val_acc, ep + 1, copy.deepcopy(net))
    finally:
        np.seterr(**errstate)
        if bar is not None:
            bar.close()
    best_epoch = cfg.epochs
    if cfg.keep_best and best[2] is not None:
        _, best_epoch, net = best
    if cfg.recalibrate:
        recalibrate(net, x_tr)
    seconds = time.perf_counter() - t_start
    meta = {"trained": {"hidden": cfg.hidden, "epochs": cfg.epochs, "seed": cfg.seed, "best_epoch": best_epoch}}
    try:
        model = net.fold(meta)
    except ValueError as e:  # non-finite BatchNorm parameters: the run diverged
        raise TrainError(f"the trained network cannot be folded to integers ({e}): training "
                         f"diverged; try a smaller --lr (was {cfg.lr:g})") from None  # fmt: skip
    return TrainResult(model, net, history, cfg, seconds, best_epoch,
                       {"train": tr_idx, "val": val_idx})  # fmt: skip


def config_dict(cfg: TrainConfig) -> dict:
    """The configuration as JSON-ready values (plane mask as hex)."""
    d = asdict(cfg)
    d["plane_mask"] = f"{cfg.plane_mask:#04x}"
    return d
