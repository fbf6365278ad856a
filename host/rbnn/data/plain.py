"""The plain data format: one ``.npz`` file of samples and labels, for a user's own
recordings (README, Data).

Arrays (``numpy.savez``; no pickled objects are read):

- ``x``: uint8, ``(n, n_inputs)`` features, or ``(n, h, w)`` images (flattened row by
  row; ``h, w`` is then the image shape that augmentation uses);
- ``y``: integer labels ``(n,)``, ``0 .. n_classes - 1``;
- ``n_classes`` (optional): a scalar; without it the data set has ``max(y) + 1``
  classes and only says that no label reaches a model's class count.

Every command uses all samples of the file: as its test set (``eval``, ``infer``) or
as its training samples (``train``, ``grow``, ``stream``, where ``--offset`` and
``--limit`` select a range).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import npz_arrays, write_atomic

MAX_FEATURES = 65535  # a model's n_inputs (docs/FORMAT.md)


def is_plain(spec: str | os.PathLike) -> bool:
    """Whether a ``--data`` value names a plain ``.npz`` file (by its suffix)."""
    return str(spec).lower().endswith(".npz")


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None, int, bool]:
    """(x uint8 (n, features), y uint8 (n,), image shape or None, n_classes, declared).

    ``declared`` is True when the file states ``n_classes``. Every problem is a
    DataError naming the file and the array.
    """
    path = Path(path)
    arrays = npz_arrays(path, DataError)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: no array {key!r} (found {', '.join(sorted(arrays)) or 'none'}); "
                            "expected x (uint8 samples) and y (integer labels)")  # fmt: skip
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8:
        hint = " (scale them to 0..255 and store as uint8)" if x.dtype.kind in "fiu" else ""
        raise DataError(f"{path}: x: expected uint8 features, found {x.dtype}{hint}")
    if x.ndim not in (2, 3) or x.shape[0] == 0:
        raise DataError(f"{path}: x: expected shape (n, features) or (n, h, w) with n >= 1, found {x.shape}")
    shape = (int(x.shape[1]), int(x.shape[2])) if x.ndim == 3 else None
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    if not 1 <= x.shape[1] <= MAX_FEATURES:
        raise DataError(f"{path}: x: expected 1..{MAX_FEATURES} features per sample, found {x.shape[1]}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"{path}: y: expected integer labels of shape (n,), found {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{path}: y: expected {len(x)} labels (one per sample of x), found {len(y)}")
    if int(y.min()) < 0:
        raise DataError(f"{path}: y: labels must be >= 0, found {int(y.min())}")
    top = int(y.max())
    if "n_classes" in arrays:
        nc = arrays["n_classes"]
        if nc.shape != () or nc.dtype.kind not in "iu" or not 1 <= int(nc) <= 65535:
            raise DataError(f"{path}: n_classes: expected one integer 1..65535, found {nc!r}")
        n_classes, declared = int(nc), True
        if top >= n_classes:
            raise DataError(f"{path}: y: expected labels 0..{n_classes - 1} (n_classes), found {top}")
    else:
        n_classes, declared = top + 1, False
    if n_classes > 65535:
        raise DataError(f"{path}: y: expected labels below 65535, found {top}")
    return x, y.astype(np.uint16 if n_classes > 256 else np.uint8), shape, n_classes, declared


def write_npz(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> None:
    """Write samples in the plain format, atomically.

    Parameters
    ----------
    x : uint8 array, shape (n, features) or (n, h, w)
    y : integer array, shape (n,)
    n_classes : int, optional
        Stored so a file that lacks some classes still says how many there are.
    """
    arrays = {"x": np.asarray(x, np.uint8), "y": np.asarray(y)}
    if n_classes is not None:
        arrays["n_classes"] = np.asarray(n_classes, np.int64)
    write_atomic(path, lambda f: np.savez(f, **arrays))
