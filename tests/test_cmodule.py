"""The C module `_rbnn` inside real MicroPython firmware built from a MicroPython
checkout (`make firmware`, docs/FIRMWARE.md):

- the unix port built with USER_C_MODULES runs the fallback's own test scripts
  (tests/test_fallback.py) with engine "c": bit-identical to the twin, the same file
  checks (code and offset) as rbnn.format.pack, the same input errors, no allocation per call;
- the qemu port for BOARD=MICROBIT (Cortex-M0) runs `predict` and `scores` on packed
  models, a trained MNIST model among them, with the twin's answers.

Every test here needs $MICROPY_DIR (a MicroPython checkout) and skips without it; CI
has none. The builds go to build/firmware/ and are reused while up to date.
"""

from __future__ import annotations

import base64
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from mpy_helpers import run_mpy_code
from test_fallback import (
    API,
    ERR_RE,
    check_api,
    check_error_parity,
    check_parity,
    error_corpus,
    le_bytes,
    multi_plane_model,
    random_inputs,
    random_models,
)
from test_fallback_conv import check_conv_api, conv_model, error_corpus_v3

from rbnn import __version__
from rbnn.engines import twin
from rbnn.errors import FormatError
from rbnn.format import pack
from rbnn.format.model import Layer, pack_input
from support.randconv import mnist_cnn, random_conv_model
from support.randmodel import random_model

REPO = Path(__file__).resolve().parent.parent
MICROPY_DIR = os.environ.get("MICROPY_DIR", "")

pytestmark = pytest.mark.skipif(
    not MICROPY_DIR,
    reason="MICROPY_DIR is not set: these tests build MicroPython with the C module from a "
    "MicroPython checkout (docs/FIRMWARE.md)",
)



def make_firmware(port: str, *extra: str) -> Path:
    """Run `make firmware PORT=port` (incremental) and return the build folder."""
    build = REPO / "build" / "firmware"
    build.mkdir(parents=True, exist_ok=True)
    log = build / f"make-{port}.log"
    cmd = ["make", "firmware", f"PORT={port}", f"MICROPY_DIR={MICROPY_DIR}", *extra]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        pytest.fail(f"{' '.join(cmd)} failed (log: {log}):\n{tail}")
    out = re.findall(r"^firmware: (.+)$", log.read_text(), re.M)
    assert out, f"make firmware printed no image path (log: {log})"
    return Path(out[-1])


@pytest.fixture(scope="session")
def unix_c() -> str:
    """The MicroPython unix port with `_rbnn`, built from $MICROPY_DIR."""
    return str(make_firmware("unix"))


# --- the unix port: the fallback's tests with engine "c" ---------------------------------
def test_unix_build_has_the_c_module(unix_c, tmp_path):
    code = (
        "import _rbnn, rbnn\n"
        "print(rbnn.engine, rbnn.__version__, _rbnn.__version__, _rbnn.engine)\n"
        "print(_rbnn.Model)\n"
    )
    out = run_mpy_code(unix_c, code, tmp_path).stdout.splitlines()
    assert out == [f"c {__version__} {__version__} c", "<class 'Model'>"]


def test_unix_build_kernel_has_hardware_popcount_on_x86_64(unix_c):
    # cmodules/rbnn/micropython.mk builds the kernel with -mpopcnt where the port's
    # compiler targets x86-64 (the kernel's name string says which version it compiled);
    # the qemu rv32 build (test_qemu_*) is the other side: there the flag would not compile.
    machine = subprocess.run([os.environ.get("CC", "gcc"), "-dumpmachine"], capture_output=True, text=True).stdout
    if not machine.startswith("x86_64-"):
        pytest.skip(f"the unix port's compiler targets {machine.strip()}, not x86-64")
    obj = (Path(unix_c).parent / "rbnn" / "rbnn_kernel.o").read_bytes()
    assert b"popcnt64\0" in obj and b"swar\0" not in obj


