"""Random valid models for tests and benchmarks (developer-only: not in the package)."""

from __future__ import annotations

import numpy as np

from rbnn.format.bits import pack_bits
from rbnn.format.model import FROZEN, Block, Model, plane_shifts


def random_model(
    rng: np.random.Generator,
    n_inputs: int | None = None,
    sizes: list[int] | None = None,
    plane_mask: int | None = None,
    n_blocks: int = 1,
) -> Model:
    """A random valid model, for tests: random shapes, weights, thresholds and flips.

    Thresholds are drawn around the middle of each layer's range so outputs vary.
    """
    if n_inputs is None:
        n_inputs = int(rng.integers(1, 300))
    if sizes is None:
        n_hidden = int(rng.integers(0, 4))
        sizes = [int(rng.integers(1, 100)) for _ in range(n_hidden)] + [int(rng.integers(1, 12))]
    if plane_mask is None:
        k = int(rng.integers(1, 5))
        plane_mask = int(np.bitwise_or.reduce([1 << int(n) for n in rng.choice(8, k, replace=False)]))
    n_planes = n_blocks
    inputs = [n_inputs] + sizes[:-1]
    m = Model(n_inputs, plane_mask, list(sizes), np.zeros((n_planes, 0), np.uint32), [])
    arena = np.zeros((n_planes, m.plane_words), np.uint32)
    m.arena = arena
    shifts_sum = sum(1 << s for s in plane_shifts(plane_mask))
    for b in range(n_blocks):
        rows = [pack_bits(rng.random((o, i)) < 0.5).reshape(-1) for i, o in zip(inputs, sizes, strict=True)]
        arena[b] = np.concatenate(rows)
        thr, fl = [], []
        for lay, (n_in, n_out) in enumerate(zip(inputs[:-1], sizes[:-1], strict=True)):
            smax = n_in * (shifts_sum if lay == 0 else 1)
            spread = max(1, int(np.sqrt(smax)))
            thr.append(rng.integers(-spread, spread + 1, n_out).astype(np.int32))
            fl.append(rng.random(n_out) < 0.3)
        n_out = sizes[-1]
        scale = rng.integers(-1000, 1000, n_out).astype(np.int32)
        offset = rng.integers(-100000, 100000, n_out).astype(np.int32)
        m.blocks.append(Block(FROZEN, [b], thr, fl, scale, offset))
    return m
