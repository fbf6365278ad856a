"""The binary networks that bench/peer_lce.py runs through rbnn and through larq compute
engine (LCE): their weights, and a numpy reference of what both must compute.

Numpy only (no rbnn, no TensorFlow): this module is imported by the bench (rbnn's venv,
numpy 2) and by its LCE worker (the peer venv, numpy 1.x), which exchange networks as
``.npz`` files (:func:`save`, :func:`load`).

A network is rbnn's semantics (docs/FORMAT.md, Semantics and Version 3) written in the
layout Keras/larq uses: conv kernels ``(k, k, C, C')`` and dense kernels ``(in, out)``,
+-1 weights, feature maps ``(n, H, W, C)`` of +-1, a padded position -1. A hidden layer
outputs +1 where ``(s >= thr) XOR flip``; the output layer scores ``scale * s + offset``.
:func:`forward` computes it the way the larq model does: BatchNorm ``y = gamma * s +
beta`` with ``gamma = -1`` where the flip is set and ``beta = gamma * (0.5 - thr)`` (never
0 for an integer ``s``), then the 2x2 max-pool, then the sign; that this equals rbnn's
threshold-then-OR (eBNN order: max of four sums, or min where flipped) is what
tests/test_peer_bench.py checks against the twin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONV, DENSE = "conv", "dense"


@dataclass
class Layer:
    """One binary layer: +-1 ``weights`` (int8) in Keras layout; ``thr``/``flip`` for a
    hidden layer, ``scale``/``offset`` for the output layer; conv: ``pad`` positions of -1
    on every side and an optional fused 2x2 max-pool."""

    kind: str
    weights: np.ndarray
    thr: np.ndarray | None = None
    flip: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    pad: int = 0
    pool: bool = False

    @property
    def size(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def kernel(self) -> int:
        return int(self.weights.shape[0]) if self.kind == CONV else 0

    def bn(self) -> tuple[np.ndarray, np.ndarray]:
        """Folded BatchNorm ``(gamma, beta)`` as float32: hidden ``gamma * (s - thr + 0.5)``
        (sign +1 exactly where ``(s >= thr) XOR flip``), output ``scale * s + offset``."""
        if self.scale is not None:
            return self.scale.astype(np.float32), self.offset.astype(np.float32)
        gamma = np.where(self.flip, -1.0, 1.0)
        return gamma.astype(np.float32), (gamma * (0.5 - self.thr)).astype(np.float32)


@dataclass
class Net:
    """``name``, the input shape of one sample ((H, W, C), or (n_inputs,) for an MLP) and
    the layers, output layer last."""

    name: str
    input_shape: tuple[int, ...]
    layers: list[Layer]


def conv_sums(a: np.ndarray, w: np.ndarray, pad: int, pad_value: float = -1.0) -> np.ndarray:
    """Binary conv sums: +-1 map (n, H, W, C), kernel (k, k, C, C') -> int64 (n, H1, W1, C')."""
    k = w.shape[0]
    ap = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value) if pad else a
    win = np.lib.stride_tricks.sliding_window_view(ap, (k, k), axis=(1, 2))  # n, H1, W1, C, k, k
    n, h1, w1 = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * h1 * w1, -1).astype(np.float32)
    s = cols @ w.reshape(-1, w.shape[-1]).astype(np.float32)  # exact: |s| < 2^24
    return np.rint(s).astype(np.int64).reshape(n, h1, w1, -1)


def layer_sums(ly: Layer, a: np.ndarray, pad_value: float = -1.0) -> np.ndarray:
    """The integer sums ``s`` of one layer on its +-1 input."""
    if ly.kind == CONV:
        return conv_sums(a, ly.weights, ly.pad, pad_value)
    flat = a.reshape(len(a), -1).astype(np.float32)  # (y, x, c) order: Keras' Flatten
    return np.rint(flat @ ly.weights.astype(np.float32)).astype(np.int64)


def max_pool(y: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, of (n, H, W, C) (H, W even)."""
    n, h, w, c = y.shape
    return y.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def hidden_out(ly: Layer, s: np.ndarray) -> np.ndarray:
    """A hidden layer's +-1 output as larq computes it: BatchNorm, max-pool, sign."""
    gamma, beta = ly.bn()
    y = gamma.astype(np.float64) * s + beta
    if ly.pool:
        y = max_pool(y)
    return np.where(y >= 0, 1.0, -1.0).astype(np.float32)


