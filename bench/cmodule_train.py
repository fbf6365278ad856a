"""Training samples/s of the C module `_rbnn` inside MicroPython (the unix port built by
``make firmware PORT=unix``, docs/FIRMWARE.md).

The block of bench/train.py's shape: 784-64-64-10 on the MSB input plane, an arena of 16
planes holding one frozen block (random weights here: speed does not depend on them) and
an 8-bit live block that the first step opens, the hyper-parameters of rbnn.learn.defaults
("domain"); samples are MNIST training digits when the cache has them, else random
bytes. Timed inside MicroPython (time.ticks_us): ``Model.train_batch`` over all samples
in one call, and ``Model.train`` once per sample (raw 8-bit features, bit-sliced by the
module). The file after the steps must equal the C core's on the host
(rbnn.engines.ccore.CTrainer, itself tested bit for bit against the twin).

Then the C module against the fallback's viper (and plain) step, the same samples,
``Model.train_batch`` after the first step (which opens the block): on the unix port
(x86-64, the virtual device; each engine the best of ``--repeats`` runs, as the host's
clock counts whatever else the machine runs) for a small model that a qemu board's heap
holds with the fallback (784-16-10 on the MSB plane, 8 planes, a 4-bit live block: 13 kB)
and for the 784-64-64-10 above; on the qemu VIRT_RV32 build for the small one (rv32imac,
the ESP32-C3/C6 instruction set) run with ``-icount shift=0``: each guest instruction
advances the virtual clock by 1 ns, so ``time.ticks_us`` (rdtime, the CLINT's timer)
counts guest instructions / 1000, the same on every run and every host, however loaded
(``ticks_cpu`` is 0 on that port). The ratio is a ratio of instruction counts, not of a
real core's cycles. Each engine's file must end in the host C core's CRC.

Needs $MICROPY_DIR and the builds in build/firmware/ (``make firmware PORT=unix
MICROPY_DIR=...``, ``make firmware PORT=qemu BOARD=VIRT_RV32 FW_QEMU_FREEZE=0
MICROPY_DIR=...``); without them it prints why and exits 0.

``--big-rv32 ELF``: a VIRT_RV32 build with a 1 MB heap (``MICROPY_HEAP_SIZE=1048576``, its
RAM is 2 MB) times the 784-64-64-10 there too.

Run: ``python bench/cmodule_train.py [--samples N] [--ratio-samples N] [--repeats N] [--big-rv32 ELF]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from rbnn.engines import ccore  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import Model, pack_input  # noqa: E402
from rbnn.learn.defaults import defaults  # noqa: E402
from support.fwstale import stale_reason  # noqa: E402
from support.randmodel import trainable_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UNIX = REPO / "build" / "firmware" / "unix-standard" / "micropython"
RV32 = REPO / "build" / "firmware" / "qemu-VIRT_RV32" / "firmware.elf"
SMALL = dict(n_inputs=784, sizes=[16, 10], planes=8, bits=4)  # fits the qemu boards' heap with the fallback
N_INPUTS, SIZES, PLANE_MASK, N_PLANES, BITS = 784, [64, 64, 10], 0x80, 16, 8
HYPER = ("lr", "thr_shift", "gate", "scale_shift", "margin", "decay", "init_bits", "loss", "off_shift")

SCRIPT = r"""
import sys, time, _rbnn
n = int(sys.argv[1])
data = open("m.rbnn", "rb").read()
xs = open("xs.bin", "rb").read()
ys = open("ys.bin", "rb").read()
ni = len(xs) // n
# train_batch: every sample in one call
buf = bytearray(data)
m = _rbnn.Model(buf)
t = time.ticks_us()
hits = m.train_batch(xs, ys)
dt = time.ticks_diff(time.ticks_us(), t)
print("BATCH", dt, hits)
open("batch.rbnn", "wb").write(buf)
# train: one call per sample, from the same file
buf2 = bytearray(data)
m2 = _rbnn.Model(buf2)
mv = memoryview(xs)
t = time.ticks_us()
for i in range(n):
    m2.train(mv[i * ni:(i + 1) * ni], ys[i])
