"""The training stream (docs/PROTOCOL.md, The training stream), measured on the virtual
device.

A 784-64-64-10 model with an empty arena of 16 planes (MSB input plane: 100 packed bytes
a sample) grows two 8-bit blocks on MNIST training images streamed to the virtual
device (the MicroPython unix port behind a pseudo-terminal), once per engine: the
fallback's viper and plain-Python code, and the C module when the micropython binary
($RBNN_MICROPYTHON) has it. Every stream's final model is checked byte for byte
against `rbnn grow --engine c` on the host before a figure is printed.

Figures:
1. device samples/s: the device's own time in the training step (``compute_us`` of the
   TRAIN replies); end-to-end samples/s: the host's wall clock over the streaming
   (checkpoint, freeze and pull excluded); host samples/s: `rbnn grow` on the host (C
   core and numpy twin) on the same samples, and the host's side of a stream without a
   device (packing the 60,000 images, gathering rows in the run's order, TRAIN frames
   and their CRC).
2. link: bytes/s on the pseudo-terminal while streaming, against the pty's raw
   capacity (a bare pty pair, 64 kB writes, measured here).
3. 115,200 baud, two ways: **computed** from the frame sizes the stream used (the wire
   time of its TRAIN frames; useful bytes = sample bytes and labels), and **rate
   limited**: the host's bytes reach the pty at 115,200 baud (10 bits a byte) while the
   device computes; efficiency = sample bytes per second / 11,520 bytes per second of
   wire. The device keeps up when its samples/s exceed the wire's.

Usage: python bench/stream.py [--samples N] [--plain-samples N] [--rate-samples N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import serial  # noqa: E402
from mpy_helpers import firmware_fs  # noqa: E402

from rbnn.cli import build_parser  # noqa: E402
from rbnn.cli import main as cli  # noqa: E402
from rbnn.data import load  # noqa: E402
from rbnn.device import frames as fr  # noqa: E402
from rbnn.device.link import Link  # noqa: E402
from rbnn.device.stream import run_stream, sample_bytes  # noqa: E402
from rbnn.device.virtual import VirtualDevice, find_micropython  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.learn.arena import empty_arena  # noqa: E402

SIZES, PLANE_MASK, PLANES = [64, 64, 10], 0x80, 16
BAUD = 115200
WIRE = BAUD / 10  # bytes per second of a UART at 8N1


class Throttled:
    """A pyserial port whose written bytes reach the far end at ``baud`` (10 bits a
    byte, in pieces of 32 bytes), as over a UART: the device receives a frame as slowly
    as the wire brings it and computes meanwhile. Replies (a 29-byte TRAIN reply a
    frame, on the other wire of a full-duplex UART) are not delayed."""

    def __init__(self, ser, baud: int):
        self.ser, self.rate = ser, baud / 10
        self.t = time.perf_counter()
        self.on = False  # paced only while streaming (the model's upload is not measured)

    def write(self, data: bytes) -> int:
        if not self.on:
            return self.ser.write(data)
        mv = memoryview(bytes(data))
        for i in range(0, len(mv), 32):
            piece = mv[i : i + 32]
            self.t = max(self.t, time.perf_counter()) + len(piece) / self.rate
            delay = self.t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.ser.write(piece)
        return len(mv)

    def __getattr__(self, name):
        return getattr(self.ser, name)

    @property
    def timeout(self):
        return self.ser.timeout

    @timeout.setter
    def timeout(self, v):
        self.ser.timeout = v


def pty_capacity(seconds: float = 1.0) -> float:
    """Bytes per second through a bare pseudo-terminal pair (raw mode, 64 kB writes)."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    got = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                got[0] += len(os.read(slave, 65536))
            except OSError:
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    chunk = bytes(65536)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        os.write(master, chunk)
    time.sleep(0.05)
    dt = time.perf_counter() - t0
    stop.set()
    os.close(master)
    os.close(slave)
    return got[0] / dt


