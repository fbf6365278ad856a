"""rbnn's C core against larq compute engine (LCE), the peer, on the same binary networks.

Two networks (bench/peer_nets.py): the 784-256-256-10 binary MLP and an MNIST-sized
binary CNN (3x3 conv 32 'same' + 2x2 max-pool, 3x3 conv 64 'same' + 2x2 max-pool, dense
128, dense 10), random +-1 weights, thresholds that split the data, 30 % of the flips
set. rbnn runs them from a .rbnn file through its C core (rbnn.engines.ccore, one call
per batch); LCE runs the equivalent larq model (QuantConv2D / QuantDense with ste_sign
on inputs and kernels, BatchNorm holding the folded thresholds) converted by
``larq_compute_engine.convert_keras_model``, through LCE's own interpreter with
``num_threads=1``. Both get the MSB plane of the 8-bit input ready-made in their own form:
rbnn packed bits (plane_mask 0x80), LCE float32 +-1 (its LceQuantize op packs them).

Same network, checked: before anything is timed, every LCE variant's scores on the whole
batch are compared with rbnn's integer scores (and the argmax predictions), and rbnn's
with the numpy reference. LCE variants (the best one counts): every dense layer as a
binary convolution (LCE's dense layer is a float one, so the MLP runs as 1x1 binary
convolutions over a 1x1x784 map) or as QuantDense; ``use_indirect_bgemm`` on or off;
1 or more samples per interpreter call. rbnn pads a 'same' map with -1; LCE's binary
convolution pads with +1 only: the input layer is made exact by handing LCE the input
negated with the first kernel negated (same sums), but a pooled map cannot be negated,
so the second conv either pads with -1 (exact; LCE falls back to a float convolution
there) or with +1 (LCE's fast binary path: not the same function at the borders, its
agreement printed). The headline ratio is against LCE's fastest variant of either kind.

Timing: interleaved rounds (rbnn, LCE, rbnn, LCE, ...), each a whole pass over the
batch, in CPU seconds of the timing thread (``time.thread_time``; LCE in its worker
process), so other load on a shared machine counts less; wall-clock rates beside. LCE's
pass includes its LceQuantize of the +-1 floats into bits; rbnn's input is packed
beforehand (as a device packs each sample with rbnn_pack_u8). The ratio printed is the
median over rounds of rbnn's rate / LCE's rate in that round.

LCE needs TensorFlow 2.16 and numpy 1, rbnn numpy 2: LCE runs in a worker process in its
own venv (bench/peer_lce_worker.py, default ``.venv-peer``, or $RBNN_PEER_VENV), which
``make bench-peer`` installs (bench/peer-requirements.txt) and nothing else needs.

Run: ``make bench-peer`` (or ``.venv/bin/python bench/peer_lce.py`` once .venv-peer exists).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
import peer_nets as pn  # noqa: E402 (bench/, the script's folder, is on sys.path)

REQUIREMENTS = HERE / "peer-requirements.txt"
WORKER = HERE / "peer_lce_worker.py"
PLANE_MASK = 0x80  # one thresholded plane: pixel >= 128
TARGET = 2.0  # issue 9: rbnn's C core >= 2x LCE's best, one thread, median of rounds


class PeerMissing(Exception):
    """The peer venv (LCE, larq, TensorFlow) is not there: say how to install it."""


class PeerError(Exception):
    """The worker failed: its message, and the tail of its log."""


# --- the peer venv and its worker -------------------------------------------------------
def peer_venv() -> Path:
    return Path(os.environ.get("RBNN_PEER_VENV") or REPO / ".venv-peer")


def install_hint(venv: Path) -> str:
    pins = ", ".join(ln.strip() for ln in REQUIREMENTS.read_text().splitlines()
                     if ln.strip() and not ln.startswith("#"))  # fmt: skip
    return (f"run `make bench-peer`, which installs {pins} into {venv.name} "
            f"(about 2 GB; nothing else needs them)")  # fmt: skip


def peer_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        raise PeerMissing(f"no peer venv at {venv} (larq compute engine is not installed): {install_hint(venv)}")
    return py


class Peer:
    """The LCE worker process: one JSON request and answer a line."""

    def __init__(self, python: Path, venv: Path):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="rbnn-peer-", suffix=".log")
        self.proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=REPO)  # fmt: skip
        first = self._read()
        if first.get("missing"):
            self.close()
            raise PeerMissing(f"the peer venv at {venv} lacks a module ({first['error']}): {install_hint(venv)}")
        if "error" in first:
            tail = self._tail()
            self.close()
            raise PeerError(first["error"] + tail)

    def _tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        lines = [ln for ln in self.log.read().splitlines() if ln.strip()][-15:]
        return ("\nworker log (last lines):\n  " + "\n  ".join(lines)) if lines else ""

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise PeerError(f"the LCE worker exited with code {self.proc.returncode}" + self._tail())
        return json.loads(line)

    def ask(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        got = self._read()
        if "error" in got:
            raise PeerError(f"LCE worker, {cmd}: {got['error']}" + self._tail())
        return got

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- rbnn's side --------------------------------------------------------------------------
def to_rbnn(net: pn.Net, plane_mask: int = PLANE_MASK):
    """The rbnn Model of a network: rows (out, in) in rbnn's order ((ky, kx, c) for a conv
    row, (y, x, c) for a flattened map: the order Keras uses too)."""
    from rbnn.format.model import Layer, Model

    weights, layers = [], []
    for ly in net.layers:
        if ly.kind == pn.CONV:
            weights.append(ly.weights.transpose(3, 0, 1, 2).reshape(ly.size, -1))
            layers.append(Layer.conv(ly.size, ly.kernel, ly.pad, ly.pool))
        else:
            weights.append(ly.weights.T)
            layers.append(Layer(ly.size))
    hidden, out = net.layers[:-1], net.layers[-1]
    conv = any(ly.kind == pn.CONV for ly in net.layers)
    return Model.plain(int(np.prod(net.input_shape)), plane_mask, weights, [ly.thr for ly in hidden],
                       [ly.flip for ly in hidden], out.scale, out.offset,
                       layers=layers if conv else None, in_shape=tuple(net.input_shape) if conv else None)  # fmt: skip


def rbnn_engine(net: pn.Net, x: np.ndarray) -> tuple[Callable[[], np.ndarray] | None, str]:
    """rbnn's C core on the packed batch: (a call returning int32 scores, "") or (None,
    why this build cannot run the network yet)."""
    from rbnn.engines import ccore
    from rbnn.errors import RbnnError
    from rbnn.format import pack
    from rbnn.format.model import pack_input

    try:
        cmodel = ccore.CModel(pack.to_bytes(to_rbnn(net)))
        xbits = pack_input(x, PLANE_MASK)
        cmodel.scores(xbits[:1])
    except (RbnnError, NotImplementedError) as e:
        return None, f"{type(e).__name__}: {e}"
    return (lambda: cmodel.scores(xbits)), ""


def plus_minus(x: np.ndarray, net: pn.Net) -> np.ndarray:
    """The MSB plane as +-1 float32, shaped (n, *input_shape)."""
    return np.where(x >= 128, 1.0, -1.0).astype(np.float32).reshape(len(x), *net.input_shape)


# --- facts ----------------------------------------------------------------------------------
def cpu_facts() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flag_line = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    yes = {True: "yes", False: "no"}
    return (f"{model.group(1).strip() if model else platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} logical CPUs; AVX2 {yes['avx2' in flags]}, "
            f"AVX-512 VPOPCNTDQ {yes['avx512_vpopcntdq' in flags]}")  # fmt: skip


def rbnn_facts() -> str:
    import rbnn
    from rbnn.engines import ccore

    lib = ccore.lib()
    name = ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(lib, "rbnn_kernel_name"))).decode()
    active = lib.rbnn_kernel_active().decode() if hasattr(lib, "rbnn_kernel_active") else name
    tile = ccore.set_batch_tile(1)
    ccore.set_batch_tile(tile)
    cc = subprocess.run([ccore.compiler(), "--version"], capture_output=True, text=True).stdout.splitlines()
    return (f"rbnn {rbnn.__version__}, numpy {np.__version__}, python {platform.python_version()}; "
            f"C core built by {cc[0] if cc else ccore.compiler()} -O3 -march=native, "
            f"kernel {active}, {tile} samples a tile")  # fmt: skip


# --- one network ----------------------------------------------------------------------------
def variants(net: pn.Net, batches: list[int]) -> list[dict]:
    borders = ["exact", "fast"] if any(ly.kind == pn.CONV and ly.pad for ly in net.layers[1:]) else ["exact"]
    return [{"form": f, "border": b, "batch": n, "indirect": ind}
            for f in ("conv", "dense") for b in borders for n in batches for ind in (True, False)]  # fmt: skip


def fast_pads(net: pn.Net) -> dict[int, float]:
    """The layers whose padding LCE's fast variants fill with +1 instead of -1."""
    return {i: 1.0 for i, ly in enumerate(net.layers) if i > 0 and ly.kind == pn.CONV and ly.pad}


