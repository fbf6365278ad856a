"""The C core's training step (cmodules/rbnn/rbnn_train.c) against the numpy twin
(rbnn.learn.step): the same operations on the same file end in the same bytes.

Through ctypes (rbnn.engines.ccore.CTrainer) for volume, and through the `train` command
of tests/c/rbnn_harness.c built with ASan and UBSan: the model, every input and the
scratch are malloc'ed at exactly their size there, and the harness checks that every
refused operation left the file and the model struct as they were.
"""

from __future__ import annotations

import copy
import ctypes
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from rbnn.engines import ccore, twin
from rbnn.errors import CODES, NAMES, FormatError, ModelError
from rbnn.format import pack
from rbnn.format.model import FROZEN, LIVE, pack_input
from rbnn.format.trainstate import OFFSETS
from rbnn.learn import prng
from rbnn.learn import step as S
from support import charness
from support.randmodel import random_model, trainable_model
from support.v1file import to_bytes_v1

OP_STEP, OP_NEW, OP_FREEZE, OP_BATCH, OP_STEP_NO_Z = range(5)


# --- operations, run three ways ----------------------------------------------------------
def random_ops(rng: np.random.Generator, m, n: int, bad_labels: float = 0.03) -> list[tuple]:
    """About n samples as single steps (some without z), batches, and now and then a new
    block or a freeze (refused or not); a few labels out of range."""
    ops = []
    while sum(len(o[2]) if o[0] == OP_BATCH else o[0] in (OP_STEP, OP_STEP_NO_Z) for o in ops) < n:
        kind = rng.choice([OP_STEP, OP_STEP, OP_STEP_NO_Z, OP_BATCH, OP_NEW, OP_FREEZE], p=[.35, .2, .1, .25, .05, .05])
        k = int(rng.integers(2, 9)) if kind == OP_BATCH else 1
        x = pack_input(rng.integers(0, 256, (k, m.n_inputs), dtype=np.uint8), m.plane_mask)
        y = rng.integers(0, m.n_classes, k)
        bad = rng.random(k) < bad_labels
        y[bad] = m.n_classes + rng.integers(0, 3, int(bad.sum()))
        if kind == OP_BATCH:
            ops.append((OP_BATCH, x, y))
        elif kind in (OP_STEP, OP_STEP_NO_Z):
            ops.append((int(kind), x[0], int(y[0])))
        else:
            ops.append((int(kind),))
    return ops


def leave_room_for(m, ops: list[tuple]) -> bytes:
    """The file of ``m`` with grow_left lowered so that the explicit new blocks of ``ops``
    keep it within the empty slots: rbnn.learn.step.new_block (and rbnn_new_block as its
    twin) opens a block without decrementing grow_left, so grow_left = empty slots and a
    new block by hand leave a file the readers refuse (TRAIN_GROW_LEFT)."""
    n_new = sum(op[0] == OP_NEW for op in ops)
    st = m.state()
    st.grow_left = max(0, min(st.grow_left, m.capacity - len(m.blocks) - n_new))
    return pack.to_bytes(m)


def _twin_z(m, x: np.ndarray) -> np.ndarray | None:
    """The summed scores the step sees (its schedule may open a block first)."""
    if m.live_index() is None:
        if not (m.state().grow_left and S.can_open(m)):
            return None
        m = copy.deepcopy(m)
        S.new_block(m)
    return twin.scores(m, x[None])[0]


def run_twin(data: bytes, ops: list[tuple]) -> tuple[bytes, list]:
    """The twin on the operations: (file bytes, one outcome per operation)."""
    m = pack.from_bytes(data)
    out = []
    for op in ops:
        try:
            if op[0] in (OP_STEP, OP_STEP_NO_Z):
                z = _twin_z(m, op[1]) if op[0] == OP_STEP else None
                pred = S.step(m, op[1], op[2])
                out.append((pred, None if z is None else z.tolist()))
            elif op[0] == OP_BATCH:
                preds = []
                for x, y in zip(op[1], op[2], strict=True):
                    try:
                        preds.append(S.step(m, x, int(y)))
                    except S.StepError as e:
                        preds.append(e.code)
                        break
                out.append(preds)
            elif op[0] == OP_NEW:
                out.append(S.new_block(m))
            else:
                S.freeze(m)
                out.append(0)
        except S.StepError as e:
            out.append((e.code, None) if op[0] in (OP_STEP, OP_STEP_NO_Z) else e.code)
    return pack.to_bytes(m), out