def host_rate(x: np.ndarray, y: np.ndarray, m, n: int = 40) -> float:
    """Samples per second the host side of a stream prepares: packing the inputs into
    bit-planes, gathering each frame's rows in the run's order, its TRAIN frame (labels,
    header, CRC)."""
    import struct

    t0 = time.perf_counter()
    rows = sample_bytes(x, m)
    order = np.random.default_rng(0).permutation(len(x))
    for i, a in enumerate(range(0, len(x) - n + 1, n)):
        idx = order[a : a + n]
        payload = struct.pack("<IHH", a, n, rows.shape[1]) + y[idx].astype("<u2").tobytes() + rows[idx].tobytes()
        fr.encode(fr.TRAIN, i & 0xFFFF, payload)
    return len(x) // n * n / (time.perf_counter() - t0)


def stream_on(root: Path, template: Path, mp: str, engine: str, model: bytes, ds, opts: list[str],
              throttle: bool = False) -> dict | None:  # fmt: skip
    fs = root / f"dev-{engine}-{int(throttle)}"
    shutil.copytree(template, fs)
    os.environ["RBNN_ENGINE"] = engine
    try:
        with VirtualDevice(fs, micropython=mp) as dev:
            ser = serial.Serial(dev.port, BAUD, timeout=0.05)
            port = Throttled(ser, BAUD) if throttle else ser
            link = Link(port, op_timeout=600)
            link.connect()
            if link.hello_info.get("engine") != engine:
                link.close()
                return None
            link.deploy_model(model, "bench.rbnn")
            args = build_parser().parse_args(["stream", "--port", "-", *opts])
            stamps = []

            def seen(a: int, t: int, r) -> None:
                if throttle:
                    port.on = True  # from the first TRAIN_BEGIN on
                stamps.append((time.perf_counter(), a))

            res = run_stream(link, ds, args, None, 0, seen, log=lambda s: None)
            link.leave()
            link.close()
    finally:
        os.environ.pop("RBNN_ENGINE", None)
    # the streaming proper: from the first TRAIN_BEGIN to the last TRAIN reply
    t_first, t_last = stamps[0][0], stamps[-1][0]
    st = link.stats
    return {"engine": engine, "res": res, "seconds": t_last - t_first, "bytes_out": st.train_out,
            "bytes_in": st.train_in, "sent": st.train_sent, "retries": st.retries}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=4000, help="samples per fast engine (c, viper)")
    ap.add_argument("--plain-samples", type=int, default=1000, help="samples for the plain-Python engine")
    ap.add_argument("--rate-samples", type=int, default=1500, help="samples of the 115,200-baud runs")
    args = ap.parse_args()

    mp = find_micropython()
    ds = load("mnist", parts=("train",))
    m = empty_arena(784, SIZES, PLANE_MASK, PLANES)
    model = pack.to_bytes(m)
    rows = sample_bytes(ds.x_train[:4000], m)
    print(f"virtual device: {mp}")
    print(f"model: 784-{'-'.join(map(str, SIZES))}, plane mask 0x{PLANE_MASK:02x}, empty arena of {PLANES} planes, "
          f"{len(model):,} bytes; samples packed, {rows.shape[1]} bytes each; two new 8-bit blocks")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rbnn-bench-stream-") as tmp:
        root = Path(tmp)
        (root / "m.rbnn").write_bytes(model)
        template = firmware_fs(root / "template", mp, BAUD)
        refs, host = {}, {}
        for n in sorted({args.samples, args.plain_samples, args.rate_samples}):
            opts = ["--data", "mnist", "--limit", str(n), "--blocks", "2", "--bits", "8"]
            for engine in ("c", "twin"):
                out = root / f"ref-{n}-{engine}.rbnn"
                t0 = time.perf_counter()
                assert cli(["grow", str(root / "m.rbnn"), *opts, "--engine", engine, "-q", "-o", str(out)]) == 0
                host[n, engine] = n / (time.perf_counter() - t0)
                refs[n, engine] = out.read_bytes()
            assert refs[n, "c"] == refs[n, "twin"]
        rows_out = []
        for engine, n in (("c", args.samples), ("viper", args.samples), ("python", args.plain_samples)):
            opts = ["--data", "mnist", "--limit", str(n), "--blocks", "2", "--bits", "8"]
            r = stream_on(root, template, mp, engine, model, ds, opts)
            if r is None:
                print(f"engine {engine}: not in this micropython build (set RBNN_MICROPYTHON to a build with _rbnn)")
                continue
            if r["res"].data != refs[n, "c"]:
                sys.exit(f"engine {engine}: the streamed model differs from rbnn grow's: no figures")
            r["n"] = n
            rows_out.append(r)
        rated = []
        for r in rows_out:
            n = args.rate_samples
            opts = ["--data", "mnist", "--limit", str(n), "--blocks", "2", "--bits", "8"]
            q = stream_on(root, template, mp, r["engine"], model, ds, opts, throttle=True)
            if q["res"].data != refs[n, "c"]:
                sys.exit(f"engine {r['engine']} at {BAUD} baud: the streamed model differs from rbnn grow's")
            q["n"] = n
            rated.append(q)
    cap = pty_capacity()
    frame_rate = host_rate(ds.x_train, np.asarray(ds.y_train), m)

    print()
    print("host (the same samples, file checked equal): "
          + ", ".join(f"rbnn grow --engine {e} {host[args.samples, e]:,.0f} samples/s" for e in ("c", "twin"))
          + f"; the host's side of a stream (packing, gathering, TRAIN frames) {frame_rate:,.0f} samples/s")  # fmt: skip
    print()
    print("streaming on the virtual device's pty (final model byte-identical to rbnn grow --engine c)")
    print(f"{'engine':<8} {'samples':>8} {'device samples/s':>17} {'end-to-end /s':>14} {'link bytes/s':>13} "
          f"{'of pty capacity':>16} {'resends':>8}")  # fmt: skip
    for r in rows_out:
        dev = r["n"] / (r["res"].compute_us / 1e6) if r["res"].compute_us else float("inf")
        link_rate = (r["bytes_out"] + r["bytes_in"]) / r["seconds"]
        print(f"{r['engine']:<8} {r['n']:>8,} {dev:>17,.0f} {r['n'] / r['seconds']:>14,.0f} {link_rate:>13,.0f} "
              f"{100 * link_rate / cap:>15.3f}% {r['retries']:>8}")  # fmt: skip
    print(f"pty raw capacity (bare pty pair, 64 kB writes): {cap / 1e6:,.1f} MB/s: the device, not the link, "
          "sets the pace on a pty")  # fmt: skip
    print()
    useful = rows.shape[1] + 2  # sample bytes and its label
    print(f"at {BAUD:,} baud ({WIRE:,.0f} bytes/s of wire each way)")
    print(f"{'engine':<8} {'computed: bytes/sample':>23} {'efficiency':>11} {'wire samples/s':>15} "
          f"{'rate limited: samples/s':>24} {'efficiency':>11} {'device keeps up':>16}")  # fmt: skip
    for r, q in zip(rows_out, rated, strict=True):
        per = q["bytes_out"] / q["n"]  # host->device TRAIN bytes per sample, frames and resends
        comp_eff = useful / per
        wire_rate = WIRE / per
        dev = r["n"] / (r["res"].compute_us / 1e6) if r["res"].compute_us else float("inf")
        got = q["n"] / q["seconds"]
        eff = got * useful / WIRE
        print(f"{r['engine']:<8} {per:>23.1f} {100 * comp_eff:>10.1f}% {wire_rate:>15,.0f} {got:>24,.0f} "
              f"{100 * eff:>10.1f}% {'yes' if dev > wire_rate else 'no':>16}")  # fmt: skip
    print("computed: the TRAIN frames the rate-limited run sent (header, CRC, labels, resends) against their sample "
          "and label bytes; rate limited: measured, the host's bytes paced at 10 bits a byte")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