dt = time.ticks_diff(time.ticks_us(), t)
print("SINGLE", dt, m2.stats()["hits"] - m.stats()["hits"] + hits)
print("ACTIVE", m.stats()["active"])
m2.reseal()
open("single.rbnn", "wb").write(buf2)
"""


def bench_model(seed: int, n_inputs: int = N_INPUTS, sizes: list[int] = SIZES, planes: int = N_PLANES,
                bits: int = BITS) -> Model:  # fmt: skip
    """One frozen block in ``planes`` planes, the ``bits``-bit live block opened by the first step."""
    rng = np.random.default_rng(seed)
    m = trainable_model(rng, n_inputs=n_inputs, sizes=list(sizes), plane_mask=PLANE_MASK, n_frozen=1, bits=bits,
                        live=False, spare_slots=1, spare_planes=planes - 1, grow_every=0, grow_left=1,
                        steps=0, hits=0, active=0, block_steps=0, stream_base=0)  # fmt: skip
    st, d = m.state(), defaults(m, "domain", bits)
    for name in HYPER:
        setattr(st, name, getattr(d, name))
    assert m.n_planes == planes
    return m


# C module against the fallback, on the unix port or a qemu board: globals model, xs
# (packed samples), ys, ENGINES, REPEATS. The first step (opens the block, allocates the
# scratch) is not timed; train_batch over the rest is, REPEATS times in turn per engine
# (each from the same file; the host keeps the fastest: the unix port's clock is the
# host's, shared with whatever else runs).
RATIO = r"""
import time, gc
def _bench(engine):
    if engine == "c":
        import _rbnn
        M = _rbnn.Model
    else:
        import rbnn_py
        rbnn_py.use(engine)
        M = rbnn_py.Model
    buf = bytearray(model)
    m = M(buf)
    pb = len(xs) // len(ys)
    xv, yv = memoryview(xs), memoryview(ys)
    m.train_batch(xv[:pb], yv[:1])
    gc.collect()
    t = time.ticks_us()
    hits = m.train_batch(xv[pb:], yv[1:])
    dt = time.ticks_diff(time.ticks_us(), t)
    print("RATIO", engine, dt, hits, m.reseal())
for _r in range(REPEATS):
    for _e in ENGINES:
        _bench(_e)
        gc.collect()