def forward(net: Net, x: np.ndarray, pad_values: dict[int, float] | None = None) -> np.ndarray:
    """Integer scores (n, classes) of ``net`` on +-1 inputs ``x`` (n, *input_shape).

    ``pad_values`` replaces the -1 of padded positions in the layers it names (a larq
    model with LCE's fast +1 border computes that network instead).
    """
    pads = pad_values or {}
    a = np.asarray(x, np.float32)
    for i, ly in enumerate(net.layers):
        s = layer_sums(ly, a, pads.get(i, -1.0))
        if ly.scale is not None:
            return ly.scale.astype(np.int64) * s + ly.offset.astype(np.int64)
        a = hidden_out(ly, s)
    raise ValueError(f"{net.name}: no output layer")


# --- random networks with thresholds that split real data ------------------------------
# Architecture entries: ("conv", channels, kernel, pad, pool) or ("dense", size).
MLP_ARCH = [(DENSE, 256), (DENSE, 256), (DENSE, 10)]
CNN_ARCH = [(CONV, 32, 3, 1, True), (CONV, 64, 3, 1, True), (DENSE, 128), (DENSE, 10)]


def random_net(rng: np.random.Generator, name: str, input_shape: tuple[int, ...], arch: list[tuple],
               x_sample: np.ndarray) -> Net:  # fmt: skip
    """Random +-1 weights; each hidden threshold the median of its sums on ``x_sample``
    (+-1, (n, *input_shape)) so that outputs split the data; 30 % of the flips set; output
    scales in [1, 64] and offsets in [-500, 500]."""
    layers: list[Layer] = []
    a = np.asarray(x_sample, np.float32)
    fan_in = int(np.prod(input_shape)) if len(input_shape) == 1 else int(input_shape[-1])
    for j, (kind, size, *conv) in enumerate(arch):
        shape = (conv[0], conv[0], fan_in, size) if kind == CONV else (int(np.prod(a.shape[1:])), size)
        w = np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
        ly = Layer(kind, w, pad=conv[1] if conv else 0, pool=bool(conv[2]) if conv else False)
        s = layer_sums(ly, a)
        if j == len(arch) - 1:
            ly.scale = rng.integers(1, 65, size).astype(np.int32)
            ly.offset = rng.integers(-500, 501, size).astype(np.int32)
        else:
            ly.thr = np.median(s.reshape(-1, size), axis=0).astype(np.int32)
            ly.flip = rng.random(size) < 0.3
            a = hidden_out(ly, s)
        layers.append(ly)
        fan_in = size
    return Net(name, tuple(input_shape), layers)


# --- exchange with the worker ------------------------------------------------------------
_ARRAYS = ("weights", "thr", "flip", "scale", "offset")


def save(net: Net, path: Path) -> None:
    arrays = {}
    meta = {"name": net.name, "input_shape": list(net.input_shape), "layers": []}
    for i, ly in enumerate(net.layers):
        meta["layers"].append({"kind": ly.kind, "pad": ly.pad, "pool": ly.pool})
        arrays.update({f"{i}.{k}": getattr(ly, k) for k in _ARRAYS if getattr(ly, k) is not None})
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load(path: Path) -> Net:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        layers = []
        for i, lm in enumerate(meta["layers"]):
            got = {k: z[f"{i}.{k}"] for k in _ARRAYS if f"{i}.{k}" in z}
            layers.append(Layer(lm["kind"], pad=int(lm["pad"]), pool=bool(lm["pool"]), **got))
    return Net(meta["name"], tuple(meta["input_shape"]), layers)
