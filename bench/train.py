"""The integer training step (docs/TRAINING.md): host speed, Cortex-M0+ cycles, memory.

The block of issue 7: 784-64-64-10 on the MSB input plane, an arena of 16 planes holding
block 1 (host-trained on MNIST for one epoch, frozen, folded to the block budget as
``rbnn train --arena 16`` does) and a live block of 8-bit counters opened by the step; its
hyper-parameters those of a growth run on data unlike the frozen block's ("domain",
rbnn.learn.defaults), its samples MNIST training digits rotated by 45 degrees (a sensor
mounted at an angle, the device's own data in issue 7).

- Host, one thread: training steps/s of the C core (rbnn.engines.ccore.CTrainer, one call
  per batch) and of the numpy twin (rbnn.learn.step.step with the frozen block's scores
  precomputed, as rbnn grow runs it); both end in the same bytes, checked.
- Cortex-M0+: the core cross-built at -O2 (as the firmware builds it) and run in the
  cycle emulator (tests/support/m0sim.py, zero wait states): cycles of rbnn_train_step on
  50 samples, mean and max, and split into forward, backward and update (from a
  -fno-inline build of the same code, where each phase is its own function); the file
  after the steps equals the twin's. Also the worst case: every step updates and every
  row with a signal moves (lr 0, no decay, a margin no score meets), on the digits and
  on dense random inputs.
- Memory: the scratch, the deepest stack of a step (measured: the stack is filled with a
  pattern before each call), the packed input and the model struct, against a
  Courbariaux-style float baseline for the same block (float32 latent weights, Adam's m
  and v, BatchNorm, float activations kept for the backward pass, batch 1).

Run: ``python bench/train.py`` (``make bench`` runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import os  # noqa: E402

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread, before numpy is imported

import argparse  # noqa: E402
import ctypes  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from rbnn import data as rdata  # noqa: E402
from rbnn.engines import ccore  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import Model, pack_input  # noqa: E402
from rbnn.format.pack import layer_smax  # noqa: E402
from rbnn.learn import step as S  # noqa: E402
from rbnn.learn.arena import into_arena  # noqa: E402
from rbnn.learn.defaults import defaults  # noqa: E402
from rbnn.train import QUICK_RECIPE, train  # noqa: E402
from rbnn.train.augment import rotate  # noqa: E402
from support import m0build  # noqa: E402
from support.m0sim import SRAM_BASE, SRAM_SIZE, STACK_BYTES, M0Plus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "cmodules" / "rbnn"
BUILD = REPO / "build" / "m0plus"
N_INPUTS, HIDDEN, PLANE_MASK, N_PLANES, BITS = 784, [64, 64], 0x80, 16, 8
MHZ = 125
# issue 7: cycles per step, RAM beyond the arena, factor against float, host steps/s
TARGET_CYCLES, TARGET_RAM, TARGET_FACTOR, TARGET_HOST = 250_000, 2048, 10, 20_000
PHASES = {  # functions of rbnn_core.c / rbnn_train.c / rbnn_kernel.c in each phase
    "forward": ("run_block", "rbnn_block_scores", "rbnn_group_sums", "rbnn_plane_weights", "live_forward",
                "rbnn_xorpop_rows", "rows_m0", "row_m0", "rbnn_xorpop", "xorpop_long", "rbnn_check_input"),
    "backward": ("hinge", "signal_below"),
    "update": ("update_layer", "move_even", "move_any", "update_offsets", "rand_at", "lowbias32",
               "rbnn_layer_smax", "to_i32", "clamp"),
}  # fmt: skip


# --- the model --------------------------------------------------------------------------
def growth_model(ds, seed: int) -> tuple[Model, float]:
    """Block 1 trained on MNIST (one epoch) and folded into an arena of 16 planes
    (rbnn.learn.arena.into_arena, as ``rbnn train --arena 16``), the hyper-parameters of
    a run on data unlike its own (rbnn.learn.defaults, "domain"), an 8-bit live block
    opened. Returns the model and block 1's accuracy on unrotated test digits."""
    res = train(ds, progress=False, **{**QUICK_RECIPE, "hidden": HIDDEN, "seed": seed})
    m = into_arena(res.net, N_PLANES)
    acc = float(np.mean(np.argmax(ccore.CModel(pack.to_bytes(m)).scores(pack_input(ds.x_test, PLANE_MASK)), 1)
                        == ds.y_test))  # fmt: skip
    m.train = defaults(m, "domain", BITS)
    m.train.seed = seed
    S.new_block(m)
    pack.to_bytes(m)  # a file the readers accept
    return m, acc