def test_c_engine_matches_twin(unix_c, tmp_path):
    # tests/test_fallback.py's parity check, on the same kind of models (argmax ties,
    # saturated popcounts and scores at the E_RANGE bound among them), engine c.
    rng = np.random.default_rng(20240611)
    check_parity(unix_c, tmp_path, random_models(rng, 60), "c", rng)


def test_c_engine_conv_models_match_twin(unix_c, tmp_path):
    # Version 3 files (conv layers with and without the pool, input modes 0 and 1, dense
    # in mode 1; tests/support/randconv.py) and the issue-9 CNN: the twin's scores, raw
    # and packed inputs; info()["ram"] is the eBNN-order figure (docs/FORMAT.md, Memory).
    rng = np.random.default_rng(9)
    models = [random_conv_model(rng, conv=i % 5 != 4) for i in range(20)] + [mnist_cnn(rng)]
    check_parity(unix_c, tmp_path, models, "c", rng)
    (tmp_path / "cnn.rbnn").write_bytes(pack.to_bytes(models[-1]))
    out = run_mpy_code(unix_c, "import _rbnn\nprint(_rbnn.Model(open('cnn.rbnn', 'rb').read()).info()['ram'])\n",
                       tmp_path).stdout.split()  # fmt: skip
    assert out == [str(sum(models[-1].ram_bytes().values()))]


def test_c_engine_rejects_what_pack_rejects(unix_c, tmp_path):
    # The fallback's corpus of broken files: every code, every header offset, truncations.
    # The C engine's messages are the fallback's, word for word (code, offset, field,
    # expected, found).
    check_error_parity(unix_c, tmp_path, error_corpus(), "c", "binascii", ERR_RE, 5)


def test_c_engine_api_and_input_errors(unix_c, tmp_path):
    # The fallback's API script with `rbnn_py.Model` swapped for `_rbnn.Model`: the same
    # answers, errors word for word.
    script = API.replace("import rbnn, rbnn_py", "import rbnn, _rbnn").replace("rbnn_py.Model", "_rbnn.Model")
    assert script != API and "rbnn_py" not in script
    check_api(unix_c, tmp_path, "c", script)


# --- version 3: test_fallback_conv's broken files and API checks, engine c -------------
def test_c_engine_rejects_v3_like_pack(unix_c, tmp_path):
    check_error_parity(unix_c, tmp_path, error_corpus_v3(), "c", "binascii", ERR_RE, 5)


def test_c_engine_conv_api(unix_c, tmp_path):
    check_conv_api(unix_c, tmp_path, "c")


BUFFERS = r"""
import gc
import _rbnn
data = open("m.rbnn", "rb").read()
x = open("x.raw", "rb").read()
ba = bytearray(data)
gc.collect()
free0 = gc.mem_free()
m = _rbnn.Model(ba)          # aligned: used in place
gc.collect()
print("INPLACE", free0 - gc.mem_free(), m.predict(x))
ba[0] = ba[0]                # writes are allowed; resizing is not
ba.extend(b"\0" * 4096)      # moves the bytearray's data
try:
    m.predict(x)
    print("RESIZED no error")
except ValueError as e:
    print("RESIZED", e)
u = bytearray(len(data) + 1)
u[1:] = data
gc.collect()
free0 = gc.mem_free()
m2 = _rbnn.Model(memoryview(u)[1:])   # unaligned: copied once
gc.collect()
print("COPIED", free0 - gc.mem_free(), m2.predict(x))
print("REPR", m2)
try:
    _rbnn.Model(12)
except TypeError:
    print("NOTBUF TypeError")
"""