"""
UNIX_RATIO_HEAD = 'model = open("m.rbnn", "rb").read()\nxs = open("xs.bin", "rb").read()\nys = open("ys.bin", "rb").read()\n'


def _ratio_rows(out: str) -> dict[str, tuple[int, int, int]]:
    """engine -> (microseconds, hits, CRC) from RATIO's lines: the fastest repeat; hits and
    CRC -1 when the repeats disagree (each starts from the same file)."""
    runs: dict[str, list[tuple[int, int, int]]] = {}
    for line in out.splitlines():
        if line.startswith("RATIO "):
            _, engine, dt, hits, crc = line.split()
            runs.setdefault(engine, []).append((int(dt), int(hits), int(crc)))
    return {e: (min(r[0] for r in rs), *(rs[0][1:] if len({r[1:] for r in rs}) == 1 else (-1, -1)))
            for e, rs in runs.items()}  # fmt: skip


def _print_ratio(where: str, rows: dict, n: int, want_crc: int) -> bool:
    ok = all(r[2] == want_crc for r in rows.values()) and len({r[1] for r in rows.values()}) == 1
    for engine, (dt, _, crc) in rows.items():
        print(f"  {engine:6s} {dt / n:10.1f} us/step ({dt:,} us)" + ("" if crc == want_crc else "  FILE DIFFERS from the C core's"))
    c = rows["c"][0]
    print(f"  {where}: C module {rows['viper'][0] / c:.1f}x the viper fallback"
          + (f", {rows['python'][0] / c:.1f}x plain Python" if "python" in rows else ""))  # fmt: skip
    return ok


def _ratio_job(shape: dict, samples: int, seed: int) -> tuple[bytes, bytes, bytes, int, str]:
    """(model file, packed samples, labels, the CRC the host C core ends in, a title)."""
    import zlib

    m = bench_model(seed, **shape)
    data = pack.to_bytes(m)
    x, y, what = samples_for(samples, seed, shape["n_inputs"])
    xb = pack_input(x, PLANE_MASK)
    t = ccore.CTrainer(data)
    t.steps(xb, y)
    title = (f"{shape['n_inputs']}-{'-'.join(map(str, shape['sizes']))}, {shape['planes']}-plane arena, "
             f"{shape['bits']}-bit live block ({len(data):,} bytes), {len(y) - 1} steps timed ({what}, packed)")  # fmt: skip
    xs = np.ascontiguousarray(xb, dtype="<u4").tobytes()
    return data, xs, y.tobytes(), zlib.crc32(t.data()[:-4]), title


def _rv32(image: Path, shape: dict, samples: int, seed: int, d: Path) -> bool:
    """One model's steps on a qemu VIRT_RV32 image under -icount shift=0, each engine."""
    from test_cmodule import QEMU_BOARDS, RawRepl
    from test_replay_boards import load_fallback

    data, xs, ys, want_crc, title = _ratio_job(shape, samples, seed)
    qemu, _, _, args = QEMU_BOARDS["VIRT_RV32"]
    board = RawRepl([qemu, *args, "-icount", "shift=0", "-serial", "stdio", "-kernel", str(image)], timeout=300)
    try:
        board.put("model", data)  # before the fallback's modules: a 140 kB heap, fragmenting
        board.put("xs", xs)
        board.put("ys", ys)
        assert load_fallback(board, Path(tempfile.mkdtemp(dir=d))) == "viper"  # a lib/ of its own
        rows = _ratio_rows(board.exec("ENGINES = ['c', 'viper', 'python']\nREPEATS = 1\n" + RATIO))
    finally:
        board.close()
    print(f"\nC module against the fallback, qemu VIRT_RV32 (rv32imac) -icount shift=0, 1 us = 1,000 guest "
          f"instructions: {title}")  # fmt: skip
    return _print_ratio("rv32imac", rows, samples - 1, want_crc)


def ratio(samples: int, seed: int, big_rv32: str | None = None, repeats: int = 5) -> bool:
    """The C module's step against the fallback's: on the unix port (the small model and
    this file's 784-64-64-10) and on qemu VIRT_RV32 (-icount shift=0; the small model, the
    same samples; the 784-64-64-10 too on ``big_rv32``, a VIRT_RV32 image with a larger
    heap). On the unix port each engine's best of ``repeats`` runs counts (qemu's
    -icount clock is exact: one run). True when every engine's file is the host C core's."""
    from mpy_helpers import run_mpy_code

    ok = True
    n = samples - 1
    big = dict(n_inputs=N_INPUTS, sizes=SIZES, planes=N_PLANES, bits=BITS)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for shape in (SMALL, big):
            data, xs, ys, want_crc, title = _ratio_job(shape, samples, seed)
            (d / "m.rbnn").write_bytes(data)
            (d / "xs.bin").write_bytes(xs)
            (d / "ys.bin").write_bytes(ys)
            code = UNIX_RATIO_HEAD + f"ENGINES = ['c', 'viper', 'python']\nREPEATS = {repeats}\n" + RATIO
            rows = _ratio_rows(run_mpy_code(str(UNIX), code, d, timeout=900).stdout)
            print(f"\nC module against the fallback, unix port (x86-64, the virtual device), time.ticks_us, "
                  f"best of {repeats} runs: {title}")  # fmt: skip
            ok &= _print_ratio("unix", rows, n, want_crc)
        if not RV32.exists():
            print(f"\nqemu VIRT_RV32: skipped: no build at {RV32.relative_to(REPO)}; run make firmware PORT=qemu "
                  "BOARD=VIRT_RV32 FW_QEMU_FREEZE=0 MICROPY_DIR=...")  # fmt: skip
            return ok
        for image, shape in ((RV32, SMALL), *(((Path(big_rv32), big),) if big_rv32 else ())):
            if stale_reason(image):
                print(f"\nqemu VIRT_RV32: skipped: {stale_reason(image)}")
                continue
            ok &= _rv32(image, shape, samples, seed, d)
    return ok


