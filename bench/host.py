"""Host inference throughput, one thread: the C core, the numpy twin, a float32 numpy MLP.

All three compute the same 784-256-256-10 network (MSB input plane, random weights) on
the same batch, and their scores are checked equal before anything is timed: the C core
through rbnn.engines.ccore.CModel (ctypes, one call per batch), the twin (rbnn.engines.twin, the
bit-exact numpy reference), and the float32 MLP a numpy user would write: a matmul per
layer on +-1 values and weights, a comparison with the folded threshold per hidden
neuron (flips folded into the next layer's weights), scale and offset on the output.
Float32 is exact here (every sum is an integer below 2^24), so its scores must equal
the twin's too.

Each engine gets its input already in its own form (packed bits, or float32 +-1), and
is timed over the whole batch in interleaved rounds; the best round counts. Times are
CPU time of this thread (time.thread_time), so other processes on a shared machine do
not distort the ratios; wall-clock rates are printed beside them.

The ratio depends on the numpy build and its BLAS (library, the kernel OpenBLAS picked
for this CPU, threads, any OPENBLAS_CORETYPE override) and on the CPU: the run prints
them beside the ratio, and a figure quoted elsewhere should carry them.

Run: ``python bench/host.py`` (``make bench`` runs it before bench/m0plus.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import os  # noqa: E402

# One thread for every BLAS numpy may use; must be set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from rbnn.engines import ccore, twin  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import Model, input_values, pack_input  # noqa: E402
from rbnn.train.blas import conditions  # noqa: E402
from support.randconv import mnist_cnn  # noqa: E402
from support.randmodel import random_model  # noqa: E402

N_INPUTS, SIZES, PLANE_MASK = 784, [256, 256, 10], 0x80
TARGET = 3.0  # C core / float32 matmul (issue #2)


def float_mlp(m: Model) -> Callable[[np.ndarray], np.ndarray]:
    """The model as float32 numpy: +-1 features (n, n_inputs) -> float32 scores (n, classes).

    Hidden neuron j outputs +1 when its sum reaches threshold[j], -1 otherwise; a
    flipped neuron's output is negated, which is folded into the next layer's weights.
    """
    blk = m.blocks[0]
    ws = [np.where(m.sign_weights(0, lay), 1.0, -1.0).astype(np.float32) for lay in range(m.n_layers)]
    mats, thrs = [], []
    for lay in range(m.n_layers):
        w = ws[lay].T.copy()  # (in, out): x @ w
        if lay > 0:
            flip = np.asarray(blk.flips[lay - 1], bool)
            w[flip, :] *= -1.0
        mats.append(np.ascontiguousarray(w))
        if lay < m.n_layers - 1:
            thrs.append(np.asarray(blk.thresholds[lay], np.float32))
    scale = np.asarray(blk.scale, np.float32)
    offset = np.asarray(blk.offset, np.float32)
    one, minus = np.float32(1.0), np.float32(-1.0)

    def run(xf: np.ndarray) -> np.ndarray:
        h = xf
        for w, t in zip(mats[:-1], thrs, strict=True):
            h = np.where(h @ w >= t, one, minus)
        return (h @ mats[-1]) * scale + offset

    return run


def kernel_name() -> str:
    """The compiled kernel version, and the run-time choice within it where it has one."""
    lib = ccore.lib()
    name = ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(lib, "rbnn_kernel_name"))).decode()
    if hasattr(lib, "rbnn_kernel_active"):
        name += f" build, running {lib.rbnn_kernel_active().decode()}"
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2000, help="samples per timed call")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (best counts)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    model = random_model(rng, n_inputs=N_INPUTS, sizes=SIZES, plane_mask=PLANE_MASK)
    data = pack.to_bytes(model)
    x = rng.integers(0, 256, (args.batch, N_INPUTS), dtype=np.uint8)
    xbits = pack_input(x, PLANE_MASK)
    xf = input_values(x, PLANE_MASK)  # float32 +-1

    cmodel = ccore.CModel(data)
    flt = float_mlp(model)
    engines = {
        "C core (rbnn.engines.ccore)": lambda: cmodel.scores(xbits),
        "numpy twin (rbnn.engines.twin)": lambda: twin.scores(model, xbits),
        "numpy float32 matmul": lambda: flt(xf),
    }
    ref = twin.scores(model, xbits)
    for name, fn in engines.items():
        got = np.asarray(fn())
        if not np.array_equal(got.astype(np.int64), ref.astype(np.int64)):
            print(f"FAILED: {name} scores differ from the twin", file=sys.stderr)
            return 1

    cpu = {k: float("inf") for k in engines}
    wall = dict(cpu)
    for _ in range(args.rounds):
        for name, fn in engines.items():
            t0, w0 = time.thread_time(), time.perf_counter()
            fn()
            t1, w1 = time.thread_time(), time.perf_counter()
            cpu[name] = min(cpu[name], t1 - t0)
            wall[name] = min(wall[name], w1 - w0)

    shape = "-".join(str(s) for s in [N_INPUTS, *SIZES])
    print(f"host inference, one thread: {shape}, MSB input plane, random weights, "
          f"batch {args.batch}, best of {args.rounds} rounds; C kernel {kernel_name()}")  # fmt: skip
    print(f"conditions: {conditions()}")
    print("all three give the twin's scores on the whole batch: yes")
    base = "numpy float32 matmul"
    print(f"  {'engine':26}{'samples/s':>12}{'us/sample':>11}{'(wall) samples/s':>18}{'vs float32':>12}")
    for name in engines:
        rate = args.batch / cpu[name]
        print(f"  {name:26}{rate:12,.0f}{1e6 / rate:11.2f}{args.batch / wall[name]:18,.0f}"
              f"{cpu[base] / cpu[name]:11.2f}x")  # fmt: skip
    ratio = cpu[base] / cpu["C core (rbnn.engines.ccore)"]
    print(f"  C core / numpy float32 matmul: {ratio:.2f}x (target >= {TARGET:.0f}x: "
          f"{'met' if ratio >= TARGET else 'NOT met'}), under the conditions above")  # fmt: skip
    batch_paths(cmodel, xbits, ref, args.batch, args.rounds)
    cnn(rng, min(args.batch, 1000), args.rounds)
    return 0


def cnn(rng: np.random.Generator, batch: int, rounds: int) -> None:
    """The binary CNN of issue 9 (28x28x1: conv3x3 32 + pool, conv3x3 64 + pool, 128, 10;
    random weights) through the C core and the twin: samples/s, scores checked equal. The
    C core runs conv positions 16 at a time through each weight row (64-bit hosts); its
    comparison with larq compute engine is bench/peer_lce.py (make bench-peer)."""
    model = mnist_cnn(rng)
    xbits = pack_input(rng.integers(0, 256, (batch, 784), dtype=np.uint8), 0x80)
    cm = ccore.CModel(pack.to_bytes(model))
    small = xbits[: max(1, batch // 10)]  # the twin is slow: a tenth of the batch
    if not (np.array_equal(cm.scores(xbits[: len(small)]), twin.scores(model, small))):
        print("FAILED: C core CNN scores differ from the twin", file=sys.stderr)
        sys.exit(1)
    runs = {"C core (rbnn.engines.ccore)": (lambda: cm.scores(xbits), batch),
            "numpy twin (rbnn.engines.twin)": (lambda: twin.scores(model, small), len(small))}  # fmt: skip
    best = {k: float("inf") for k in runs}
    for _ in range(rounds):
        for name, (fn, _) in runs.items():
            t0 = time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - t0)
    print()
    print(f"binary CNN 28x28x1 (conv3x3 32 same + 2x2 pool, conv3x3 64 same + 2x2 pool, 128, 10), MSB plane, "
          f"random weights, {cm.ram_bytes:,} bytes of working RAM (eBNN order); best of {rounds} rounds, "
          f"scores = twin: yes")  # fmt: skip
    for name, (_, n) in runs.items():
        print(f"  {name:32}{n / best[name]:12,.0f} samples/s{1e6 * best[name] / n:10.1f} us/sample")


def batch_paths(cmodel: ccore.CModel, xbits: np.ndarray, ref: np.ndarray, batch: int, rounds: int) -> None:
    """C core batch throughput per kernel (AVX2, AVX-512 VPOPCNTDQ where the CPU has it)
    and per batch path: one sample at a time (tile 1, what every release before the tiles
    did) against the tiled path (up to 8 samples per weight row), as ratios in one run."""
    kernels = ccore.kernels()
    old_kernel, old_tile = ccore.select_kernel(kernels[0]), ccore.set_batch_tile(1)
    ccore.set_batch_tile(old_tile)
    tile = old_tile  # the build's full tile (1 where it has none)
    configs = [(k, t) for k in kernels for t in dict.fromkeys((1, tile))]
    best = {c: float("inf") for c in configs}
    try:
        for k, t in configs:  # every path gives the twin's scores before it is timed
            ccore.select_kernel(k)
            ccore.set_batch_tile(t)
            if not np.array_equal(cmodel.scores(xbits), ref):
                raise SystemExit(f"FAILED: C core kernel {k} tile {t} differs from the twin")
        for _ in range(rounds):
            for k, t in configs:
                ccore.select_kernel(k)
                ccore.set_batch_tile(t)
                t0 = time.thread_time()
                cmodel.scores(xbits)
                best[(k, t)] = min(best[(k, t)], time.thread_time() - t0)
    finally:
        ccore.select_kernel(old_kernel)
        ccore.set_batch_tile(old_tile)
    base = configs[-1] if len(kernels) == 1 else (kernels[-1], 1)  # slowest expected: AVX2 one at a time
    print(f"C core batch paths (all give the twin's scores), vs {base[0]} one at a time:")
    print(f"  {'kernel':18}{'samples a tile':>15}{'samples/s':>12}{'ratio':>8}")
    for k, t in configs:
        print(f"  {k:18}{t:15d}{batch / best[(k, t)]:12,.0f}{best[base] / best[(k, t)]:7.2f}x")
    for k in kernels:
        if (k, tile) in best and tile > 1:
            print(f"  tiled / one at a time, {k}: {best[(k, 1)] / best[(k, tile)]:.2f}x")
    if len(kernels) > 1:
        fast, slow = kernels[0], kernels[-1]
        print(f"  {fast} / {slow}, tiled: {best[(slow, tile)] / best[(fast, tile)]:.2f}x; "
              f"one at a time: {best[(slow, 1)] / best[(fast, 1)]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