def test_c_model_keeps_aligned_buffers_and_copies_unaligned(unix_c, tmp_path):
    rng = np.random.default_rng(4)
    m = random_model(rng, n_inputs=300, sizes=[64, 10], plane_mask=0xC0)
    data = pack.to_bytes(m)
    (tmp_path / "m.rbnn").write_bytes(data)
    x = random_inputs(rng, 300, 3)[2]
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    want = int(twin.predict(m, pack_input(x, 0xC0)[None])[0])
    got = dict(
        line.split(" ", 1) for line in run_mpy_code(unix_c, BUFFERS, tmp_path).stdout.splitlines()
    )
    inplace, c1 = map(int, got["INPLACE"].split())
    copied, c2 = map(int, got["COPIED"].split())
    assert c1 == c2 == want
    assert inplace < 1024, "an aligned buffer must not be copied"
    assert len(data) <= copied < len(data) + 1024
    assert got["RESIZED"] == "rbnn: the model's buffer was resized or moved after load"
    assert got["REPR"] == "<rbnn.Model 300 inputs, 2 layers, 10 classes, engine c>"
    assert got["NOTBUF"] == "TypeError"


# --- qemu: BOARD=MICROBIT (Cortex-M0, nRF51) and BOARD=VIRT_RV32 (rv32imac) -----------------
# As ports/qemu's Makefile runs them (QEMU_ARGS of each board's mpconfigboard.mk).
_QEMU_COMMON = ["-nographic", "-monitor", "null", "-semihosting"]
QEMU_BOARDS = {
    "MICROBIT": ("qemu-system-arm", "arm-none-eabi-gcc", "nRF51",
                 ["-machine", "microbit", "-global", "nrf51-soc.flash-size=1048576",
                  "-global", "nrf51-soc.sram-size=262144", *_QEMU_COMMON]),
    "VIRT_RV32": ("qemu-system-riscv32", "riscv64-unknown-elf-gcc", "rv32imac",
                  ["-machine", "virt", "-bios", "none", *_QEMU_COMMON]),
}  # fmt: skip
DEBIAN = {"qemu-system-arm": "qemu-system-arm", "qemu-system-riscv32": "qemu-system-misc",
          "arm-none-eabi-gcc": "gcc-arm-none-eabi",
          "riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf"}  # fmt: skip


class RawRepl:
    """MicroPython's raw REPL over the stdin/stdout of an emulator process (qemu: the
    board's UART on -serial stdio)."""

    def __init__(self, cmd: list[str], timeout: float = 30):
        self.timeout = timeout
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""
        # A newline until the friendly REPL answers (a USB console may connect before
        # MicroPython listens), then interrupt and enter the raw REPL.
        for _ in range(int(timeout)):
            self.proc.stdin.write(b"\r")
            self.proc.stdin.flush()
            try:
                self.read_until(b">>> ", 1.0)
                break
            except AssertionError:
                continue
        self.proc.stdin.write(b"\x03\x03\x01")
        self.proc.stdin.flush()
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>")

    def read_until(self, end: bytes, timeout: float | None = None) -> bytes:
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while end not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(
                    f"board: no {end!r} after {timeout} s; got {self.buf[-500:]!r}"
                )
            if select.select([fd], [], [], min(left, 1.0))[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"board exited; got {self.buf[-500:]!r}")
                self.buf += chunk
        head, _, self.buf = self.buf.partition(end)
        return head

    def exec(self, code: str) -> str:
        """Run code; return its stdout, or raise AssertionError with its traceback."""
        self.proc.stdin.write(code.encode() + b"\x04")
        self.proc.stdin.flush()
        self.read_until(b"OK")
        out = self.read_until(b"\x04")
        err = self.read_until(b"\x04>")
        if err:
            raise AssertionError(f"device error:\n{err.decode(errors='replace')}")
        return out.decode().replace("\r\n", "\n")

    def put(self, name: str, data: bytes, chunk: int = 3072) -> None:
        """Create a bytearray global `name` holding data. Sent as base64 in chunks the
        REPL can compile: the emulated UART takes a few kB/s, so fewer characters count."""
        self.exec(f"from binascii import a2b_base64 as _b\n{name} = bytearray({len(data)})")
        for o in range(0, len(data), chunk):
            part = data[o : o + chunk]
            self.exec(f"{name}[{o}:{o + len(part)}] = _b({base64.b64encode(part)!r})")

    def close(self) -> None:
        try:
            self.proc.stdin.write(b"import machine\nmachine.reset()\x04")  # exits qemu
            self.proc.stdin.flush()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


