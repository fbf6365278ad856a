"""A growth run (``rbnn grow``; docs/TRAINING.md, The growth run): the sequence of
samples, the schedule of blocks, and the run itself on the numpy twin or the C core.

The host and a device that streams the same samples compute the same bytes: the training
state set here (seed, hyper-parameters, ``grow_left``, ``grow_every``) makes every block
open and freeze at the same sample on both.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..engines import twin
from ..format import pack
from ..format.model import Model, pack_input
from . import step as S
from .defaults import GrowError, choose_kind, defaults

ENGINES = ("c", "twin")


@dataclass
class Plan:
    """The samples of a run, in the order the step sees them, and its schedule."""

    order: np.ndarray  # int64 indices into the data, epochs and shuffles applied
    blocks: int  # new blocks the schedule opens
    grow_every: int  # samples per block
    offset: int
    count: int  # samples per epoch
    epochs: int
    shuffle: bool

    @property
    def samples(self) -> int:
        return len(self.order)


def plan(n: int, offset: int, limit: int | None, epochs: int, shuffle: bool, seed: int, blocks: int) -> Plan:
    """The order of a run over data of ``n`` samples: ``offset`` .. ``offset + limit`` in
    file order, ``epochs`` times, each epoch permuted by ``default_rng(seed + epoch)``
    when ``shuffle``; ``blocks`` blocks of ``ceil(samples / blocks)`` samples each."""
    if not 0 <= offset < n:
        raise GrowError(f"--offset {offset}: the data has {n} samples (0..{n - 1})")
    count = n - offset if limit is None else limit
    if count < 1 or offset + count > n:
        raise GrowError(f"--limit {limit}: from --offset {offset} the data has {n - offset} samples")
    if epochs < 1:
        raise GrowError(f"--epochs: expected >= 1, found {epochs}")
    if blocks < 1:
        raise GrowError(f"--blocks: expected >= 1, found {blocks}")
    idx = np.arange(offset, offset + count, dtype=np.int64)
    parts = [np.random.default_rng(seed + e).permutation(idx) if shuffle else idx for e in range(epochs)]
    order = np.concatenate(parts)
    return Plan(order, blocks, math.ceil(len(order) / blocks), offset, count, epochs, shuffle)


def room_planes(m: Model) -> int:
    """Free planes once a live block is frozen."""
    live = m.live_index()
    return len(m.free_planes()) + (len(m.blocks[live].planes) - 1 if live is not None else 0)


def room(m: Model, bits: int) -> int:
    """How many new blocks of ``bits`` planes the arena can open one after the other, once
    a live block is frozen (each frozen block keeps its sign plane and releases the rest)."""
    return max(0, min(m.capacity - len(m.blocks), room_planes(m) - bits + 1))


def frozen_accuracy(m: Model, x: np.ndarray, y: np.ndarray) -> float | None:
    """Accuracy of the blocks in use on ``x`` (None without blocks): what chooses the kind."""
    if not m.blocks:
        return None
    pred = twin.predict(m, pack_input(x, m.plane_mask))
    return float(np.mean(pred == y))


def prepare(m: Model, p: Plan, seed: int, bits: int, kind: str, overrides: dict | None = None,
            probe: tuple[np.ndarray, np.ndarray] | None = None) -> str:  # fmt: skip
    """Set ``m``'s training state for the run: hyper-parameters (``kind``: new, domain,
    same or auto, which looks at the frozen accuracy on ``probe``), seed, counters kept,
    ``bits``, ``grow_left = p.blocks``, ``grow_every``. Returns the kind used."""
    if not m.trainable:
        raise GrowError(S.UNTRAINABLE)
    if m.live_index() is not None:
        S.freeze(m)  # a run starts its own blocks
    fits = room(m, bits)
    if fits == 0:
        raise GrowError(f"no room left: {len(m.free_planes())} free planes of {m.n_planes} "
                        f"(a block needs {bits}), {m.capacity - len(m.blocks)} empty block slots")  # fmt: skip
    if p.blocks > fits:
        raise GrowError(f"--blocks {p.blocks}: the arena holds {fits} more block(s) of {bits} bits "
                        f"({len(m.free_planes())} free planes, {m.capacity - len(m.blocks)} empty slots)")  # fmt: skip
    if kind == "auto":
        kind = choose_kind(None if not m.blocks else frozen_accuracy(m, *probe) if probe else 0.0)
    old = m.state()
    st = defaults(m, kind, bits, p.grow_every)
    for k, v in (overrides or {}).items():
        setattr(st, k, v)
    st.seed = seed & 0xFFFFFFFF
    st.steps, st.hits, st.active = old.steps, old.hits, old.active  # the model's history stays
    st.stream_id, st.stream_base = old.stream_id, old.stream_base
    st.grow_left, st.grow_every = p.blocks, p.grow_every
    m.train = st
    pack.to_bytes(m)  # the state must be one a reader accepts (margin, scale_shift, ...)
    return kind


def run_digest(x: np.ndarray, y: np.ndarray, offset: int, count: int, options: dict) -> int:
    """CRC-32 of what a run is made of, apart from the model: its samples (the rows and
    labels ``offset .. offset + count`` in file order; epochs and shuffles follow from
    the options and the seed) and the options as given (``options``: epochs, shuffle,
    seed, bits, blocks, kind, overrides, keep_live; None where the command chooses, since
    that choice is a function of the model, which :func:`stream_id` covers)."""
    lo, hi = offset, offset + count
    head = {"offset": offset, "count": count, **options}
    c = zlib.crc32(json.dumps(head, sort_keys=True).encode())
    c = zlib.crc32(np.ascontiguousarray(x[lo:hi], np.uint8).data, c)
    return zlib.crc32(np.ascontiguousarray(y[lo:hi], "<i8").data, c)


def stream_base_blocks(m: Model) -> int:
    """Blocks the model had when its stream began: those in use less those the stream's
    schedule has opened since (one every ``grow_every`` samples, from the first)."""
    st = m.state()
    applied = st.steps - st.stream_base
    opened = 0 if applied <= 0 or st.grow_every <= 0 else (applied - 1) // st.grow_every + 1
    return len(m.blocks) - opened


def stream_id(m: Model, run: int) -> int:
    """The ``stream_id`` of the run ``run`` (:func:`run_digest`) on ``m`` (docs/PROTOCOL.md,
    The training stream): a nonzero CRC-32 of the run and of what of the model a stream
    never changes, so it is computed alike from the prepared model at the start and from
    the model at any later point of the stream: the shape, the hyper-parameters, seed and
    schedule of the training state, ``stream_base``, and the blocks in use at the start
    (their sign planes, thresholds, flips, scales and offsets: frozen, only read). A
    host that finds its stream's id in a device's model resumes it."""
    st = m.state()
    n0 = stream_base_blocks(m)
    head = {"run": run, "inputs": m.n_inputs, "plane_mask": m.plane_mask, "sizes": list(m.sizes),
            "planes": m.n_planes, "capacity": m.capacity, "base": st.stream_base, "blocks": n0,
            **{k: getattr(st, k) for k in ("lr", "thr_shift", "gate", "scale_shift", "margin", "bits", "decay",
                                           "init_bits", "loss", "off_shift", "seed", "grow_every", "rule")}}  # fmt: skip
    c = zlib.crc32(json.dumps(head, sort_keys=True, default=int).encode())
    for b in m.blocks[: max(0, n0)]:
        c = zlib.crc32(np.ascontiguousarray(m.arena[b.planes[0]], "<u4").data, c)
        for a in (*b.thresholds, *b.flips, b.scale, b.offset):
            c = zlib.crc32(np.ascontiguousarray(a, "<i4").data, c)
    return c or 1  # 0 means "no stream" in the file


def stamp(m: Model, run: int) -> int:
    """Mark the prepared ``m`` as the start of the run ``run``: ``stream_base = steps`` and
    its ``stream_id``, as ``rbnn grow`` and ``rbnn stream`` both do (so both end in the
    same bytes). Returns the id."""
    st = m.state()
    st.stream_base = st.steps
    st.stream_id = 0
    st.stream_id = stream_id(m, run)
    return st.stream_id


@dataclass
class BlockRow:
    """What a run reports after each block."""

    block: int  # blocks in use
    samples: int  # samples seen by the run so far
    bits_per_weight: float
    kb: float  # the arena
    train_acc: float | None  # running accuracy of the block's own samples (before each update)
    test: dict = field(default_factory=dict)  # name -> accuracy
    seconds: float = 0.0


class _Twin:
    def __init__(self, m: Model, xb: np.ndarray):
        self.m, self.xb = m, xb

    def run(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One segment of the schedule: the first step may open the block; the frozen
        blocks' scores for the rest are computed at once (they change only between
        segments)."""
        m = self.m
        preds = np.empty(len(idx), np.int64)
        start = 0
        if m.live_index() is None and len(idx):
            preds[0] = S.step(m, self.xb[idx[0]], int(y[0]))
            start = 1
        frozen = S.frozen_scores(m, self.xb[idx[start:]])
        for i in range(start, len(idx)):
            preds[i] = S.step(m, self.xb[idx[i]], int(y[i]), frozen[i - start])
        return preds

    def freeze(self) -> None:
        S.freeze(self.m)

    def model(self) -> Model:
        return self.m


