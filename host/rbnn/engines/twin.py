"""The numpy twin: bit-exact reference of what every device engine computes.

Integer arithmetic on packed 32-bit words and popcounts only (docs/FORMAT.md,
Semantics). The C core, the MicroPython fallback and the firmware are tested against it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..format.bits import pack_bits, popcount, words
from ..format.model import Model, pack_input, plane_shifts

_CHUNK_ELEMS = 1 << 22  # bounds the (batch, out, words) XOR temporary


def _dot(w: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """+-1 dot products of packed rows: (out, W) x (batch, W) -> int64 (batch, out)."""
    pc = popcount(x[:, None, :] ^ w[None, :, :]).sum(axis=-1, dtype=np.int64)
    return n - 2 * pc


def _block_scores(m: Model, b: int, xbits: np.ndarray) -> np.ndarray:
    blk = m.blocks[b]
    sign = blk.planes[0]
    shifts = plane_shifts(m.plane_mask)
    a = None
    for layer, n_in in enumerate(m.layer_inputs):
        w = m.layer_words(sign, layer)
        if layer == 0:  # input mode 1: one row segment per kept plane (docs/FORMAT.md)
            seg = w.reshape(len(w), -1, words(n_in)) if m.input_mode else w[:, None, :]
            s = sum((_dot(seg[:, k % seg.shape[1]], xbits[:, k, :], n_in) << sh) for k, sh in enumerate(shifts))
        else:
            s = _dot(w, a, n_in)
        if layer < m.n_layers - 1:
            bits = (s >= blk.thresholds[layer].astype(np.int64)) ^ blk.flips[layer]
            a = pack_bits(bits)
        else:
            return blk.scale.astype(np.int64) * s + blk.offset.astype(np.int64)
    raise AssertionError("unreachable")


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
    widest = max(s * words(i) for s, i in zip(m.sizes, m.layer_inputs, strict=True))
    step = max(1, _CHUNK_ELEMS // max(1, widest))
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
