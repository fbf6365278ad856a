"""The training step of the pure-MicroPython engine (firmware/rbnn_py.py + rbnn_pytrain.py)
against the numpy twin (rbnn.learn.step): the same operations on the same file end in the
same bytes, with the same answers and the same error words (docs/DEVICE_API.md, Training).

On the real MicroPython unix port, viper and plain code (RBNN_ENGINE=python), one
micropython process per engine over many models; and under CPython (the plain code), for
volume."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from mpy_helpers import FIRMWARE, run_mpy_code

from rbnn.format import pack
from rbnn.format.model import FROZEN, pack_input
from rbnn.learn import step as S
from support.randmodel import trainable_model

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
    print("TMP", [f for f in os.listdir(d) if f.endswith(".new")])
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
    m.reseal()
    return bytes(m._buf), out


def test_plain_code_under_cpython_matches_the_twin(rng):
    """~100 random models, ~2,000 samples: the plain code's answers and bytes."""
    counts = dict(changed=0, active=0, opened=0, frozen=0, errors=0)
    for i, (data, ops, x) in enumerate(random_cases(rng, 100, (5, 40))):
        want_bytes, want = run_twin(data, ops, x)
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
