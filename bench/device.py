"""The virtual device, measured through the serial protocol (docs/PROTOCOL.md).

1. Inference: a 784-256-256-10 model (MSB input plane, random weights) is deployed on
   the virtual device (MicroPython unix port on a pseudo-terminal, through pyserial),
   once per engine: the fallback's viper and plain-Python code, and the C module when
   the micropython binary ($RBNN_MICROPYTHON) has it. Packed test inputs go over the
   link in INFER batches; the device's own time inside predict() (``compute_us`` of
   the replies) gives ms per sample, the host's wall clock the end-to-end rate. Every
   engine's classes are checked against the numpy twin before a figure is printed.
2. Link: upload throughput (UP_DATA frames of 4 kB, stop and wait) and the round trip
   of a small request (STATS), for the virtual device's console (a non-blocking pipe:
   whole frames per read) and for the byte-wise console every real board uses.

Usage: python bench/device.py [--samples N] [--plain-samples N] [--upload-kb K]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import serial  # noqa: E402

from rbnn.device.deploy import put_firmware  # noqa: E402
from rbnn.device.link import Link  # noqa: E402
from rbnn.device.rawrepl import RawRepl  # noqa: E402
from rbnn.device.virtual import VirtualDevice, find_micropython  # noqa: E402
from rbnn.engines import twin  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.model import pack_input  # noqa: E402
from support.randmodel import random_model  # noqa: E402

N_INPUTS, SIZES, PLANE_MASK = 784, [256, 256, 10], 0x80
BAUD = 921600  # a pty ignores it; it only sizes the link's timeouts


def firmware_fs(root: Path, mp: str) -> Path:
    """A board filesystem with the firmware put on it through the raw REPL."""
    fs = root / "template"
    with VirtualDevice(fs, micropython=mp) as dev, serial.Serial(dev.port, BAUD, timeout=0.05) as ser:
        repl = RawRepl(ser)
        if not repl.enter(timeout=5):
            sys.exit("the virtual device's REPL did not answer")
        put_firmware(repl)
        repl.exit()
    return fs


def device(root: Path, template: Path, name: str, mp: str, **kw) -> VirtualDevice:
    fs = root / name
    shutil.copytree(template, fs)
    return VirtualDevice(fs, micropython=mp, **kw)


def bench_engine(root, template, mp, engine, model, xb, ref) -> dict | None:
    env = {"RBNN_ENGINE": engine} if engine else {}
    with device(root, template, f"infer-{engine or 'default'}", mp, env=env) as dev:
        link = Link.open(dev.port, BAUD, op_timeout=600)
        try:
            hello = link.hello_info
            if engine and hello.get("engine") != engine:
                return None
            link.deploy_model(model, "bench.rbnn")
            link.infer(xb[:2])  # warm-up: first-call allocations, lazily built tables
            t0 = time.perf_counter()
            classes, _, us = link.infer(xb)
            wall = time.perf_counter() - t0
            link.leave()
        finally:
            link.close()
    if not np.array_equal(classes, ref[: len(xb)]):
        sys.exit(f"engine {engine}: classes differ from the twin's")
    return {"engine": hello["engine"], "n": len(xb), "ms": us / len(xb) / 1000, "rate": len(xb) / wall}


def bench_link(root, template, mp, bytewise: bool, upload_kb: int) -> dict:
    rng = np.random.default_rng(0)
    name = "link-bytewise" if bytewise else "link-pipe"
    with device(root, template, name, mp, bytewise=bytewise) as dev:
        link = Link.open(dev.port, BAUD)
        try:
            best_up = 0.0
            for _ in range(3):
                data = rng.integers(0, 256, upload_kb * 1024, dtype=np.uint8).tobytes()  # new CRC: no resume
                t0 = time.perf_counter()
                link.upload(data)
                best_up = max(best_up, len(data) / (time.perf_counter() - t0))
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                link.device_stats()
            rtt = (time.perf_counter() - t0) / n
            link.leave()
        finally:
            link.close()
    return {"console": "byte-wise (as a board)" if bytewise else "pipe (virtual)", "up": best_up, "rtt": rtt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000, help="samples per fast engine (c, viper)")
    ap.add_argument("--plain-samples", type=int, default=50, help="samples for the plain-Python engine")
    ap.add_argument("--upload-kb", type=int, default=64, help="upload size for the link figure")
    args = ap.parse_args()

    mp = find_micropython()
    rng = np.random.default_rng(1)
    m = random_model(rng, N_INPUTS, list(SIZES), PLANE_MASK)
    model = pack.to_bytes(m)
    x = rng.integers(0, 256, (max(args.samples, args.plain_samples), N_INPUTS), dtype=np.uint8)
    xbits = pack_input(x, PLANE_MASK)
    ref = np.argmax(twin.scores(m, xbits), axis=1)
    xb = xbits.astype("<u4").view(np.uint8).reshape(len(x), -1)

    print(f"virtual device: {mp}")
    print(f"model: {N_INPUTS}-{'-'.join(map(str, SIZES))}, plane mask 0x{PLANE_MASK:02x}, "
          f"{len(model):,} bytes; inputs packed, {xb.shape[1]} bytes per sample")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rbnn-bench-") as tmp:
        root = Path(tmp)
        template = firmware_fs(root, mp)
        rows = []
        for engine, n in (("c", args.samples), ("viper", args.samples), ("python", args.plain_samples)):
            r = bench_engine(root, template, mp, engine, model, xb[:n], ref)
            if r is None:
                print(f"engine {engine}: not in this micropython build (set RBNN_MICROPYTHON to a build with _rbnn)")
                continue
            rows.append(r)
        links = [bench_link(root, template, mp, bw, args.upload_kb) for bw in (False, True)]

    base = next((r for r in rows if r["engine"] == "viper"), rows[0])
    print()
    print("inference on the device (classes checked equal to the twin's)")
    print(f"{'engine':<8} {'samples':>8} {'ms/sample on device':>20} {'samples/s end to end':>21} {'speed vs viper':>15}")
    for r in rows:
        print(f"{r['engine']:<8} {r['n']:>8,} {r['ms']:>20.3f} {r['rate']:>21,.0f} {base['ms'] / r['ms']:>14.3g}x")
    print()
    print(f"link: upload of {args.upload_kb} kB in 4 kB frames (best of 3), and a STATS round trip")
    print(f"{'console':<24} {'upload kB/s':>12} {'round trip ms':>14} {'upload vs pipe':>15}")
    for r in links:
        print(f"{r['console']:<24} {r['up'] / 1000:>12,.1f} {r['rtt'] * 1000:>14.3f} {r['up'] / links[0]['up']:>14.3g}x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
