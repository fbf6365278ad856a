"""The numpy twin: bit-exact reference of what every device engine computes.

Integer arithmetic on packed 32-bit words and popcounts only (docs/FORMAT.md,
Semantics, and Version 3 for conv layers, the fused pool and input mode 1). The C core,
the MicroPython fallback and the firmware are tested against it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..format.bits import pack_bits, popcount, unpack_bits, words
from ..format.model import CONV, POOL_2X2, Geometry, Model, pack_input, plane_shifts

_CHUNK_ELEMS = 1 << 21  # bounds the temporaries of a chunk of samples (4-byte units)


def _dot(w: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """+-1 dot products of packed rows: (out, W) x (batch, W) -> int64 (batch, out).

    One word at a time into a (batch, out) count: a reduction over a short last axis is
    several times slower in numpy than W additions of whole arrays."""
    n_words = w.shape[1]
    acc = np.zeros((x.shape[0], w.shape[0]), np.uint16 if 32 * n_words <= 0xFFFF else np.uint32)
    tmp = np.empty(acc.shape, np.uint32)
    xt = np.ascontiguousarray(x.T)
    for k in range(n_words):
        np.bitwise_xor(xt[k][:, None], w[None, :, k], out=tmp)
        acc += popcount(tmp)
    return n - 2 * acc.astype(np.int64)


def _segment(w: np.ndarray, g: Geometry, k: int) -> np.ndarray:
    """The rows' segment of kept plane ``k`` (input mode 1), or the shared rows (mode 0)."""
    if g.segments == 1:
        return w
    wd = words(g.n_in)
    return w[:, k * wd : (k + 1) * wd]


def _patches(a: np.ndarray, k: int, pad: int, hw1: tuple[int, int]) -> np.ndarray:
    """Packed patches of a bool map (n, H, W, C): uint32 (n * H1 * W1, words(k*k*C)), bit
    ``(ky * k + kx) * C + c`` of the patch at (y, x) = a[y+ky-pad, x+kx-pad, c], 0 (-1)
    in the padding."""
    n, _, _, c = a.shape
    h1, w1 = hw1
    if pad:
        a = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = [a[:, ky : ky + h1, kx : kx + w1, :] for ky in range(k) for kx in range(k)]
    return pack_bits(np.stack(cols, axis=3).reshape(n * h1 * w1, k * k * c))


def _conv_bits(s: np.ndarray, n: int, g: Geometry, pool: int, thr: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Thresholded conv output (n*H1*W1, C') -> bool map (n, H', W', C'); a fused pool is
    the OR of the four thresholded bits (docs/FORMAT.md, Version 3: Pool)."""
    h1, w1 = g.conv_hw
    bits = ((s >= thr.astype(np.int64)) ^ flip).reshape(n, h1, w1, -1)
    if pool == POOL_2X2:
        bits = bits.reshape(n, h1 // 2, 2, w1 // 2, 2, -1).any(axis=(2, 4))
    return bits


def _first_maps(m: Model, xbits: np.ndarray) -> list[np.ndarray]:
    """Each kept plane of the packed input as a bool map (n, in_h, in_w, in_c)."""
    h, w, c = m.in_shape
    return [unpack_bits(xbits[:, k, :], m.n_inputs).reshape(-1, h, w, c) for k in range(xbits.shape[1])]


def _block_scores(m: Model, b: int, xbits: np.ndarray) -> np.ndarray:
    blk = m.blocks[b]
    sign = blk.planes[0]
    shifts = plane_shifts(m.plane_mask)
    specs = m.layer_specs
    n = xbits.shape[0]
    a = None  # packed activations (n, words) after a dense layer
    amap = None  # bool map (n, H, W, C) after a conv layer
    for layer, g in enumerate(m.geometry()):
        w = m.layer_words(sign, layer)
        ly = specs[layer]
        if ly.kind == CONV:
            if layer == 0:  # every kept plane's patches, its segment, weighted 2^(n - low)
                maps = _first_maps(m, xbits)
                s = sum(_dot(_segment(w, g, k), _patches(mp, ly.kernel, ly.pad, g.conv_hw), g.n_in) << sh
                        for k, (mp, sh) in enumerate(zip(maps, shifts, strict=True)))  # fmt: skip
            else:
                s = _dot(w, _patches(amap, ly.kernel, ly.pad, g.conv_hw), g.n_in)
            amap = _conv_bits(s, n, g, ly.pool, blk.thresholds[layer], blk.flips[layer])
            continue
        if amap is not None:  # the first dense layer after a conv layer: flatten (y, x, c)
            a, amap = pack_bits(amap.reshape(n, -1)), None
        if layer == 0:
            s = sum((_dot(_segment(w, g, k), xbits[:, k, :], g.n_in) << sh) for k, sh in enumerate(shifts))
        else:
            s = _dot(w, a, g.n_in)
        if layer < m.n_layers - 1:
            bits = (s >= blk.thresholds[layer].astype(np.int64)) ^ blk.flips[layer]
            a = pack_bits(bits)
        else:
            return blk.scale.astype(np.int64) * s + blk.offset.astype(np.int64)
    raise AssertionError("unreachable")


def _per_sample_elems(m: Model) -> int:
    """Largest temporary of one sample, in 4-byte units: a layer's (positions, out) count
    and XOR word, its unpacked bool patches (k*k*C bytes a position)."""
    out = 1
    for g, size in zip(m.geometry(), m.sizes, strict=True):
        positions = g.conv_hw[0] * g.conv_hw[1] if g.conv_hw else 1
        out = max(out, 2 * positions * size, positions * g.n_in // 4, positions * words(g.n_in))
    return out


def scores(m: Model, xbits: np.ndarray) -> np.ndarray:
    """Integer class scores.

    Parameters
    ----------
    m : Model
    xbits : ndarray of uint32, shape (n, K, words(n_inputs))
        Packed inputs (:func:`rbnn.format.model.pack_input`), padding bits 0.

    Returns
    -------
    ndarray of int32, shape (n, n_classes)
    """
    xbits = np.asarray(xbits, dtype=np.uint32)
    want = (m.k_planes, words(m.n_inputs))
    if xbits.ndim != 3 or xbits.shape[1:] != want:
        raise ModelError(f"packed input must have shape (n, {want[0]}, {want[1]}), got {xbits.shape}")
    n = xbits.shape[0]
    step = max(1, _CHUNK_ELEMS // _per_sample_elems(m))
    out = np.empty((n, m.n_classes), dtype=np.int64)
    for lo in range(0, n, step):
        chunk = xbits[lo : lo + step]
        acc = np.zeros((chunk.shape[0], m.n_classes), dtype=np.int64)
        for b in range(len(m.blocks)):
            acc += _block_scores(m, b, chunk)
        out[lo : lo + step] = acc
    if out.size and (out.max() > 2**31 - 1 or out.min() < -(2**31)):
        raise OverflowError("scores left the int32 range; the model file's range check failed")  # a bug
    return out.astype(np.int32)


def predict(m: Model, xbits: np.ndarray) -> np.ndarray:
    """Class per sample, ties to the lowest index: int64 (n,)."""
    return np.argmax(scores(m, xbits), axis=1)


def scores_u8(m: Model, x: np.ndarray) -> np.ndarray:
    """:func:`scores` from raw 8-bit features, uint8 (n, n_inputs)."""
    return scores(m, pack_input(x, m.plane_mask))