class _C:
    def __init__(self, m: Model, xb: np.ndarray):
        from ..engines.ccore import CTrainer

        self.t = CTrainer(pack.to_bytes(m))
        self.xb = xb

    def run(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.t.steps(self.xb[idx], np.asarray(y, np.uint32))

    def freeze(self) -> None:
        self.t.freeze()

    def model(self) -> Model:
        return pack.from_bytes(self.t.data())


def _accuracy(m: Model, tests: dict, engine: str) -> dict:
    out = {}
    for name, (xb, y) in tests.items():
        if engine == "c":
            from ..engines.ccore import CModel

            pred = np.argmax(CModel(pack.to_bytes(m)).scores(xb), axis=1)
        else:
            pred = twin.predict(m, xb)
        out[name] = float(np.mean(pred == y))
    return out


def grow(
    m: Model, x: np.ndarray, y: np.ndarray, p: Plan, engine: str = "c", tests: dict | None = None,
    keep_live: bool = False, on_block: Callable[[BlockRow], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Model, list[BlockRow]]:  # fmt: skip
    """Run the plan: block by block (segments of ``grow_every`` samples), reporting after
    each; the last block is frozen unless ``keep_live``.

    Parameters
    ----------
    m : Model whose training state :func:`prepare` set
    x : uint8 (n, n_inputs); y : labels (n,)
    p : Plan
    engine : "c" (the C core) or "twin" (numpy); the bytes they end in are identical
    tests : name -> (x uint8, y): accuracies reported after every block
    progress : called with the samples done so far

    Returns
    -------
    (the grown model, one BlockRow per block and one for the start)
    """
    if engine not in ENGINES:
        raise GrowError(f"engine: expected one of {', '.join(ENGINES)}, found {engine!r}")
    xb = pack_input(x, m.plane_mask)
    tb = {k: (pack_input(v[0], m.plane_mask), np.asarray(v[1])) for k, v in (tests or {}).items()}
    eng = _Twin(m, xb) if engine == "twin" else _C(m, xb)
    kb = m.arena.nbytes / 1024
    rows = [BlockRow(len(m.blocks), 0, m.bits_per_weight, kb, None, _accuracy(m, tb, engine))]
    if on_block:
        on_block(rows[-1])
    done = 0
    while done < p.samples:
        t0 = time.perf_counter()
        seg = p.order[done : done + p.grow_every]
        preds = eng.run(seg, y[seg])
        done += len(seg)
        cur = eng.model()
        last = done >= p.samples
        if last and cur.live_index() is not None and not keep_live:
            eng.freeze()
            cur = eng.model()
        rows.append(BlockRow(len(cur.blocks), done, cur.bits_per_weight, kb,
                             float(np.mean(preds == y[seg])), _accuracy(cur, tb, engine),
                             time.perf_counter() - t0))  # fmt: skip
        if on_block:
            on_block(rows[-1])
        if progress:
            progress(done)
    return eng.model(), rows
