"""The training step of the pure-MicroPython engine (firmware/rbnn_py.py + rbnn_pytrain.py)
against the numpy twin (rbnn.learn.step): the same operations on the same file end in the
same bytes, with the same answers and the same error words (docs/DEVICE_API.md, Training).

On the real MicroPython unix port, viper and plain code (RBNN_ENGINE=python), one
micropython process per engine over many models; under CPython (the plain code), for
volume; and, where $MICROPY_DIR names a MicroPython checkout, on the 32-bit qemu boards
of tests/test_cmodule.py. Also: refusals, memory (no allocation per step; the 16-plane
784-64-64-10 model in the file's size + 32 kB) and the constants shared with the twin."""

from __future__ import annotations

import importlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from mpy_helpers import FIRMWARE, run_mpy_code

from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import FROZEN, pack_input
from rbnn.format.trainstate import OFFSETS
from rbnn.learn import step as S
from support.randmodel import host_like_model, random_model, trainable_model
from support.v1file import to_bytes_v1

ENGINES = ["viper", "python"]


# --- operations -------------------------------------------------------------------------
def random_ops(rng: np.random.Generator, m, n: int, bad_labels: float = 0.03) -> tuple[list, np.ndarray]:
    """About n samples as single steps and batches, now and then a grow or a freeze
    (refused or not), a few labels out of range. Returns (ops, raw samples uint8
    (N, n_inputs)); an op is ("s", i, label, packed?), ("b", i, labels, packed?) over
    samples i.., ("g",) or ("f",)."""
    ops, xs = [], []
    same = 4 * m.k_planes * ((m.n_inputs + 31) // 32) == m.n_inputs  # raw wins: packed not expressible
    while len(xs) < n:
        kind = rng.choice(["s", "s", "b", "g", "f"], p=[0.45, 0.2, 0.25, 0.05, 0.05])
        k = int(rng.integers(2, 9)) if kind == "b" else 1
        y = rng.integers(0, m.n_classes, k)
        bad = rng.random(k) < bad_labels
        y[bad] = m.n_classes + rng.integers(0, 3, int(bad.sum()))
        packed = bool(rng.random() < 0.5) and not same
        if kind in ("s", "b"):
            x = rng.integers(0, 256, (k, m.n_inputs), dtype=np.uint8)
            x[rng.random((k, m.n_inputs)) < 0.5] = 0  # sparse, as MNIST
            ops.append((str(kind), len(xs), int(y[0]) if kind == "s" else [int(v) for v in y], packed))
            xs.extend(x)
        else:
            ops.append((str(kind),))
    return ops, np.asarray(xs, np.uint8).reshape(-1, m.n_inputs)


def leave_room_for(m, ops: list) -> bytes:
    """The file of m with grow_left lowered so that the grows of ops keep it within the
    empty slots (a grow by hand does not decrement grow_left; see test_ctrain)."""
    n_new = sum(op[0] == "g" for op in ops)
    st = m.state()
    st.grow_left = max(0, min(st.grow_left, m.capacity - len(m.blocks) - n_new))
    return pack.to_bytes(m)


def _err(e: S.StepError, at: int | None = None) -> str:
    """The device's words for a twin refusal (docs/DEVICE_API.md: "rbnn: E_...: ...",
    "sample i: " after the code in a batch)."""
    msg = str(e)[len(e.code) + 2 :]
    return f"rbnn: {e.code}: " + ("" if at is None else f"sample {at}: ") + msg


def run_twin(data: bytes, ops: list, x: np.ndarray) -> tuple[bytes, list[str]]:
    """The twin on the operations: (file bytes, one answer line per operation)."""
    m = pack.from_bytes(data)
    xb = pack_input(x, m.plane_mask) if len(x) else None
    out = []
    for op in ops:
        try:
            if op[0] == "s":
                out.append(str(S.step(m, xb[op[1]], op[2])))
            elif op[0] == "b":
                preds, hits = [], 0
                for j, y in enumerate(op[2]):
                    try:
                        p = S.step(m, xb[op[1] + j], y)
                    except S.StepError as e:
                        preds.append(_err(e, j))
                        break
                    preds.append(str(p))
                    hits += p == y
                else:
                    preds.append(str(hits))
                out.append(" ".join(preds))
            elif op[0] == "g":
                out.append(str(S.new_block(m)))
            else:
                S.freeze(m)
                out.append("None")
        except S.StepError as e:
            out.append(_err(e))
    return pack.to_bytes(m), out


# Runs in micropython: for each case, load NAME.rbnn (from the path: a bytearray), run
# NAME.ops over the samples (raw NAME.raw, packed NAME.packed), print one line per op
# and the stats, save the model to NAME.out.
DEVICE = r"""
import sys, os
import rbnn
d = sys.argv[1]
print("ENGINE", rbnn.engine)

def lines(path):
    for ln in open(path):
        yield ln.split()

for (name,) in lines(d + "/cases.txt"):
    m = rbnn.load(d + "/" + name + ".rbnn")
    n_in = m.n_inputs
    pb = m.info()["input_bytes"]
    raw = open(d + "/" + name + ".raw", "rb").read()
    packed = open(d + "/" + name + ".packed", "rb").read()
    for op in lines(d + "/" + name + ".ops"):
        k = op[0]
        try:
            if k == "s":
                i, y, p = int(op[1]), int(op[2]), op[3] == "1"
                x = packed[i * pb:(i + 1) * pb] if p else raw[i * n_in:(i + 1) * n_in]
                print(m.train(x, y))
            elif k == "b":
                i, p, ys = int(op[1]), op[2] == "1", bytes([int(v) for v in op[3:]])
                n = len(ys)
                xs = packed[i * pb:(i + n) * pb] if p else raw[i * n_in:(i + n) * n_in]
                preds = bytearray(n + 1)
                preds[n] = 77
                try:
                    hits = m.train_batch(xs, ys, preds)
                    print(" ".join([str(v) for v in preds[:n]] + [str(hits)]))
                except ValueError as e:
                    s = str(e)
                    j = int(s.split("sample ")[1].split(":")[0])
                    print(" ".join([str(v) for v in preds[:j]] + [s]))
                assert preds[n] == 77
            elif k == "g":
                print(m.grow())
            else:
                print(m.freeze())
        except ValueError as e:
            print(e)
    st = m.stats()
    print("STATS", " ".join(["%s=%s" % (k, st[k]) for k in sorted(st)]))
    print("INFO", m.info()["blocks"], m.info()["live"])
    m.save(d + "/" + name + ".out")
    print("TMP", [f for f in os.listdir(d) if f[-4:] in (".new", ".tmp")])
print("DONE")
"""


def write_case(d: Path, name: str, data: bytes, ops: list, x: np.ndarray, plane_mask: int) -> None:
    (d / f"{name}.rbnn").write_bytes(data)
    (d / f"{name}.raw").write_bytes(x.tobytes())
    xb = pack_input(x, plane_mask) if len(x) else np.zeros((0,), np.uint32)
    (d / f"{name}.packed").write_bytes(np.ascontiguousarray(xb, "<u4").tobytes())
    rows = []
    for op in ops:
        if op[0] == "s":
            rows.append(f"s {op[1]} {op[2]} {int(op[3])}")
        elif op[0] == "b":
            rows.append(f"b {op[1]} {int(op[3])} " + " ".join(str(v & 0xFF) for v in op[2]))
        else:
            rows.append(op[0])
    (d / f"{name}.ops").write_text("".join(r + "\n" for r in rows))


def check_device(micropython: str, tmp_path: Path, engine: str, cases: list, **kw) -> dict:
    """Run DEVICE over cases [(data, ops, x)]; assert every answer, the stats and the
    saved bytes equal the twin's. Returns counts of what the corpus exercised."""
    counts = dict(changed=0, opened=0, frozen=0, active=0, errors=0)
    want = {}
    names = []
    for i, (data, ops, x) in enumerate(cases):
        name = f"c{i:03d}"
        m = pack.from_bytes(data)
        write_case(tmp_path, name, data, ops, x, m.plane_mask)
        want[name] = run_twin(data, ops, x)
        names.append(name + "\n")
    (tmp_path / "cases.txt").write_text("".join(names))
    proc = run_mpy_code(micropython, DEVICE, tmp_path, args=[str(tmp_path)], env={"RBNN_ENGINE": engine}, **kw)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"ENGINE {engine}" and lines[-1] == "DONE"
    at = 1
    for i, (data, ops, _) in enumerate(cases):
        name = f"c{i:03d}"
        wbytes, wout = want[name]
        got = lines[at : at + len(ops)]
        at += len(ops)
        for j, (g, w) in enumerate(zip(got, wout, strict=True)):
            assert g == w, f"{name} op {j} {ops[j][:1]}: device {g!r}, twin {w!r}"
        after = pack.from_bytes(wbytes)
        st = after.state()
        stats = dict(kv.split("=") for kv in lines[at].split()[1:])
        assert stats == {
            "steps": str(st.steps), "hits": str(st.hits), "active": str(st.active), "block_steps": str(st.block_steps),
            "live": str(after.live_index()), "blocks": str(len(after.blocks)), "max_blocks": str(after.capacity),
            "free_planes": str(len(after.free_planes())), "bits": str(st.bits), "grow_left": str(st.grow_left),
            "grow_every": str(st.grow_every), "stream_id": str(st.stream_id), "stream_base": str(st.stream_base),
        }, name  # fmt: skip
        assert lines[at + 1] == f"INFO {len(after.blocks)} {after.live_index()}"
        assert lines[at + 2] == "TMP []", "save() left its temp file"
        at += 3
        out = (tmp_path / f"{name}.out").read_bytes()
        assert out == wbytes, f"{name}: device and twin files differ"
        before = pack.from_bytes(data)
        counts["changed"] += out != data
        counts["opened"] += len(after.blocks) - len(before.blocks)
        counts["frozen"] += sum(b.state == FROZEN for b in after.blocks) - sum(b.state == FROZEN for b in before.blocks)
        counts["active"] += st.active - before.state().active
        counts["errors"] += sum("rbnn: E_" in w for w in wout)
    assert at == len(lines) - 1
    return counts


def _shapes(rng: np.random.Generator, i: int) -> dict:
    """Random shapes, the corners first: 1-3 weight layers, widths off multiples of 32
    (and on them), 1-4 input planes, 0-8 frozen blocks, bits 2..16."""
    corners = [
        dict(n_inputs=33, sizes=[31, 33, 5], plane_mask=0x81, n_frozen=3, bits=16),
        dict(n_inputs=64, sizes=[32, 10], plane_mask=0x80, n_frozen=1, bits=2),
        dict(n_inputs=7, sizes=[3], plane_mask=0xF0, n_frozen=0, bits=3),  # one layer, empty arena
        dict(n_inputs=100, sizes=[65, 2], plane_mask=0x0F, n_frozen=2, bits=9),
    ]
    if i < len(corners):
        return dict(corners[i])
    k = int(rng.integers(1, 5))
    mask = int(np.bitwise_or.reduce([1 << int(v) for v in rng.choice(8, k, replace=False)]))
    sizes = [int(rng.integers(1, 50)) for _ in range(int(rng.integers(0, 3)))] + [int(rng.integers(2, 9))]
    return dict(plane_mask=mask, bits=2 + i % 15, sizes=sizes, n_inputs=int(rng.integers(1, 120)),
                n_frozen=int(rng.integers(0, 4)))  # fmt: skip


def random_cases(rng: np.random.Generator, n_models: int, n_ops: tuple[int, int]) -> list:
    cases = []
    for i in range(n_models):
        kw = _shapes(rng, i)
        sched = i % 3 == 1
        if sched:  # the schedule opens and freezes blocks mid-run
            kw.update(grow_every=int(rng.integers(1, 6)))
        m = trainable_model(rng, live=i % 5 != 2 and kw.get("n_frozen", 1) != 0, **kw)
        if sched or i % 2:
            m.state().grow_left = m.capacity - len(m.blocks)
        ops, x = random_ops(rng, m, int(rng.integers(*n_ops)))
        cases.append((leave_room_for(m, ops), ops, x))
    return cases


# --- bit-exact against the twin, on the device --------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_device_training_ends_in_the_twins_bytes(micropython, tmp_path, engine):
    """Random models, a few hundred samples in all: steps (raw and packed), batches,
    grows, freezes, schedules; every answer, the stats and the saved file equal the
    twin's."""
    rng = np.random.default_rng(811 if engine == "viper" else 812)
    counts = check_device(micropython, tmp_path, engine, random_cases(rng, 24, (5, 25)))
    assert counts["changed"] >= 18 and counts["active"] >= 60, counts
    assert counts["opened"] >= 4 and counts["frozen"] >= 4 and counts["errors"] >= 4, counts


def _saturating(rng: np.random.Generator, bits: int, loss: int, **kw):
    """Every row with a signal fires (lr 0, no decay), a margin no score meets (every step
    updates), one sample over and over: counters run into 0 and 2^b - 1 (test_ctrain)."""
    m = trainable_model(rng, n_inputs=45, sizes=[37, 6], plane_mask=0xC0, n_frozen=2, bits=bits, spare_slots=0,
                        lr=[0, 0], decay=31, init_bits=bits - 1, loss=loss, thr_shift=[0], off_shift=-1,
                        grow_every=0, block_steps=0, **kw)  # fmt: skip
    st = m.state()
    st.margin = m.budget
    st.gate = [pack.layer_smax(m, 0)]  # every unit passes its gate
    return m


def _repeat_ops(rng: np.random.Generator, m, n: int, labels: list[int]) -> tuple[list, np.ndarray]:
    x = rng.integers(0, 256, (2, m.n_inputs), dtype=np.uint8)
    ops = [("s", 1 if i % 10 == 9 else 0, labels[i % len(labels)], bool(i % 2)) for i in range(n)]
    return ops, x


@pytest.mark.parametrize("engine", ENGINES)
def test_saturation_clamps_and_wrapping_as_in_the_twin(micropython, tmp_path, engine):
    """Counters pinned at 0 and 2^b - 1 (b = 2, 3, 16); thresholds and offsets at their
    clamps (thr_shift 24, off_shift 23); a live block whose thresholds sit at the ends of
    int32, where |s - t| and t -+ 2^thr_shift wrap in the twin's int32 arithmetic (the
    viper code on a 64-bit port must mask them); and a larger model that grows three
    blocks from an empty arena by its schedule."""
    rng = np.random.default_rng(31)
    cases = []
    for bits, loss in [(2, 0), (3, 1), (16, 0)]:
        m = _saturating(rng, bits, loss)
        ops, x = _repeat_ops(rng, m, 40, [1])
        cases.append((pack.to_bytes(m), ops, x))
    cm = _saturating(rng, 4, 1)
    cm.state().thr_shift, cm.state().off_shift = [24], 23
    ops, x = _repeat_ops(rng, cm, 30, [0, 1])
    cases.append((pack.to_bytes(cm), ops, x))
    m = trainable_model(rng, n_inputs=50, sizes=[40, 33, 4], plane_mask=0x90, n_frozen=1, bits=5, lr=[0, 0, 0],
                        decay=31, thr_shift=[24, 20], grow_every=0, block_steps=0)  # fmt: skip
    st = m.state()
    st.margin, st.gate = m.budget, [pack.layer_smax(m, 0) // 2, 3]
    ends = np.array([-(2**31), -(2**31) + 1, 2**31 - 1, 2**31 - 2, -(2**31) + (1 << 20), 0], np.int32)
    for t in m.blocks[-1].thresholds:
        t[:] = rng.choice(ends, t.shape)
    ops, x = _repeat_ops(rng, m, 30, [0, 1, 2, 3])
    cases.append((pack.to_bytes(m), ops, x))
    grow = trainable_model(rng, n_inputs=300, sizes=[70, 40, 10], plane_mask=0xC0, n_frozen=0, bits=6, live=False,
                           spare_slots=3, spare_planes=18, grow_every=9, lr=[1, 1, 1], decay=3)  # fmt: skip
    grow.state().grow_left = 3
    ops, x = random_ops(rng, grow, 30, bad_labels=0)
    ops = [op for op in ops if op[0] in ("s", "b")]
    cases.append((pack.to_bytes(grow), ops, x))
    check_device(micropython, tmp_path, engine, cases)
    top = {b: (1 << b) - 1 for b in (2, 3, 16)}
    for (data, ops, x), bits in zip(cases[:3], (2, 3, 16), strict=True):
        before, after = pack.from_bytes(data), pack.from_bytes(run_twin(data, ops, x)[0])
        li = after.live_index()
        for layer in range(2):
            u0, u1 = S.counters(before, layer, li), S.counters(after, layer, li)
            assert (u0 != u1).any()
            if bits < 16:  # pinned at both ends, more than before
                assert (u1 == 0).sum() > (u0 == 0).sum() and (u1 == top[bits]).sum() > (u0 == top[bits]).sum()
    clamp = pack.from_bytes(run_twin(*cases[3])[0]).blocks[-1]
    assert np.abs(clamp.offset).max() == cm.half - 1
    lim = pack.layer_smax(cm, 0) + 1
    assert np.abs(clamp.thresholds[0]).max() == lim and {-lim, lim} <= set(clamp.thresholds[0].tolist())
    wrapped = pack.from_bytes(run_twin(*cases[4])[0]).blocks[-1]
    assert any((np.abs(t.astype(np.int64)) < 2**30).sum() > 0 for t in wrapped.thresholds)
    grown = pack.from_bytes(run_twin(*cases[5])[0])
    assert len(grown.blocks) == 3 and grown.state().grow_left == 0


# --- under CPython: the plain code, for volume ------------------------------------------
def _fallback_modules():
    """rbnn_py and rbnn_pytrain imported from firmware/ under CPython (firmware/ last on
    the path: its rbnn.py must not shadow the host package)."""
    if str(FIRMWARE) not in sys.path:
        sys.path.append(str(FIRMWARE))
    return importlib.import_module("rbnn_py"), importlib.import_module("rbnn_pytrain")


def run_cpython(data: bytes, ops: list, x: np.ndarray) -> tuple[bytes, list[str]]:
    """The plain code under CPython on the operations, answers as the device prints them."""
    fb, _ = _fallback_modules()
    m = fb.Model(bytearray(data))
    xb = pack_input(x, m._info["plane_mask"]) if len(x) else None
    out = []
    for op in ops:
        try:
            if op[0] == "s":
                xin = np.ascontiguousarray(xb[op[1]], "<u4").tobytes() if op[3] else x[op[1]].tobytes()
                out.append(str(m.train(xin, op[2])))
            elif op[0] == "b":
                n = len(op[2])
                xs = (np.ascontiguousarray(xb[op[1] : op[1] + n], "<u4") if op[3] else x[op[1] : op[1] + n]).tobytes()
                preds = bytearray(n)
                try:
                    hits = m.train_batch(xs, bytes(v & 0xFF for v in op[2]), preds)
                    out.append(" ".join([str(v) for v in preds] + [str(hits)]))
                except ValueError as e:
                    j = int(str(e).split("sample ")[1].split(":")[0])
                    out.append(" ".join([str(v) for v in preds[:j]] + [str(e)]))
            elif op[0] == "g":
                out.append(str(m.grow()))
            else:
                out.append(str(m.freeze()))
        except ValueError as e:
            out.append(str(e))
    crc = m.reseal()
    assert crc == zlib.crc32(bytes(m._buf[:-4])) == struct.unpack("<I", bytes(m._buf[-4:]))[0]
    if len(x):  # inference sees what training made (the plans follow new blocks)
        from array import array

        out.append(" ".join(str(m.scores(x[i].tobytes(), array("i", [0] * m.n_classes))) for i in range(len(x))))
        out.append(" ".join(str(m.predict(x[i].tobytes())) for i in range(len(x))))
    return bytes(m._buf), out


def before_mask(data: bytes) -> int:
    return pack.from_bytes(data).plane_mask


def test_plain_code_under_cpython_matches_the_twin(rng):
    """~100 random models, ~2,000 samples: the plain code's answers and bytes."""
    counts = dict(changed=0, active=0, opened=0, frozen=0, errors=0)
    for i, (data, ops, x) in enumerate(random_cases(rng, 100, (5, 40))):
        want_bytes, want = run_twin(data, ops, x)
        if len(x):
            from rbnn.engines import twin

            classes = " ".join(str(v) for v in twin.predict(pack.from_bytes(want_bytes), pack_input(x, before_mask(data))))
            want = want + [classes, classes]
        got_bytes, got = run_cpython(data, ops, x)
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"model {i} op {j}: fallback {g!r}, twin {w!r}"
        assert got_bytes == want_bytes, f"model {i}: files differ"
        before, after = pack.from_bytes(data), pack.from_bytes(got_bytes)
        counts["changed"] += got_bytes != data
        counts["active"] += after.state().active - before.state().active
        counts["opened"] += len(after.blocks) - len(before.blocks)
        counts["frozen"] += sum(b.state == FROZEN for b in after.blocks) - sum(b.state == FROZEN for b in before.blocks)
        counts["errors"] += sum("rbnn: E_" in w for w in want)
    assert counts["changed"] >= 80 and counts["active"] >= 500, counts
    assert counts["opened"] >= 15 and counts["frozen"] >= 15 and counts["errors"] >= 15, counts


# --- memory ------------------------------------------------------------------------------
CODE = r"""
import gc
gc.collect()
free0 = gc.mem_free()
import rbnn
gc.collect()
free1 = gc.mem_free()
import rbnn_pytrain, rbnn_store
gc.collect()
print(free0 - free1, free1 - gc.mem_free())
"""

HEAP = r"""
import gc, sys
import rbnn
raw = open("x.raw", "rb").read()
labels = open("y.bin", "rb").read()
n_in = 784
gc.collect()
free0 = gc.mem_free()
m = rbnn.load("big.rbnn")
m.train(raw[:n_in], labels[0])  # the first step imports rbnn_pytrain and allocates the scratch
import rbnn_pytrain, rbnn_store
gc.collect()
free1 = gc.mem_free()
hits = m.train_batch(memoryview(raw)[n_in:], labels[1:])
m.save("out.rbnn")
gc.collect()
print("HEAP", free0 - free1, free1, free1 - gc.mem_free())
print("STATS", m.stats()["steps"], m.stats()["hits"])
"""


def mpy_compiled(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """The firmware modules compiled with mpy-cross into tmp_path/lib, as deploy installs them."""
    from test_fallback import mpy_cross

    lib = tmp_path / "lib"
    lib.mkdir()
    for name in names:
        subprocess.run([mpy_cross(), "-o", str(lib / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")], check=True)
    return lib


@pytest.mark.parametrize("engine", ENGINES)
def test_784_64_64_10_in_16_planes_trains_in_file_size_plus_32k(micropython, tmp_path, engine):
    """The host-like growth model (784-64-64-10, 16 planes: 122 kB) trains and saves in a
    GC heap of the file's size + 32 kB beyond the firmware's code (rbnn, rbnn_py,
    rbnn_pytrain, rbnn_store as .mpy, as rbnn deploy installs them; on a board frozen into
    flash, except viper's native code), the file equal to the twin's; the model, the
    step's scratch and plans (and viper's native code) take the file's bytes + less than
    12 kB, and the steps and the save leave nothing allocated behind."""
    lib = mpy_compiled(tmp_path, ("rbnn", "rbnn_py", "rbnn_pytrain", "rbnn_store"))
    env = {"RBNN_ENGINE": engine}
    proc = run_mpy_code(micropython, CODE, tmp_path, name="code.py", env=env, path=[lib], check=False)
    if "incompatible .mpy" in proc.stdout + proc.stderr:
        pytest.skip(f"{micropython} does not load these .mpy files")
    code_infer, code_train = (int(v) for v in proc.stdout.split())
    code = code_infer + code_train
    rng = np.random.default_rng(16)
    m = host_like_model(rng)
    data = pack.to_bytes(m)
    (tmp_path / "big.rbnn").write_bytes(data)
    n = 12
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    x[rng.random(x.shape) < 0.8] = 0
    y = rng.integers(0, 10, n).astype(np.uint8)
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    (tmp_path / "y.bin").write_bytes(y.tobytes())
    heap = len(data) + 32 * 1024 + code
    proc = run_mpy_code(micropython, HEAP, tmp_path, env=env, heapsize=str(heap), path=[lib])
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    xb = pack_input(x, 0x80)
    hits = m.state().hits
    for i in range(n):
        S.step(m, xb[i], int(y[i]))
    assert (tmp_path / "out.rbnn").read_bytes() == pack.to_bytes(m)
    assert got["STATS"] == f"{m.state().steps} {m.state().hits}" and m.state().hits - hits <= n
    model, _, kept = (int(v) for v in got["HEAP"].split())
    # measured on the 64-bit unix port: 7.7 kB (viper: its native code counts here), 6.5 kB (plain)
    assert len(data) <= model - code_train < len(data) + 12 * 1024, (model, code_train)
    assert kept <= 0, "the steps and the save left allocations behind"


# --- refusals: the twin's words, nothing changed ------------------------------------------
REFUSE = r"""
import sys, binascii
import micropython
import rbnn

def err(f, *a):
    try:
        r = f(*a)
    except (ValueError, TypeError) as e:
        return "%s: %s" % (type(e).__name__, e)
    return "ok %s" % (r,)

def check(tag, name, f, *a):
    buf = bytearray(open(name + ".rbnn", "rb").read())
    orig = bytes(buf)
    m = rbnn.load(buf)
    print(tag, err(f(m), *a), "SAME" if buf == orig else "CHANGED")

raw = open("x.raw", "rb").read()
packed = open("x.packed", "rb").read()
n_in = 40
x = raw[:n_in]
xp = packed[:len(packed) // 4]
bad = bytearray(xp)
bad[len(bad) - 1] |= 0x80
check("LABEL", "live", lambda m: m.train, x, 5)
check("LABELNEG", "live", lambda m: m.train, x, -1)
check("LABELFLOAT", "live", lambda m: m.train, x, 1.0)
check("LABELSLIST", "live", lambda m: m.train_batch, raw[:n_in], [0])
check("SHORT", "live", lambda m: m.train, x[:-1], 0)
check("PAD", "live", lambda m: m.train, bad, 0)
check("FULL", "idle", lambda m: m.train, x, 1)
check("FULLPLANES", "noplanes", lambda m: m.train, x, 1)
check("FREEZE", "idle", lambda m: m.freeze)
check("GROWLIVE", "live", lambda m: m.grow)
check("GROWPLANES", "noplanes", lambda m: m.grow)
check("GROWSLOT", "noslot", lambda m: m.grow)
check("V1", "v1", lambda m: m.train, x, 1)
check("V1STATS", "v1", lambda m: m.stats)
check("XS", "live", lambda m: m.train_batch, raw[:-1], b"\x01\x02\x03\x04")
check("PREDS", "live", lambda m: m.train_batch, raw, b"\x01\x02\x03\x04", bytearray(3))
check("PREDSRO", "live", lambda m: m.train_batch, raw, b"\x01\x02\x03\x04", bytes(4))
check("EMPTY", "live", lambda m: m.train_batch, b"", b"")
# a read-only buffer: bytes, aligned or not (viper copies an unaligned buffer)
data = open("live.rbnn", "rb").read()
for tag, src in (("RO", data), ("ROVIEW", memoryview(b"x" + data)[1:])):
    m = rbnn.load(src)
    for f, a in ((m.train, (x, 1)), (m.train_batch, (raw, b"\x01\x02\x03\x04")), (m.grow, ()), (m.freeze, ()),
                 (m.reseal, ()), (m.save, ("ro.rbnn",))):
        print(tag, err(f, *a))
    print(tag + "STATS", m.stats()["steps"])
# a batch stops at the sample at fault; the samples before it are applied
buf = bytearray(data)
m = rbnn.load(buf)
preds = bytearray(4)
print("BATCH", err(m.train_batch, packed, b"\x01\x02\x07\x00", preds), preds[0], preds[1], m.stats()["steps"])
m.save("batch.rbnn")
buf = bytearray(data)
m = rbnn.load(buf)
pad = bytearray(packed)
pad[3 * len(xp) - 1] |= 0x80
print("BATCHPAD", err(m.train_batch, pad, b"\x01\x02\x03\x00"))
m = rbnn.load(bytearray(data))
buf = m._buf if hasattr(m, "_buf") else None
grown = bytearray(data)
mg = rbnn.load(grown)
grown.extend(bytes(8))
print("RESIZED", err(mg.train, x, 1))
# no allocation per step: the heap locked around steps and a batch (the first step
# allocates the scratch)
m = rbnn.load(bytearray(data))
m.train(x, 1)
rs = [raw[i * n_in:(i + 1) * n_in] for i in range(4)]
ps = [packed[i * len(xp):(i + 1) * len(xp)] for i in range(4)]
r = [-1] * 9  # (a list that grows would allocate)
micropython.heap_lock()
try:
    for i in range(4):
        r[2 * i] = m.train(rs[i], i)
        r[2 * i + 1] = m.train(ps[i], i)
    r[8] = m.train_batch(packed, b"\x00\x01\x02\x03", preds)
except MemoryError:
    pass
micropython.heap_unlock()
print("NOALLOC", len([v for v in r if v >= 0]), m.stats()["steps"])
"""


def _refusal_models(rng: np.random.Generator) -> dict:
    kw = dict(n_inputs=40, sizes=[9, 5], plane_mask=0x88, n_frozen=2, bits=4, grow_every=0)
    return {
        "live": trainable_model(rng, spare_planes=0, lr=[0, 0], **kw),
        "idle": trainable_model(rng, live=False, spare_slots=1, spare_planes=4, grow_left=0, **kw),
        "noplanes": trainable_model(rng, live=False, spare_slots=1, spare_planes=3, grow_left=1, **kw),  # 3 for 4 bits
        "noslot": trainable_model(rng, live=False, spare_slots=0, spare_planes=8, grow_left=0, **kw),
    }


def _twin_words(f) -> str:
    try:
        f()
    except S.StepError as e:
        return "ValueError: " + _err(e)
    raise AssertionError("the twin did not refuse")


@pytest.mark.parametrize("engine", ENGINES)
def test_refusals_are_the_twins_words_and_change_nothing(micropython, tmp_path, engine):
    check_refusals(micropython, tmp_path, engine)


def check_refusals(micropython: str, tmp_path: Path, engine: str) -> None:
    """Run REFUSE with ``engine`` and check every answer: the same words from every
    engine (the fallback's two, and the C module's)."""
    rng = np.random.default_rng(5)
    models = _refusal_models(rng)
    for name, m in models.items():
        (tmp_path / f"{name}.rbnn").write_bytes(pack.to_bytes(m))
    (tmp_path / "v1.rbnn").write_bytes(to_bytes_v1(random_model(rng, n_inputs=40, sizes=[9, 5], plane_mask=0x88)))
    x = rng.integers(0, 256, (4, 40), dtype=np.uint8)
    xb = pack_input(x, 0x88)
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    (tmp_path / "x.packed").write_bytes(np.ascontiguousarray(xb, "<u4").tobytes())
    proc = run_mpy_code(micropython, REFUSE, tmp_path, env={"RBNN_ENGINE": engine})
    got: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        k, v = line.split(" ", 1)
        got.setdefault(k, []).append(v)
    one = {k: v[0] for k, v in got.items()}
    cp = lambda name: pack.from_bytes(pack.to_bytes(models[name]))  # noqa: E731
    # the twin's refusals, word for word, and the buffer left as it was
    assert one["LABEL"] == _twin_words(lambda: S.step(cp("live"), xb[0], 5)) + " SAME"
    assert one["LABELNEG"] == _twin_words(lambda: S.step(cp("live"), xb[0], -1)) + " SAME"
    assert one["FULL"] == _twin_words(lambda: S.step(cp("idle"), xb[0], 1)) + " SAME"
    assert one["FULLPLANES"] == _twin_words(lambda: S.step(cp("noplanes"), xb[0], 1)) + " SAME"
    assert one["FREEZE"] == _twin_words(lambda: S.freeze(cp("idle"))) + " SAME"
    assert one["GROWLIVE"] == _twin_words(lambda: S.new_block(cp("live"))) + " SAME"
    assert one["GROWPLANES"] == _twin_words(lambda: S.new_block(cp("noplanes"))) + " SAME"
    assert one["GROWSLOT"] == _twin_words(lambda: S.new_block(cp("noslot"))) + " SAME"
    assert "E_FULL: no live block, and none may open (grow_left 0, 4 free planes" in one["FULL"]
    # the C module's words (a label through mp_obj_get_int, labels and preds as buffers)
    assert one["LABELFLOAT"] == "TypeError: can't convert float to int SAME"
    assert one["LABELSLIST"] == one["PREDSRO"] == "TypeError: object with buffer protocol required SAME"
    # the input errors of predict
    assert one["SHORT"] == ("ValueError: rbnn: input has 39 bytes; expected 40 raw features or 16 bytes of packed "
                            "bits SAME")  # fmt: skip
    assert one["PAD"] == "ValueError: rbnn: E_INPUT: packed input plane 1 has padding bits set (n_inputs 40) SAME"
    v1 = "ValueError: rbnn: E_VERSION: a version 1 file has no training state; write it as version 2 to train it"
    assert one["V1"] == one["V1STATS"] == v1 + " SAME"
    assert one["XS"] == ("ValueError: rbnn: xs has 159 bytes for 4 labels; expected 40 raw features or 16 bytes of "
                         "packed bits per sample SAME")  # fmt: skip
    assert one["PREDS"] == "ValueError: rbnn: preds has 3 bytes, needs at least 4 (one per label) SAME"
    assert one["EMPTY"] == "ok 0 SAME"
    # read-only: every training method refuses, in DEVICE_API.md's words; stats reads,
    # reseal returns the (valid) CRC, save writes the file as it is
    ro = "ValueError: rbnn: the model's buffer is read-only: load it from a path or a bytearray to train"
    data = pack.to_bytes(models["live"])
    crc = struct.unpack("<I", data[-4:])[0]
    assert got["RO"] == got["ROVIEW"] == [ro] * 4 + [f"ok {crc}", "ok None"]
    assert one["ROSTATS"] == one["ROVIEWSTATS"] == str(models["live"].state().steps)
    assert (tmp_path / "ro.rbnn").read_bytes() == data
    assert not (tmp_path / "ro.rbnn.new").exists() and not (tmp_path / "ro.rbnn.tmp").exists()
    # a batch: the label at fault named with its sample, the steps before it taken
    m = cp("live")
    want = [S.step(m, xb[i], y) for i, y in enumerate([1, 2])]
    assert one["BATCH"] == (f"ValueError: rbnn: E_LABEL: sample 2: label 7: expected 0..4 {want[0]} {want[1]} "
                            f"{m.state().steps}")  # fmt: skip
    assert (tmp_path / "batch.rbnn").read_bytes() == pack.to_bytes(m)
    assert one["BATCHPAD"] == ("ValueError: rbnn: E_INPUT: sample 2: packed input plane 1 has padding bits set "
                               "(n_inputs 40)")  # fmt: skip
    assert one["RESIZED"] == "ValueError: rbnn: the model's buffer was resized or moved after load"
    assert one["NOALLOC"] == f"9 {models['live'].state().steps + 13}"


# --- one source of truth ----------------------------------------------------------------------
def test_training_constants_equal_the_twin(repo):
    import re

    from rbnn.learn import prng

    _, tr = _fallback_modules()
    offs = {k[3:].lower(): getattr(tr, k) for k in dir(tr) if k.startswith("_T_")}
    assert offs and offs == {k: v for k, v in OFFSETS.items() if k in offs}
    assert set(OFFSETS) - set(offs) == {"rule", "reserved47", "reserved92"}
    assert (tr.PROB_BITS, tr.MAX_DECAY, tr.NEW_BLOCK_KEY, tr.PHI) == (S.PROB_BITS, S.MAX_DECAY, S.NEW_BLOCK_KEY,
                                                                      prng.PHI)  # fmt: skip
    for x in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789):
        assert tr._lowbias(x) == int(prng.lowbias32(x))
    # the viper code builds the generator's constants from 16-bit halves
    src = (repo / "firmware" / "rbnn_pytrain.py").read_text()
    halves = {int(a, 16) << 16 | int(b, 16) for a, b in re.findall(r"\(uint\((0x[0-9A-F]{4})\) << 16\) \| uint\((0x[0-9A-F]{4})\)", src)}
    assert halves == {0x7FEB352D, 0x846CA68B, prng.PHI}


COMPILE = r"""
import gc, sys
import rbnn
m = rbnn.load(bytearray(open("m.rbnn", "rb").read()))
gc.collect()
filler = [None] * 1024
n = 0
try:  # fill the heap in 1 kB pieces, then free the last `left` of them (adjacent: one hole)
    while n < len(filler):
        filler[n] = bytearray(1000)
        n += 1
except MemoryError:
    pass
for i in range(max(0, n - int(sys.argv[1])), n):
    filler[i] = None
gc.collect()
try:
    m.train(bytes(40), 1)
    print("TRAINED", rbnn.engine)
except MemoryError as e:
    print("MEMORY", e)
"""


def test_viper_compile_out_of_heap_is_named(micropython, tmp_path):
    """Too little heap left to compile the training step's viper code (the first train
    of a model): a MemoryError that says so and names the way out, not a KeyError or a
    silent switch of engine; with room, the step trains."""
    m = trainable_model(np.random.default_rng(4), n_inputs=40, sizes=[9, 5], plane_mask=0x80, n_frozen=1, bits=3)
    (tmp_path / "m.rbnn").write_bytes(pack.to_bytes(m))
    lib = mpy_compiled(tmp_path, ("rbnn", "rbnn_py", "rbnn_pytrain"))
    seen = set()
    for left in [*range(16, 64, 3), 200]:  # kB left to the first train
        proc = run_mpy_code(micropython, COMPILE, tmp_path, args=[str(left)], env={"RBNN_ENGINE": "viper"},
                            heapsize="400k", path=[lib])  # fmt: skip
        out = proc.stdout.strip()
        if out.startswith("MEMORY"):
            assert out.startswith("MEMORY rbnn: no heap left to compile") or "allocation failed" in out, out
            seen.add("compile" if "rbnn:" in out else "load")
        else:
            assert out == "TRAINED viper", out
            seen.add("trained")
    assert {"compile", "trained"} <= seen, seen


# --- 32-bit ports: qemu (needs $MICROPY_DIR, as tests/test_cmodule.py) ------------------------
# The fallback's modules (.mpy, bytecode only) put in RAM and imported through a VFS
# written in Python: the qemu boards have no file system.
RAMFS = r"""
import vfs, io, sys
class _RamFS:
    def __init__(self, files):
        self.files = files
    def mount(self, readonly, mkfs):
        pass
    def umount(self):
        pass
    def chdir(self, path):
        pass
    def getcwd(self):
        return ""
    def ilistdir(self, path):
        return iter([(n, 0x8000, 0, len(b)) for n, b in self.files.items()])
    def stat(self, path):
        p = path.lstrip("/")
        if not p:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if p in self.files:
            return (0x8000, 0, 0, 0, 0, 0, len(self.files[p]), 0, 0, 0)
        raise OSError(2)
    def open(self, path, mode):
        return io.BytesIO(self.files[path.lstrip("/")])
_fw = {}
"""

# One case on the board: the model, samples and ops are globals put there (bytearrays).
BOARD_CASE = r"""
import rbnn_py
from binascii import b2a_base64
rbnn_py.use(ENGINE)
m = rbnn_py.Model(model)
n_in = m.n_inputs
pb = m.info()["input_bytes"]
for line in ops.decode().split("\n"):
    op = line.split()
    if not op:
        continue
    k = op[0]
    try:
        if k == "s":
            i, y, p = int(op[1]), int(op[2]), op[3] == "1"
            x = packed[i * pb:(i + 1) * pb] if p else raw[i * n_in:(i + 1) * n_in]
            print(m.train(x, y))
        elif k == "b":
            i, p, ys = int(op[1]), op[2] == "1", bytes([int(v) for v in op[3:]])
            n = len(ys)
            xs = packed[i * pb:(i + n) * pb] if p else raw[i * n_in:(i + n) * n_in]
            preds = bytearray(n)
            try:
                hits = m.train_batch(xs, ys, preds)
                print(" ".join([str(v) for v in preds] + [str(hits)]))
            except ValueError as e:
                s = str(e)
                j = int(s.split("sample ")[1].split(":")[0])
                print(" ".join([str(v) for v in preds[:j]] + [s]))
        elif k == "g":
            print(m.grow())
        else:
            print(m.freeze())
    except ValueError as e:
        print(e)
m.reseal()
for o in range(0, len(model), 600):
    print("B64", b2a_base64(model[o:o + 600]).decode().strip())
"""


@pytest.mark.skipif(not os.environ.get("MICROPY_DIR"), reason="MICROPY_DIR is not set: the qemu firmware is "
                    "built from a MicroPython checkout (docs/FIRMWARE.md)")  # fmt: skip
@pytest.mark.parametrize("name", ["VIRT_RV32", "MICROBIT"])
def test_32bit_boards_train_as_the_twin(tmp_path, name):
    """On 32-bit MicroPython (qemu: rv32imac with its viper emitter, and the Cortex-M0 of
    MICROBIT, whose build has none), where viper ints wrap at 32 bits and small ints
    stop at 2^30: random models, steps, batches, grows, freezes, schedules and the
    saturating, clamping and wrapping cases end in the twin's bytes, viper (rv32) and
    plain code (both)."""
    import base64

    from test_cmodule import QEMU_BOARDS, RawRepl, qemu_image

    qemu, _, _, args = QEMU_BOARDS[name]
    image = qemu_image(name)
    lib = mpy_compiled(tmp_path, ("rbnn_py", "rbnn_pytrain"))
    board = RawRepl([qemu, *args, "-serial", "stdio", "-kernel", str(image)], timeout=120)
    try:
        board.exec(RAMFS)
        for mod in ("rbnn_py", "rbnn_pytrain"):
            board.put("_b_", (lib / f"{mod}.mpy").read_bytes())
            board.exec(f"_fw['{mod}.mpy'] = bytes(_b_)\ndel _b_")
        board.exec("vfs.mount(_RamFS(_fw), '/fw')\nsys.path.append('/fw')\nimport rbnn_py, rbnn_pytrain\n"
                   "_fw.clear()")  # fmt: skip
        # MICROBIT's build has no native emitter: the plain code on a Cortex-M0
        have = board.exec("print(rbnn_py.engine)").strip()
        assert have == ("python" if name == "MICROBIT" else "viper")
        rng = np.random.default_rng(32)
        cases = random_cases(rng, 12, (5, 20))
        m = _saturating(rng, 3, 1)
        m.state().thr_shift, m.state().off_shift = [24], 23
        cases.append((pack.to_bytes(m), *_repeat_ops(rng, m, 30, [0, 1])))
        m = trainable_model(rng, n_inputs=50, sizes=[40, 33, 4], plane_mask=0x90, n_frozen=1, bits=16,
                            lr=[0, 0, 0], decay=31, thr_shift=[24, 20], grow_every=0, block_steps=0)  # fmt: skip
        m.state().margin, m.state().gate = m.budget, [pack.layer_smax(m, 0) // 2, 3]
        for t in m.blocks[-1].thresholds:
            t[:] = rng.choice(np.array([-(2**31), 2**31 - 1, -(2**31) + (1 << 20), 0], np.int32), t.shape)
        cases.append((pack.to_bytes(m), *_repeat_ops(rng, m, 30, [0, 1, 2, 3])))
        cases = [c for c in cases if len(c[0]) <= 16000]  # the boards' heap: 140 kB for all
        for engine in ENGINES if have == "viper" else ["python"]:
            for i, (data, ops, x) in enumerate(cases):
                board.exec("model = raw = packed = ops = m = None\nimport gc\ngc.collect()")
                write_case(tmp_path, "c", data, ops, x, pack.from_bytes(data).plane_mask)
                for glob, ext in (("model", "rbnn"), ("raw", "raw"), ("packed", "packed"), ("ops", "ops")):
                    board.put(glob, (tmp_path / f"c.{ext}").read_bytes())
                out = board.exec(f"ENGINE = {engine!r}\n" + BOARD_CASE).splitlines()
                want_bytes, want = run_twin(data, ops, x)
                got = [ln for ln in out if not ln.startswith("B64 ")]
                assert got == want, f"{name} {engine} case {i}: answers differ"
                trained = b"".join(base64.b64decode(ln[4:]) for ln in out if ln.startswith("B64 "))
                assert trained == want_bytes, f"{name} {engine} case {i}: files differ"
    finally:
        board.close()


# On the virtual device's board (its console running; the firmware put there as rbnn
# deploy puts it): the model from its file system, inferred, or trained and saved.
VBOARD_LOAD = """
import rbnn
m = rbnn.load("big.rbnn")
print("ok")
"""  # (first, as a board's boot would: its bytes take the largest free block)

VBOARD_TRAIN = """
labels = open("y.bin", "rb").read()
x = bytearray(784)
hits = 0
with open("x.raw", "rb") as f:
    for y in labels:
        f.readinto(x)
        hits += m.train(x, y) == y
m.save("big.rbnn")
print(rbnn.engine, m.stats()["steps"], hits)
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_784_64_64_10_in_16_planes_trains_on_the_virtual_device(micropython, tmp_path, engine):
    """The virtual device (rbnn.device.virtual: a unix-port board, its GC heap set with
    -X heapsize) with the firmware deployed as .mpy: in the least heap (4 kB steps) in
    which the board loads the 16-plane 784-64-64-10 model (122 kB) and predicts, + 32 kB,
    it also trains (sample by sample, as a stream brings them) and saves, the twin's bytes. (Measured: the model loads
    from 210 kB of heap, its console and modules holding the rest, and trains from 224
    kB, viper and plain alike.)"""
    import serial
    from mpy_helpers import firmware_fs

    from rbnn.device.rawrepl import RawRepl
    from rbnn.device.virtual import VirtualDevice

    fs = firmware_fs(tmp_path / "fs", micropython)
    rng = np.random.default_rng(17)
    m = host_like_model(rng)
    data = pack.to_bytes(m)
    (fs / "big.rbnn").write_bytes(data)
    n = 10
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    x[rng.random(x.shape) < 0.8] = 0
    y = rng.integers(0, 10, n).astype(np.uint8)
    (fs / "x.raw").write_bytes(x.tobytes())
    (fs / "y.bin").write_bytes(y.tobytes())

    def run(kb: int, *codes: str) -> str:
        with VirtualDevice(fs, micropython=micropython, heap=f"{kb}K", env={"RBNN_ENGINE": engine}) as dev:
            with serial.Serial(dev.port, 921600, timeout=0.05) as ser:
                repl = RawRepl(ser)
                assert repl.enter(timeout=10), "the virtual board's raw REPL did not answer"
                try:
                    out = "".join(repl.exec(code, timeout=120).decode() for code in codes)
                except Exception as e:  # noqa: BLE001 (a MemoryError on the board)
                    out = f"failed: {e}"
                repl.exit()
        return out

    lo, hi = len(data) // 1024, 4 * len(data) // 1024  # kB: the least heap that loads the model
    assert run(hi, VBOARD_LOAD).startswith("ok") and not run(lo, VBOARD_LOAD).startswith("ok")
    while hi - lo > 4:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if run(mid, VBOARD_LOAD).startswith("ok") else (mid, hi)
    out = run(hi + 32, VBOARD_LOAD, "print(m.predict(bytes(784)))", VBOARD_TRAIN).split()
    assert out[0] == "ok" and int(out[1]) == int(twin.predict(m, pack_input(np.zeros((1, 784), np.uint8), 0x80))[0])
    out = out[2:]
    xb = pack_input(x, 0x80)
    hits = sum(int(S.step(m, xb[i], int(y[i])) == y[i]) for i in range(n))
    assert out == [engine, str(m.state().steps), str(hits)], out
    assert (fs / "big.rbnn").read_bytes() == pack.to_bytes(m)
