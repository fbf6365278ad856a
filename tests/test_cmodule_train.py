"""Training through the C module `_rbnn` inside real MicroPython firmware (`make
firmware`, docs/FIRMWARE.md): Model.train, train_batch, grow, freeze, stats, reseal and
save end in the numpy twin's bytes (rbnn.learn.step) for the same calls, and refuse what
the twin refuses in the twin's words, changing nothing.

- the unix port: random trainable models, random sequences of steps (raw and packed
  inputs), batches, grows and freezes; the file save() writes, the buffer and the twin's
  file are equal; every refusal, word for word; no allocation after the first step;
- the qemu port, BOARD=MICROBIT (Cortex-M0) and BOARD=VIRT_RV32 (rv32imac): the same
  replay on a few small models (their heaps are small), compared by outcome and CRC.

Every test needs $MICROPY_DIR (a MicroPython checkout) and skips without it.
"""

from __future__ import annotations

import ast
import zlib

import numpy as np
import pytest
from mpy_helpers import run_mpy_code
from test_cmodule import MICROPY_DIR, QEMU_BOARDS, RawRepl, make_firmware, qemu_image

from rbnn.format import pack
from rbnn.format.model import pack_input
from rbnn.learn import step as S
from support.randmodel import random_model, trainable_model
from support.v1file import to_bytes_v1

pytestmark = pytest.mark.skipif(
    not MICROPY_DIR,
    reason="MICROPY_DIR is not set: these tests build MicroPython with the C module from a "
    "MicroPython checkout (docs/FIRMWARE.md)",
)

READ_ONLY = "rbnn: the model's buffer is read-only: load it from a path or a bytearray to train"


@pytest.fixture(scope="module")
def unix_c() -> str:
    """The MicroPython unix port with `_rbnn` (an up-to-date build is reused)."""
    return str(make_firmware("unix"))


# --- operations: made here, run by the twin and by the device ------------------------------
def le_packed(m, raw: np.ndarray) -> bytes:
    """Raw u8 samples (n, n_inputs) as the packed bytes the device takes."""
    return np.ascontiguousarray(pack_input(raw, m.plane_mask), dtype="<u4").tobytes()


def make_ops(rng: np.random.Generator, m, n: int, bad_labels: float = 0.04) -> list[tuple]:
    """About n samples as single steps and batches (raw or packed bytes, preds given or
    not), and now and then grow() or freeze() (refused or not); a few labels out of range.
    ("s", raw, label, packed) ("b", raws, labels, packed, with_preds) ("g",) ("f",)."""
    ops: list[tuple] = []
    done = 0
    while done < n:
        kind = rng.choice(["s", "b", "g", "f"], p=[0.6, 0.3, 0.05, 0.05])
        k = int(rng.integers(2, 7)) if kind == "b" else 1
        raw = rng.integers(0, 256, (k, m.n_inputs), dtype=np.uint8)
        y = rng.integers(0, m.n_classes, k)
        bad = rng.random(k) < bad_labels
        y[bad] = m.n_classes + rng.integers(0, 3, int(bad.sum()))
        packed = bool(rng.integers(0, 2))
        if kind == "s":
            ops.append(("s", raw[0], int(y[0]), packed))
        elif kind == "b":
            ops.append(("b", raw, y, packed, bool(rng.integers(0, 2))))
        else:
            ops.append((str(kind),))
        done += k if kind in ("s", "b") else 0
    return ops


