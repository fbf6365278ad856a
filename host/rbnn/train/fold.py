"""Fold BatchNorm (and bias) into the integers a device runs (docs/FORMAT.md, Semantics).

A hidden neuron computes the integer pre-activation ``s`` and the float network outputs
``+1`` when ``bn(s) >= 0`` (sign(0) = +1), with

    bn(s) = (s + bias - mean) * k + beta,    k = gamma / sqrt(var + eps),

evaluated in float64 exactly in this order (:func:`bn_eval`). Each rounding step is
monotone, so ``bn`` is monotone in ``s`` (rising when ``k > 0``, falling when ``k < 0``,
constant when ``k == 0``). Folding finds, by bisection over every integer ``s`` the layer
can produce, the one threshold ``t`` and flip bit with

    (s >= t) XOR flip  ==  bn(s) >= 0     for every integer s in [-smax, smax],

so the folded hidden layers agree with the float64 network bit for bit, whatever the
size or sign of the parameters. The output layer keeps integer scores: its BatchNorm
becomes ``score = scale * s + offset`` with ``scale = round(k * 2^q)`` and ``offset =
round((beta - (mean - bias) * k) * 2^q)``, ``q`` the largest power of two whose score
bound stays within ``OUTPUT_BOUND`` (half the ``i32`` range: the E_RANGE check holds with
a 2x margin). Rounding moves each score by at most ``(smax + 1) / 2 * 2^-q`` in float
units, so argmax can only change where two float scores are closer than that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelError

I32_MAX = 2**31 - 1
OUTPUT_BOUND = 2**30  # score bound the folded output layer keeps (E_RANGE needs <= 2^31-1)


def _params(
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    bias: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 (shift, k, beta) with bn(s) = (s - shift) * k + beta; ModelError if not finite."""
    arrs = [np.asarray(a, dtype=np.float64) for a in (mean, var, gamma, beta)]
    n = arrs[0].shape
    for name, a in zip(("mean", "var", "gamma", "beta"), arrs, strict=True):
        if a.shape != n or a.ndim != 1:
            raise ModelError(f"BatchNorm {name}: expected shape {n}, found {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ModelError(f"BatchNorm {name}: {int(np.sum(~np.isfinite(a)))} values are not finite")
    mean, var, gamma, beta = arrs
    if np.any(var + eps <= 0):
        raise ModelError("BatchNorm var + eps must be > 0")
    shift = mean.copy()
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64)
        if b.shape != n or not np.all(np.isfinite(b)):
            raise ModelError(f"bias: expected {n} finite values, found shape {b.shape}")
        shift = shift - b
    k = gamma / np.sqrt(var + eps)
    if not np.all(np.isfinite(k)):
        raise ModelError("BatchNorm gamma / sqrt(var + eps) overflows float64")
    return shift, k, beta


