"""The counter-based random numbers of the training step (docs/TRAINING.md): every word
is a pure function of (seed, counter, index), so numpy draws a whole step's words at
once and a device draws them one by one, in any order, with the same result."""

from __future__ import annotations

import numpy as np

U32 = np.uint32
PHI = 0x9E3779B9  # Weyl increment between the indices of one key


def lowbias32(x: np.ndarray | int) -> np.ndarray:
    """Wellons' lowbias32 integer hash, elementwise on uint32 (arithmetic mod 2^32)."""
    x = np.asarray(x, dtype=U32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> U32(16))
        x = x * U32(0x7FEB352D)
        x = x ^ (x >> U32(15))
        x = x * U32(0x846CA68B)
        x = x ^ (x >> U32(16))
    return x


def key(seed: int, counter: int) -> np.uint32:
    """The key of one step (counter = the model's step count) or one new block (counter =
    0xFFFFFFFF - its index): lowbias32(seed XOR lowbias32(counter))."""
    return U32(lowbias32(U32(seed & 0xFFFFFFFF) ^ lowbias32(U32(counter & 0xFFFFFFFF))))


def rand(k: np.uint32 | int, index: np.ndarray | int) -> np.ndarray:
    """Random words ``index`` (uint32, any shape) under key ``k``:
    lowbias32(k + index * 0x9E3779B9 mod 2^32)."""
    with np.errstate(over="ignore"):
        return lowbias32(U32(k) + np.asarray(index, dtype=U32) * U32(PHI))
