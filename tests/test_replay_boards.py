"""The replay of tests/test_stream.py (the same model, the same 2,000 streamed samples,
the same options: REPLAY) on MicroPython built with the C module from $MICROPY_DIR
(docs/FIRMWARE.md), each ending in the bytes of `rbnn grow --engine c` and `--engine twin`:

- the unix port with `_rbnn` as the virtual device, through the real serial stream
  (`rbnn stream --port virtual`, then `rbnn pull`), engine c;
- the qemu boards (no file system, no serial protocol: their console is the raw REPL):
  the training state prepared exactly as `rbnn grow` prepares it
  (rbnn.cli.grow.prepare_run), the samples fed in the stream's order through
  train_batch, the last block frozen as the stream's end freezes it: MICROBIT
  (Cortex-M0) with the C module and the fallback's plain code (its build has no native
  emitter), VIRT_RV32 (rv32imac) with the C module and the fallback, viper and plain.

Every test needs $MICROPY_DIR and skips without it.
"""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest
import test_stream
from mpy_helpers import firmware_fs
from test_faults import faulty_link
from test_stream import BAUD, REPLAY, _args

from rbnn.cli import main
from rbnn.cli.grow import prepare_run
from rbnn.device.virtual import VirtualDevice
from rbnn.format import pack
from rbnn.format.model import pack_input

files = test_stream.files  # the fixture: the data set, the model, `rbnn grow`'s files
MICROPY_DIR = os.environ.get("MICROPY_DIR", "")
pytestmark = pytest.mark.skipif(
    not MICROPY_DIR,
    reason="MICROPY_DIR is not set: these tests build MicroPython with the C module from a "
    "MicroPython checkout (docs/FIRMWARE.md)",
)


# --- the unix port with the C module, through the serial stream --------------------------------
def test_unix_c_module_replays_grow_through_the_stream(files, tmp_path, monkeypatch, capsys):
    """`rbnn stream --port virtual` on the unix build with `_rbnn` (engine c: the device
    says so in HELLO), then `rbnn pull`: the file of `rbnn grow`, c and twin."""
    from test_cmodule import make_firmware

    unix_c = str(make_firmware("unix"))
    monkeypatch.setenv("RBNN_MICROPYTHON", unix_c)
    monkeypatch.setenv("RBNN_ENGINE", "c")
    fs = firmware_fs(tmp_path / "fs", unix_c, BAUD)
    with VirtualDevice(fs, micropython=unix_c) as dev:  # the model put there, the engine checked
        link, _ = faulty_link(dev)
        assert link.hello_info["engine"] == "c"
        link.deploy_model(files["model"], "m.rbnn")
        link.leave()
        link.ser.close()
    argv = ["stream", "--port", "virtual", "--fs", str(fs), "--data", str(files["data"]), *REPLAY, "-q"]
    assert main([*argv, "--checkpoint", "700", "-o", str(tmp_path / "s.rbnn")]) == 0
    assert "stream: 2,000 samples on virtual (2,000 streamed now, from 0)" in capsys.readouterr().out
    assert main(["pull", "--port", "virtual", "--fs", str(fs), "-o", str(tmp_path / "p.rbnn")]) == 0
    pulled = (tmp_path / "p.rbnn").read_bytes()
    assert pulled == files["grown"]["replay", "c"] == files["grown"]["replay", "twin"]
    assert (tmp_path / "s.rbnn").read_bytes() == pulled
    st = pack.from_bytes(pulled).state()
    assert st.steps - st.stream_base == 2000


# --- the qemu boards: the run fed through the raw REPL ----------------------------------------------
# Globals put there: model (the prepared file), xs (the samples packed, in the stream's
# order), ys (their labels). The C module or the fallback (rbnn_py), in chunks of CHUNK
# samples as the stream's TRAIN frames; the end freezes the live block as `rbnn grow` does.
BOARD_RUN = r"""
import gc
from binascii import b2a_base64
if ENGINE == "c":
    import _rbnn
    m = _rbnn.Model(model)
else:
    import rbnn_py
    rbnn_py.use(ENGINE)
    m = rbnn_py.Model(model)
gc.collect()
n = len(ys)
pb = len(xs) // n
xv = memoryview(xs)
yv = memoryview(ys)
hits = 0
for i in range(0, n, CHUNK):
    j = min(n, i + CHUNK)
    hits += m.train_batch(xv[i * pb:j * pb], yv[i:j])
if m.stats()["live"] is not None:
    m.freeze()
m.reseal()
print("HITS", hits, m.stats()["steps"])
for o in range(0, len(model), 600):
    print("B64", b2a_base64(model[o:o + 600]).decode().strip())
"""