def twin_run(data: bytes, ops: list[tuple]) -> tuple[bytes, list, dict]:
    """The twin on the operations: (file bytes, one outcome per operation, stats())."""
    m = pack.from_bytes(data)
    out: list = []
    for op in ops:
        try:
            if op[0] == "s":
                out.append(("OK", S.step(m, pack_input(op[1][None], m.plane_mask)[0], op[2])))
            elif op[0] == "b":
                xb = pack_input(op[1], m.plane_mask)
                preds = []
                for i, (x, y) in enumerate(zip(xb, op[2], strict=True)):
                    try:
                        preds.append(S.step(m, x, int(y)))
                    except S.StepError as e:
                        msg = str(e)[len(e.code) + 2 :]
                        out.append(("ERR", f"rbnn: {e.code}: sample {i}: {msg}", i > 0, preds if op[4] else None))
                        break
                else:
                    hits = sum(int(p == y) for p, y in zip(preds, op[2], strict=True))
                    out.append(("OK", [hits, preds if op[4] else None]))
            elif op[0] == "g":
                out.append(("OK", S.new_block(m)))
            else:
                S.freeze(m)
                out.append(("OK", None))
        except S.StepError as e:
            out.append(("ERR", f"rbnn: {e}", False, None))
    st = m.state()
    stats = dict(steps=st.steps, hits=st.hits, active=st.active, block_steps=st.block_steps, live=m.live_index(),
                 blocks=len(m.blocks), max_blocks=m.capacity, free_planes=len(m.free_planes()), bits=st.bits,
                 grow_left=st.grow_left, grow_every=st.grow_every, stream_id=st.stream_id,
                 stream_base=st.stream_base)  # fmt: skip
    return pack.to_bytes(m), out, stats


# The device side: `buf` (the model, a bytearray) and `data` (every sample and label,
# one blob) are given; OPS index into data. Prints one repr per operation, then stats.
REPLAY = r"""
import _rbnn
m = _rbnn.Model(buf)
dv = memoryview(data)
st0 = m.stats()["steps"]  # the steps before each operation: a refused batch's preds are the steps it took
before = bytearray(len(buf))  # one copy, refilled in place: small heaps
for op in OPS:
    before[:] = buf
    p = None
    try:
        if op[0] == "s":
            r = m.train(dv[op[1]:op[1] + op[2]], op[3])
        elif op[0] == "b":
            p = bytearray(op[4]) if op[5] else None
            r = [m.train_batch(dv[op[1]:op[1] + op[2]], dv[op[3]:op[3] + op[4]], p), None if p is None else list(p)]
        elif op[0] == "g":
            r = m.grow()
        else:
            r = m.freeze()
        print(repr(("OK", r)))
    except ValueError as e:
        print(repr(("ERR", str(e), buf != before, None if p is None else list(p)[:m.stats()["steps"] - st0])))
    st0 = m.stats()["steps"]
print(repr(("STATS", m.stats())))
print(repr(("CRC", m.reseal())))
"""


def device_job(m, ops: list[tuple]) -> tuple[str, bytes]:
    """(script, data blob) of the replay: OPS as offsets into the blob."""
    blob = bytearray()
    spec = []
    for op in ops:
        if op[0] == "s":
            x = le_packed(m, op[1][None]) if op[3] else op[1].tobytes()
            spec.append(("s", len(blob), len(x), op[2]))
            blob += x
        elif op[0] == "b":
            xs = le_packed(m, op[1]) if op[3] else op[1].tobytes()
            spec.append(("b", len(blob), len(xs), len(blob) + len(xs), len(op[2]), op[4]))
            blob += xs + bytes(np.asarray(op[2], np.uint8))
        else:
            spec.append(op)
    return f"OPS = {spec!r}\n" + REPLAY, bytes(blob)


def parse(out: str) -> tuple[list, dict, int]:
    rows = [ast.literal_eval(line) for line in out.splitlines() if line.strip()]
    assert rows[-2][0] == "STATS" and rows[-1][0] == "CRC", rows[-2:]
    return [tuple(r) for r in rows[:-2]], rows[-2][1], rows[-1][1]


def compare(got: list, want: list) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if w[0] == "OK":
            assert g == w, f"operation {i}: device {g}, twin {w}"
        else:  # the text, whether the buffer changed (a batch: the samples before the fault)
            assert g[:3] == w[:3], f"operation {i}: device {g}, twin {w}"
            if w[3] is not None:
                assert g[3] == w[3], f"operation {i}: preds before the fault"


