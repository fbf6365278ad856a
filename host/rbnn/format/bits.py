"""Bit vectors as little-endian 32-bit words (docs/FORMAT.md, Conventions)."""

from __future__ import annotations

import numpy as np

WORD_BITS = 32


def words(n: int) -> int:
    """Number of 32-bit words holding ``n`` bits."""
    return (n + WORD_BITS - 1) // WORD_BITS


def pack_bits(b: np.ndarray) -> np.ndarray:
    """Pack the last axis of a boolean array into words.

    Parameters
    ----------
    b : array_like of bool, shape (..., n)

    Returns
    -------
    ndarray of uint32, shape (..., words(n))
        Bit ``i`` of word ``k`` is element ``32*k + i``; padding bits are 0.
    """
    b = np.asarray(b, dtype=bool)
    n = b.shape[-1]
    pad = words(n) * WORD_BITS - n
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    by = np.packbits(b, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u4").astype(np.uint32, copy=False)


def unpack_bits(w: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint32 (..., words(n)) -> bool (..., n)."""
    w = np.ascontiguousarray(np.asarray(w, dtype="<u4"))
    by = w.view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little", count=n).astype(bool)


def pad_mask(n: int) -> int:
    """Mask of the valid bits of the last word of an ``n``-bit vector."""
    r = n % WORD_BITS
    return 0xFFFFFFFF if r == 0 else (1 << r) - 1


def popcount(x: np.ndarray) -> np.ndarray:
    """Bits set in each element of an unsigned integer array."""
    return np.bitwise_count(x)