_QEMU_IMAGES: dict[str, Path] = {}


def qemu_image(name: str) -> Path:
    """The firmware of qemu board ``name`` with the C module (built once per session)."""
    qemu, cc, _, _ = QEMU_BOARDS[name]
    for tool in (qemu, cc):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found (Debian: {DEBIAN[tool]})")
    if name not in _QEMU_IMAGES:
        # Freezing firmware/ (the rbnn wrapper) needs micropython-lib in the checkout.
        freeze = (Path(MICROPY_DIR) / "lib" / "micropython-lib" / "README.md").exists()
        _QEMU_IMAGES[name] = make_firmware("qemu", f"BOARD={name}", f"FW_QEMU_FREEZE={int(freeze)}")
    return _QEMU_IMAGES[name]


@pytest.fixture(params=sorted(QEMU_BOARDS))
def board(request):
    qemu, _, machine, args = QEMU_BOARDS[request.param]
    repl = RawRepl([qemu, *args, "-serial", "stdio", "-kernel", str(qemu_image(request.param))])
    repl.machine = machine
    repl.image = _QEMU_IMAGES[request.param]
    yield repl
    repl.close()


RUN_ON_BOARD = """
from array import array
{make}
out = array("i", [0] * m.n_classes)
W = {packed_len}
for i in range(len(xs) // W):
    x = memoryview(xs)[i * W:(i + 1) * W]
    c = m.scores(x, out)
    print(i, c, m.predict(x), " ".join([str(v) for v in out]))
print("END")
"""


def run_packed_on_board(board: RawRepl, m, xb: np.ndarray, make: str = "import _rbnn\nm = _rbnn.Model(model)"
                        ) -> list[list[int]]:  # fmt: skip
    """Each packed sample of ``xb`` through model ``m`` on the board (made by ``make``:
    the C module's by default): rows of (index, class of scores, class of predict, scores)."""
    board.put("model", pack.to_bytes(m))
    board.put("xs", le_bytes(xb))
    out = board.exec(RUN_ON_BOARD.format(packed_len=xb[0].nbytes, make=make)).splitlines()
    assert out[-1] == "END"
    return [[int(v) for v in line.split()] for line in out[:-1]]



def assert_board_like_twin(board, models: list, rng, n: int) -> None:
    """Each model on the board scores ``n`` random samples as the twin does, and its class
    and predict() agree with the twin's argmax."""
    for m in models:
        x = random_inputs(rng, m.n_inputs, n)
        xb = pack_input(x, m.plane_mask)
        want = twin.scores(m, xb)
        rows = run_packed_on_board(board, m, xb)
        assert len(rows) == len(x)
        for i, (j, c, p, *sc) in enumerate(rows):
            assert j == i and sc == want[i].tolist(), f"{[ly.size for ly in m.layer_specs]} sample {i}: scores differ"
            assert c == p == int(np.argmax(want[i]))

def test_qemu_predicts_like_the_twin(board, rng):
    assert board.machine in board.exec("import sys\nprint(sys.implementation._machine)")
    models = [
        random_model(rng, n_inputs=784, sizes=[64, 10], plane_mask=0x80),
        random_model(rng, n_inputs=100, sizes=[37, 33, 6], plane_mask=0xC1, n_blocks=3),
        random_model(rng, n_inputs=33, sizes=[7], plane_mask=0x0F, n_blocks=2),
        multi_plane_model(rng, 70, [37, 33, 6], 0xA1),
        random_model(rng, n_inputs=250, sizes=[90, 70, 50, 11], plane_mask=0xE1),
    ]
    assert_board_like_twin(board, models, rng, 6)