def random_trainable(rng: np.random.Generator, i: int):
    """Random shapes with the corners of tests/test_ctrain.py first; schedules that open
    and freeze blocks mid-run on some."""
    corners = [
        dict(n_inputs=33, sizes=[31, 33, 5], plane_mask=0x81, n_frozen=3, bits=16),
        dict(n_inputs=64, sizes=[32, 10], plane_mask=0x80, n_frozen=1, bits=2),
        dict(n_inputs=7, sizes=[3], plane_mask=0xF0, n_frozen=0, bits=3, live=False),  # empty arena
        dict(n_inputs=100, sizes=[65, 2], plane_mask=0x0F, n_frozen=3, bits=9),
    ]
    kw = dict(corners[i]) if i < len(corners) else {}
    if i % 3 == 2:
        kw.update(grow_every=int(rng.integers(1, 6)))
    m = trainable_model(rng, **kw)
    if i % 2 == 0 or kw.get("live") is False:  # room for the schedule, to run out of it mid-run
        m.state().grow_left = m.capacity - len(m.blocks)
    return m


# --- the unix port ---------------------------------------------------------------------------
UNIX_HEAD = 'buf = bytearray(open("m.rbnn", "rb").read())\ndata = open("data.bin", "rb").read()\n'
UNIX_TAIL = 'm.save("saved.rbnn")\nopen("buf.rbnn", "wb").write(buf)\n'


def test_unix_random_models_end_in_the_twins_bytes(unix_c, tmp_path, rng):
    """80 random models, ~25 samples each: every outcome and refusal text as the twin's,
    the buffer, the saved file and the twin's file equal, stats() as the twin's state."""
    seen = dict(err=0, full=0, label=0, opened=0, frozen=0, preds=0)
    for i in range(80):
        m = random_trainable(rng, i)
        data = pack.to_bytes(m)
        ops = make_ops(rng, m, int(rng.integers(5, 40)))
        want_bytes, want, want_stats = twin_run(data, ops)
        script, blob = device_job(m, ops)
        (tmp_path / "m.rbnn").write_bytes(data)
        (tmp_path / "data.bin").write_bytes(blob)
        for f in ("saved.rbnn", "buf.rbnn"):
            (tmp_path / f).unlink(missing_ok=True)
        proc = run_mpy_code(unix_c, UNIX_HEAD + script + UNIX_TAIL, tmp_path)
        got, stats, crc = parse(proc.stdout)
        compare(got, want)
        assert stats == want_stats, f"model {i}"
        assert (tmp_path / "saved.rbnn").read_bytes() == want_bytes, f"model {i}: saved file differs from the twin's"
        assert (tmp_path / "buf.rbnn").read_bytes() == want_bytes, f"model {i}: buffer differs from the twin's"
        assert crc == int.from_bytes(want_bytes[-4:], "little") == zlib.crc32(want_bytes[:-4])
        assert not (tmp_path / "saved.rbnn.new").exists()
        after = pack.from_bytes(want_bytes)
        texts = [w[1] for w in want if w[0] == "ERR"]
        seen["err"] += len(texts)
        seen["full"] += sum("E_FULL" in t for t in texts)
        seen["label"] += sum("E_LABEL" in t for t in texts)
        seen["opened"] += len(after.blocks) - len(m.blocks)
        seen["frozen"] += sum(b.state == 0 for b in after.blocks) - sum(b.state == 0 for b in m.blocks)
        seen["preds"] += sum(1 for w in want if w[0] == "OK" and isinstance(w[1], list) and w[1][1])
    # the corpus exercised what it claims to
    assert seen["full"] >= 5 and seen["label"] >= 5 and seen["opened"] >= 5 and seen["frozen"] >= 5, seen
    assert seen["preds"] >= 10, seen