def run_c(data: bytes, ops: list[tuple]) -> tuple[bytes, list]:
    """The C core through CTrainer: (file bytes, one outcome per operation)."""
    t = ccore.CTrainer(data)
    out = []
    for op in ops:
        before = t.data()
        try:
            if op[0] in (OP_STEP, OP_STEP_NO_Z):
                z = np.zeros(t.n_classes, np.int32) if op[0] == OP_STEP else None
                pred = t.step(op[1], op[2], z)
                out.append((pred, None if z is None else z.tolist()))
            elif op[0] == OP_BATCH:
                out.append(t.steps(op[1], op[2]).tolist())
            elif op[0] == OP_NEW:
                out.append(t.new_block())
            else:
                t.freeze()
                out.append(0)
        except S.StepError as e:
            if op[0] == OP_BATCH:
                out.append(e.preds.tolist() + [e.code])
                assert e.sample == len(e.preds) and f"sample {e.sample}:" in str(e)
            else:
                assert t.data() == before, "a refused operation changed the file"
                out.append((e.code, None) if op[0] in (OP_STEP, OP_STEP_NO_Z) else e.code)
    return t.data(), out


def run_harness_train(exe: Path, tmp: Path, data: bytes, ops: list[tuple]) -> tuple[bytes, list]:
    """The sanitized harness on the operations: (file bytes, one outcome per operation)."""
    words = []
    for op in ops:
        if op[0] in (OP_STEP, OP_STEP_NO_Z):
            words += [op[0], op[2] & 0xFFFFFFFF, *op[1].reshape(-1).tolist()]
        elif op[0] == OP_BATCH:
            words += [OP_BATCH, len(op[2]), *(np.asarray(op[2]) & 0xFFFFFFFF).tolist(), *op[1].reshape(-1).tolist()]
        else:
            words += [op[0], 0]
    (tmp / "m.rbnn").write_bytes(data)
    (tmp / "ops.bin").write_bytes(np.asarray(words, "<u4").tobytes())
    lines = charness.run(exe, "train", str(tmp / "m.rbnn"), str(tmp / "ops.bin"), str(tmp / "out.rbnn"),
                        timeout=120).splitlines()  # fmt: skip
    assert len(lines) == len(ops)
    name = lambda v: CODES[v] if v < 0 else v  # noqa: E731
    out = []
    for op, line in zip(ops, lines, strict=True):
        v = [int(s) for s in line.split()]
        if op[0] in (OP_STEP, OP_STEP_NO_Z):
            out.append((name(v[0]), v[1:] if op[0] == OP_STEP and v[0] >= 0 else None))
        elif op[0] == OP_BATCH:
            preds = v[1:]
            stop = next((i for i, p in enumerate(preds) if p < 0), len(preds))
            assert all(p == 99 for p in preds[stop + 1 :]), "the batch ran past a refused sample"
            out.append([name(p) for p in preds[: stop + 1]])
        else:
            out.append(name(v[0]))
    return (tmp / "out.rbnn").read_bytes(), out