def test_qemu_conv_predicts_like_the_twin(board, rng):
    # Version 3 on 32-bit boards: random conv models (support.randconv), a dense model in
    # input mode 1, and a small 28x28 CNN (conv 8 + pool, conv 16 + pool, dense 10) in
    # input mode 1 over two planes.
    models = [*[random_conv_model(rng) for _ in range(4)], random_conv_model(rng, conv=False),
              conv_model(rng, (28, 28, 1), [Layer.conv(8, 3, pool=True), Layer.conv(16, 3, pool=True), Layer(10)],
                         0xC0, input_mode=1)]  # fmt: skip
    assert_board_like_twin(board, models, rng, 4)


def test_qemu_fallback_conv_like_the_twin(board, rng, tmp_path):
    # The fallback's conv layers on 32-bit boards (rbnn_py and rbnn_pyconv as .mpy): viper
    # and plain code on VIRT_RV32, plain code on MICROBIT (no native emitter there).
    from test_replay_boards import load_fallback

    have = load_fallback(board, tmp_path, ("rbnn_py", "rbnn_pyconv"))
    assert have == ("viper" if "rv32" in board.machine else "python")
    models = [*[random_conv_model(rng) for _ in range(3)], random_conv_model(rng, conv=False)]
    for engine in ["viper", "python"] if have == "viper" else ["python"]:
        make = f"import rbnn_py\nrbnn_py.use({engine!r})\nm = rbnn_py.Model(model)"
        for m in models:
            x = random_inputs(rng, m.n_inputs, 3)
            xb = pack_input(x, m.plane_mask)
            want = twin.scores(m, xb)
            rows = run_packed_on_board(board, m, xb, make)
            assert [r[3:] for r in rows] == want.tolist(), f"{engine}: {[ly.size for ly in m.layer_specs]}"
            assert [r[1] for r in rows] == [r[2] for r in rows] == np.argmax(want, axis=1).tolist()


def test_qemu_trained_mnist(board, trained_mnist, mnist):
    m = pack.load(trained_mnist)
    n = 200
    xb = pack_input(mnist.x_test[:n], m.plane_mask)
    rows = run_packed_on_board(board, m, xb)
    want = twin.scores(m, xb)
    assert [r[1] for r in rows] == np.argmax(want, axis=1).tolist()
    assert [r[3:] for r in rows] == want.tolist()
    # the classes are a trained model's, not noise
    assert np.mean(np.argmax(want, axis=1) == mnist.y_test[:n]) > 0.8


def test_qemu_errors_and_wrapper(board, rng):
    m = random_model(rng, n_inputs=40, sizes=[20, 5], plane_mask=0x80)
    data = bytearray(pack.to_bytes(m))
    data[9] ^= 1  # file_bytes
    with pytest.raises(FormatError) as e:
        pack.from_bytes(bytes(data))
    board.put("bad", bytes(data))
    out = board.exec(
        "import _rbnn\ntry:\n _rbnn.Model(bad)\nexcept ValueError as e:\n print(e)\n"
    ).strip()
    mt = ERR_RE.match(out)
    want = (e.value.code, e.value.offset, e.value.field, e.value.expected, e.value.found)
    assert mt and (mt.group(1), int(mt.group(2)), *mt.groups()[2:]) == want, out
    data[9] ^= 1
    board.put("good", bytes(data))
    x = random_inputs(rng, 40, 2)[1]
    want = int(twin.predict(m, pack_input(x, 0x80)[None])[0])
    code = (
        f"import micropython, _rbnn\nm = _rbnn.Model(good)\nx = {x.tobytes()!r}\nc = m.predict(x)\n"
        "micropython.heap_lock()\nc = m.predict(x)\nmicropython.heap_unlock()\nprint(c)\n"
    )
    assert int(board.exec(code)) == want  # and no allocation under the heap lock
    # firmware/ frozen into the image (FW_QEMU_FREEZE=1): the wrapper picks the C engine
    probe = (
        f"try:\n import rbnn\n print(rbnn.engine, rbnn.load(good).predict({x.tobytes()!r}))\n"
        "except ImportError:\n print('not frozen')\n"
    )
    got = board.exec(probe).split()
    if got != ["not", "frozen"]:
        assert got == ["c", str(want)]