ERRORS = r"""
import micropython
import _rbnn

def err(f, *a):
    before = bytes(buf)
    try:
        r = f(*a)
        return "no error " + repr(r)
    except (ValueError, TypeError) as e:
        return "%s: %s%s" % (type(e).__name__, e, " (CHANGED)" if bytes(buf) != before else "")

m = _rbnn.Model(buf)
x = data[:NI]
xp = data[NI:NI + PB]
print(repr(("LABEL_HIGH", err(m.train, x, NC))))
print(repr(("LABEL_NEG", err(m.train, x, -1))))
print(repr(("LABEL_BIG", err(m.train, x, 1 << 70))))
print(repr(("LABEL_STR", err(m.train, x, "1"))))
print(repr(("LEN", err(m.train, x[:-1], 0))))
bad = bytearray(xp)
bad[len(bad) - 1] |= 0x80
print(repr(("PAD", err(m.train, bad, 0))))
print(repr(("BATCH_PAD", err(m.train_batch, bytes(xp) + bytes(bad), bytes([0, 1])))))
print(repr(("BATCH_LEN", err(m.train_batch, x + x[:-1], bytes([0, 1])))))
print(repr(("BATCH_ZERO", err(m.train_batch, x, b""))))
print(repr(("BATCH_PREDS", err(m.train_batch, x + x, bytes([0, 1]), bytearray(1)))))
print(repr(("BATCH_PREDS_RO", err(m.train_batch, x + x, bytes([0, 1]), bytes(2)))))
print(repr(("BATCH_EMPTY", err(m.train_batch, b"", b""))))
print(repr(("GROW_LIVE", err(m.grow))))
# no allocation after the first step (which allocated the step's scratch)
m.train(x, 0)
p = bytearray(2)
xs = xp + xp
ys = bytes([1, 2])
r = []
micropython.heap_lock()
try:
    r.append(m.train(x, 1))
    r.append(m.train(xp, 2))
    r.append(m.train_batch(xs, ys, p))
    r.append(m.train_batch(xs, ys))
except MemoryError:
    r.append("MemoryError")
micropython.heap_unlock()
print(repr(("NOALLOC", r, list(p))))
print(repr(("FREEZE", err(m.freeze))))
print(repr(("FREEZE2", err(m.freeze))))
print(repr(("STEP_FULL", err(m.train, x, 0))))
print(repr(("BATCH_FULL", err(m.train_batch, x, bytes([0])))))
print(repr(("STATS", m.stats())))
print(repr(("CRC", m.reseal())))
open("after.rbnn", "wb").write(buf)
ro = _rbnn.Model(bytes(buf))
buf = bytearray(0)  # err() compares this one: the read-only model has no writable buffer
for name, f, a in (("train", ro.train, (x, 0)), ("batch", ro.train_batch, (x, bytes([0]))),
                   ("grow", ro.grow, ()), ("freeze", ro.freeze, ())):
    print(repr(("RO_" + name, err(f, *a))))
print(repr(("RO_MV", err(_rbnn.Model(memoryview(open("after.rbnn", "rb").read())).train, x, 0))))
print(repr(("RO_STATS", ro.stats()["steps"], ro.reseal())))
v1 = _rbnn.Model(bytearray(open("v1.rbnn", "rb").read()))
for name, f, a in (("train", v1.train, (x, 0)), ("grow", v1.grow, ()), ("stats", v1.stats, ())):
    print(repr(("V1_" + name, err(f, *a))))
g = bytearray(open("after.rbnn", "rb").read())
mg = _rbnn.Model(g)
g.extend(bytes(8))
print(repr(("RESIZED", err(mg.train, x, 0))))
"""


