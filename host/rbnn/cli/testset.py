"""The test set of `rbnn eval` and `rbnn infer`: only the t10k files are read, and the
data must fit the model (inputs and classes) before any sample is scored."""

from __future__ import annotations

import numpy as np

from .. import data
from ..errors import DataError


def load_test_set(spec: str) -> data.Dataset:
    """The test part of ``--data`` (``"mnist"``, a folder of IDX files: no training files
    read; or a plain ``.npz`` file: all its samples)."""
    return data.load(spec, parts=("t10k",))


def fit_test_set(ds: data.Dataset, limit: int | None, n_inputs: int, n_classes: int,
                 model: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(x uint8 (n, features), y uint8 (n,)): the first ``limit`` test images (all: None).

    Parameters
    ----------
    ds : the data set (:func:`load_test_set`)
    limit : only the first N test images, or None for all
    n_inputs, n_classes : the model's
    model : how the model is named in errors, e.g. ``"m.rbnn: model"``

    A model whose class count is not the data set's is refused: it would be scored on
    labels it cannot output, or output classes no label has (the loader has already
    refused labels outside ``0..ds.n_classes - 1``). A plain file that does not state
    its class count only needs labels below the model's.
    """
    x, y = ds.x_test[:limit], ds.y_test[:limit]
    if x.shape[1] != n_inputs:
        raise DataError(f"{model} has {n_inputs} inputs, data set has {x.shape[1]}")
    if ds.classes_declared and n_classes != ds.n_classes:
        raise DataError(f"{model} has {n_classes} classes, data set has {ds.n_classes} (labels 0..{ds.n_classes - 1})")
    if not ds.classes_declared and ds.n_classes > n_classes:
        raise DataError(f"{model} has {n_classes} classes, data set has labels up to {ds.n_classes - 1}")
    return x, y
