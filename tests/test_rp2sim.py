"""rbnn on an emulated Raspberry Pi Pico: the image `make firmware PORT=rp2` builds (the
board boards/RPI_PICO: the C module, firmware/ frozen) runs in rp2040js, and the host
talks to it over the emulated USB CDC port as to a board: the REPL says which engine
runs and how big the flash file system is; the C module's scores of random models equal
the twin's; the frozen protocol server takes a model and infers like the twin.
rp2040js does not emulate programming the flash chip (littlefs cannot format it there),
so for the protocol the test mounts a RAM disk as the board's working folder.

It runs where all of these are (else it skips, naming what is missing):
- node and the npm package rp2040js (`npm install rp2040js@1.4.1` in a folder named by
  $RBNN_RP2040JS);
- the image: $RBNN_RP2_UF2, else build/firmware/rp2-RPI_PICO/firmware.uf2;
- the RP2040 B1 bootrom, $RBNN_RP2040_BOOTROM: a 16 kB binary (raspberrypi/pico-bootrom
  at tag b1), or demo/bootrom.ts of the rp2040js repository (github.com/wokwi/rp2040js).
The emulator runs slower than a board: the host's timeouts here are long.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rbnn.device.link import Link
from rbnn.device.rawrepl import RawRepl
from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import pack_input
from support.randmodel import random_model

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "tests" / "support" / "rp2sim.cjs"
STORAGE = 1408 * 1024  # boards/RPI_PICO/mpconfigboard.cmake


def _needs() -> tuple[str, Path, Path]:
    node = shutil.which("node")
    js = os.environ.get("RBNN_RP2040JS")
    if not node:
        pytest.skip("no node on PATH (rp2040js runs on Node.js)")
    if not js or not (Path(js) / "node_modules" / "rp2040js").is_dir():
        pytest.skip("set RBNN_RP2040JS to a folder with node_modules/rp2040js (npm install rp2040js@1.4.1)")
    uf2 = Path(os.environ.get("RBNN_RP2_UF2") or REPO / "build" / "firmware" / "rp2-RPI_PICO" / "firmware.uf2")
    if not uf2.is_file():
        pytest.skip(f"no rp2 image at {uf2}: make firmware PORT=rp2 MICROPY_DIR=... (or set RBNN_RP2_UF2)")
    rom = os.environ.get("RBNN_RP2040_BOOTROM")
    if not rom or not Path(rom).is_file():
        pytest.skip("set RBNN_RP2040_BOOTROM to the RP2040 B1 bootrom (16 kB .bin, or rp2040js's demo/bootrom.ts)")
    return node, uf2, Path(rom)


class SimPort:
    """The emulated board's USB CDC port, with the pyserial calls the link makes."""

    def __init__(self, node: str, uf2: Path, rom: Path):
        self.proc = subprocess.Popen([node, str(SIM), str(uf2), str(rom)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.port = "rp2040js"
        self.baudrate = 115200
        self.timeout: float | None = 0.05
        self.buf = bytearray()
        self.cv = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            data = self.proc.stdout.read1(65536)
            with self.cv:
                if not data:
                    self.cv.notify_all()
                    return
                self.buf += data
                self.cv.notify_all()

    @property
    def in_waiting(self) -> int:
        with self.cv:
            return len(self.buf)

    def read(self, n: int = 1) -> bytes:
        deadline = time.monotonic() + (self.timeout or 0)
        with self.cv:
            while not self.buf and self.proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out

    def write(self, data: bytes) -> int:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return len(data)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        with self.cv:
            self.buf.clear()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def pico():
    node, uf2, rom = _needs()
    port = SimPort(node, uf2, rom)
    try:
        yield port
    finally:
        port.close()
        err = port.proc.stderr.read().decode(errors="replace")
        print(err[-2000:])


@pytest.fixture(scope="module")
def repl(pico):
    r = RawRepl(pico, timeout=120)
    assert r.enter(timeout=120), "no raw REPL from the emulated board"
    return r


def test_the_image_runs_the_c_engine_on_its_own_board(repl):
    out = repl.exec(
        "import sys, os, rp2, rbnn\n"
        "f = rp2.Flash()\n"
        "print(sys.platform, rbnn.engine, f.ioctl(4, 0) * f.ioctl(5, 0))\n"
        "print(os.uname().machine)\n"
    ).decode().split("\r\n")
    platform, engine, storage = out[0].split()
    assert (platform, engine) == ("rp2", "c")
    assert int(storage) == STORAGE  # the file system's flash, as boards/RPI_PICO sets it
    assert out[1] == "Raspberry Pi Pico with rbnn with RP2040"


@pytest.mark.parametrize("seed", range(3))
def test_c_module_scores_equal_the_twin(repl, seed):
    rng = np.random.default_rng(300 + seed)
    m = random_model(rng, n_blocks=1 + seed)
    x = rng.integers(0, 256, (6, m.n_inputs), dtype=np.uint8)
    ref = twin.scores(m, pack_input(x, m.plane_mask))
    data = base64.b64encode(pack.to_bytes(m)).decode()
    rows = base64.b64encode(x.tobytes()).decode()
    out = repl.exec(
        "import rbnn, binascii\nfrom array import array\n"
        f"m = rbnn.load(binascii.a2b_base64({data!r}))\n"
        f"x = binascii.a2b_base64({rows!r})\n"
        "s = array('i', [0] * m.n_classes)\n"
        f"for i in range({len(x)}):\n"
        f"    m.scores(x[i * {m.n_inputs}:(i + 1) * {m.n_inputs}], s)\n"
        "    print(' '.join(str(v) for v in s))\n"
    ).decode()
    got = np.array([[int(v) for v in line.split()] for line in out.strip().split("\r\n")])
    np.testing.assert_array_equal(got, ref)


RAM_DISK = """
import os, vfs
class RAMDisk:
    def __init__(self, n, size=512):
        self.size, self.n, self.data = size, n, bytearray(n * size)
    def readblocks(self, b, buf, off=0):
        at = b * self.size + off
        buf[:] = self.data[at : at + len(buf)]
    def writeblocks(self, b, buf, off=0):
        at = b * self.size + off
        self.data[at : at + len(buf)] = buf
    def ioctl(self, op, arg):
        return {4: self.n, 5: self.size}.get(op, 0)
_d = RAMDisk(128)
vfs.VfsLfs2.mkfs(_d)
vfs.mount(vfs.VfsLfs2(_d), "/ram")
os.chdir("/ram")
"""


def test_model_deployed_over_the_protocol_scores_like_the_twin(pico, repl):
    rng = np.random.default_rng(21)
    m = random_model(rng, n_inputs=200, sizes=[48, 10], plane_mask=0xC0)
    x = rng.integers(0, 256, (12, 200), dtype=np.uint8)
    ref = twin.scores(m, pack_input(x, m.plane_mask))
    repl.exec(RAM_DISK)  # the board's working folder: a 64 kB RAM disk (see above)
    repl.exec("import rbnn_server")  # frozen into the image
    repl.start("rbnn_server.serve()")
    link = Link(pico, timeout=10, op_timeout=300)
    link.decoder.feed(bytes(repl.pending))
    link.repl = repl
    info = link.hello()
    assert info["engine"] == "c" and info["platform"] == "rp2"
    saved = link.deploy_model(pack.to_bytes(m), "m.rbnn")
    assert saved["model"]["engine"] == "c"
    classes, scores, us = link.infer(x, scores=True)
    assert link.device_stats()["inferences"] == len(x)
    link.leave()
    np.testing.assert_array_equal(scores, ref)
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    assert us > 0