def test_unix_refusals_in_the_twins_words_change_nothing(unix_c, tmp_path, rng):
    """Label out of range (high, negative, a big int), wrong lengths, padding bits, bad
    batch arguments, E_FULL of a step, a batch, grow() and freeze(), a read-only buffer,
    a version 1 file, a resized buffer: each refused in the twin's words (rbnn.learn.step),
    the buffer unchanged. train and train_batch allocate nothing after the first step."""
    m = trainable_model(rng, n_inputs=45, sizes=[20, 6], plane_mask=0xC0, n_frozen=2, bits=4,
                        spare_slots=1, spare_planes=2, grow_left=0, grow_every=0)  # fmt: skip
    data = pack.to_bytes(m)
    raw = rng.integers(0, 256, (2, 45), dtype=np.uint8)
    xp = le_packed(m, raw[1:])
    (tmp_path / "data.bin").write_bytes(raw[0].tobytes() + xp)
    (tmp_path / "v1.rbnn").write_bytes(to_bytes_v1(random_model(rng, n_inputs=45, sizes=[20, 6], plane_mask=0xC0)))
    head = UNIX_HEAD + f"NI, PB, NC = 45, {len(xp)}, 6\n"
    (tmp_path / "m.rbnn").write_bytes(data)
    proc = run_mpy_code(unix_c, head + ERRORS, tmp_path)
    got = {r[0]: r[1] if len(r) == 2 else r[1:] for r in map(ast.literal_eval, proc.stdout.splitlines())}

    # the twin's words for the same requests
    t = pack.from_bytes(data)
    x0 = pack_input(raw[:1], 0xC0)[0]
    x1 = pack_input(raw[1:], 0xC0)[0]

    def twin_text(f, *a) -> str:
        with pytest.raises(S.StepError) as e:
            f(*a)
        return f"ValueError: rbnn: {e.value}"

    assert got["LABEL_HIGH"] == twin_text(S.step, t, x0, 6) == "ValueError: rbnn: E_LABEL: label 6: expected 0..5"
    assert got["LABEL_NEG"] == twin_text(S.step, t, x0, -1)
    assert got["LABEL_BIG"] == twin_text(S.step, t, x0, 1 << 70)
    assert got["LABEL_STR"].startswith("TypeError") and "CHANGED" not in got["LABEL_STR"]
    assert got["LEN"] == "ValueError: rbnn: input has 44 bytes; expected 45 raw features or 16 bytes of packed bits"
    assert got["PAD"] == "ValueError: rbnn: E_INPUT: packed input plane 1 has padding bits set (n_inputs 45)"
    # a batch stops at the sample at fault: the one before it is applied
    assert got["BATCH_PAD"] == "ValueError: rbnn: E_INPUT: sample 1: packed input plane 1 has padding bits set (n_inputs 45) (CHANGED)"
    want_len = "ValueError: rbnn: xs has {} bytes for {} labels; expected 45 raw features or 16 bytes of packed bits per sample"
    assert got["BATCH_LEN"] == want_len.format(89, 2)
    assert got["BATCH_ZERO"] == want_len.format(45, 0)
    assert got["BATCH_PREDS"] == "ValueError: rbnn: preds has 1 bytes, needs at least 2 (one per label)"
    assert got["BATCH_PREDS_RO"].startswith("TypeError") and "CHANGED" not in got["BATCH_PREDS_RO"]
    assert got["BATCH_EMPTY"] == "no error 0"
    assert got["GROW_LIVE"] == twin_text(S.new_block, t)
    # the twin, step for step: BATCH_PAD's first sample, the first step, the heap-locked ones
    S.step(t, x1, 0)
    S.step(t, x0, 0)
    preds = [S.step(t, x0, 1), S.step(t, x1, 2)]
    b1 = [S.step(t, x1, 1), S.step(t, x1, 2)]
    b2 = [S.step(t, x1, 1), S.step(t, x1, 2)]
    hits = lambda p: sum(int(a == b) for a, b in zip(p, [1, 2], strict=True))  # noqa: E731
    assert got["NOALLOC"] == ([*preds, hits(b1), hits(b2)], b1)
    S.freeze(t)
    assert got["FREEZE"] == "no error None"
    assert got["FREEZE2"] == twin_text(S.freeze, t) == "ValueError: rbnn: E_FULL: no live block to freeze"
    assert got["STEP_FULL"] == twin_text(S.step, t, x0, 0)
    assert "E_FULL: no live block, and none may open (grow_left 0," in got["STEP_FULL"]
    assert got["BATCH_FULL"] == twin_text(S.step, t, x0, 0).replace("E_FULL: ", "E_FULL: sample 0: ")
    want = pack.to_bytes(t)
    assert (tmp_path / "after.rbnn").read_bytes() == want
    assert got["CRC"] == zlib.crc32(want[:-4])
    st = t.state()
    assert got["STATS"]["steps"] == st.steps and got["STATS"]["live"] is None and got["STATS"]["free_planes"] == len(t.free_planes())
    for name in ("train", "batch", "grow", "freeze"):
        assert got["RO_" + name] == f"ValueError: {READ_ONLY}", name
    assert got["RO_MV"] == f"ValueError: {READ_ONLY}"
    assert got["RO_STATS"] == (st.steps, zlib.crc32(want[:-4]))  # a read-only model still reports
    v1_text = ("ValueError: rbnn: E_VERSION: a version 1 file has no training state; write it as version 2 to "
               "train it")  # fmt: skip
    for name in ("train", "grow", "stats"):
        assert got["V1_" + name] == v1_text, name
    assert got["RESIZED"] == "ValueError: rbnn: the model's buffer was resized or moved after load"