def bench_net(peer: Peer, net: pn.Net, x: np.ndarray, args: argparse.Namespace, tmp: Path) -> dict:
    n = len(x)
    xf = plus_minus(x, net)
    ref = pn.forward(net, xf)
    run_rbnn, why = rbnn_engine(net, x)
    if run_rbnn is not None and not np.array_equal(run_rbnn().astype(np.int64), ref):
        raise SystemExit(f"FAILED: {net.name}: rbnn's C core scores differ from the numpy reference")
    pn.save(net, tmp / f"{net.name}.npz")
    np.save(tmp / f"{net.name}.x.npy", xf)
    vs = variants(net, args.batches)
    t0 = time.perf_counter()
    got = peer.ask("load", net=str(tmp / f"{net.name}.npz"), x=str(tmp / f"{net.name}.x.npy"), variants=vs)
    print(f"  LCE: {len(got['convert_s'])} larq models converted in {time.perf_counter() - t0:.0f} s "
          f"(not timed); ops of each:")  # fmt: skip
    for key, ops in got["ops"].items():
        print(f"    {key:16} {' '.join(ops)}")
    fast_ref = pn.forward(net, xf, fast_pads(net))
    print(f"  same network: rbnn C core scores = numpy reference on all {n:,}: "
          f"{'yes' if run_rbnn else 'rbnn cannot run it yet: ' + why}")  # fmt: skip
    print(f"  {'LCE variant':52}{'scores = rbnn':>14}{'argmax = rbnn':>15}{'samples/s':>11}")
    rows = []
    for i, (v, name) in enumerate(zip(vs, got["names"], strict=True)):
        out = tmp / "scores.npy"
        peer.ask("run", variant=i, out=str(out))
        s = np.load(out)
        want = ref if v["border"] == "exact" else fast_ref
        intended = np.array_equal(np.rint(s).astype(np.int64), want)  # it computed what its larq model says
        equal = float(np.mean(np.all(np.rint(s) == ref, axis=1)))
        agree = float(np.mean(np.argmax(s, axis=1) == np.argmax(ref, axis=1)))
        cpu = min(peer.ask("time", variant=i)["cpu"] for _ in range(args.passes))
        rows.append((i, v, intended, equal, cpu))
        flag = "" if intended else "  (FAILED: not the function of its larq model)"
        print(f"  {name:52}{100 * equal:13.2f}%{100 * agree:14.2f}%{n / cpu:11,.0f}{flag}")
    good = [r for r in rows if r[2]]
    exact = [r for r in good if r[3] == 1.0]
    if not exact:
        raise SystemExit(f"FAILED: {net.name}: no LCE variant computes rbnn's scores")
    best_exact = min(exact, key=lambda r: r[4])
    best_any = min(good, key=lambda r: r[4])
    chosen = {"LCE best exact": best_exact[0]}
    if best_any[0] != best_exact[0]:
        chosen["LCE fastest"] = best_any[0]
    for label, i in chosen.items():
        print(f"  {label}: {got['names'][i]}")
    if run_rbnn is None:
        print(f"  rbnn: MISSING: the C core cannot run this network in this build ({why}); LCE only")
        return {"net": net.name, "rbnn": None, "failed": len(rows) - len(good)}
    return {**rounds(peer, net, run_rbnn, chosen, n, args.rounds), "failed": len(rows) - len(good)}


