"""Random valid models for tests and benchmarks (developer-only: not in the package)."""

from __future__ import annotations

import numpy as np

from rbnn.format.bits import pack_bits
from rbnn.format.model import FROZEN, LIVE, Block, Model, plane_shifts


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


def bound_model(n_blocks: int, n_in: int = 5000, version: int = 2) -> Model:
    """One layer of all +1 weights, 8 input planes, and scale/offset that put each block
    at the score bound of docs/FORMAT.md (E_RANGE), so that the file is valid and one
    more unit of any offset is not: version 2, every block's bound is the block budget
    floor((2^31 - 1) / n_blocks) (``max_blocks = n_blocks``); version 1 (``m.version``
    1: write it with support.v1file), the bounds sum to exactly 2^31 - 1. Inputs of all
    255 (or 0) reach the bound."""
    cls = 3
    smax = n_in * 255
    lim = 2**31 - 1
    per = [lim // n_blocks + (1 if version == 1 and b < lim % n_blocks else 0) for b in range(n_blocks)]
    weights = [np.ones((cls, n_in), bool)]
    m = Model.plain(n_in, 0xFF, weights, [], [], np.zeros(cls, np.int32), np.zeros(cls, np.int32))
    blocks = []
    for b in range(n_blocks):
        s = per[b] // smax
        o = per[b] - s * smax
        blocks.append(Block(FROZEN, [b], [], [], np.array([s, -s, 0], np.int32), np.array([o, -o, -per[b]], np.int32)))
    m.arena = np.repeat(m.arena, n_blocks, axis=0)
    m.blocks = blocks
    m.version = version
    return m


def tie_model(rng: np.random.Generator, offsets: list[int], n_inputs: int = 50) -> Model:
    """Scores equal to ``offsets`` for every input (scale 0): ties between classes that
    argmax must break towards the lowest index."""
    m = random_model(rng, n_inputs=n_inputs, sizes=[12, len(offsets)], plane_mask=0x80)
    m.blocks[0].scale = np.zeros(len(offsets), np.int32)
    m.blocks[0].offset = np.asarray(offsets, np.int32)
    return m


def saturated_model(n_inputs: int, sizes: list[int], plane_mask: int = 0x80) -> Model:
    """Every weight +1 and every threshold at the bottom: an all-zero input makes every
    popcount of the first layer n_inputs (and of a hidden layer its width), the largest
    counts a popcount kernel must carry without overflow."""
    weights = [np.ones((o, i), bool) for i, o in zip([n_inputs] + sizes[:-1], sizes, strict=True)]
    thr = [np.full(s, -(2**30), np.int32) for s in sizes[:-1]]  # every hidden unit +1
    flips = [np.zeros(s, bool) for s in sizes[:-1]]
    k = sizes[-1]
    return Model.plain(n_inputs, plane_mask, weights, thr, flips, np.arange(1, k + 1, dtype=np.int32),
                       np.zeros(k, np.int32))  # fmt: skip


def grown_model(
    rng: np.random.Generator,
    n_inputs: int,
    sizes: list[int],
    plane_mask: int,
    n_blocks: int,
    n_planes: int,
    max_blocks: int,
    live_bits: int = 0,
) -> Model:
    """A version 2 model as a device grows it: ``n_blocks`` blocks in ``max_blocks`` slots
    over ``n_planes`` planes (random ones owned, the rest free and random), the last block
    live on ``live_bits`` planes (0: all frozen; its flips 0), output scale/offset within
    the block budget, a random ``score_q`` and a random valid training state."""
    from rbnn.format.pack import layer_smax, max_scale_shift

    src = random_model(rng, n_inputs=n_inputs, sizes=sizes, plane_mask=plane_mask, n_blocks=max(1, n_planes))
    m = Model(n_inputs, plane_mask, list(sizes), src.arena[rng.permutation(n_planes)], [], max_blocks=max_blocks,
              score_q=int(rng.integers(0, 31)))  # fmt: skip
    owned = [int(p) for p in rng.permutation(n_planes)]
    smax = m.output_smax()
    lim_scale = max(0, m.half // 2 // smax)
    for b in range(n_blocks):
        live = live_bits and b == n_blocks - 1
        planes, owned = owned[: live_bits if live else 1], owned[live_bits if live else 1 :]
        blk = src.blocks[b]
        scale = np.clip(blk.scale, -lim_scale, lim_scale).astype(np.int32)
        offset = np.clip(blk.offset, -(m.half // 2), m.half // 2).astype(np.int32)
        flips = [np.zeros_like(f) for f in blk.flips] if live else blk.flips
        m.blocks.append(Block(LIVE if live else FROZEN, planes, blk.thresholds, flips, scale, offset))
    st = m.state()
    u32 = lambda hi=2**32 - 1: int(rng.integers(0, hi + 1))  # noqa: E731
    st.seed, st.steps, st.grow_every, st.stream_id = u32(), u32(), u32(), u32()
    st.block_steps = u32(st.steps) if live_bits and n_blocks else 0
    st.hits, st.active, st.stream_base = u32(st.steps), u32(st.steps), u32(st.steps)
    st.margin = int(rng.integers(1, m.budget + 1))
    st.bits = int(rng.integers(1, 17))
    st.grow_left = int(rng.integers(0, max_blocks - n_blocks + 1))
    st.scale_shift = int(rng.integers(0, max_scale_shift(m) + 1))
    st.decay, st.init_bits, st.loss = int(rng.integers(0, 32)), int(rng.integers(0, 16)), int(rng.integers(0, 2))
    st.off_shift = int(rng.integers(-1, 24))
    st.lr = [int(v) for v in rng.integers(0, 32, len(sizes))]
    st.thr_shift = [int(v) for v in rng.integers(-1, 25, len(sizes) - 1)]
    st.gate = [int(rng.integers(0, layer_smax(m, i) + 1)) for i in range(len(sizes) - 1)]
    return m


def trainable_model(
    rng: np.random.Generator,
    n_inputs: int | None = None,
    sizes: list[int] | None = None,
    plane_mask: int | None = None,
    n_frozen: int | None = None,
    bits: int | None = None,
    live: bool = True,
    spare_slots: int | None = None,
    spare_planes: int | None = None,
    **train: int | list[int],
) -> Model:
    """A random valid version 2 model ready for the training step (docs/TRAINING.md):
    ``n_frozen`` frozen blocks (0: an empty arena) on planes in random order, free planes
    of random bits (padding 0), a live block opened by :func:`rbnn.learn.step.new_block`
    when ``live``, and a random training state; ``train`` overrides its fields.

    Shapes are random when not given: 1-3 weight layers of widths that are mostly not
    multiples of 32, 1-4 input planes, 0-8 frozen blocks, 2-16 bits. The frozen blocks'
    scales and offsets are drawn within the block budget near the live block's scale
    (2^scale_shift) so that steps with and without a hinge violation both happen; the
    arena has ``spare_planes`` free planes beyond those the open block takes (default:
    enough for one or two more blocks, sometimes a few short) and the block table
    ``spare_slots`` empty slots after it.
    """
    from rbnn.format.pack import layer_smax, max_scale_shift
    from rbnn.format.trainstate import TrainState
    from rbnn.learn import step

    if sizes is None:
        sizes = [int(rng.integers(1, 80)) for _ in range(int(rng.integers(0, 3)))] + [int(rng.integers(2, 12))]
    if n_inputs is None:
        n_inputs = int(rng.integers(1, 200))
    if n_frozen is None:
        n_frozen = int(rng.integers(0, 9))
    if bits is None:
        bits = int(rng.integers(2, 17))
    if spare_slots is None:
        spare_slots = int(rng.integers(0, 4))
    if spare_planes is None:
        spare_planes = int(rng.integers(0, 2 * bits + 2))
    base = random_model(rng, n_inputs=n_inputs, sizes=sizes, plane_mask=plane_mask, n_blocks=max(1, n_frozen))
    n_planes = n_frozen + (bits if live else 0) + spare_planes
    if n_planes == 0:
        n_planes = 1
    m = Model(base.n_inputs, base.plane_mask, list(sizes), np.zeros((n_planes, base.plane_words), np.uint32), [])
    m.max_blocks = max(1, n_frozen + int(live) + spare_slots)
    m.score_q = int(rng.integers(0, 31))
    # free planes: random bits, row padding 0 (docs/FORMAT.md); frozen ones on random planes
    m.arena[:] = rng.integers(0, 2**32, m.arena.shape, dtype=np.uint32)
    offs = m.layer_word_offsets()
    for layer, n_in in enumerate(m.layer_inputs):
        view = m.arena[:, offs[layer] : offs[layer + 1]].reshape(n_planes, m.sizes[layer], -1)
        view[:, :, -1] &= np.uint32((1 << (n_in % 32)) - 1 if n_in % 32 else 0xFFFFFFFF)
    where = rng.permutation(n_planes)[:n_frozen]
    smax = m.output_smax()
    st = TrainState(lr=[0] * m.n_layers, thr_shift=[0] * (m.n_layers - 1), gate=[0] * (m.n_layers - 1))
    m.train = st
    sigma = int(rng.integers(0, max_scale_shift(m) + 1))
    for b in range(n_frozen):
        blk = base.blocks[b]
        m.arena[where[b]] = base.arena[b]
        s_lim = max(0, min(m.budget // (2 * smax), 1 << (sigma + 2)))
        scale = rng.integers(-s_lim, s_lim + 1, m.n_classes)
        o_lim = np.minimum(m.budget - np.abs(scale) * smax, (1 << sigma) * smax)
        offset = rng.integers(-o_lim, o_lim + 1)
        m.blocks.append(Block(FROZEN, [int(where[b])], blk.thresholds, blk.flips,
                              scale.astype(np.int32), offset.astype(np.int32)))  # fmt: skip
    nh = m.n_layers - 1
    st.seed = int(rng.integers(0, 2**32))
    st.bits = bits
    st.scale_shift = sigma
    st.lr = [int(v) for v in rng.choice([0, 1, 2, 3, 4, 6, 9, 16, 31], m.n_layers)]
    st.thr_shift = [int(v) for v in rng.choice([-1, 0, 1, 3, 8, 24], nh)]
    st.gate = [int(rng.choice([0, max(1, int(np.sqrt(layer_smax(m, i)))), layer_smax(m, i)])) for i in range(nh)]
    st.margin = int(rng.choice([1, (1 << sigma) * max(1, smax // 4), m.budget]))
    st.decay = int(rng.choice([0, 1, 3, 8, 31]))
    st.init_bits = int(rng.integers(0, 16))
    st.loss = int(rng.integers(0, 2))
    st.off_shift = int(rng.choice([-1, 0, min(sigma, 23), 23]))
    st.steps = int(rng.integers(0, 2**31))
    st.hits = int(rng.integers(0, st.steps + 1))
    st.active = int(rng.integers(0, st.steps + 1))
    st.stream_id = int(rng.integers(0, 2**32))
    st.stream_base = int(rng.integers(0, st.steps + 1))
    st.grow_every = int(rng.choice([0, 0, int(rng.integers(1, 12))]))
    for name, value in train.items():
        if not hasattr(st, name):
            raise AttributeError(f"TrainState has no field {name!r}")
        setattr(st, name, value)
    if live:
        step.new_block(m)
        cap = st.steps if not st.grow_every and rng.random() < 0.3 else min(st.steps, 4 * max(1, st.grow_every))
        st.block_steps = int(train.get("block_steps", rng.integers(0, cap + 1)))  # large: the decay's cap
        if st.grow_every and st.block_steps >= st.grow_every:
            st.block_steps = int(rng.integers(0, st.grow_every))
    if "grow_left" not in train:
        st.grow_left = int(rng.integers(0, m.capacity - len(m.blocks) + 1))
    return m


def host_like_model(rng: np.random.Generator, n_planes: int = 16, bits: int = 8, margin: int | None = None) -> Model:
    """784-64-64-10 on the MSB input plane in an arena of ``n_planes``, as a growth run on
    a device sees it: one frozen (random) block, a live ``bits``-bit block, the rest of
    the planes free, the hyper-parameters of rbnn.learn.defaults ("domain"); ``margin``
    (default: the block budget) makes every step a violation, so every step updates
    (the slowest case)."""
    from rbnn.learn.defaults import defaults

    m = trainable_model(rng, n_inputs=784, sizes=[64, 64, 10], plane_mask=0x80, n_frozen=1, bits=bits,
                        spare_planes=n_planes - 1 - bits, spare_slots=n_planes - 2, grow_every=0,
                        block_steps=0)  # fmt: skip
    st = m.state()
    d = defaults(m, "domain", bits)
    for f in ("lr", "thr_shift", "gate", "decay", "init_bits", "loss", "off_shift"):
        setattr(st, f, getattr(d, f))
    st.margin = m.budget if margin is None else margin
    return m