def worst_case(m: Model) -> Model:
    """The same model where every step updates and every row with a signal moves."""
    w = pack.from_bytes(pack.to_bytes(m))
    st = w.state()
    st.lr, st.decay, st.margin, st.loss = [0] * w.n_layers, 31, w.budget, 1
    st.gate = [layer_smax(w, i) for i in range(w.n_layers - 1)]
    return w


# --- host ---------------------------------------------------------------------------------
def host_speed(m: Model, xb: np.ndarray, y: np.ndarray, n_twin: int, rounds: int) -> dict:
    data = pack.to_bytes(m)
    twin_m = pack.from_bytes(data)
    t0 = time.thread_time()
    frozen = S.frozen_scores(twin_m, xb[:n_twin])
    for i in range(n_twin):
        S.step(twin_m, xb[i], int(y[i]), frozen[i])
    t_twin = time.thread_time() - t0
    t = ccore.CTrainer(data)
    t.steps(xb[:n_twin], y[:n_twin])
    same = t.data() == pack.to_bytes(twin_m)
    best = float("inf")
    for _ in range(rounds):
        t = ccore.CTrainer(data)
        t0 = time.thread_time()
        t.steps(xb, y)
        best = min(best, time.thread_time() - t0)
    return {"c": len(xb) / best, "twin": n_twin / t_twin, "same": same, "n": len(xb), "n_twin": n_twin}


# --- Cortex-M0+ -------------------------------------------------------------------------------
def _arm_model_struct_bytes() -> int:
    """sizeof(rbnn_model_t) on a 32-bit target: the ctypes mirror with a 4-byte pointer."""

    class M32(ctypes.Structure):
        _fields_ = [("buf", ctypes.c_uint32)] + ccore._Model._fields_[1:]

    return ctypes.sizeof(M32)


def m0_steps(elf: Path, m: Model, xb: np.ndarray, y: np.ndarray) -> dict:
    """rbnn_train_step on each sample in the emulator; the file after them and every
    prediction checked against the twin. Cycles, deepest stack, per-function profile."""
    cpu = M0Plus(elf)
    data = pack.to_bytes(m)
    addr = cpu.alloc(data)  # SRAM: the step writes the live block
    state = cpu.alloc(256)
    rc = cpu.call("rbnn_model_init", state, addr, len(data)).signed
    _check(rc == 0, f"rbnn_model_init returned {rc}")
    sb = cpu.call("rbnn_train_scratch_bytes", state).result
    scratch = cpu.alloc(sb)
    inp = cpu.alloc(xb[0].nbytes)
    top = SRAM_BASE + SRAM_SIZE
    twin_m = pack.from_bytes(data)
    cycles, stack, prof = [], 0, {}
    for i in range(len(xb)):
        cpu.write(inp, xb[i].tobytes())
        cpu.write(top - STACK_BYTES, b"\xa5" * (STACK_BYTES - 64))  # paint below the arguments
        r = cpu.call("rbnn_train_step", state, addr, inp, int(y[i]), scratch, 0)
        want = S.step(twin_m, xb[i], int(y[i]))
        _check(r.signed == want, f"sample {i}: the M0+ predicted {r.signed}, the twin {want}")
        low = cpu.read(top - STACK_BYTES, STACK_BYTES - 64)
        used = len(low) - next(j for j in range(0, len(low), 4) if low[j : j + 4] != b"\xa5" * 4)
        stack = max(stack, used + 64 - 8)  # the call's own stack arguments (8 bytes) are not the step's
        cycles.append(r.cycles)
        for f, c in r.profile.items():
            prof[f] = prof.get(f, 0) + c
    cpu.call("rbnn_reseal", state, addr)
    _check(cpu.read(addr, len(data)) == pack.to_bytes(twin_m), "the M0+ file differs from the twin's")
    return {"cycles": np.array(cycles), "stack": stack, "scratch": sb, "profile": prof}


