"""Models laid out for growth (docs/FORMAT.md, version 2): a host-trained block packed
into an arena of planes (``rbnn train --arena``), or an empty arena (``rbnn grow --new``)."""

from __future__ import annotations

import numpy as np

from ..format.constants import I32_MAX, MAX_BLOCKS, MAX_PLANES, MAX_SCORE_Q
from ..format.model import Model
from ..format.pack import max_scale_shift
from .defaults import defaults
from .run import GrowError


def capacity(n_planes: int) -> int:
    """Block slots of an arena of ``n_planes``: every block keeps at least one plane."""
    return min(MAX_BLOCKS, n_planes)


def _check_planes(n_planes: int) -> None:
    if not 1 <= n_planes <= MAX_PLANES:
        raise GrowError(f"--arena: expected 1..{MAX_PLANES} planes, found {n_planes}")


def into_arena(net, n_planes: int, meta: dict | None = None) -> Model:
    """The float network ``net`` (:class:`rbnn.train.net.FloatNet`) folded as block 0,
    frozen on plane 0 of an arena of ``n_planes``: its output folded to the block budget of
    the arena's capacity, ``score_q`` its exponent, a training state with the defaults of a
    run on new data (a growth run sets its own)."""
    _check_planes(n_planes)
    cap = capacity(n_planes)
    m = net.fold(meta, bound=I32_MAX // cap, q_max=MAX_SCORE_Q)
    q = m.meta["output_q"]
    if q < 0:
        raise GrowError(f"the output layer's scale does not fit the block budget of {cap} blocks (q = {q})")
    arena = np.zeros((n_planes, m.plane_words), np.uint32)
    arena[0] = m.arena[0]
    m.arena, m.max_blocks, m.score_q = arena, cap, q
    m.train = defaults(m, "domain")
    return m


def empty_arena(n_inputs: int, sizes: list[int], plane_mask: int, n_planes: int) -> Model:
    """An arena with no block yet (``rbnn grow --new``): every block, the first too, will be
    trained by the integer step. ``score_q`` is the largest live scale the budget allows."""
    _check_planes(n_planes)
    m = Model(n_inputs, plane_mask, list(sizes), np.zeros((n_planes, 0), np.uint32), [], max_blocks=capacity(n_planes))
    m.arena = np.zeros((n_planes, m.plane_words), np.uint32)
    m.score_q = max(0, min(MAX_SCORE_Q, max_scale_shift(m)))
    m.train = defaults(m, "new")
    return m
