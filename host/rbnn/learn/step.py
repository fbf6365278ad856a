"""The numpy twin of the integer training step (docs/TRAINING.md, rule 1): the reference
that the C core (``rbnn_train_*``) and the MicroPython fallback must match byte for byte.

Everything here is integer arithmetic on int32/uint32 arrays (no float; the bounds that
keep every intermediate inside 32 bits are in docs/TRAINING.md), and every random bit
comes from :mod:`rbnn.learn.prng`, so a step is a pure function of the model's bytes and
the sample. A model is changed in place: its live block's planes (offset-binary
counters), thresholds and offsets, its block table and its training state.
"""

from __future__ import annotations

import numpy as np

from ..engines.twin import _block_scores
from ..errors import RbnnError
from ..format.bits import pad_mask, words
from ..format.model import FROZEN, LIVE, Block, Model, plane_shifts
from ..format.pack import layer_smax
from . import prng

U32 = np.uint32
I32 = np.int32
PROB_BITS = 16  # precision of a row's update probability
MAX_DECAY = 15  # the decay adds at most 15 to a layer's shift
NEW_BLOCK_KEY = 0xFFFFFFFF  # new block B draws under key(seed, NEW_BLOCK_KEY - B)


class StepError(RbnnError):
    """A training request the model refuses: ``code`` is E_FULL or E_LABEL
    (docs/FORMAT.md, Errors)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(f"{code}: {message}")


UNTRAINABLE = ("a model with conv layers or input mode 1 (format version 3) is not trained by the integer "
               "step: it has no live block and may not open one (docs/FORMAT.md, Training a version 3 model)")


def check_trainable(m: Model) -> None:
    """E_FULL for a version 3 model (:attr:`Model.trainable`), as every engine refuses it."""
    if not m.trainable:
        raise StepError("E_FULL", UNTRAINABLE)


# --- views of the arena ---------------------------------------------------------------------
def layer_view(m: Model, layer: int) -> np.ndarray:
    """All planes of one layer, a view of the arena: uint32 (n_planes, rows, words(in))."""
    offs = m.layer_word_offsets()
    return m.arena[:, offs[layer] : offs[layer + 1]].reshape(m.n_planes, m.sizes[layer], words(m.layer_inputs[layer]))


def counters(m: Model, layer: int, block: int) -> np.ndarray:
    """The b-bit counters of one layer of a block, int32 (rows, in) (for analysis)."""
    v = layer_view(m, layer)
    n_in = m.layer_inputs[layer]
    u = np.zeros((m.sizes[layer], n_in), I32)
    for p in m.blocks[block].planes:
        bits = np.unpackbits(np.ascontiguousarray(v[p], "<u4").view(np.uint8), axis=-1, bitorder="little",
                             count=n_in)  # fmt: skip
        u = (u << 1) | bits.astype(I32)
    return u


def _valid(n: int) -> np.ndarray:
    v = np.full(words(n), 0xFFFFFFFF, U32)
    v[-1] = pad_mask(n)
    return v


def _pack(bits: np.ndarray) -> np.ndarray:
    """bool (n,) -> uint32 (words(n),), padding 0."""
    n = bits.shape[-1]
    b = np.zeros(words(n) * 32, bool)
    b[:n] = bits
    return np.packbits(b, bitorder="little").view("<u4").astype(U32, copy=False)


def _dot(w: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """+-1 dot products of packed rows w (rows, W) with x (W,): int32 (rows,)."""
    return (n - 2 * np.bitwise_count(w ^ x).sum(axis=-1, dtype=I32)).astype(I32)


def counter_add(sub: np.ndarray, inc: np.ndarray, dec: np.ndarray) -> None:
    """In place on ``sub`` uint32 (b, ...) (``sub[0]`` the most significant plane): +1 on
    the bits of ``inc``, then -1 on the bits of ``dec``, bit-sliced with a ripple carry
    from the lowest plane, saturating at 0 and 2^b - 1."""
    c = inc.copy()
    for p in range(sub.shape[0] - 1, -1, -1):
        old = sub[p].copy()
        sub[p] = old ^ c
        c &= old
    sub |= c  # a carry out of the top: the counter was 2^b - 1, it stays
    c = dec.copy()
    for p in range(sub.shape[0] - 1, -1, -1):
        old = sub[p].copy()
        sub[p] = old ^ c
        c &= ~old
    sub &= ~c  # a borrow out of the top: the counter was 0, it stays


# --- forward ------------------------------------------------------------------------------
def frozen_scores(m: Model, xbits: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """The summed scores of the frozen blocks for many packed inputs (n, K, W): int32 (n, C).

    (The host precomputes these for a whole run; they change only when a block freezes.)
    """
    out = np.zeros((len(xbits), m.n_classes), np.int64)
    for b, blk in enumerate(m.blocks):
        if blk.state != FROZEN:
            continue
        for lo in range(0, len(xbits), chunk):
            out[lo : lo + chunk] += _block_scores(m, b, xbits[lo : lo + chunk])
    return out.astype(I32)


def block_scores(m: Model, b: int, xbits: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """One block's scores for many packed inputs (n, K, W): int32 (n, C)."""
    out = np.empty((len(xbits), m.n_classes), np.int64)
    for lo in range(0, len(xbits), chunk):
        out[lo : lo + chunk] = _block_scores(m, b, xbits[lo : lo + chunk])
    return out.astype(I32)