def split(prof: dict) -> dict:
    total = sum(prof.values())
    out = {k: sum(prof.get(f, 0) for f in fs) / total for k, fs in PHASES.items()}
    out["other"] = 1.0 - sum(out.values())
    return out


# --- memory -------------------------------------------------------------------------------------
def float_baseline(n_inputs: int, sizes: list[int]) -> dict:
    """Bytes of a Courbariaux-style training step of the same block, batch 1, float32:
    latent weights, Adam's m and v for them; BatchNorm per unit (gamma, beta with Adam
    state, running mean and variance); activations kept for the backward pass (each
    layer's input, its BatchNorm input and output); two gradient vectors of the widest
    layer."""
    ins = [n_inputs] + sizes[:-1]
    w = sum(i * o for i, o in zip(ins, sizes, strict=True))
    units = sum(sizes)
    return {
        "latent weights": 4 * w,
        "Adam m and v": 8 * w,
        "BatchNorm (gamma, beta, Adam, running stats)": 4 * units * 8,
        "activations kept for backward": 4 * (sum(ins) + 2 * units),
        "gradients (two layers)": 4 * 2 * max(sizes),
    }


def _check(ok: bool, what: str) -> None:
    if not ok:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host-samples", type=int, default=20_000, help="steps timed through the C core")
    ap.add_argument("--twin-samples", type=int, default=1_000, help="steps timed through the twin")
    ap.add_argument("--m0-samples", type=int, default=50, help="steps run in the Cortex-M0+ emulator")
    ap.add_argument("--rounds", type=int, default=3, help="C timing rounds (best counts)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    ds = rdata.load("mnist")
    m, acc = growth_model(ds, args.seed)
    n = max(args.host_samples, args.m0_samples)
    x = rotate(ds.x_train[:n], (28, 28), 45.0)
    xb, y = pack_input(x, PLANE_MASK), ds.y_train[:n].astype(np.int64)
    st = m.state()
    shape = "-".join(str(s) for s in [N_INPUTS, *m.sizes])
    print(f"training step, {shape} block with {BITS}-bit weights, MSB input plane: block 1 host-trained "
          f"(one epoch, {acc:.1%} on unrotated test digits) frozen in an arena of {N_PLANES} planes, a live "
          f"block opened by the step; MNIST training digits rotated by 45 degrees")  # fmt: skip
    print(f"hyper-parameters: lr {st.lr}, decay {st.decay}, gate {st.gate}, thr_shift {st.thr_shift}, "
          f"scale 2^{st.scale_shift}, margin {st.margin}, loss {st.loss}, off_shift {st.off_shift}, "
          f"init_bits {st.init_bits} (score_q {m.score_q})")  # fmt: skip
    print()

    h = host_speed(m, xb[: args.host_samples], y[: args.host_samples], args.twin_samples, args.rounds)
    _check(h["same"], "C core and twin files differ after the same steps")
    print(f"host, one thread (CPU time of this thread; C: {h['n']:,} steps a call, best of {args.rounds}; "
          f"twin: {h['n_twin']:,} steps, frozen scores precomputed); same bytes after "
          f"{h['n_twin']:,} steps: yes")  # fmt: skip
    print(f"  C core (ccore.CTrainer.steps) {h['c']:12,.0f} steps/s")
    print(f"  numpy twin (learn.step.step)  {h['twin']:12,.0f} steps/s   C / twin: {h['c'] / h['twin']:.0f}x")
    print(f"  target >= {TARGET_HOST:,} steps/s: {'met' if h['c'] >= TARGET_HOST else 'NOT met'}")
    print()

    src = [SRC / "rbnn_core.c", SRC / "rbnn_kernel.c", SRC / "rbnn_train.c"]
    elf = m0build.build(src, BUILD / "train-O2.elf", opt="-O2", include_dirs=[SRC])
    flat = m0build.build(src, BUILD / "train-O2-noinline.elf", opt="-O2", include_dirs=[SRC],
                         extra_flags=["-fno-inline"])  # fmt: skip
    k = args.m0_samples
    runs = {
        "growth run": (elf, m, xb[:k], y[:k]),
        "worst case, digits": (elf, worst_case(m), xb[:k], y[:k]),
        "worst case, dense random inputs": (
            elf, worst_case(m),
            pack_input(np.random.default_rng(args.seed).integers(0, 256, (k, N_INPUTS), dtype=np.uint8), PLANE_MASK),
            y[:k]),
    }  # fmt: skip
    print(f"Cortex-M0+ (emulator, zero wait states, -O2), rbnn_train_step on {k} samples each; every "
          f"prediction and the file after the steps equal the twin's")  # fmt: skip
    print(f"  {'run':34}{'mean':>10}{'max':>10}{'max ms':>11}{'steps/s':>9}  forward/backward/update/other")
    res = {}
    for name, (e, mm, xs, ys) in runs.items():
        r = res[name] = m0_steps(e, mm, xs, ys)
        sp = split(m0_steps(flat, mm, xs[:10], ys[:10])["profile"])
        c = r["cycles"]
        print(f"  {name:34}{c.mean():10,.0f}{c.max():10,}{c.max() / (MHZ * 1000):11.2f}"
              f"{MHZ * 1e6 / c.mean():9,.0f}  " + " / ".join(f"{sp[p]:.0%}" for p in (*PHASES, "other")))  # fmt: skip
    main_run = res["growth run"]
    worst = max(r["cycles"].max() for r in res.values())
    print(f"  target <= {TARGET_CYCLES:,} cycles a step (growth run, max): "
          f"{'met' if main_run['cycles'].max() <= TARGET_CYCLES else 'NOT met'}; worst case of all runs {worst:,}")
    print("  (the split: the share of each phase in a -fno-inline build of the same code, first 10 samples)")
    print()

    struct_bytes = _arm_model_struct_bytes()
    inp = int(xb[0].nbytes)
    stack = max(r["stack"] for r in res.values())
    beyond = main_run["scratch"] + stack + inp + struct_bytes
    lay = pack.model_layout(m)
    live_planes = BITS * lay["plane_bytes"]
    ours = beyond + live_planes + lay["block_params_bytes"]
    flt = float_baseline(N_INPUTS, m.sizes)
    ftot = sum(flt.values())
    print("memory of one step (bytes)")
    print(f"  RAM beyond the file: scratch {main_run['scratch']} (rbnn_train_scratch_bytes) + deepest stack "
          f"{stack} (all runs) + packed input {inp} + rbnn_model_t {struct_bytes} = {beyond:,}")  # fmt: skip
    print(f"  target <= {TARGET_RAM:,}: {'met' if beyond <= TARGET_RAM else 'NOT met'}")
    print(f"  the live block as it trains: {BITS} planes {live_planes:,} + parameters {lay['block_params_bytes']} "
          f"+ the RAM above = {ours:,}")  # fmt: skip
    print("  Courbariaux-style float32 baseline, same block, batch 1: " + ", ".join(
        f"{k} {v:,}" for k, v in flt.items()) + f" = {ftot:,}")  # fmt: skip
    print(f"  float baseline / ours: {ftot / ours:.1f}x with the live block's planes, "
          f"{ftot / beyond:.0f}x for the RAM beyond the file (target >= {TARGET_FACTOR}x: "
          f"{'met' if ftot / ours >= TARGET_FACTOR else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