def bn_eval(
    s: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """The float64 BatchNorm (inference form) that folding reproduces exactly.

    Parameters
    ----------
    s : array of integers or floats, shape (..., n)
        Pre-activations.
    mean, var, gamma, beta : float arrays, shape (n,)
    eps : float
    bias : float array, shape (n,), optional
        Added to ``s`` before BatchNorm.

    Returns
    -------
    ndarray of float64, shape (..., n)
    """
    shift, k, b = _params(mean, var, gamma, beta, eps, bias)
    return (np.asarray(s, dtype=np.float64) - shift) * k + b


def fold_hidden(
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    smax: int,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Threshold and flip bit per neuron: ``(s >= t) ^ flip == (bn_eval(s) >= 0)``.

    Exact for every integer ``s`` in ``[-smax, smax]``.

    Parameters
    ----------
    mean, var, gamma, beta : float arrays, shape (n,)
        BatchNorm running statistics and affine parameters.
    eps : float
    smax : int
        Largest possible ``|s|`` of the layer (its input count, times the plane weight
        sum for the first layer).
    bias : float array, shape (n,), optional

    Returns
    -------
    thresholds : ndarray of int32, shape (n,), within [-smax, smax + 1]
    flips : ndarray of bool, shape (n,)
    """
    if not 0 <= smax < I32_MAX:
        raise ModelError(f"smax must be 0..{I32_MAX - 1}, got {smax}")
    shift, k, b = _params(mean, var, gamma, beta, eps, bias)

    def positive(s: np.ndarray) -> np.ndarray:
        return (s.astype(np.float64) - shift) * k + b >= 0

    flips = k < 0
    # Find the smallest t in [-smax, smax+1] where pos(t) XOR flip holds ("on"); the
    # predicate is monotone in s for every neuron, so bisection is exact. t = smax + 1
    # means "never on" (no s reaches it).
    lo = np.full(k.shape, -smax, dtype=np.int64)
    hi = np.full(k.shape, smax + 1, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        on = positive(mid) ^ flips
        busy = lo < hi  # settled neurons keep lo == hi
        hi = np.where(busy & on, mid, hi)
        lo = np.where(busy & ~on, mid + 1, lo)
    # k == 0 (gamma 0, or underflow) needs no case of its own: bn is the constant beta,
    # and the bisection gives t = -smax (always on) or smax + 1 (never on).
    return lo.astype(np.int32), flips.astype(bool)


def fold_output(
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    smax: int,
    bias: np.ndarray | None = None,
    bound: int = OUTPUT_BOUND,
    q_max: int = 1000,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-class integer ``scale`` and ``offset`` approximating ``bn_eval(s) * 2^q``.

    Parameters
    ----------
    mean, var, gamma, beta : float arrays, shape (n_classes,)
    eps : float
    smax : int
        Largest possible ``|s|`` of the output layer.
    bias : float array, shape (n_classes,), optional
    bound : int
        Upper limit of ``max_k |scale[k]| * smax + |offset[k]|`` (docs/FORMAT.md, E_RANGE).
    q_max : int
        The largest exponent to use (a file's ``score_q`` is at most 30).

    Returns
    -------
    scale, offset : ndarray of int32, shape (n_classes,)
    q : int
        The fixed-point exponent: integer scores are about ``2^q`` times the float ones.
    """
    if not 1 <= bound <= I32_MAX:
        raise ModelError(f"bound must be 1..{I32_MAX}, got {bound}")
    shift, k, b = _params(mean, var, gamma, beta, eps, bias)
    c = b - shift * k
    if not np.all(np.isfinite(c)):
        raise ModelError("output BatchNorm offset beta - mean * k overflows float64")
    peak = float(np.max(np.abs(k) * smax + np.abs(c))) if k.size else 0.0
    # Largest q with peak * 2^q (plus rounding) inside the bound; start there and step
    # down until the exact integer bound holds.
    q = 0 if peak == 0 else int(np.floor(np.log2(bound / peak)))
    q = min(q, q_max, 1000)  # all-tiny parameters: any q works, keep ldexp finite
    while True:
        scale = np.rint(np.ldexp(k, q))
        offset = np.rint(np.ldexp(c, q))
        worst = int(np.max(np.abs(scale) * smax + np.abs(offset))) if k.size else 0
        if worst <= bound:
            return scale.astype(np.int32), offset.astype(np.int32), q
        q -= 1


def fold_layers(
    net: Any, bound: int = OUTPUT_BOUND, q_max: int = 1000
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray, int]:
    """Every layer of a float network (dense ``FloatNet`` or ``ConvNet``: ``weights``,
    ``_bn(layer)``, ``smax(layer)``): thresholds and flips of the hidden layers (per neuron
    or channel), then the output scale, offset and exponent (:func:`fold_output`)."""
    thr, flips = [], []
    last = len(net.weights) - 1
    for lay in range(last):
        t, f = fold_hidden(*net._bn(lay), smax=net.smax(lay))
        thr.append(t)
        flips.append(f)
    scale, offset, q = fold_output(*net._bn(last), smax=net.smax(last), bound=bound, q_max=q_max)
    return thr, flips, scale, offset, q