# --- qemu: MICROBIT (Cortex-M0) and VIRT_RV32 (rv32imac) -------------------------------------
@pytest.fixture(params=sorted(QEMU_BOARDS))
def board(request):
    qemu, _, machine, args = QEMU_BOARDS[request.param]
    repl = RawRepl([qemu, *args, "-serial", "stdio", "-kernel", str(qemu_image(request.param))])
    repl.machine = machine
    yield repl
    repl.close()


def test_qemu_training_replays_the_twin(board, rng):
    """A few small models (the boards' heaps are small), the unix test's replay: every
    outcome and refusal text, stats() and the resealed CRC as the twin's."""
    assert board.machine in board.exec("import sys\nprint(sys.implementation._machine)")
    changed = refused = 0
    shapes = [
        dict(n_inputs=33, sizes=[31, 33, 5], plane_mask=0x81, n_frozen=2, bits=5, spare_slots=1),
        dict(n_inputs=7, sizes=[3], plane_mask=0xF0, n_frozen=0, bits=3, live=False, grow_every=3),
        dict(n_inputs=100, sizes=[65, 2], plane_mask=0x0F, n_frozen=1, bits=9, spare_planes=3),
        dict(n_inputs=60, sizes=[20, 8], plane_mask=0xC0, n_frozen=3, bits=2, grow_every=4),
    ]
    for i, kw in enumerate(shapes):
        m = trainable_model(rng, **kw)
        m.state().grow_left = m.capacity - len(m.blocks)
        data = pack.to_bytes(m)
        ops = make_ops(rng, m, 12)
        want_bytes, want, want_stats = twin_run(data, ops)
        script, blob = device_job(m, ops)
        board.put("buf", data)
        board.put("data", blob)
        got, stats, crc = parse(board.exec(script))
        compare(got, want)
        assert stats == want_stats, f"model {i}"
        assert crc == zlib.crc32(want_bytes[:-4]), f"model {i}: the trained file differs from the twin's"
        changed += want_bytes != data
        refused += sum(w[0] == "ERR" for w in want)
    assert changed >= 3 and refused >= 2, (changed, refused)  # learned, and refused some
    # no allocation after the first step, on the board's own heap
    m = trainable_model(rng, n_inputs=40, sizes=[16, 4], plane_mask=0x80, n_frozen=1, bits=3, grow_every=0)
    raw = rng.integers(0, 256, (3, 40), dtype=np.uint8)
    board.put("buf", pack.to_bytes(m))
    board.put("data", raw.tobytes())
    out = board.exec(NOALLOC_ON_BOARD)
    xb = pack_input(raw, 0x80)
    S.step(m, xb[0], 0)
    want = [S.step(m, xb[1], 1)]
    b = [S.step(m, xb[i], i) for i in range(3)]
    want.append(sum(int(p == i) for i, p in enumerate(b)))
    assert out.split() == [repr(want).replace(" ", ""), str(zlib.crc32(pack.to_bytes(m)[:-4]))]