def rounds(peer: Peer, net: pn.Net, run_rbnn: Callable[[], np.ndarray], chosen: dict[str, int], n: int,
           n_rounds: int) -> dict:  # fmt: skip
    """Interleaved rounds; prints each round's rates and the median ratios."""
    run_rbnn()  # warm
    ratios: dict[str, list[float]] = {k: [] for k in chosen}
    print(f"  {'round':>5}{'rbnn samples/s':>16}{'(wall)':>12}"
          + "".join(f"{label + ' samples/s':>28}{'(wall)':>12}{'ratio':>8}" for label in chosen))  # fmt: skip
    for r in range(n_rounds):
        t0, w0 = time.thread_time(), time.perf_counter()
        run_rbnn()
        cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
        line = f"  {r + 1:5d}{n / cpu:16,.0f}{n / wall:12,.0f}"
        for label, i in chosen.items():
            t = peer.ask("time", variant=i)
            ratios[label].append(t["cpu"] / cpu)
            line += f"{n / t['cpu']:28,.0f}{n / t['wall']:12,.0f}{t['cpu'] / cpu:7.2f}x"
        print(line)
    out = {"net": net.name, "rbnn": True}
    for label, rs in ratios.items():
        med = statistics.median(rs)
        out[label] = med
        print(f"  {net.name}: rbnn / {label}: median {med:.2f}x over {n_rounds} rounds "
              f"(min {min(rs):.2f}x, max {max(rs):.2f}x)")  # fmt: skip
    return out


