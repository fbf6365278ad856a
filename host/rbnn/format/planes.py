"""Removing a kept input bit-plane from an input mode 1 model: the exact rule of
docs/FORMAT.md (Version 3, Semantics, input mode 1).

Drop the plane's segment from every row of layer 0; if the lowest kept plane ``low``
rises by ``d``, every remaining plane's weight ``2^(n - low)`` halves ``d`` times, so the
new integer ``s'`` is ``s_old_units / 2^d`` and ``(s' * 2^d >= t) == (s' >= ceil(t / 2^d))``:
hidden thresholds become ``ceil(t / 2^d)`` (flips unchanged); an output first layer keeps
its scores' units with ``scale * 2^d``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .model import FROZEN, INPUT_PER_PLANE, Model, kept_planes


def droppable(m: Model) -> None:
    """ModelError unless planes can be removed from ``m``: input mode 1, one frozen block,
    at least two kept planes (a model reads at least one)."""
    if m.input_mode != INPUT_PER_PLANE:
        raise ModelError("planes can be removed only from an input mode 1 model (per-plane first-layer weights: "
                         "rbnn train --per-plane); this one shares its first-layer weights across planes")  # fmt: skip
    if len(m.blocks) != 1 or m.blocks[0].state != FROZEN:
        raise ModelError(f"planes can be removed from a model of one frozen block; this one has {len(m.blocks)}")
    if m.k_planes < 2:
        raise ModelError(f"the model keeps one bit-plane (mask {m.plane_mask:#04x}): removing it would leave no input")


def drop_plane(m: Model, plane: int) -> Model:
    """``m`` without input bit-plane ``plane`` (0..7, a kept one), by the exact rule."""
    droppable(m)
    kept = kept_planes(m.plane_mask)
    if plane not in kept:
        raise ModelError(f"plane {plane} is not kept by the model (mask {m.plane_mask:#04x}: planes "
                         f"{', '.join(map(str, kept))})")  # fmt: skip
    mask = m.plane_mask & ~(1 << plane)
    d = kept_planes(mask)[-1] - kept[-1]  # how far `low` rises (0 unless the lowest plane goes)
    blk = m.blocks[0]
    n_in = m.layer_inputs[0]
    weights = [m.sign_weights(0, lay) for lay in range(m.n_layers)]
    w0 = weights[0].reshape(m.sizes[0], len(kept), n_in)
    weights[0] = np.delete(w0, kept.index(plane), axis=1).reshape(m.sizes[0], -1)
    thresholds = [t.astype(np.int64) for t in blk.thresholds]
    scale = blk.scale.astype(np.int64)
    if d and m.n_layers > 1:
        thresholds[0] = -((-thresholds[0]) >> d)  # ceil(t / 2^d), negative t included
    elif d:
        scale = scale << d  # the output's units stay those of the old s (FORMAT.md)
    if np.any(np.abs(scale) > 2**31 - 1):
        raise ModelError(f"removing plane {plane}: the output scale {int(np.max(np.abs(scale)))} leaves int32")
    out = Model.plain(m.n_inputs, mask, weights, thresholds, list(blk.flips), scale, blk.offset, dict(m.meta),
                      layers=m.layers, in_shape=m.in_shape, input_mode=INPUT_PER_PLANE)  # fmt: skip
    out.score_q = m.score_q
    return out
