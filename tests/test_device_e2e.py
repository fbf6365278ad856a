"""End to end over a pseudo-terminal through pyserial: the MicroPython unix port (the
`micropython` fixture: $RBNN_MICROPYTHON, e.g. a build with the C module, else the
PyPI wheel's) runs the firmware as a virtual device; the host deploys, infers and
compares with the numpy twin, per image and per score."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mpy_helpers import firmware_fs

from rbnn.cli import main
from rbnn.device import frames as fr
from rbnn.device.deploy import deploy, firmware_files
from rbnn.device.link import DeviceError, Link, LinkError
from rbnn.device.virtual import VirtualDevice
from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import pack_input
from support.randmodel import random_model

N_FILES = len(firmware_files())  # the firmware's modules

BAUD = 921600


@pytest.fixture(scope="module")
def board(tmp_path_factory, micropython):
    """A virtual device with the firmware on it (put through the raw REPL)."""
    fs = firmware_fs(tmp_path_factory.mktemp("e2e") / "fs", micropython, BAUD)
    with VirtualDevice(fs, micropython=micropython) as dev:
        yield dev


def _open(board) -> Link:
    return Link.open(board.port, BAUD)


def test_deploy_trained_mnist_and_infer_1000_like_rbnn_eval(trained_mnist, mnist, micropython, tmp_path, capsys,
                                                           record_property):  # fmt: skip
    """Firmware + trained model deployed on a fresh device; 1,000 test images inferred
    there give the classes (and scores) of `rbnn eval --engine twin`, image by image."""
    raw = trained_mnist.read_bytes()
    ref_path = tmp_path / "twin.npy"
    assert main(["eval", str(trained_mnist), "--data", "mnist", "--engine", "twin",
                 "--limit", "1000", "--scores", str(ref_path)]) == 0  # fmt: skip
    eval_line = capsys.readouterr().out.splitlines()[0]
    ref = np.load(ref_path)
    with VirtualDevice(tmp_path / "fs", micropython=micropython) as dev:
        r = deploy(dev.port, raw, "model.rbnn", baudrate=BAUD, progress=False)
        assert r.saved["model"]["file_bytes"] == len(raw)
        assert (tmp_path / "fs" / "model.rbnn").read_bytes() == raw
        link = Link.open(dev.port, BAUD)
        mi = link.ensure_model()
        engine = mi["engine"]
        print(f"device engine: {engine} ({micropython})")
        record_property("engine", engine)
        x = mnist.x_test[:1000]
        xb = pack_input(x, mi["plane_mask"]).astype("<u4").view(np.uint8).reshape(1000, -1)
        classes, scores, us = link.infer(xb, scores=True)
        stats = link.device_stats()
        link.leave()
        link.close()
    assert engine in ("c", "viper", "python")
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    np.testing.assert_array_equal(scores, ref)
    correct = int(np.sum(classes == mnist.y_test[:1000]))
    assert eval_line == f"accuracy: {correct / 1000:.4f} ({correct}/1000)"
    assert stats["inferences"] == 1000 and stats["errors"] == 0 and us > 0


def test_cli_deploy_then_infer_on_the_virtual_device(trained_mnist, micropython, tmp_path, capsys, monkeypatch):
    """`rbnn deploy --port virtual` then `rbnn infer --port virtual`: two devices in
    turn on one filesystem, like one board across two commands."""
    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    fs = str(tmp_path / "vfs")
    assert main(["deploy", str(trained_mnist), "--port", "virtual", "--fs", fs]) == 0
    out = capsys.readouterr().out
    assert f"{N_FILES} sent, 0 unchanged" in out and "saved and loaded" in out
    assert main(["deploy", str(trained_mnist), "--port", "virtual", "--fs", fs]) == 0
    assert f"0 sent, {N_FILES} unchanged" in capsys.readouterr().out  # nothing changed: nothing sent
    got = tmp_path / "device.npy"
    assert main(["infer", "--port", "virtual", "--fs", fs, "--data", "mnist", "--limit", "300",
                 "--scores", str(got)]) == 0  # fmt: skip
    dev_out = capsys.readouterr().out.splitlines()
    ref = tmp_path / "twin.npy"
    assert main(["eval", str(trained_mnist), "--data", "mnist", "--limit", "300", "--scores", str(ref)]) == 0
    host_out = capsys.readouterr().out.splitlines()
    assert dev_out[0] == host_out[0] and dev_out[0].startswith("accuracy: ")
    assert "samples/s end to end" in dev_out[1]
    np.testing.assert_array_equal(np.load(got), np.load(ref))


def test_cnn_deploy_then_infer_like_the_twin(mnist, micropython, tmp_path, capsys, monkeypatch):
    """A CNN (version 3) through `rbnn deploy --port virtual` and `rbnn infer`: the int32
    scores of N MNIST test images on the device are the twin's (`rbnn eval`), image by
    image. Runs with any 28x28 CNN file: $RBNN_CNN (issue 9: the trained MNIST CNN with
    RBNN_CNN_N=1000); by default a small random one (conv 8 + pool, conv 16 + pool,
    dense 32, dense 10) on 100 images."""
    import os

    from test_fallback_conv import conv_model

    from rbnn.format.model import Layer

    path = os.environ.get("RBNN_CNN")
    n = int(os.environ.get("RBNN_CNN_N", "100"))
    if not path:
        rng = np.random.default_rng(9)
        layers = [Layer.conv(8, 3, pool=True), Layer.conv(16, 3, pool=True), Layer(32), Layer(10)]
        path = str(tmp_path / "cnn.rbnn")
        pack.save(conv_model(rng, (28, 28, 1), layers, 0x80), path)
    assert pack.load(path).has_conv, f"{path} has no conv layer"
    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    fs = str(tmp_path / "vfs")
    assert main(["deploy", path, "--port", "virtual", "--fs", fs]) == 0
    assert "saved and loaded" in capsys.readouterr().out
    got, ref = tmp_path / "device.npy", tmp_path / "twin.npy"
    assert main(["infer", "--port", "virtual", "--fs", fs, "--data", "mnist", "--limit", str(n),
                 "--scores", str(got)]) == 0  # fmt: skip
    dev_out = capsys.readouterr().out.splitlines()
    assert main(["eval", path, "--data", "mnist", "--limit", str(n), "--scores", str(ref)]) == 0
    host_out = capsys.readouterr().out.splitlines()
    print(dev_out[1])  # the device's engine and speed
    assert dev_out[0] == host_out[0] and dev_out[0].startswith("accuracy: ")
    scores = np.load(got)
    assert scores.shape == (n, 10)
    np.testing.assert_array_equal(scores, np.load(ref))


@pytest.mark.parametrize("seed", range(4))
def test_scores_bit_identical_to_twin(board, seed):
    """Random models (odd widths, 1-4 input planes, several blocks), raw and packed
    inputs: the device's int32 scores equal the twin's."""
    rng = np.random.default_rng(100 + seed)
    m = random_model(rng, n_blocks=1 + seed % 3)
    data = pack.to_bytes(m)
    x = rng.integers(0, 256, (40, m.n_inputs), dtype=np.uint8)
    xbits = pack_input(x, m.plane_mask)
    ref = twin.scores(m, xbits)
    link = _open(board)
    saved = link.deploy_model(data, f"r{seed}.rbnn")
    assert saved["model"]["layers"] == [m.n_inputs] + m.sizes
    packed = xbits.astype("<u4").view(np.uint8).reshape(len(x), -1)
    if packed.shape[1] != m.n_inputs:  # equal lengths are taken as raw features
        c, s, _ = link.infer(packed, scores=True)
        np.testing.assert_array_equal(s, ref)
        np.testing.assert_array_equal(c, np.argmax(ref, axis=1))
    c, s, _ = link.infer(x, scores=True)
    np.testing.assert_array_equal(s, ref)
    np.testing.assert_array_equal(c, np.argmax(ref, axis=1))
    link.leave()
    link.close()


def test_enter_leave_and_state_between_sessions(board):
    rng = np.random.default_rng(5)
    data = pack.to_bytes(random_model(rng, n_inputs=64, sizes=[33, 7], plane_mask=0x80))
    link = _open(board)
    assert link.repl is not None  # started from the raw REPL
    link.deploy_model(data, "keep.rbnn")
    link.leave()
    # back at the friendly REPL: it evaluates what we type
    ser = link.ser
    ser.reset_input_buffer()
    ser.write(b"6*7\r")
    ser.timeout = 2
    assert b"42" in ser.read_until(b">>> ")
    ser.write(b"import rbnn_server; rbnn_server._server.active\r")
    assert b"'keep.rbnn'" in ser.read_until(b">>> ")
    link.close()
    # a new session finds the model still loaded
    link = _open(board)
    info = link.info()
    assert info["active"] == "keep.rbnn" and info["model"]["layers"] == [64, 33, 7]
    assert {"name": "keep.rbnn", "bytes": len(data), "file_crc": int.from_bytes(data[-4:], "little")} in info["models"]
    link.leave()
    link.close()


def test_device_info_and_stats_commands(board, capsys):
    assert main(["device", "info", "--port", board.port]) == 0
    out = capsys.readouterr().out
    assert "protocol 2, firmware 0.1.0" in out and "MicroPython" in out and "bytes free" in out
    assert main(["device", "stats", "--port", board.port, "--json"]) == 0
    assert '"frames"' in capsys.readouterr().out


def test_refusals_are_clear(board):
    link = _open(board)
    with pytest.raises(DeviceError, match="E_NOFILE: no model 'missing.rbnn'"):
        link.load("missing.rbnn")
    with pytest.raises(DeviceError, match="E_NAME"):  # the device's own check (the host checks first)
        link.request(fr.LOAD, b"../etc.rbnn")
    link.deploy_model(pack.to_bytes(random_model(np.random.default_rng(1), n_inputs=100)), "x.rbnn")
    with pytest.raises(DeviceError, match="E_INPUT|ValueError") as e:
        link.infer(np.zeros((2, 7), np.uint8))  # neither raw nor packed length
    assert "100" in e.value.message  # names the accepted length
    with pytest.raises(DeviceError, match="E_UPLOAD: no upload in progress"):
        link.save("x.rbnn")
    link.reset()
    assert link.info()["model"] is None
    st = link.device_stats()
    assert st["frames"] == 2 and st["errors"] == 0  # counted from the reset: INFO, STATS
    starts = board.starts
    link.reset(reboot=True)
    board.wait_started(starts + 1)
    link.reconnect()  # the board came back at its REPL; the stored default loads on demand
    c, _, _ = link.infer(np.zeros((3, 100), np.uint8))
    assert len(c) == 3 and link.info()["active"] == "x.rbnn"
    link.leave()
    link.close()


def test_no_firmware_and_no_model(micropython, tmp_path, board):
    with VirtualDevice(tmp_path / "empty", micropython=micropython) as dev:
        with pytest.raises(LinkError, match="no rbnn firmware on the device.*rbnn deploy"):
            Link.open(dev.port, BAUD)
    fs = tmp_path / "nomodel"
    shutil.copytree(board.fs, fs, ignore=shutil.ignore_patterns("*.rbnn", ".rbnn_*"))
    with VirtualDevice(fs, micropython=micropython) as dev:
        link = Link.open(dev.port, BAUD)
        with pytest.raises(DeviceError, match="E_NOMODEL"):
            link.infer(np.zeros((1, 100), np.uint8))
        with pytest.raises(LinkError, match="no model loaded.*rbnn deploy"):
            link.ensure_model()
        link.leave()
        link.close()


def test_bytewise_console_like_a_real_board(micropython, tmp_path, board):
    """Blocking stdin, read byte by byte by the firmware's own console (the code path
    of a real board), with the model read back after a reboot."""
    fs = tmp_path / "fs"
    shutil.copytree(board.fs, fs, ignore=shutil.ignore_patterns("*.rbnn", ".rbnn_*"))
    rng = np.random.default_rng(9)
    m = random_model(rng, n_inputs=300, sizes=[70, 10], plane_mask=0xE0)
    x = rng.integers(0, 256, (30, 300), dtype=np.uint8)
    ref = twin.scores(m, pack_input(x, m.plane_mask))
    with VirtualDevice(fs, micropython=micropython, bytewise=True) as dev:
        link = Link.open(dev.port, BAUD)
        link.deploy_model(pack.to_bytes(m), "b.rbnn")
        link.leave()
        link.close()
        dev.restart()  # power cycle: the model comes back from the flash
        link = Link.open(dev.port, BAUD)
        _, s, _ = link.infer(x, scores=True)
        link.leave()
        link.close()
    np.testing.assert_array_equal(s, ref)
