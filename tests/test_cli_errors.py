"""Every way a user can get an `rbnn` command wrong gives one line on stderr,
``rbnn: error: ...`` naming the file, port or option (and expected vs found where that
applies), a non-zero exit, no traceback, no hang and no partial output file.

Small random models and tiny IDX folders written here; a virtual device (the
`micropython` fixture) for the device commands; a pseudo-terminal nobody serves for a
silent port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from rbnn.cli import main
from rbnn.format import pack
from support.randmodel import random_model

TQDM = re.compile(r"\[\d+:\d+[<,]")  # a progress bar's "[00:01<00:02" or "[00:00, 5img/s]"


def fails(capsys, argv: list[str], *needles: str, rc: int = 2) -> str:
    """Run ``rbnn argv`` in-process; assert one ``rbnn: error:`` line holding every needle
    (progress bars, erased on a terminal, are left out)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argument errors end in argparse's sys.exit, as in the console script
        code = e.code
    err = capsys.readouterr().err
    assert code == rc, err
    assert "Traceback" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not TQDM.search(ln)]
    assert len(lines) == 1 and lines[0].startswith("rbnn: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def rbnn(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rbnn", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)  # fmt: skip


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, np.uint8)
    head = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(head + arr.tobytes())


def idx_folder(folder: Path, rng, n_train=50, n_test=20, side=28, n_test_labels=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, side, side)))
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train))
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, side, side)))
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test_labels or n_test))
    return folder