def prepared(files) -> tuple[bytes, bytes, bytes]:
    """(the model file as `rbnn grow` prepares it, the samples packed in the run's order,
    their labels): what the stream sends, in the order it sends it."""
    m = pack.from_bytes(files["model"])
    setup = prepare_run(_args(files, REPLAY), m, files["ds"], "m")
    order = setup.plan.order
    assert len(order) == 2000
    ds = files["ds"]
    xb = pack_input(ds.x_train[order], m.plane_mask)
    return pack.to_bytes(m), np.ascontiguousarray(xb, dtype="<u4").tobytes(), ds.y_train[order].astype(np.uint8).tobytes()


def board_run(board, engine: str, model: bytes, chunk: int = 100) -> tuple[bytes, str]:
    """The run on the board (xs and ys put there): (the model's bytes at the end, the HITS line)."""
    board.exec("model = m = None\nimport gc\ngc.collect()")
    board.put("model", model)
    out = board.exec(f"ENGINE = {engine!r}\nCHUNK = {chunk}\n" + BOARD_RUN).splitlines()
    hits = [ln for ln in out if ln.startswith("HITS ")]
    assert len(hits) == 1, out[-10:]
    return b"".join(base64.b64decode(ln[4:]) for ln in out if ln.startswith("B64 ")), hits[0]


def load_fallback(board, tmp_path, mods: tuple[str, ...] = ("rbnn_py", "rbnn_pytrain")) -> str:
    """The fallback's modules ``mods`` (.mpy) on the board through
    tests/test_fallback_train.py's RAM file system, imported; returns the engine it
    picks (viper where the build has it)."""
    from test_fallback_train import RAMFS, mpy_compiled

    lib = mpy_compiled(tmp_path, mods)
    board.exec(RAMFS)
    for mod in mods:
        board.put("_b_", (lib / f"{mod}.mpy").read_bytes())
        board.exec(f"_fw['{mod}.mpy'] = bytes(_b_)\ndel _b_")
    board.exec(f"vfs.mount(_RamFS(_fw), '/fw')\nsys.path.append('/fw')\nimport {', '.join(mods)}\n_fw.clear()")
    return board.exec("print(rbnn_py.engine)").strip()


@pytest.mark.parametrize("name", ["MICROBIT", "VIRT_RV32"])
def test_qemu_boards_replay_grow(files, tmp_path, name):
    """The 2,000-sample run of the stream test on the board (the model: 64-16-4 in 8
    planes, 2,280 bytes, and the samples packed, 16 kB, fit both boards' heaps): C module,
    then the fallback (viper and plain on VIRT_RV32, plain on MICROBIT, which has no
    native emitter), each from the prepared file: the bytes of `rbnn grow`, c and twin."""
    from test_cmodule import QEMU_BOARDS, RawRepl, qemu_image

    qemu, _, machine, args = QEMU_BOARDS[name]
    image = qemu_image(name)
    want = files["grown"]["replay", "c"]
    assert want == files["grown"]["replay", "twin"]
    model, xs, ys = prepared(files)
    assert (len(model), len(xs), len(ys)) == (2280, 16000, 2000)  # the sizes the docstring gives
    board = RawRepl([qemu, *args, "-serial", "stdio", "-kernel", str(image)], timeout=300)
    try:
        assert machine in board.exec("import sys\nprint(sys.implementation._machine)")
        board.put("xs", xs)
        board.put("ys", ys)
        got, hits = board_run(board, "c", model)
        assert got == want, f"{name} C module: the file differs from rbnn grow's"
        have = load_fallback(board, tmp_path)
        assert have == ("python" if name == "MICROBIT" else "viper")
        for engine in ["viper", "python"] if have == "viper" else ["python"]:
            got, fb_hits = board_run(board, engine, model)
            assert got == want, f"{name} fallback {engine}: the file differs from rbnn grow's"
            assert fb_hits == hits  # the same predictions before each update, counted
    finally:
        board.close()
    st = pack.from_bytes(want).state()
    assert int(hits.split()[2]) == st.steps and st.steps - st.stream_base == 2000

