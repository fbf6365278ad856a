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

Needs $MICROPY_DIR and its unix build in build/firmware/unix-standard/ (``make firmware
PORT=unix MICROPY_DIR=...``); without them it prints why and exits 0.

Run: ``python bench/cmodule_train.py [--samples N]``.
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
from support.randmodel import trainable_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UNIX = REPO / "build" / "firmware" / "unix-standard" / "micropython"
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


def bench_model(seed: int) -> Model:
    """One frozen block in 16 planes, the 8-bit live block opened by the first step."""
    rng = np.random.default_rng(seed)
    m = trainable_model(rng, n_inputs=N_INPUTS, sizes=SIZES, plane_mask=PLANE_MASK, n_frozen=1, bits=BITS,
                        live=False, spare_slots=1, spare_planes=N_PLANES - 1, grow_every=0, grow_left=1,
                        steps=0, hits=0, active=0, block_steps=0, stream_base=0)  # fmt: skip
    st, d = m.state(), defaults(m, "domain", BITS)
    for name in HYPER:
        setattr(st, name, getattr(d, name))
    assert m.n_planes == N_PLANES
    return m


def samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST training digits when cached (rbnn.data.load never downloads), else random bytes."""
    from rbnn import data as rdata
    from rbnn.errors import RbnnError

    try:
        ds = rdata.load("mnist", parts=("train",))
        return ds.x_train[:n].reshape(n, -1).astype(np.uint8), ds.y_train[:n].astype(np.uint8), "MNIST digits"
    except RbnnError as e:  # not cached: random inputs time the same
        print(f"(MNIST not used: {e})")
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, N_INPUTS), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8), "random bytes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not os.environ.get("MICROPY_DIR"):
        print("skipped: MICROPY_DIR is not set (a MicroPython checkout; docs/FIRMWARE.md)")
        return 0
    if not UNIX.exists():
        print(f"skipped: no unix build at {UNIX.relative_to(REPO)}; run make firmware PORT=unix MICROPY_DIR=...")
        return 0
    m = bench_model(args.seed)
    data = pack.to_bytes(m)
    x, y, what = samples(args.samples, args.seed)
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