def samples_for(n: int, seed: int, n_inputs: int = N_INPUTS) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST training digits when cached (rbnn.data.load never downloads), else random bytes."""
    from rbnn import data as rdata
    from rbnn.errors import RbnnError

    try:
        ds = rdata.load("mnist", parts=("train",))
        return ds.x_train[:n].reshape(n, -1).astype(np.uint8), ds.y_train[:n].astype(np.uint8), "MNIST digits"
    except RbnnError as e:  # not cached: random inputs time the same
        print(f"(MNIST not used: {e})")
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, n_inputs), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8), "random bytes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--ratio-samples", type=int, default=101, help="samples of the C/fallback ratio (0: skip it)")
    ap.add_argument("--big-rv32", metavar="ELF", help="a VIRT_RV32 image with a 1 MB heap: the ratio of "
                    "784-64-64-10 on rv32 too (make firmware PORT=qemu BOARD=VIRT_RV32 FW_QEMU_FREEZE=0 "
                    "MICROPY_HEAP_SIZE=1048576 FW_BUILD=build/firmware/qemu-VIRT_RV32-heap1M MICROPY_DIR=...)")
    ap.add_argument("--repeats", type=int, default=5, help="unix port: runs of each engine (the fastest counts)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not os.environ.get("MICROPY_DIR"):
        print("skipped: MICROPY_DIR is not set (a MicroPython checkout; docs/FIRMWARE.md)")
        return 0
    if not UNIX.exists():
        print(f"skipped: no unix build at {UNIX.relative_to(REPO)}; run make firmware PORT=unix MICROPY_DIR=...")
        return 0
    if stale_reason(UNIX):
        print(f"skipped: {stale_reason(UNIX)}")
        return 0
    m = bench_model(args.seed)
    data = pack.to_bytes(m)
    x, y, what = samples_for(args.samples, args.seed)
    n = len(y)
    # the host's C core on the same samples: the file the device must end in
    t = ccore.CTrainer(data)
    t.steps(pack_input(x, PLANE_MASK), y)
    want = t.data()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "m.rbnn").write_bytes(data)
        (d / "xs.bin").write_bytes(x.tobytes())
        (d / "ys.bin").write_bytes(y.tobytes())
        (d / "bench.py").write_text(SCRIPT)
        proc = subprocess.run([str(UNIX), "bench.py", str(n)], cwd=d, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return 1
        got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
        batch = bytearray((d / "batch.rbnn").read_bytes())
        single = (d / "single.rbnn").read_bytes()
    # batch.rbnn was written before a reseal: compare all but the CRC
    same = bytes(batch[:-4]) == want[:-4] and single == want
    t_batch, hits = map(int, got["BATCH"].split())
    t_single, _ = map(int, got["SINGLE"].split())
    print(f"C module `_rbnn`, MicroPython unix port, one thread: {N_INPUTS}-{'-'.join(map(str, SIZES))}, "
          f"{N_PLANES}-plane arena, {BITS}-bit live block, {n} {what}")  # fmt: skip
    print(f"  train_batch: {n / (t_batch / 1e6):,.0f} samples/s ({t_batch / n:.1f} us/sample)")
    print(f"  train:       {n / (t_single / 1e6):,.0f} samples/s ({t_single / n:.1f} us/sample, one call each)")
    print(f"  {hits} right predictions before the update, {got['ACTIVE']} steps updated")
    print(f"  file equals the host C core's (CTrainer) after the same steps: {'yes' if same else 'NO'}")
    if args.ratio_samples:
        same &= ratio(args.ratio_samples, args.seed, args.big_rv32, args.repeats)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