def _forward(m: Model, blk: Block, x: np.ndarray) -> tuple[list, list, np.ndarray]:
    """The live block on one packed input (K, W): per-layer sums s (int32), packed hidden
    bits (uint32), and its scores scale * s_out + offset (int32 (C,))."""
    shifts = plane_shifts(m.plane_mask)
    sign = blk.planes[0]
    ss, hs = [], []
    a = None
    for layer, n_in in enumerate(m.layer_inputs):
        w = layer_view(m, layer)[sign]
        if layer == 0:
            s = np.zeros(m.sizes[0], I32)
            for k, sh in enumerate(shifts):
                s += _dot(w, x[k], n_in) << I32(sh)  # |s| <= n_inputs * 255 < 2^24
        else:
            s = _dot(w, a, n_in)
        ss.append(s)
        if layer < m.n_layers - 1:
            a = _pack(s >= blk.thresholds[layer])  # a live block's flips are 0
            hs.append(a)
    return ss, hs, blk.scale * ss[-1] + blk.offset


# --- blocks ---------------------------------------------------------------------------------
def can_open(m: Model) -> bool:
    """Whether :func:`new_block` would succeed (docs/TRAINING.md, Opening a block)."""
    st = m.state()
    return m.live_index() is None and len(m.free_planes()) >= st.bits and len(m.blocks) < m.capacity


def new_block(m: Model) -> int:
    """Open the live block: ``bits`` lowest free planes, seeded counters; returns its index."""
    check_trainable(m)
    st = m.state()
    b = st.bits
    free = m.free_planes()
    if m.live_index() is not None:
        raise StepError("E_FULL", "a live block exists; freeze it before opening another")
    if len(free) < b or len(m.blocks) >= m.capacity:
        raise StepError("E_FULL", f"no room for a {b}-bit block: {len(free)} free planes, "
                                  f"{m.capacity - len(m.blocks)} empty block slots")  # fmt: skip
    planes = free[:b]
    idx = len(m.blocks)
    k = prng.key(st.seed, NEW_BLOCK_KEY - idx)
    pw = m.plane_words
    wi = np.arange(pw, dtype=U32)
    sign = prng.rand(k, wi)
    m.arena[planes[0]] = sign
    ib = min(st.init_bits, b - 1)
    for i, p in enumerate(planes[1:], start=1):
        m.arena[p] = prng.rand(k, U32(i * pw) + wi) if i >= b - ib else ~sign
    for layer, n_in in enumerate(m.layer_inputs):
        view = layer_view(m, layer)
        for p in planes:
            view[p][:, -1] &= U32(pad_mask(n_in))
    nh = m.n_layers - 1
    m.blocks.append(Block(
        state=LIVE, planes=list(planes),
        thresholds=[np.zeros(s, I32) for s in m.sizes[:nh]], flips=[np.zeros(s, bool) for s in m.sizes[:nh]],
        scale=np.full(m.n_classes, 1 << st.scale_shift, I32), offset=np.zeros(m.n_classes, I32),
    ))  # fmt: skip
    st.block_steps = 0
    st.grow_left = min(st.grow_left, m.capacity - len(m.blocks))  # a slot fewer to grow into
    return idx


def freeze(m: Model) -> None:
    """Freeze the live block: keep its sign plane and parameters, release and zero the rest."""
    i = m.live_index()
    if i is None:
        raise StepError("E_FULL", "no live block to freeze")
    blk = m.blocks[i]
    for p in blk.planes[1:]:
        m.arena[p] = 0
    blk.planes = blk.planes[:1]
    blk.state = FROZEN
    m.state().block_steps = 0


