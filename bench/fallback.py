"""Per-sample inference time of the pure-MicroPython engine (firmware/rbnn_py.py) on the
MicroPython unix port, viper and plain code side by side, with the numpy twin for scale;
then training samples/s of its integer step (rbnn_pytrain.py) on a 784-64-64-10 model in a
16-plane arena, viper against plain code.

Every engine's scores are checked against the twin on the same samples before a time is
printed, and every engine's trained file against the twin's bytes.
Usage: python bench/fallback.py [--samples N] [--repeats R] [--train-samples N]
($RBNN_MICROPYTHON picks another micropython binary, e.g. a 32-bit or C-module build.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from rbnn.engines import twin  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import pack_input  # noqa: E402
from rbnn.learn import step as learn_step  # noqa: E402
from support.randmodel import host_like_model, random_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"

# Runs inside micropython: argv = model, raw samples, samples to time, repeats.
DEVICE = r"""
import sys, time  # noqa: E402
from array import array  # noqa: E402
import rbnn  # noqa: E402
m = rbnn.load(sys.argv[1])
n_in = m.n_inputs
raw = open(sys.argv[2], "rb").read()
n = len(raw) // n_in
xs = [raw[i * n_in:(i + 1) * n_in] for i in range(n)]
out = array("i", [0] * m.n_classes)
for x in xs:  # answers first (not timed), for the check against the twin
    m.scores(x, out)
    print("S", " ".join([str(v) for v in out]))
timed = int(sys.argv[3])
best = None
for r in range(int(sys.argv[4])):
    t = time.ticks_us()
    for i in range(timed):
        m.predict(xs[i % n])
    dt = time.ticks_diff(time.ticks_us(), t)
    if best is None or dt < best:
        best = dt
print("US", best / timed)
print("ENGINE", rbnn.engine)
"""


# Runs inside micropython: argv = model, raw samples, labels, samples to check, samples
# to time, output file. Trains on the first samples (checked: the file is saved), then
# times train() over the rest.
DEVICE_TRAIN = r"""
import sys, time  # noqa: E402
import rbnn  # noqa: E402
m = rbnn.load(sys.argv[1])
n_in = m.n_inputs
raw = open(sys.argv[2], "rb").read()
labels = open(sys.argv[3], "rb").read()
n_check, n_time = int(sys.argv[4]), int(sys.argv[5])
xs = [raw[i * n_in:(i + 1) * n_in] for i in range(len(labels))]
for i in range(n_check):
    m.train(xs[i], labels[i])
m.save(sys.argv[6])
t = time.ticks_us()
for i in range(n_check, n_check + n_time):
    m.train(xs[i], labels[i])
dt = time.ticks_diff(time.ticks_us(), t)
print("US", dt / n_time)
print("ENGINE", rbnn.engine)
"""


def micropython_binary() -> str:
    """$RBNN_MICROPYTHON (made absolute), else the venv's or PATH's micropython."""
    from rbnn.device.virtual import VirtualDeviceError, find_micropython

    try:
        return find_micropython()
    except VirtualDeviceError as e:
        sys.exit(f"bench/fallback.py: {e}")


def c_module_binary(default: str) -> str | None:
    """A micropython with the C module built in: $RBNN_MICROPYTHON if it has one, else
    the unix build of `make firmware PORT=unix` when present, else None."""
    probe = "try:\n import _rbnn\n print('c')\nexcept ImportError:\n print('none')\n"
    for mp in (default, str(REPO / "build" / "firmware" / "unix-standard" / "micropython")):
        if not Path(mp).exists():
            continue
        p = subprocess.run([mp, "-c", probe], capture_output=True, text=True, timeout=60)
        if p.stdout.strip() == "c":
            return mp
    return None


def run_device(mp: str, engine: str, model: Path, raw: Path, timed: int, repeats: int, work: Path):
    script = work / "bench_device.py"
    script.write_text(DEVICE)
    env = dict(os.environ, MICROPYPATH=str(FIRMWARE), RBNN_ENGINE=engine)
    cmd = [mp, str(script), str(model), str(raw), str(timed), str(repeats)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode:
        sys.exit(f"micropython failed ({engine}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    lines = p.stdout.splitlines()
    scores = np.array([[int(v) for v in ln.split()[1:]] for ln in lines if ln.startswith("S ")])
    us = float(next(ln.split()[1] for ln in lines if ln.startswith("US ")))
    got = next(ln.split()[1] for ln in lines if ln.startswith("ENGINE "))
    if got != engine:
        sys.exit(f"asked for engine {engine}, micropython ran {got}")
    return scores, us


def twin_us(m, xb: np.ndarray, repeats: int) -> float:
    """Best per-sample time of the twin called one sample at a time."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(xb)):
            twin.scores(m, xb[i : i + 1])
        best = min(best, (time.perf_counter() - t) / len(xb))
    return best * 1e6


def c_module_trains(mp_c: str | None) -> bool:
    """Whether that micropython's C module has the training step (Model.train)."""
    if not mp_c:
        return False
    probe = "import _rbnn\nprint(hasattr(_rbnn.Model, 'train'))\n"
    p = subprocess.run([mp_c, "-c", probe], capture_output=True, text=True, timeout=60)
    return p.stdout.strip() == "True"