NOALLOC_ON_BOARD = """
import micropython, _rbnn
m = _rbnn.Model(buf)
m.train(data[:40], 0)  # the first step allocates the step's scratch
x1 = data[40:80]  # a slice allocates: made before the lock
r = []
micropython.heap_lock()
try:
    r.append(m.train(x1, 1))
    r.append(m.train_batch(data, b"\\x00\\x01\\x02"))
except MemoryError:
    r.append("MemoryError")
micropython.heap_unlock()
print(repr(r).replace(" ", ""), m.reseal())
"""


SAVE = r"""
import os
import rbnn, _rbnn
x = open("x.raw", "rb").read()
m = rbnn.load("m.rbnn")                      # the wrapper, engine c: a bytearray of the file
print(repr(("ENGINE", rbnn.engine)))
preds = [m.train(x, 1), m.train(x, 2)]
m.save("m.rbnn")                              # over the file it came from
print(repr(("SAVED", preds, os.listdir())))
try:
    m.save("no-such-dir/m.rbnn")
except OSError as e:
    print(repr(("NODIR", type(e).__name__)))
src = bytearray(open("orig.rbnn", "rb").read())
u = bytearray(len(src) + 1)
u[1:] = src
mu = _rbnn.Model(memoryview(u)[1:])           # unaligned: trained in the model's own copy
preds = [mu.train(x, 1), mu.train(x, 2)]
mu.save("copy.rbnn")
print(repr(("COPY", preds, bytes(u[1:]) == bytes(src))))
ro = _rbnn.Model(bytes(src))
ro.save("ro.rbnn")                            # nothing to reseal: written as loaded
print(repr(("RO", ro.reseal())))
"""


def test_unix_save_writes_the_twins_file(unix_c, tmp_path, rng):
    """save() through rbnn.load (engine c) over the file it came from, from a copied
    (unaligned) buffer, and from a read-only one; a save that fails raises OSError and
    leaves no temporary file."""
    m = trainable_model(rng, n_inputs=50, sizes=[24, 7], plane_mask=0xA0, n_frozen=1, bits=3, grow_every=0)
    data = pack.to_bytes(m)
    raw = rng.integers(0, 256, 50, dtype=np.uint8)
    for name in ("m.rbnn", "orig.rbnn"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "x.raw").write_bytes(raw.tobytes())
    proc = run_mpy_code(unix_c, SAVE, tmp_path, env={"RBNN_ENGINE": "c"})
    got = {r[0]: r[1:] for r in map(ast.literal_eval, proc.stdout.splitlines())}
    x = pack_input(raw[None], 0xA0)[0]
    preds = [S.step(m, x, 1), S.step(m, x, 2)]
    want = pack.to_bytes(m)
    assert got["ENGINE"] == ("c",)
    assert got["SAVED"][0] == preds and "m.rbnn.new" not in got["SAVED"][1]
    assert (tmp_path / "m.rbnn").read_bytes() == want
    assert got["NODIR"] == ("OSError",) and not (tmp_path / "no-such-dir").exists()
    assert got["COPY"] == (preds, True)  # the caller's unaligned buffer is left as it was
    assert (tmp_path / "copy.rbnn").read_bytes() == want
    assert (tmp_path / "ro.rbnn").read_bytes() == data and got["RO"] == (zlib.crc32(data[:-4]),)