def load_inputs(n: int, seed: int) -> tuple[np.ndarray, str]:
    """MNIST test images (uint8 (n, 784)), else random bytes when MNIST is not cached."""
    from rbnn import data
    from rbnn.errors import DataError

    try:
        x = data.load("mnist", parts=("t10k",)).x_test
        return np.ascontiguousarray(np.resize(x, (n, x.shape[1]))), f"{n:,} MNIST test images"
    except DataError as e:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, 784), dtype=np.uint8), f"{n:,} random 8-bit samples ({e})"


NETS = {"mlp": ("784-256-256-10 binary MLP", (784,), pn.MLP_ARCH),
        "cnn": ("binary CNN 28x28x1: conv3x3 32 same+pool, conv3x3 64 same+pool, 128, 10", (28, 28, 1),
                pn.CNN_ARCH)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="samples in the timed batch")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median counts)")
    ap.add_argument("--passes", type=int, default=1, help="timed passes per LCE variant when choosing the best")
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 100],
                    help="samples per LCE interpreter call to try, comma-separated (default 1,100)")
    ap.add_argument("--nets", default="mlp,cnn", help="networks: mlp, cnn, comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    names = args.nets.split(",")
    if bad := [k for k in names if k not in NETS]:
        ap.error(f"--nets: unknown {bad}; expected some of {sorted(NETS)}")
    if args.n < 1 or args.rounds < 1 or args.passes < 1 or min(args.batches) < 1:
        ap.error("--n, --rounds, --passes and --batches must be >= 1")

    venv = peer_venv()
    try:
        peer = Peer(peer_python(venv), venv)
    except PeerMissing as e:
        print(f"bench/peer_lce.py: {e}", file=sys.stderr)
        return 2
    except PeerError as e:
        print(f"bench/peer_lce.py: {e}", file=sys.stderr)
        return 1
    try:
        return run(peer, args, names)
    except PeerError as e:
        print(f"bench/peer_lce.py: {e}", file=sys.stderr)
        return 1
    finally:
        peer.close()


def run(peer: Peer, args: argparse.Namespace, names: list[str]) -> int:
    x, source = load_inputs(args.n, args.seed)
    print("rbnn's C core vs larq compute engine, one thread each, interleaved rounds (bench/peer_lce.py)")
    print(f"machine: {cpu_facts()}")
    print(f"rbnn: {rbnn_facts()}")
    print("peer: " + ", ".join(f"{k} {v}" for k, v in peer.ask("versions").items()) + "; LCE num_threads=1")
    print(f"input: {source}, MSB plane (pixel >= 128): rbnn packed bits (plane_mask 0x{PLANE_MASK:02x}), "
          f"LCE float32 +-1 packed by its LceQuantize op; CPU time of the timing thread")  # fmt: skip
    results = []
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="rbnn-peer-") as tmp:
        for key in names:
            title, shape, arch = NETS[key]
            print(f"== {title}")
            net = pn.random_net(rng, key, shape, arch, plus_minus(x[:256], pn.Net(key, shape, [])))
            results.append(bench_net(peer, net, x, args, Path(tmp)))
    print("summary (median of rounds, rbnn C core / LCE, one thread each; "
          f"issue 9 target >= {TARGET:.0f}x against LCE's best):")  # fmt: skip
    for r in results:
        if r["rbnn"] is None:
            print(f"  {r['net']}: rbnn MISSING (C core cannot run it yet)")
            continue
        best = min(r.get("LCE fastest", r["LCE best exact"]), r["LCE best exact"])
        print(f"  {r['net']}: {r['LCE best exact']:.2f}x vs LCE's best exact variant"
              + (f", {best:.2f}x vs its fastest (+1 borders)" if "LCE fastest" in r else "")
              + f": target {'met' if best >= TARGET else 'NOT met'}")  # fmt: skip
    failed = sum(r["failed"] for r in results)
    if failed:
        print(f"FAILED: {failed} LCE variant(s) did not compute the function of their larq model (above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