# --- the step -------------------------------------------------------------------------------
def step(m: Model, x: np.ndarray, label: int, frozen: np.ndarray | None = None) -> int:
    """One training step on one sample (docs/TRAINING.md, One step, 0..7).

    Parameters
    ----------
    m : Model
        Changed in place.
    x : ndarray of uint32, shape (K, words(n_inputs))
        The packed input, padding bits 0.
    label : int
    frozen : ndarray of int32, shape (n_classes,), optional
        The frozen blocks' summed scores for ``x`` (computed when not given; a host run
        passes precomputed ones).

    Returns
    -------
    int : the class predicted before the update.
    """
    check_trainable(m)  # before the label: a version 3 model has no step at all
    st = m.state()
    C = m.n_classes
    if not 0 <= int(label) < C:
        raise StepError("E_LABEL", f"label {label}: expected 0..{C - 1}")
    if m.live_index() is None:  # 0. the schedule opens the next block
        if st.grow_left == 0 or not can_open(m):
            raise StepError("E_FULL", "no live block, and none may open "
                                      f"(grow_left {st.grow_left}, {len(m.free_planes())} free planes, "
                                      f"bits {st.bits}, {m.capacity - len(m.blocks)} empty slots)")  # fmt: skip
        st.grow_left -= 1
        new_block(m)
        frozen = None  # the blocks changed
    li = m.live_index()
    blk = m.blocks[li]
    if frozen is None:
        frozen = frozen_scores(m, x[None])[0]
    ss, hs, score = _forward(m, blk, x)  # 1. forward
    z = frozen.astype(I32) + score  # every block within its budget: |z| < 2^31
    pred = int(np.argmax(z))
    k = prng.key(st.seed, st.steps)  # 2. counters
    n = st.block_steps
    st.steps = (st.steps + 1) & 0xFFFFFFFF
    st.block_steps = (st.block_steps + 1) & 0xFFFFFFFF
    st.hits += int(pred == label)

    zy = z[label]  # 3. hinge
    diff = zy.astype(U32) - z.astype(U32)  # z_y - z_c exactly when z_y > z_c (< 2^32)
    viol = (z >= zy) | (diff < U32(st.margin))
    viol[label] = False
    if viol.any():
        st.active += 1
        g = np.zeros(C, I32)
        if st.loss == 1:
            g[viol] = -1
            g[label] = int(viol.sum())
        else:  # the top violator, ties to the lowest index
            top = int(np.argmax(np.where(viol, z, np.iinfo(I32).min)))
            g[top] = -1
            g[label] = 1
        _update(m, blk, x, ss, hs, g, k, n)
    if st.grow_every and st.block_steps == st.grow_every:  # 7. schedule
        freeze(m)
    return pred


def _update(m: Model, blk: Block, x: np.ndarray, ss: list, hs: list, g: np.ndarray, k, n: int) -> None:
    """Steps 4-6: backward from the weights before the update, row updates, offsets."""
    st = m.state()
    L = m.n_layers
    sign = blk.planes[0]
    e = [None] * L
    e[L - 1] = g
    for layer in range(L - 1, 0, -1):  # 4. backward
        p = e[layer] if layer == L - 1 else np.sign(e[layer]).astype(I32)
        rows = np.flatnonzero(p)
        n_in = m.layer_inputs[layer]
        bits = np.unpackbits(np.ascontiguousarray(layer_view(m, layer)[sign, rows], "<u4").view(np.uint8),
                             axis=-1, bitorder="little", count=n_in)  # fmt: skip
        a = (p[rows, None] * (2 * bits.astype(I32) - 1)).sum(axis=0, dtype=I32)  # |a| < 2^16
        below = layer - 1
        gate = np.abs(ss[below] - blk.thresholds[below]) <= st.gate[below]
        e[below] = np.where(gate, a, 0).astype(I32)

    base = np.cumsum([0] + m.sizes[:-1])  # 5. row updates
    planes = np.asarray(blk.planes)
    for layer in range(L):
        rows = np.flatnonzero(e[layer])
        if rows.size == 0:
            continue
        ej = e[layer][rows]
        mag = np.abs(ej).astype(U32) if layer in (0, L - 1) else np.ones(rows.size, U32)
        q = st.lr[layer] + min(MAX_DECAY, n >> st.decay)
        if q <= PROB_BITS:  # min(mag << (16 - q), 2^16), never wrapping (|e| < 2^17)
            num = np.where(mag >= U32(1 << q), U32(1 << PROB_BITS), mag << U32(PROB_BITS - q))
        else:
            num = mag >> U32(q - PROB_BITS)
        r = prng.rand(k, U32(base[layer]) + rows.astype(U32))
        fire = (r >> U32(32 - PROB_BITS)) < num
        rows, ej = rows[fire], ej[fire]
        if rows.size == 0:
            continue
        n_in = m.layer_inputs[layer]
        W = words(n_in)
        if layer == 0:  # the highest kept input plane; only its 1 bits move
            xs = np.broadcast_to(x[0], (rows.size, W))
            xneg = np.zeros_like(xs)
        else:
            xs = np.broadcast_to(hs[layer - 1], (rows.size, W))
            xneg = ~xs & _valid(n_in)
        up = (ej > 0)[:, None]
        inc = np.where(up, xs, xneg)
        dec = np.where(up, xneg, xs)
        view = layer_view(m, layer)
        sub = view[planes[:, None], rows[None, :]]  # (b, rows, W)
        counter_add(sub, inc, dec)
        view[planes[:, None], rows[None, :]] = sub
        if layer < L - 1 and st.thr_shift[layer] >= 0:
            t = blk.thresholds[layer]
            lim = layer_smax(m, layer) + 1
            d = np.where(ej > 0, -(1 << st.thr_shift[layer]), 1 << st.thr_shift[layer]).astype(I32)
            t[rows] = np.clip(t[rows] + d, -lim, lim)

    if st.off_shift >= 0:  # 6. offsets
        h = m.half - 1
        blk.offset[:] = np.clip(blk.offset + (g << I32(st.off_shift)), -h, h)