def _same_outcomes(got: list, want: list) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if isinstance(w, tuple) and w[1] is None:  # the twin gives no z here
            g = (g[0], None)
        assert g == w, f"operation {i}: C {g}, twin {w}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    """tests/c/rbnn_harness.c + the whole core (rbnn_train.c too), with ASan and UBSan."""
    return charness.build(tmp_path_factory.mktemp("harness") / "rbnn_harness")


def _shapes(rng: np.random.Generator, i: int) -> dict:
    """Random shapes, with each corner at least once: 1-3 layers, widths off multiples of
    32 (and on them), 1-4 input planes, 0-8 frozen blocks, 2-16 bits, every bits value."""
    corners = [
        dict(n_inputs=33, sizes=[31, 33, 5], plane_mask=0x81, n_frozen=8, bits=16),
        dict(n_inputs=64, sizes=[32, 10], plane_mask=0x80, n_frozen=1, bits=2),
        dict(n_inputs=7, sizes=[3], plane_mask=0xF0, n_frozen=0, bits=3),  # one layer, empty arena
        dict(n_inputs=100, sizes=[65, 2], plane_mask=0x0F, n_frozen=3, bits=9),
    ]
    if i < len(corners):
        return dict(corners[i])
    k = int(rng.integers(1, 5))
    mask = int(np.bitwise_or.reduce([1 << int(v) for v in rng.choice(8, k, replace=False)]))
    return dict(plane_mask=mask, bits=2 + i % 15)


# --- bit-exact against the twin ---------------------------------------------------------
def test_random_models_end_in_the_twins_bytes(rng):
    """>= 150 random models, ~25 operations each: steps (z checked), batches, new blocks
    and freezes, schedules that open and freeze blocks mid-run, bad labels. Same
    outcomes and the same file bytes as the twin, a file both readers accept."""
    counts = dict(models=0, changed=0, active=0, opened=0, frozen=0, full=0, label=0)
    for i in range(150):
        live = i % 5 != 2
        kw = _shapes(rng, i)
        if i % 7 == 3:
            kw.update(grow_every=int(rng.integers(1, 6)), grow_left=None)
        grow = kw.pop("grow_left", 0)
        m = trainable_model(rng, live=live and kw.get("n_frozen", 1) != 0, **kw)
        if grow is None or i % 2:  # room for the schedule (to run out of it mid-run)
            m.state().grow_left = m.capacity - len(m.blocks)
        ops = random_ops(rng, m, int(rng.integers(5, 40)))
        data = leave_room_for(m, ops)
        want_bytes, want = run_twin(data, ops)
        got_bytes, got = run_c(data, ops)
        _same_outcomes(got, want)
        assert got_bytes == want_bytes, f"model {i}: C and twin files differ"
        assert ccore.validate(got_bytes) == (0, 0)
        before, after = pack.from_bytes(data), pack.from_bytes(got_bytes)
        counts["models"] += 1
        counts["changed"] += got_bytes != data
        counts["active"] += after.state().active - before.state().active
        counts["opened"] += len(after.blocks) - len(before.blocks)
        counts["frozen"] += sum(b.state == FROZEN for b in after.blocks) - sum(b.state == FROZEN for b in before.blocks)
        flat = [o for w in want for o in (w if isinstance(w, list) else [w[0] if isinstance(w, tuple) else w])]
        counts["full"] += flat.count("E_FULL")
        counts["label"] += flat.count("E_LABEL")
    # the corpus exercised what it claims to
    assert counts["changed"] >= 120 and counts["active"] >= 1000, counts
    assert counts["opened"] >= 20 and counts["frozen"] >= 20 and counts["full"] >= 10 and counts["label"] >= 10, counts


def test_sanitized_training_matches_twin(harness, tmp_path, rng):
    """The ASan/UBSan build on random models and operations: same outcomes, same bytes,
    every refused operation changed nothing (the harness checks), the file loads again."""
    for i in range(30):
        kw = _shapes(rng, i)
        if i % 3 == 1:
            kw.update(grow_every=int(rng.integers(1, 5)))
        m = trainable_model(rng, live=i % 4 != 1 and kw.get("n_frozen", 1) != 0, **kw)
        m.state().grow_left = m.capacity - len(m.blocks) if i % 3 == 1 else m.state().grow_left
        ops = random_ops(rng, m, int(rng.integers(5, 25)), bad_labels=0.05)
        data = leave_room_for(m, ops)
        want_bytes, want = run_twin(data, ops)
        got_bytes, got = run_harness_train(harness, tmp_path, data, ops)
        _same_outcomes(got, want)
        assert got_bytes == want_bytes, f"model {i}: sanitized C and twin files differ"


def _saturating(rng, bits: int, loss: int, n_inputs: int = 45):
    """Every row with a signal fires (lr 0, no decay), a margin no score meets (every
    step updates), one sample over and over: counters run into 0 and 2^b - 1."""
    m = trainable_model(rng, n_inputs=n_inputs, sizes=[37, 6], plane_mask=0xC0, n_frozen=2, bits=bits, spare_slots=0,
                        lr=[0, 0], decay=31, init_bits=bits - 1, loss=loss, thr_shift=[0], off_shift=-1,
                        grow_every=0, block_steps=0)  # fmt: skip
    st = m.state()
    st.margin = m.budget
    st.gate = [pack.layer_smax(m, 0)]  # every unit passes its gate
    return m


@pytest.mark.parametrize("bits, loss", [(2, 0), (3, 1), (16, 0)])
def test_counters_saturate_as_in_the_twin(harness, tmp_path, rng, bits, loss):
    m = _saturating(rng, bits, loss)
    data = pack.to_bytes(m)
    x = pack_input(rng.integers(0, 256, (2, m.n_inputs), dtype=np.uint8), m.plane_mask)
    n = 60
    ops = [(OP_STEP_NO_Z, x[i % 2 if i % 10 == 9 else 0], 1) for i in range(n)]
    want_bytes, _ = run_twin(data, ops)
    got_bytes, _ = run_c(data, ops)
    assert got_bytes == want_bytes
    san_bytes, _ = run_harness_train(harness, tmp_path, data, ops)
    assert san_bytes == want_bytes
    after = pack.from_bytes(want_bytes)
    li = after.live_index()
    assert after.state().active - m.state().active == n  # every step updated
    top = (1 << bits) - 1
    for layer in range(2):
        before_u, after_u = S.counters(m, layer, li), S.counters(after, layer, li)
        moved = before_u != after_u
        assert moved.any()
        if bits < 16:  # pinned at both ends, more than before
            assert (after_u == 0).sum() > (before_u == 0).sum(), layer
            assert (after_u == top).sum() > (before_u == top).sum(), layer


# x86-64 builds move the counters of a layer-0 row 8 words at a time with AVX2 when the
# vector kernels are in use (rbnn_move_words in rbnn_kernel.c; rows of 24-31 words three
# vectors side by side), the words left one at a time: rows of 8 words and more, planes evenly spaced or not, under every kernel the
# sanitized harness can select (RBNN_KERNEL; the scalar one moves every word by itself).
HARNESS_KERNELS = ("avx512vpopcntdq", "avx2", "popcnt64", "swar")


def _harness_has(exe: Path, name: str) -> bool:
    import os
    import subprocess

    r = subprocess.run([str(exe)], capture_output=True, text=True, env={**os.environ, "RBNN_KERNEL": name})
    return "not available" not in r.stderr


@pytest.mark.parametrize("kernel", HARNESS_KERNELS)
def test_wide_rows_match_the_twin_under_every_kernel(harness, tmp_path, rng, kernel, monkeypatch):
    import platform

    if platform.machine() not in ("x86_64", "AMD64") and kernel != "swar":
        pytest.skip("one kernel off x86-64")
    if not _harness_has(harness, kernel):
        pytest.skip(f"kernel {kernel} not in this build or CPU")
    monkeypatch.setenv("RBNN_KERNEL", kernel)
    for i, n_inputs in enumerate((256, 300, 784, 520, 990, 263)):  # 8, 10, 25, 17, 31, 9 words
        m = trainable_model(rng, n_inputs=n_inputs, sizes=[int(rng.integers(3, 40)), 4],
                            n_frozen=int(rng.integers(0, 4)), bits=(2, 5, 8, 11, 16, 3)[i], plane_mask=0x80 >> (i % 3))  # fmt: skip
        ops = random_ops(rng, m, 12, bad_labels=0)
        data = leave_room_for(m, ops)
        want_bytes, want = run_twin(data, ops)
        got_bytes, got = run_harness_train(harness, tmp_path, data, ops)
        _same_outcomes(got, want)
        assert got_bytes == want_bytes, f"{kernel} n_inputs={n_inputs}: sanitized C and twin files differ"
    for bits, loss, n_inputs in ((2, 0, 300), (3, 1, 784), (16, 0, 990)):  # pinned at 0 and 2^b - 1
        m = _saturating(rng, bits, loss, n_inputs=n_inputs)
        data = pack.to_bytes(m)
        x = pack_input(rng.integers(0, 256, (2, m.n_inputs), dtype=np.uint8), m.plane_mask)
        ops = [(OP_STEP_NO_Z, x[i % 2 if i % 10 == 9 else 0], 1) for i in range(40)]
        want_bytes, _ = run_twin(data, ops)
        assert run_harness_train(harness, tmp_path, data, ops)[0] == want_bytes, f"{kernel} bits={bits}"


def test_thresholds_and_offsets_stop_at_their_clamps(harness, tmp_path, rng):
    """thr_shift 24 and off_shift 23: thresholds pinned at +-(smax + 1), offsets at
    +-(half - 1) (docs/TRAINING.md, steps 5 and 6), as in the twin."""
    m = _saturating(rng, 4, 1)
    st = m.state()
    st.thr_shift, st.off_shift = [24], 23
    data = pack.to_bytes(m)
    x = pack_input(rng.integers(0, 256, (3, m.n_inputs), dtype=np.uint8), m.plane_mask)
    ops = [(OP_STEP_NO_Z, x[i % 3], i % 2) for i in range(40)]
    want_bytes, _ = run_twin(data, ops)
    assert run_c(data, ops)[0] == want_bytes
    assert run_harness_train(harness, tmp_path, data, ops)[0] == want_bytes
    blk = pack.from_bytes(want_bytes).blocks[-1]
    lim = pack.layer_smax(m, 0) + 1
    assert set(np.abs(blk.thresholds[0]).tolist()) <= {lim} and {-lim, lim} <= set(blk.thresholds[0].tolist())
    assert np.abs(blk.offset).max() == m.half - 1


def test_empty_arena_grows_every_block_by_itself(rng):
    """n_blocks 0: the schedule opens block 0 at the first step, freezes it after
    grow_every steps, opens the next, until grow_left or the room runs out (E_FULL)."""
    m = trainable_model(rng, n_inputs=50, sizes=[20, 4], plane_mask=0x80, n_frozen=0, bits=3, live=False,
                        spare_slots=3, spare_planes=8, grow_every=4, lr=[1, 1], decay=3)  # fmt: skip
    m.state().grow_left = 3
    data = pack.to_bytes(m)
    x = pack_input(rng.integers(0, 256, (14, 50), dtype=np.uint8), 0x80)
    y = rng.integers(0, 4, 14)
    ops = [(OP_STEP, x[i], int(y[i])) for i in range(14)]
    want_bytes, want = run_twin(data, ops)
    got_bytes, got = run_c(data, ops)
    _same_outcomes(got, want)
    assert got_bytes == want_bytes
    assert [w[0] for w in want[12:]] == ["E_FULL", "E_FULL"]  # 3 blocks of 4 steps, then none left
    out = pack.from_bytes(got_bytes)
    assert [b.state for b in out.blocks] == [FROZEN] * 3 and out.state().grow_left == 0
    assert [b.planes for b in out.blocks] == [[0], [1], [2]]  # the lowest free planes, released ones reused
    assert out.state().steps - m.state().steps == 12


def test_scores_before_the_update(rng):
    """z_out equals the twin's summed scores of the model before the step, for a model
    whose frozen blocks and live block both score."""
    m = trainable_model(rng, n_inputs=70, sizes=[40, 9], plane_mask=0xE0, n_frozen=4, bits=5, lr=[2, 0])
    t = ccore.CTrainer(pack.to_bytes(m))
    x = pack_input(rng.integers(0, 256, (20, 70), dtype=np.uint8), 0xE0)
    for i in range(20):
        want = twin.scores(m, x[i][None])[0]
        z = np.zeros(9, np.int32)
        pred = t.step(x[i], i % 9, z)
        assert pred == int(np.argmax(want)) == S.step(m, x[i], i % 9)
        np.testing.assert_array_equal(z, want)
    assert t.data() == pack.to_bytes(m)


# --- refusals change nothing --------------------------------------------------------------
def _refusals(rng) -> list[tuple[str, bytes, list[tuple], str]]:
    """(what, file, operations, code of the last operation)."""
    x = lambda m: pack_input(rng.integers(0, 256, m.n_inputs, dtype=np.uint8), m.plane_mask)  # noqa: E731
    live = trainable_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=2, bits=4, spare_planes=0)
    idle = trainable_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=2, bits=4, live=False,
                           spare_slots=1, spare_planes=4, grow_left=0)  # fmt: skip
    no_planes = trainable_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=2, bits=4, live=False,
                                spare_slots=1, spare_planes=3, grow_left=1)  # 3 free planes for 4 bits
    no_slot = trainable_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=2, bits=4, live=False,
                              spare_slots=0, spare_planes=8, grow_left=0)  # fmt: skip
    return [
        ("label = n_classes", pack.to_bytes(live), [(OP_STEP, x(live), 5)], "E_LABEL"),
        ("label 2^32 - 1", pack.to_bytes(live), [(OP_STEP, x(live), 0xFFFFFFFF)], "E_LABEL"),
        ("no live block, grow_left 0", pack.to_bytes(idle), [(OP_STEP, x(idle), 1)], "E_FULL"),
        ("no live block, too few free planes", pack.to_bytes(no_planes), [(OP_STEP, x(idle), 1)], "E_FULL"),
        ("freeze without a live block", pack.to_bytes(idle), [(OP_FREEZE,)], "E_FULL"),
        ("freeze twice", pack.to_bytes(live), [(OP_FREEZE,), (OP_FREEZE,)], "E_FULL"),
        ("new block while one is live", pack.to_bytes(live), [(OP_NEW,)], "E_FULL"),
        ("new block without free planes", pack.to_bytes(no_planes), [(OP_NEW,)], "E_FULL"),
        ("new block without an empty slot", pack.to_bytes(no_slot), [(OP_NEW,)], "E_FULL"),
        ("a bad label in a batch", pack.to_bytes(live),
         [(OP_BATCH, np.stack([x(live) for _ in range(4)]), np.array([1, 2, 7, 0]))], "E_LABEL"),
    ]  # fmt: skip


def test_refused_operations_change_nothing(harness, tmp_path, rng):
    for what, data, ops, code in _refusals(rng):
        want_bytes, want = run_twin(data, ops)
        got_bytes, got = run_c(data, ops)  # run_c checks each refusal left the bytes alone
        san_bytes, san = run_harness_train(harness, tmp_path, data, ops)  # and the harness
        last = want[-1][-1] if isinstance(want[-1], list) else want[-1]
        assert (last[0] if isinstance(last, tuple) else last) == code, what
        _same_outcomes(got, want)
        _same_outcomes(san, want)
        assert got_bytes == want_bytes == san_bytes, what
        if len(ops) == 1 and ops[0][0] != OP_BATCH:
            assert got_bytes == data, what


def _apply_twin(m, op: tuple):
    return {OP_STEP: lambda: S.step(m, op[1], op[2]), OP_NEW: lambda: S.new_block(m),
            OP_FREEZE: lambda: S.freeze(m)}[op[0]]()  # fmt: skip


def _apply_c(t: ccore.CTrainer, op: tuple):
    return {OP_STEP: lambda: t.step(op[1], op[2]), OP_NEW: t.new_block, OP_FREEZE: t.freeze}[op[0]]()


def test_refusals_are_worded_as_the_twin_words_them(rng):
    for what, data, ops, code in _refusals(rng):
        if ops[-1][0] == OP_BATCH:
            continue
        m, t = pack.from_bytes(data), ccore.CTrainer(data)
        for op in ops[:-1]:
            _apply_twin(m, op)
            _apply_c(t, op)
        with pytest.raises(S.StepError) as want:
            _apply_twin(m, ops[-1])
        with pytest.raises(S.StepError) as got:
            _apply_c(t, ops[-1])
        assert want.value.code == code, what
        assert (got.value.code, str(got.value)) == (want.value.code, str(want.value)), what


def test_batch_stops_at_the_first_refused_sample(rng):
    m = trainable_model(rng, n_inputs=60, sizes=[30, 4], plane_mask=0xC0, n_frozen=1, bits=6, lr=[1, 0])
    data = pack.to_bytes(m)
    x = pack_input(rng.integers(0, 256, (6, 60), dtype=np.uint8), 0xC0)
    y = np.array([0, 3, 1, 4, 2, 2])
    t = ccore.CTrainer(data)
    with pytest.raises(S.StepError, match=r"E_LABEL: sample 3: label 4: expected 0\.\.3") as e:
        t.steps(x, y)
    assert e.value.code == "E_LABEL" and e.value.sample == 3
    want = [S.step(m, x[i], int(y[i])) for i in range(3)]  # the steps before it stay taken
    assert e.value.preds.tolist() == want
    assert t.data() == pack.to_bytes(m)


def test_bad_inputs_are_refused_and_change_nothing(rng):
    m = trainable_model(rng, n_inputs=50, sizes=[20, 4], plane_mask=0x88, n_frozen=1, bits=4)
    data = pack.to_bytes(m)
    t = ccore.CTrainer(data)
    x = pack_input(rng.integers(0, 256, (3, 50), dtype=np.uint8), 0x88)
    bad = x.copy()
    bad[1, 1, -1] |= np.uint32(1 << 18)  # bit 50 of plane 1: padding
    with pytest.raises(FormatError, match="E_INPUT"):
        t.step(bad[1], 0)
    with pytest.raises(FormatError, match="E_INPUT: sample 1:"):
        t.steps(bad, [0, 1, 2])
    assert t.data() != data  # sample 0 of the batch was taken
    t = ccore.CTrainer(data)
    with pytest.raises(FormatError, match="E_INPUT"):
        t.step(bad[1], 0)
    assert t.data() == data
    for shape in [(2, 1), (1, 2), (3, 2, 2)]:
        with pytest.raises(ModelError, match="shape"):
            t.step(np.zeros(shape, np.uint32), 0)
    with pytest.raises(ModelError, match="shape"):
        t.steps(x, [0, 1])
    with pytest.raises(S.StepError, match="E_LABEL: label -1: expected 0..3"):
        t.step(x[0], -1)
    assert t.data() == data


def test_c_entry_points_check_their_arguments(rng):
    lib = ccore.lib()
    m = trainable_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=1, bits=4)
    data = pack.to_bytes(m)
    store, addr = ccore._aligned(data)
    other, oaddr = ccore._aligned(data)
    cm = ccore._Model()
    p = ctypes.byref(cm)
    assert lib.rbnn_train_scratch_bytes(p) == 0  # not loaded yet
    assert lib.rbnn_model_init(p, addr, len(data)) == 0
    sb = lib.rbnn_train_scratch_bytes(p)
    assert sb == 4 * (2 * 1 + 2 * 9)  # 9 hidden bits and their gates; two signals of 9
    scratch = np.zeros(sb // 4 + 1, np.uint32)
    x = np.zeros(2, np.uint32)
    z = np.zeros(5, np.int32)
    e_arg, e_align = NAMES["E_ARG"], NAMES["E_ALIGN"]
    call = lambda *a: lib.rbnn_train_step(*a)  # noqa: E731
    assert call(None, addr, x.ctypes.data, 0, scratch.ctypes.data, None) == e_arg
    assert call(p, oaddr, x.ctypes.data, 0, scratch.ctypes.data, None) == e_arg  # not the buffer m reads
    assert call(p, None, x.ctypes.data, 0, scratch.ctypes.data, None) == e_arg
    assert call(p, addr, None, 0, scratch.ctypes.data, None) == e_arg
    assert call(p, addr, x.ctypes.data, 0, None, None) == e_arg
    assert call(p, addr, x.ctypes.data, 0, scratch.ctypes.data + 2, None) == e_align
    y = np.zeros(1, np.uint32)
    assert lib.rbnn_train_batch(p, addr, x.ctypes.data, None, 1, scratch.ctypes.data, None) == e_arg
    assert lib.rbnn_train_batch(p, oaddr, x.ctypes.data, y.ctypes.data, 1, scratch.ctypes.data, None) == e_arg
    assert lib.rbnn_new_block(p, oaddr) == e_arg and lib.rbnn_freeze(None, addr) == e_arg
    assert bytes(store.view(np.uint8)[: len(data)]) == data  # nothing written so far
    assert call(p, addr, x.ctypes.data, 0, scratch.ctypes.data, z.ctypes.data) >= 0
    assert lib.rbnn_train_batch(p, addr, x.ctypes.data, y.ctypes.data, 0, scratch.ctypes.data, None) == 0
    lib.rbnn_reseal(p, oaddr)  # the wrong buffer: nothing
    assert bytes(other.view(np.uint8)[: len(data)]) == data
    lib.rbnn_reseal(p, addr)
    trained = bytes(store.view(np.uint8)[: len(data)])
    assert trained != data and zlib.crc32(trained[:-4]) == struct.unpack("<I", trained[-4:])[0]
    # a model whose init failed is not trained, whatever the caller does
    assert lib.rbnn_model_init(p, oaddr, len(data) - 1) != 0
    assert call(p, oaddr, x.ctypes.data, 0, scratch.ctypes.data, None) == e_arg
    # version 1 has no training state
    v1 = to_bytes_v1(random_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x80))
    s1, a1 = ccore._aligned(v1)
    assert lib.rbnn_model_init(p, a1, len(v1)) == 0
    assert call(p, a1, x.ctypes.data, 0, scratch.ctypes.data, None) == NAMES["E_VERSION"]
    assert lib.rbnn_new_block(p, a1) == NAMES["E_VERSION"]
    with pytest.raises(ModelError, match="version 1 file has no training state"):
        ccore.CTrainer(v1)
    with pytest.raises(FormatError, match="E_CRC"):
        ccore.CTrainer(data[:-1] + bytes([data[-1] ^ 1]))
    del store, other, s1


def test_scratch_of_the_issue_block_is_small():
    """784-64-64-10: the hidden bits and gates (4 words each) and two signals of 64."""
    m = trainable_model(np.random.default_rng(1), n_inputs=784, sizes=[64, 64, 10], plane_mask=0x80, n_frozen=1,
                        bits=8, spare_planes=7)  # fmt: skip
    t = ccore.CTrainer(pack.to_bytes(m))
    assert t.scratch_bytes == 4 * (2 * 4 + 2 * 64) == 544


def test_block_api_matches_the_twin(rng):
    """new_block and freeze by hand (no schedule): same bytes, same block table, and the
    model struct follows (n_blocks, live)."""
    m = trainable_model(rng, n_inputs=90, sizes=[35, 33, 7], plane_mask=0x3C, n_frozen=3, bits=7, live=False,
                        spare_slots=2, spare_planes=9, grow_left=0)  # fmt: skip
    data = pack.to_bytes(m)
    t = ccore.CTrainer(data)
    assert (t.n_blocks, t.live) == (3, None)
    assert t.new_block() == S.new_block(m) == 3
    assert (t.n_blocks, t.live) == (4, 3)
    assert t.data() == pack.to_bytes(m)
    x = pack_input(rng.integers(0, 256, (5, 90), dtype=np.uint8), 0x3C)
    y = rng.integers(0, 7, 5)
    np.testing.assert_array_equal(t.steps(x, y), [S.step(m, x[i], int(y[i])) for i in range(5)])
    t.freeze()
    S.freeze(m)
    assert (t.n_blocks, t.live) == (4, None)
    assert t.data() == pack.to_bytes(m)
    out = pack.from_bytes(t.data())
    assert out.blocks[3].state == FROZEN and len(out.blocks[3].planes) == 1
    assert t.new_block() == S.new_block(m) == 4  # the released planes are reused
    assert t.data() == pack.to_bytes(m)
    assert pack.from_bytes(t.data()).blocks[4].state == LIVE


def test_frozen_planes_are_only_read(rng):
    m = trainable_model(rng, n_inputs=80, sizes=[50, 6], plane_mask=0xC0, n_frozen=5, bits=6, lr=[0, 0], decay=31)
    data = pack.to_bytes(m)
    frozen = [b.planes[0] for b in m.blocks if b.state == FROZEN]
    t = ccore.CTrainer(data)
    x = pack_input(rng.integers(0, 256, (50, 80), dtype=np.uint8), 0xC0)
    t.steps(x, rng.integers(0, 6, 50))
    out = pack.from_bytes(t.data())
    np.testing.assert_array_equal(out.arena[frozen], m.arena[frozen])
    assert not np.array_equal(out.arena, m.arena)


# --- one source of truth --------------------------------------------------------------------
def test_training_constants_equal_the_twin(repo):
    src = (repo / "cmodules" / "rbnn" / "rbnn_train.c").read_text()
    enum = dict(re.findall(r"^\s+T_([A-Z_]+) = (\d+),?$", src, re.M))
    assert enum and {k.lower(): int(v) for k, v in enum.items()} == {
        k: v for k, v in OFFSETS.items() if k.upper() in enum}  # fmt: skip
    assert set(OFFSETS) - {k.lower() for k in enum} == {"rule", "stream_id", "stream_base", "reserved47",
                                                        "reserved92"}  # fmt: skip
    defs = {k: int(v, 0) for k, v in re.findall(r"^#define RBNN_(\w+) (0x[0-9A-F]+|\d+)u", src, re.M)}
    assert defs == {"PROB_BITS": S.PROB_BITS, "MAX_DECAY": S.MAX_DECAY, "NEW_BLOCK_KEY": S.NEW_BLOCK_KEY,
                    "PHI": prng.PHI}  # fmt: skip


# --- rbnn grow: both engines, one file ----------------------------------------------------
@pytest.mark.parametrize("how", ["arena", "new"])
def test_grow_engines_write_identical_files(tmp_path, rng, how):
    """`rbnn grow --engine c` and `--engine twin` write the same bytes: from a host-trained
    block in an arena of 8 planes (3 blocks of 4 bits, shuffled, 2 epochs), and from an
    empty arena (every block trained by the step, the last one kept live)."""
    from rbnn.cli import main
    from rbnn.data.plain import write_npz

    y = rng.integers(0, 4, 900).astype(np.uint8)
    proto = rng.random((4, 50)) < 0.5
    x = ((proto[y] ^ (rng.random((900, 50)) < 0.15)) * 255).astype(np.uint8)
    write_npz(tmp_path / "d.npz", x[:800], y[:800], 4)
    write_npz(tmp_path / "t.npz", x[800:], y[800:], 4)
    if how == "arena":
        assert main(["train", "--data", str(tmp_path / "d.npz"), "--hidden", "13", "--epochs", "1", "--val", "100",
                     "--limit", "300", "--augment", "off", "--arena", "8", "-o", str(tmp_path / "m.rbnn")]) == 0  # fmt: skip
        args = [str(tmp_path / "m.rbnn"), "--offset", "300", "--limit", "300", "--bits", "4", "--blocks", "3",
                "--shuffle", "--epochs", "2"]  # fmt: skip
    else:
        args = ["--new", "--hidden", "21,9", "--arena", "9", "--bits", "3", "--blocks", "3", "--keep-live"]
    files = {}
    for engine in ("c", "twin"):
        out = tmp_path / f"g-{engine}.rbnn"
        assert main(["grow", *args, "--data", str(tmp_path / "d.npz"), "--test", str(tmp_path / "t.npz"),
                     "--engine", engine, "-q", "-o", str(out)]) == 0  # fmt: skip
        files[engine] = out.read_bytes()
    assert files["c"] == files["twin"]
    g = pack.from_bytes(files["c"])
    assert (len(g.blocks), g.state().steps) == ((4, 600) if how == "arena" else (3, 800))
    assert (g.live_index() is not None) == (how == "new")


def test_scratch_bytes_equal_the_models_formula(rng):
    # rbnn summary prints Model.train_ram_bytes; the C core allocates rbnn_train_scratch_bytes
    for _ in range(20):
        m = trainable_model(rng)
        assert ccore.CTrainer(pack.to_bytes(m)).scratch_bytes == m.train_ram_bytes()