@pytest.fixture
def files(tmp_path, rng) -> dict:
    """A valid 784-input model, a 30-input one, broken copies and an IDX folder."""
    good = tmp_path / "good.rbnn"
    pack.save(random_model(rng, 784, [16, 10], 0x80), good)
    small = tmp_path / "small.rbnn"
    pack.save(random_model(rng, 30, [8, 3], 0x80), small)
    raw = good.read_bytes()
    (tmp_path / "empty.rbnn").write_bytes(b"")
    (tmp_path / "trunc.rbnn").write_bytes(raw[:100])
    bad = bytearray(raw)
    bad[len(bad) // 2] ^= 0x04  # a weight bit: only the CRC sees it
    (tmp_path / "corrupt.rbnn").write_bytes(bytes(bad))
    (tmp_path / "folder.rbnn").mkdir()
    return {"good": good, "small": small, "dir": tmp_path, "data": idx_folder(tmp_path / "data", rng)}


# --- model files ---------------------------------------------------------------------
BAD_MODELS = [
    ("absent.rbnn", "absent.rbnn: no such file"),
    ("empty.rbnn", "E_TRUNCATED: header: expected >= 32 bytes, found 0 bytes"),
    ("trunc.rbnn", "E_TRUNCATED: file_bytes: expected"),
    ("corrupt.rbnn", "E_CRC: crc32"),
    ("folder.rbnn", "expected a .rbnn model file, found a folder"),
]


@pytest.mark.parametrize("name,needle", BAD_MODELS)
def test_bad_model_file_summary_eval_deploy(files, capsys, name, needle):
    path = files["dir"] / name
    fails(capsys, ["summary", path], str(path), needle)
    fails(capsys, ["eval", path, "--data", files["data"]], str(path), needle)
    # refused before the port is touched: the absent port is never reported
    fails(capsys, ["deploy", path, "--port", "/dev/rbnn-no-such-port"], str(path), needle)


def test_device_file_as_model_is_refused_not_read(capsys):
    # /dev/zero never ends: reading it would hang and eat memory
    fails(capsys, ["summary", "/dev/zero"], "/dev/zero: expected a .rbnn model file, found a character device")


def test_unreadable_model(files, capsys, monkeypatch):
    import rbnn.files

    # root reads any file whatever its mode, so the refusal is simulated where it happens
    def denied(path, mode="r"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rbnn.files, "open", denied, raising=False)
    fails(capsys, ["summary", files["good"]], str(files["good"]), "cannot read: Permission denied")


# --- data folders --------------------------------------------------------------------
def test_bad_data_folders(files, capsys, rng, tmp_path):
    good = files["good"]
    fails(capsys, ["eval", good, "--data", tmp_path / "nowhere"], "nowhere: not a folder of IDX files")
    fails(capsys, ["eval", good, "--data", good], "good.rbnn: not a folder of IDX files")
    missing = idx_folder(tmp_path / "missing", rng)
    (missing / "t10k-labels-idx1-ubyte").unlink()
    fails(capsys, ["eval", good, "--data", missing], "missing t10k-labels-idx1-ubyte")
    small = idx_folder(tmp_path / "side10", rng, side=10)
    fails(capsys, ["eval", good, "--data", small], "t10k images: expected shape (n, 28, 28), found (20, 10, 10)")
    fails(capsys, ["train", "--data", small, "-o", tmp_path / "x.rbnn"], "train images: expected shape (n, 28, 28), found (50, 10, 10)")
    empty = idx_folder(tmp_path / "empty", rng, n_test=0)  # would print accuracy 0.0000 (0/0)
    fails(capsys, ["eval", good, "--data", empty], "t10k images: expected at least 1 image, found 0")
    labels = idx_folder(tmp_path / "labels", rng, n_test_labels=7)
    fails(capsys, ["eval", good, "--data", labels], "t10k labels: expected shape (20,), found (7,)")
    trunc = idx_folder(tmp_path / "trunc", rng)
    p = trunc / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    fails(capsys, ["eval", good, "--data", trunc], str(p), "expected 15680 bytes", "found 15675")
    gz = idx_folder(tmp_path / "gz", rng)
    (gz / "t10k-images-idx3-ubyte").unlink()
    # a gzip header and a deflate block of the reserved type: zlib.error, not OSError
    (gz / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00\0\0\0\0\0\xff" + b"\xff" * 20)
    fails(capsys, ["eval", good, "--data", gz], "t10k-images-idx3-ubyte.gz: cannot read", "invalid block type")
    fails(capsys, ["train", "--data", tmp_path / "nowhere", "-o", tmp_path / "x.rbnn"], "not a folder of IDX files")


def test_model_inputs_must_match_the_data(files, capsys):
    fails(capsys, ["eval", files["small"], "--data", files["data"]], "small.rbnn: model has 30 inputs, data set has 784")


# --- option values -------------------------------------------------------------------
TRAIN = ["train", "--data", "{data}", "-o", "{dir}/x.rbnn", "--quiet"]
BAD_OPTIONS = [
    (["eval", "{good}", "--limit", "0"], "eval: argument --limit: expected an integer >= 1, found 0"),
    (["eval", "{good}", "--limit", "-3"], "expected an integer >= 1, found -3"),
    (["eval", "{good}", "--limit", "abc"], "expected an integer >= 1, found 'abc'"),
    (["eval", "{good}", "--engine", "gpu"], "argument --engine: invalid choice: 'gpu'"),
    (["infer", "--port", "virtual", "--limit", "0"], "infer: argument --limit: expected an integer >= 1"),
    ([*TRAIN, "--hidden", "0"], "--hidden: expected comma-separated widths 1..65535 such as 256,256, found '0'"),
    ([*TRAIN, "--hidden", "-5"], "found '-5'"),
    ([*TRAIN, "--hidden", "64,abc"], "found '64,abc'"),
    ([*TRAIN, "--hidden", "70000"], "found '70000'"),
    ([*TRAIN, "--hidden", ""], "found ''"),
    ([*TRAIN, "--hidden", "8,8,8,8,8,8,8,8"], "at most 7 hidden layers"),
    ([*TRAIN, "--planes", "0"], "--planes: expected 1..8 (most significant input bit-planes), found '0'"),
    ([*TRAIN, "--planes", "9"], "found '9'"),
    ([*TRAIN, "--planes", "two"], "found 'two'"),
    ([*TRAIN, "--plane-mask", "0x100"], "--plane-mask: expected a mask 0x01..0xFF such as 0xC0, found '0x100'"),
    ([*TRAIN, "--plane-mask", "0"], "found '0'"),
    ([*TRAIN, "--plane-mask", "zz"], "found 'zz'"),
    ([*TRAIN, "--planes", "2", "--plane-mask", "0xC0"], "not allowed with argument"),
    ([*TRAIN, "--epochs", "0"], "epochs: expected >= 1, found 0"),
    ([*TRAIN, "--epochs", "-1"], "epochs: expected >= 1, found -1"),
    ([*TRAIN, "--epochs", "abc"], "train: argument --epochs: invalid int value: 'abc'"),
    ([*TRAIN, "--seed", "-1"], "train: argument --seed: expected an integer >= 0, found -1"),  # numpy refuses it
    ([*TRAIN, "--seed", "x"], "train: argument --seed: expected an integer >= 0, found 'x'"),
    ([*TRAIN, "--limit", "40", "--val", "40"],
     "--limit 40 leaves no training images after --val 40 validation images: raise --limit or lower --val"),
    ([*TRAIN, "--limit", "0"], "limit: expected >= 1 training images, found 0"),
    ([*TRAIN, "--limit", "-4"], "limit: expected >= 1 training images, found -4"),
    ([*TRAIN, "--batch", "1"], "batch: expected >= 2"),
    ([*TRAIN, "--val", "-1"], "validation split: expected 0..49 images, found -1"),
    ([*TRAIN, "--val", "50"], "validation split: expected 0..49 images, found 50"),
    ([*TRAIN, "--val", "10", "--batch", "8", "--threads", "0"], "threads: expected 1..256, found 0"),
    ([*TRAIN, "--lr", "-1"], "learning rates must be > 0"),
    ([*TRAIN, "--lr", "inf"], "learning rates must be > 0, found lr=inf"),
    ([*TRAIN, "--shift", "nan"], "shift and rotate must be finite and >= 0"),
    ([*TRAIN, "--val", "10", "--batch", "8", "--no-augment", "--lr", "1e300", "--lr-final", "1e300"],
     "training diverged in epoch 1: weights or BatchNorm parameters are not finite; try a smaller --lr"),
    ([*TRAIN, "--dropout", "1.5"], "dropout: expected 0 <= p < 1"),
    (["flash", "x.bin", "--baud", "0"], "flash: argument --baud: expected a baud rate 1..2147483647 such as 115200, found 0"),
    (["flash", "x.bin", "--baud", "99999999999"], "flash: argument --baud: expected a baud rate 1..2147483647"),
    (["flash", "x.uf2", "--wait", "-1"], "flash: argument --wait: expected a number >= 0, found '-1'"),
    (["flash", "x.bin", "--offset", "zz"], "expected an address >= 0 such as 0x1000, found 'zz'"),
    (["device", "info", "--port", "/dev/null", "--baud", "-5"], "device: argument --baud: expected a baud rate 1..2147483647"),
    (["device", "info", "--port", "/dev/null", "--baud", "2147483648"], "found 2147483648"),  # pyserial: OverflowError
    (["deploy", "{good}", "--port", "/dev/null", "--baud", "x"], "deploy: argument --baud: expected a baud rate 1..2147483647"),
    (["device", "flush", "--port", "/dev/null"], "argument action: invalid choice: 'flush'"),
    (["virtual", "--heap", "lots"], "heap: expected a size 96K..1024M such as 256K or 1M, found 'lots'"),
    (["virtual", "--heap", "8K"], "found '8K'"),
    (["virtual", "--heap", "4096M"], "found '4096M'"),
    ([], "the following arguments are required: COMMAND (see rbnn --help)"),
    (["eval"], "eval: the following arguments are required: model"),
    (["evaluate"], "invalid choice: 'evaluate'"),
]


@pytest.mark.parametrize("argv,needle", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_option_values(files, capsys, argv, needle):
    subs = {"good": files["good"], "data": files["data"], "dir": files["dir"]}
    out = fails(capsys, [a.format(**subs) for a in argv], needle)
    assert not (files["dir"] / "x.rbnn").exists(), out


def test_network_too_big_for_this_machine_is_refused_before_allocating(files, capsys, monkeypatch):
    import rbnn.train.fit

    monkeypatch.setattr(rbnn.train.fit, "_physical_memory", lambda: 1 << 20)  # a 1 MiB machine
    fails(capsys, ["train", "--data", files["data"], "--val", "10", "--batch", "8", "--hidden", "256", "-o", files["dir"] / "x.rbnn"],
          "hidden 256: training 203,264 weights needs at least 3.1 MiB", "this machine has 1.0 MiB")  # fmt: skip
    assert not (files["dir"] / "x.rbnn").exists()


# --- output paths --------------------------------------------------------------------
def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture
def no_training(monkeypatch):
    """Training that fails the test if it starts: a refusal must come before it."""
    import rbnn.train

    def trained(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(rbnn.train, "train", trained)


def test_output_paths_checked_before_the_work(files, capsys, no_training):
    d, good = files["dir"], files["good"]
    ev = ["eval", good, "--data", files["data"], "--scores"]
    fails(capsys, [*ev, d / "nowhere" / "s.npy"], "--scores", "folder", "nowhere does not exist")
    fails(capsys, [*ev, d / "folder.rbnn"], "--scores", "expected a file name, found a folder")
    fails(capsys, ["infer", "--port", "/dev/rbnn-no-such-port", "--data", files["data"], "--scores", d / "folder.rbnn"],
          "--scores", "found a folder")  # fmt: skip
    # train refuses -o before it trains
    fails(capsys, ["train", "--data", files["data"], "--quiet", "-o", d / "folder.rbnn"],
          "-o", "expected a file name, found a folder")  # fmt: skip
    fails(capsys, ["train", "--data", files["data"], "--quiet", "-o", d / "nowhere" / "m.rbnn"],
          "-o", "does not exist")  # fmt: skip
    assert leftovers(d) == []


def test_train_checks_the_files_beside_the_model_before_training(files, capsys, no_training):
    """A blocked curves or history path is found before the run, not after it with the
    model already written."""
    d = files["dir"]
    for blocked in ("m.curves.png", "m.history.json"):
        (d / blocked).mkdir()
        what = "curves" if "curves" in blocked else "history"
        fails(capsys, ["train", "--data", files["data"], "--quiet", "-o", d / "m.rbnn"],
              f"-o {d / 'm.rbnn'}: its {what} file {d / blocked}: expected a file name, found a folder")  # fmt: skip
        (d / blocked).rmdir()
        assert [p.name for p in d.iterdir() if p.name.startswith("m.")] == []


def test_an_output_that_is_an_input_is_refused(files, capsys, no_training):
    """`rbnn eval m.rbnn --scores m.rbnn` overwrote the model; the same file by any name
    (a symlink, a hard link) and the data files are inputs too."""
    d, good, data = files["dir"], files["good"], files["data"]
    before = good.read_bytes()
    link = d / "link.npy"
    link.symlink_to(good)
    for out in (good, link):
        fails(capsys, ["eval", good, "--data", data, "--scores", out],
              f"--scores {out}: is an input of this command", "choose another file")  # fmt: skip
    labels = data / "t10k-labels-idx1-ubyte"
    fails(capsys, ["eval", good, "--data", data, "--scores", labels], f"--scores {labels}: is an input")
    fails(capsys, ["infer", "--port", "/dev/rbnn-no-such-port", "--data", data, "--scores", labels],
          f"--scores {labels}: is an input")  # before the port is touched  # fmt: skip
    images = data / "train-images-idx3-ubyte"
    fails(capsys, ["train", "--data", data, "-o", images], f"-o {images}: is an input")
    (d / "m.history.json").symlink_to(labels)  # the history file beside -o is a data file
    fails(capsys, ["train", "--data", data, "-o", d / "m.rbnn"], f"-o {d / 'm.rbnn'}: its history file", "is an input")
    assert good.read_bytes() == before and labels.stat().st_size == 8 + 20


def test_train_into_a_pipe_writes_the_model_there_and_nothing_beside_it(files, capsys):
    """`rbnn train -o /dev/null` (as root) replaced /dev/null with a regular file and wrote
    /dev/null.curves.png: a FIFO stands in for the device here."""
    from test_files import FifoReader

    fifo = FifoReader(files["dir"])
    assert main(["train", "--data", str(files["data"]), "--val", "10", "--batch", "8", "--epochs", "1",
                 "--no-augment", "--quiet", "-o", str(fifo.path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert pack.from_bytes(fifo.result()).sizes == [256, 256, 10]
    assert f"curves, history: not written (-o {fifo.path} is not a regular file)" in out
    assert sorted(p.name for p in files["dir"].iterdir() if p.name.startswith("fifo")) == ["fifo"]
    fifo.path.unlink()
    fifo = FifoReader(files["dir"])
    assert main(["eval", str(files["good"]), "--data", str(files["data"]), "--scores", str(fifo.path)]) == 0
    capsys.readouterr()
    assert fifo.result()[:6] == b"\x93NUMPY"


def test_eval_reads_only_the_test_files(files, capsys):
    data = files["data"]
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (data / name).unlink()
    assert main(["eval", str(files["good"]), "--data", str(data)]) == 0
    assert "accuracy: " in capsys.readouterr().out
    fails(capsys, ["train", "--data", data, "-o", files["dir"] / "x.rbnn"], "missing train-images-idx3-ubyte")


def test_model_classes_must_match_the_data(files, capsys, rng):
    three = files["dir"] / "three.rbnn"
    pack.save(random_model(rng, 784, [16, 3], 0x80), three)
    fails(capsys, ["eval", three, "--data", files["data"]],
          f"{three}: model has 3 classes, data set has 10 (labels 0..9")  # fmt: skip
    wide = files["dir"] / "wide.rbnn"
    pack.save(random_model(rng, 784, [16, 12], 0x80), wide)
    fails(capsys, ["eval", wide, "--data", files["data"]], "model has 12 classes, data set has 10")


def test_a_closed_pipe_ends_quietly(files):
    """`rbnn summary m.rbnn | head -0`: no traceback, no message, status 141 (SIGPIPE)."""
    p = subprocess.Popen([sys.executable, "-m", "rbnn", "summary", str(files["good"])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    p.stdout.close()  # the reader is gone before rbnn has printed anything
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b"", err


def test_scores_written_under_the_exact_name(files, capsys):
    out = files["dir"] / "scores"  # np.save(name) would have written scores.npy
    assert main(["eval", str(files["good"]), "--data", str(files["data"]), "--scores", str(out)]) == 0
    capsys.readouterr()
    assert np.load(out).shape == (20, 10)
    assert not out.with_suffix(".npy").exists() and leftovers(files["dir"]) == []


def test_write_failure_leaves_nothing(files, capsys, monkeypatch):
    out = files["dir"] / "s.npy"

    def full_disk(f, arr):
        f.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    fails(capsys, ["eval", files["good"], "--data", files["data"], "--scores", out],
          str(out), "cannot write: No space left on device")  # fmt: skip
    assert not out.exists() and leftovers(files["dir"]) == []


# --- Ctrl-C ----------------------------------------------------------------------------
def test_ctrl_c_mid_write_leaves_no_partial_file(files, capsys, monkeypatch):
    out = files["dir"] / "s.npy"

    def interrupted(f, arr):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    assert main(["eval", str(files["good"]), "--data", str(files["data"]), "--scores", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "rbnn: interrupted" and "Traceback" not in err
    assert not out.exists() and leftovers(files["dir"]) == []


def test_ctrl_c_mid_training_writes_no_model(files, capsys, monkeypatch):
    import rbnn.train.fit

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rbnn.train.fit, "_fit", interrupted)
    out = files["dir"] / "m.rbnn"
    assert main(["train", "--data", str(files["data"]), "--val", "10", "--batch", "8", "--quiet", "-o", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "rbnn: interrupted"
    assert [p.name for p in files["dir"].iterdir() if p.name.startswith("m.")] == []


def test_ctrl_c_stops_rbnn_virtual_and_frees_its_folder(tmp_path, micropython):
    from rbnn.device.virtual import VirtualDevice

    fs = tmp_path / "fs"
    env = dict(os.environ, RBNN_MICROPYTHON=micropython)
    p = subprocess.Popen([sys.executable, "-m", "rbnn", "virtual", "--fs", str(fs)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout.readline().startswith("port: ")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0 and "stopped" in out and "Traceback" not in err, err
    with VirtualDevice(fs, micropython=micropython):  # the lock was released
        pass


# --- ports -------------------------------------------------------------------------------
def test_ports_that_are_not_serial_ports(files, capsys):
    good = files["good"]
    for argv in (["device", "info"], ["deploy", good], ["infer", "--data", files["data"]]):
        fails(capsys, [*argv, "--port", "/dev/rbnn-no-such-port"], "/dev/rbnn-no-such-port: no such serial port")
        fails(capsys, [*argv, "--port", "/dev/null"], "/dev/null: not a serial port")
        fails(capsys, [*argv, "--port", good], f"{good}: not a serial port", "found a regular file")
        fails(capsys, [*argv, "--port", files["dir"]], "not a serial port", "found a folder")


@pytest.fixture
def silent_port():
    """A pseudo-terminal nobody serves: the port opens, nothing ever answers."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_silent_port_gives_up_in_bounded_time(files, capsys, silent_port):
    t0 = time.monotonic()
    fails(capsys, ["device", "info", "--port", silent_port], f"no rbnn server answers at {silent_port}", "no HELLO reply")
    fails(capsys, ["deploy", files["good"], "--port", silent_port], f"no REPL answers at {silent_port}")
    assert time.monotonic() - t0 < 60  # about 14 s: fixed retries with timeouts, no hang


# --- the virtual device ------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployed_fs(tmp_path_factory, micropython) -> Path:
    """A virtual device's folder with the firmware, a 30-input model (small.rbnn), a
    784-input 3-class one (three.rbnn) and a 784-input 10-class one (model.rbnn, loaded by
    default) deployed."""
    from rbnn.device.deploy import deploy
    from rbnn.device.virtual import VirtualDevice

    d = tmp_path_factory.mktemp("errors")
    rng = np.random.default_rng(7)
    small = pack.to_bytes(random_model(rng, 30, [8, 3], 0x80))
    big = pack.to_bytes(random_model(rng, 784, [16, 10], 0x80))
    three = pack.to_bytes(random_model(rng, 784, [16, 3], 0x80))
    with VirtualDevice(d / "fs", micropython=micropython) as dev:
        deploy(dev.port, small, "small.rbnn", progress=False)
        deploy(dev.port, three, "three.rbnn", progress=False, firmware=False)
        deploy(dev.port, big, "model.rbnn", progress=False, firmware=False)
    return d / "fs"


def test_virtual_device_refusals(files, capsys, deployed_fs, tmp_path, monkeypatch, micropython):
    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    data = files["data"]
    fresh = tmp_path / "fresh"
    fails(capsys, ["device", "info", "--port", "virtual", "--fs", fresh],
          "no rbnn firmware on the device at virtual", "rbnn deploy MODEL --port virtual")  # fmt: skip
    fails(capsys, ["infer", "--port", "virtual", "--fs", fresh, "--data", data], "no rbnn firmware")
    # firmware there, no model: nothing loaded, no default
    empty = tmp_path / "nomodel"
    shutil.copytree(deployed_fs, empty)
    for p in empty.iterdir():
        if p.name.endswith(".rbnn") or p.name == ".rbnn_active":
            p.unlink()
    fails(capsys, ["infer", "--port", "virtual", "--fs", empty, "--data", data],
          "no model loaded on virtual and no default; stored: none")  # fmt: skip
    fs = tmp_path / "fs"
    shutil.copytree(deployed_fs, fs)
    fails(capsys, ["infer", "--port", "virtual", "--fs", fs, "--data", data, "--model", "small.rbnn"],
          "the board's model has 30 inputs, data set has 784")  # fmt: skip
    fails(capsys, ["infer", "--port", "virtual", "--fs", fs, "--data", data, "--model", "three.rbnn"],
          "the board's model has 3 classes, data set has 10 (labels 0..9")  # fmt: skip
    fails(capsys, ["infer", "--port", "virtual", "--fs", fs, "--data", data, "--model", "other.rbnn"],
          "device refused LOAD: E_NOFILE")  # fmt: skip
    before = {p.name: p.read_bytes() for p in fs.iterdir()}
    fails(capsys, ["deploy", files["dir"] / "corrupt.rbnn", "--port", "virtual", "--fs", fs], "E_CRC")
    assert {p.name: p.read_bytes() for p in fs.iterdir()} == before  # the stored models untouched
    fails(capsys, ["device", "info", "--port", "virtual", "--fs", files["good"]],
          f"--fs {files['good']}: cannot be the device's filesystem folder")  # fmt: skip


def test_relative_rbnn_micropython(files, capsys, tmp_path, monkeypatch, micropython):
    """`RBNN_MICROPYTHON=build/.../micropython make test` failed: the board's process runs
    in its own folder, where the relative path named nothing."""
    import rbnn.files

    monkeypatch.setattr(rbnn.files, "START_DIR", str(tmp_path))
    monkeypatch.setenv("RBNN_MICROPYTHON", os.path.relpath(micropython, tmp_path))
    fails(capsys, ["device", "info", "--port", "virtual", "--fs", tmp_path / "fs"],
          "no rbnn firmware on the device at virtual")  # it started, and answered  # fmt: skip


def test_virtual_device_folder_in_use(files, capsys, tmp_path, monkeypatch, micropython):
    from rbnn.device.virtual import VirtualDevice

    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    fs = tmp_path / "fs"
    with VirtualDevice(fs, micropython=micropython):  # one board per flash chip
        fails(capsys, ["infer", "--port", "virtual", "--fs", fs, "--data", files["data"]],
              f"{fs} is in use by another virtual device (pid {os.getpid()})", "choose another --fs")  # fmt: skip


def test_ctrl_c_mid_infer_stops_the_virtual_device(files, capsys, deployed_fs, tmp_path, monkeypatch, micropython):
    from rbnn.device.link import Link
    from rbnn.device.virtual import VirtualDevice

    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    fs = tmp_path / "fs"
    shutil.copytree(deployed_fs, fs)
    real = Link.infer

    def interrupted(self, samples, *a, **k):
        real(self, samples[:5], *a, **k)  # the board is busy inferring when Ctrl-C comes
        raise KeyboardInterrupt

    monkeypatch.setattr(Link, "infer", interrupted)
    out = tmp_path / "s.npy"
    argv = ["infer", "--port", "virtual", "--fs", str(fs), "--data", str(files["data"]), "--scores", str(out)]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rbnn: interrupted"
    assert not out.exists() and leftovers(tmp_path) == []
    with VirtualDevice(fs, micropython=micropython):  # stopped, its folder free again
        pass
    monkeypatch.setattr(Link, "infer", real)  # and the board serves the next run
    assert main(argv) == 0
    assert "accuracy: " in capsys.readouterr().out and np.load(out).shape == (20, 10)


def test_virtual_device_that_cannot_start(tmp_path):
    """A micropython that dies as it starts: reported, not restarted for ever."""
    fake = tmp_path / "micropython"
    fake.write_text("#!/bin/sh\necho 'boom: no heap' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = dict(os.environ, RBNN_MICROPYTHON=str(fake))
    r = rbnn("virtual", "--fs", tmp_path / "fs", env=env, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("rbnn: error: the virtual device")
    assert "exited (status 3) as it started, 3 times in a row: boom: no heap" in r.stderr
    r = rbnn("device", "info", "--port", "virtual", "--fs", tmp_path / "fs", env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "exited (status 3)" in r.stderr, r.stderr


# --- flash ---------------------------------------------------------------------------------
def test_flash_refuses_what_is_no_image(files, capsys, tmp_path):
    good = files["good"]
    fails(capsys, ["flash", good, "--target", "rp2", "--device", "/dev/null", "--dry-run"],
          "an RP2040 image must be a .uf2 (or a .elf for picotool), found .rbnn")  # fmt: skip
    elf = tmp_path / "fw.elf"
    shutil.copy(good, elf)
    fails(capsys, ["flash", elf, "--dry-run"], "ELF magic: expected 7f 45 4c 46, found 52 42 4e 4e")
    fails(capsys, ["flash", good, "--target", "esp32", "--dry-run"], "ESP image magic: expected 0xe9, found 0x52")
    fails(capsys, ["flash", tmp_path / "none.uf2"], "none.uf2: no such image")


# --- the rest ------------------------------------------------------------------------------
def test_system_errors_are_one_line(files, capsys):
    # `data fetch --dir` naming a file: mkdir fails before any download
    fails(capsys, ["data", "fetch", "--dir", files["good"]], str(files["good"]), "File exists")


def test_out_of_memory_is_one_line(files, capsys, monkeypatch):
    import rbnn.format.summary

    def oom(*a, **k):
        raise MemoryError("Unable to allocate 32.0 GiB for an array with shape (65535, 65535)")

    monkeypatch.setattr(rbnn.format.summary, "summary", oom)
    fails(capsys, ["summary", files["good"]], "out of memory: Unable to allocate 32.0 GiB")
    monkeypatch.setenv("RBNN_TRACEBACK", "1")
    with pytest.raises(MemoryError):
        main(["summary", str(files["good"])])


def test_a_bug_still_shows_its_traceback(files, monkeypatch):
    import rbnn.format.summary

    def bug(*a, **k):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(rbnn.format.summary, "summary", bug)
    with pytest.raises(RuntimeError, match="a genuine bug"):
        main(["summary", str(files["good"])])


def test_subprocess_error_is_one_line_without_traceback(files):
    r = rbnn("eval", files["dir"] / "folder.rbnn", "--data", files["data"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"rbnn: error: {files['dir'] / 'folder.rbnn'}: expected a .rbnn model file, found a folder\n"
