"""The float state of a trained network beside its model file (``m.float.npz``).

A folded ``.rbnn`` file keeps only signs and integer thresholds: fine-tuning it (``rbnn
prune``) needs the latent weights and BatchNorm parameters it was folded from. ``rbnn
train --per-plane`` writes them here, with the training options and the indices of the
validation split, so that ``rbnn sensitivity`` and ``rbnn prune`` score on the very
samples the training held out. Plain arrays only (``numpy.savez``, read with
``allow_pickle=False``); the options are one JSON string.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..errors import RbnnError
from ..files import npz_arrays
from .net import FloatNet

KIND = "rbnn-float-state-1"
_PER_LAYER = ("weights", "gamma", "beta", "mean", "var")


class StateError(RbnnError, ValueError):
    """A float state file that cannot be used."""


@dataclass
class FloatState:
    """A float network, the options it was trained with, and its validation split."""

    net: FloatNet
    config: dict = field(default_factory=dict)  # rbnn.train.config_dict of the run
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # into the training samples
    n_train: int = 0  # training samples the split was drawn from (after --limit)


def save_state(f: str | os.PathLike | BinaryIO, st: FloatState) -> None:
    """Write ``st`` as an ``.npz`` (a path or a binary file open for writing)."""
    net = st.net
    arrays = {"kind": np.array(KIND), "config": np.array(json.dumps(st.config)),
              "head": np.array([net.n_inputs, net.plane_mask, net.input_mode, len(net.weights), st.n_train], np.int64),
              "eps": np.array(net.eps, np.float64), "val_idx": np.asarray(st.val_idx, np.int64)}  # fmt: skip
    for name in _PER_LAYER:
        for i, a in enumerate(getattr(net, name)):
            arrays[f"{name}{i}"] = np.asarray(a, np.float32)
    np.savez(f, **arrays)


def load_state(path: str | os.PathLike) -> FloatState:
    """Read a float state file; StateError naming the file and what is wrong."""
    arrays = npz_arrays(path, StateError, "float state .npz")
    if "kind" not in arrays or str(arrays["kind"]) != KIND:
        raise StateError(f"{path}: not an rbnn float state (written by rbnn train --per-plane or rbnn prune)")
    try:
        n_inputs, mask, mode, n_layers, n_train = (int(v) for v in arrays["head"])
        layers = {name: [arrays[f"{name}{i}"] for i in range(n_layers)] for name in _PER_LAYER}
        config = json.loads(str(arrays["config"]))
        eps = float(arrays["eps"])
        val_idx = arrays["val_idx"].astype(np.int64)
    except (KeyError, ValueError, TypeError) as e:
        raise StateError(f"{path}: a float state with missing or bad arrays ({e})") from None
    net = FloatNet(n_inputs, mask, *(layers[n] for n in _PER_LAYER), eps, mode)
    return FloatState(net, config, val_idx, n_train)