def run_train(mp: str, engine: str, model: Path, raw: Path, labels: Path, n_check: int, n_time: int, work: Path):
    """Train on the device: (the file after n_check steps, microseconds per step)."""
    script = work / "bench_train.py"
    script.write_text(DEVICE_TRAIN)
    out = work / f"trained-{engine}.rbnn"
    env = dict(os.environ, MICROPYPATH=str(FIRMWARE), RBNN_ENGINE=engine)
    cmd = [mp, str(script), str(model), str(raw), str(labels), str(n_check), str(n_time), str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode:
        sys.exit(f"micropython failed (training, {engine}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    lines = p.stdout.splitlines()
    got = next(ln.split()[1] for ln in lines if ln.startswith("ENGINE "))
    if got != engine:
        sys.exit(f"asked for engine {engine}, micropython ran {got}")
    return out.read_bytes(), float(next(ln.split()[1] for ln in lines if ln.startswith("US ")))


def bench_train(mp: str, mp_c: str | None, n_samples: int, work: Path) -> None:
    """Training samples/s of the fallback, viper against plain code (and the C module's
    when mp_c has it), every step updating (margin = the block budget): the slowest case
    of the rule."""
    rng = np.random.default_rng(2)
    m = host_like_model(rng)
    data = pack.to_bytes(m)
    model = work / "train.rbnn"
    model.write_bytes(data)
    n_check = 20
    counts = {"viper": n_samples, "python": max(4, n_samples // 20)}
    binary = {"viper": mp, "python": mp}
    if c_module_trains(mp_c):
        counts["c"], binary["c"] = 10 * n_samples, mp_c
    total = n_check + max(counts.values())
    x = rng.integers(0, 256, (total, 784), dtype=np.uint8)
    x[rng.random(x.shape) < 0.8] = 0  # sparse, as MNIST digits
    y = rng.integers(0, 10, total).astype(np.uint8)
    (work / "train.raw").write_bytes(x.tobytes())
    (work / "train.labels").write_bytes(y.tobytes())
    xb = pack_input(x[:n_check], m.plane_mask)
    for i in range(n_check):
        learn_step.step(m, xb[i], int(y[i]))
    want = pack.to_bytes(m)
    us = {}
    for engine, n in counts.items():
        got, us[engine] = run_train(binary[engine], engine, model, work / "train.raw", work / "train.labels", n_check,
                                    n, work)  # fmt: skip
        if got != want:
            sys.exit(f"{engine}: the trained file differs from the twin's")
    print()
    print(f"training step, 784-64-64-10 in a 16-plane arena ({len(data):,} bytes), one frozen block and a live "
          "8-bit block, every step updating; train(raw 784 bytes)")  # fmt: skip
    print(f"the file after {n_check} steps equals the twin's on every engine")
    print(f"{'engine':<10}{'us/step':>10}{'samples/s':>11}")
    for engine in counts:
        print(f"{engine:<10}{us[engine]:>10.0f}{1e6 / us[engine]:>11.1f}")
    print(f"python/viper: {us['python'] / us['viper']:.1f}" + (f", viper/c: {us['viper'] / us['c']:.1f}" if "c" in us else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--samples", type=int, default=16, help="distinct samples checked against the twin"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats; the best is reported")
    ap.add_argument("--train-samples", type=int, default=200, help="training steps timed (viper; plain: 1/20)")
    args = ap.parse_args(argv)
    mp = micropython_binary()
    mp_c = c_module_binary(mp)
    runs = [("viper", mp, 200), ("python", mp, 10)] + ([("c", mp_c, 2000)] if mp_c else [])
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mask, label in [(0x80, "1 plane (MSB)"), (0xF0, "4 planes")]:
            m = random_model(rng, n_inputs=784, sizes=[256, 256, 10], plane_mask=mask)
            model = work / f"m{mask:02x}.rbnn"
            model.write_bytes(pack.to_bytes(m))
            x = rng.integers(0, 256, (args.samples, 784), dtype=np.uint8)
            raw = work / f"x{mask:02x}.bin"
            raw.write_bytes(x.tobytes())
            xb = pack_input(x, mask)
            want = twin.scores(m, xb)
            times = {"twin": twin_us(m, xb, args.repeats)}
            for engine, binary, timed in runs:
                scores, us = run_device(binary, engine, model, raw, timed, args.repeats, work)
                if scores.shape != want.shape or not np.array_equal(scores, want):
                    sys.exit(f"{engine}: scores differ from the twin ({label})")
                times[engine] = us
            rows.append((label, times))
    print(
        f"fallback engine, 784-256-256-10, micropython unix port ({mp}); per-sample predict(raw 784 bytes)"
    )
    if mp_c:
        print(f"engine c: the C module in {mp_c}")
    else:
        print(
            "engine c: no micropython with the C module here (make firmware PORT=unix MICROPY_DIR=...)"
        )
    print(f"scores of every engine equal the twin's on {args.samples} samples per model")
    head = f"{'input':<16}{'viper us':>10}{'python us':>11}{'twin us':>9}{'python/viper':>14}{'viper/twin':>12}"
    if mp_c:
        head += f"{'c us':>8}{'viper/c':>9}"
    print(head)
    for label, t in rows:
        line = (
            f"{label:<16}{t['viper']:>10.1f}{t['python']:>11.1f}{t['twin']:>9.1f}"
            f"{t['python'] / t['viper']:>14.1f}{t['viper'] / t['twin']:>12.2f}"
        )
        if mp_c:
            line += f"{t['c']:>8.1f}{t['viper'] / t['c']:>9.1f}"
        print(line)
    with tempfile.TemporaryDirectory() as tmp:
        bench_train(mp, mp_c, args.train_samples, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
