"""CNN inference on the device engines: the C module `_rbnn` against the fallback's viper and
plain code, on the 28x28 CNN of issue 9 (conv 32 + pool, conv 64 + pool, dense 128, dense
10, 3x3 kernels, pad 1, MSB input plane; random weights: speed does not depend on them,
54 kB) over MNIST test images when the cache has them, else random bytes.

- the unix port built with the C module (``make firmware PORT=unix MICROPY_DIR=...``),
  timed with time.ticks_us (x86-64: a loaded machine moves these figures);
- the qemu VIRT_RV32 build (``make firmware PORT=qemu BOARD=VIRT_RV32 FW_QEMU_FREEZE=0
  MICROPY_DIR=...``) under ``-icount shift=0``: ticks_us counts guest instructions / 1000,
  the same on every run (rv32imac, the ESP32-C3/C6 instruction set; a ratio of
  instruction counts, not of a real core's cycles).

Every engine's scores must equal the numpy twin's. Without the builds it prints why and
exits 0. Run: ``python bench/cmodule_conv.py [--samples N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from rbnn.engines import twin  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import pack_input  # noqa: E402
from support.fwstale import stale_reason  # noqa: E402
from support.randconv import mnist_cnn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UNIX = REPO / "build" / "firmware" / "unix-standard" / "micropython"
RV32 = REPO / "build" / "firmware" / "qemu-VIRT_RV32" / "firmware.elf"

# Globals: model (the file), xs (packed samples), NS (their number), RUNS (engine -> samples
# timed). The first inference of each engine (viper: compiles the conv kernel) is not timed;
# then the scores of every timed sample are printed (not timed).
BENCH = r"""
import time, gc
from array import array
def _bench(engine, n):
    if engine == "c":
        import _rbnn
        M = _rbnn.Model
    else:
        import rbnn_py
        rbnn_py.use(engine)
        M = rbnn_py.Model
    m = M(model)
    pb = len(xs) // NS
    xv = memoryview(xs)
    views = [xv[i * pb:(i + 1) * pb] for i in range(n)]
    out = array("i", [0] * m.n_classes)
    m.scores(views[0], out)
    gc.collect()
    t = time.ticks_us()
    for v in views:
        m.scores(v, out)
    dt = time.ticks_diff(time.ticks_us(), t)
    print("TIME", engine, n, dt, m.info()["ram"])
    for i in range(n):
        m.scores(views[i], out)
        print("S", engine, i, " ".join([str(s) for s in out]))
for _e, _n in RUNS:
    _bench(_e, _n)
    gc.collect()
"""


def inputs(n: int, seed: int) -> tuple[np.ndarray, str]:
    try:
        from rbnn import data

        return data.load("mnist").x_test[:n], "MNIST test images"
    except Exception:  # no cache: speed does not depend on the pixels
        return np.random.default_rng(seed).integers(0, 256, (n, 784), dtype=np.uint8), "random bytes"


def report(where: str, out: str, want: np.ndarray) -> bool:
    """Print us per inference of each engine and the ratios; True when every score is the twin's."""
    times, ok = {}, True
    for line in out.splitlines():
        if line.startswith("TIME "):
            _, engine, n, dt, ram = line.split()
            times[engine] = (int(dt) / int(n), int(ram))
        elif line.startswith("S "):
            _, engine, i, *sc = line.split()
            ok &= [int(v) for v in sc] == want[int(i)].tolist()
    print(f"\n{where}:")
    for engine, (us, ram) in times.items():
        print(f"  {engine:6s} {us:12,.0f} us/inference   (RAM per inference {ram:,} bytes)")
    c = times["c"][0]
    print("  C module " + ", ".join(f"{times[e][0] / c:.1f}x {e}" for e in times if e != "c")
          + ("" if ok else "   SCORES DIFFER FROM THE TWIN"))  # fmt: skip
    return ok


def job(m, n: int, seed: int) -> tuple[bytes, bytes, np.ndarray, str]:
    """(the model file, n packed samples, the twin's scores, a title)."""
    data = pack.to_bytes(m)
    x, what = inputs(n, seed)
    xb = pack_input(x, m.plane_mask)
    convs = "-".join(f"conv{ly.size}" + ("/pool" if ly.pool else "") for ly in m.layer_specs if ly.kind)
    dense = "-".join(str(ly.size) for ly in m.layer_specs if not ly.kind)
    title = f"784-{convs}-{dense} ({len(data):,} bytes), {n} {what}, packed"
    return data, np.ascontiguousarray(xb, dtype="<u4").tobytes(), twin.scores(m, xb), title


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20, help="timed inferences (C, viper); plain Python: 2")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    data, xs, want, title = job(mnist_cnn(rng), a.samples, a.seed)
    runs = [("c", a.samples), ("viper", a.samples), ("python", 2)]
    head = f"NS = {a.samples}\nRUNS = {runs!r}\n"
    ok = True
    if UNIX.exists() and stale_reason(UNIX):
        print(f"unix port: skipped: {stale_reason(UNIX)}")
    elif UNIX.exists():
        from mpy_helpers import run_mpy_code

        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "m.rbnn").write_bytes(data)
            (Path(d) / "xs.bin").write_bytes(xs)
            code = 'model = open("m.rbnn", "rb").read()\nxs = open("xs.bin", "rb").read()\n' + head + BENCH
            ok &= report(f"unix port (x86-64): {title}", run_mpy_code(str(UNIX), code, Path(d)).stdout, want)
    else:
        print(f"no {UNIX}: make firmware PORT=unix MICROPY_DIR=...")
    if RV32.exists() and stale_reason(RV32):
        print(f"qemu VIRT_RV32: skipped: {stale_reason(RV32)}")
    elif RV32.exists():
        # its 140 kB heap holds a smaller CNN with the fallback's modules: conv 8 + pool,
        # conv 16 + pool, dense 32, dense 10
        from test_cmodule import QEMU_BOARDS, RawRepl
        from test_fallback_conv import conv_model
        from test_replay_boards import load_fallback

        from rbnn.format.model import Layer

        small = conv_model(rng, (28, 28, 1), [Layer.conv(8, 3, pool=True), Layer.conv(16, 3, pool=True), Layer(32),
                                              Layer(10)], 0x80)  # fmt: skip
        n = min(a.samples, 5)
        data, xs, want, title = job(small, n, a.seed)
        head = f"NS = {n}\nRUNS = {[('c', n), ('viper', n), ('python', 1)]!r}\n"
        qemu, _, _, args = QEMU_BOARDS["VIRT_RV32"]
        board = RawRepl([qemu, *args, "-icount", "shift=0", "-serial", "stdio", "-kernel", str(RV32)], timeout=600)
        try:
            board.put("model", data)
            board.put("xs", xs)
            with tempfile.TemporaryDirectory() as d:
                assert load_fallback(board, Path(d), ("rbnn_py", "rbnn_pyconv")) == "viper"
            out = board.exec(head + BENCH)
        finally:
            board.close()
        ok &= report(f"qemu VIRT_RV32 (rv32imac) -icount shift=0, 1 us = 1,000 guest instructions: {title}", out,
                     want)  # fmt: skip
    else:
        print(f"no {RV32}: make firmware PORT=qemu BOARD=VIRT_RV32 FW_QEMU_FREEZE=0 MICROPY_DIR=...")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
