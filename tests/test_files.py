"""rbnn.files: the one model reader (header checked before the rest is read, same errors
as parsing the whole file), the one atomic writer (fsync before rename; pipes and
devices written into, never replaced), output paths checked against inputs, and paths
from environment variables."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

import rbnn.files
from rbnn.errors import FormatError
from rbnn.files import FileError, check_output, env_path, read_model, write_atomic
from rbnn.format import pack
from support.randmodel import random_model


@pytest.fixture
def model_bytes(rng) -> bytes:
    return pack.to_bytes(random_model(rng, 50, [12, 4], 0xC0))


class _Counting:
    """A binary file that counts the bytes read from it."""

    def __init__(self, f, counter: list):
        self._f, self._counter = f, counter

    def read(self, n=-1):
        data = self._f.read(n)
        self._counter.append(len(data))
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def bytes_read(monkeypatch) -> list:
    """Every read rbnn.files makes, by size."""
    counter: list[int] = []
    monkeypatch.setattr(rbnn.files, "open", lambda p, mode="r": _Counting(open(p, mode), counter), raising=False)
    return counter


# --- reading ---------------------------------------------------------------------------
BIG = 64 << 20  # sparse: costs no disk, but reading it whole would read 64 MiB


def test_a_large_file_is_refused_by_its_header_alone(tmp_path, model_bytes, bytes_read):
    junk = tmp_path / "junk.rbnn"
    with open(junk, "wb") as f:
        f.write(b"JUNK" + bytes(60))
        f.truncate(BIG)
    with pytest.raises(FormatError, match=f"{junk} @ offset 0: E_MAGIC"):
        read_model(junk)
    assert sum(bytes_read) <= pack.HEAD_MAX_BYTES
    # a real model followed by junk: its header says how long it is
    grown = tmp_path / "grown.rbnn"
    with open(grown, "wb") as f:
        f.write(model_bytes)
        f.truncate(BIG)
    bytes_read.clear()
    with pytest.raises(FormatError, match=rf"{grown} @ offset 8: E_SIZE: file_bytes: expected {BIG} \(the buffer's length\), found {len(model_bytes)}"):
        read_model(grown)
    assert sum(bytes_read) <= pack.HEAD_MAX_BYTES
    # and a good file is read whole, once
    good = tmp_path / "good.rbnn"
    good.write_bytes(model_bytes)
    bytes_read.clear()
    raw, m = read_model(good)
    assert raw == model_bytes and sum(bytes_read) == len(model_bytes) and m.sizes == [12, 4]


def test_the_header_check_gives_the_whole_files_errors(tmp_path, model_bytes):
    """Every damaged header and every truncation: the reader that stops after the header
    reports exactly what parsing the whole file reports (code, offset, field, values)."""
    path = tmp_path / "bad.rbnn"
    cases = [model_bytes[:n] for n in range(0, pack.HEAD_MAX_BYTES + 8)]
    for i in range(pack.HEAD_MAX_BYTES):
        for bit in (0x01, 0x80):
            bad = bytearray(model_bytes)
            bad[i] ^= bit
            cases.append(bytes(bad))
    for data in cases:
        try:
            pack.from_bytes(data)
            want = None
        except FormatError as e:
            want = str(e.with_path(str(path)))
        path.write_bytes(data)
        try:
            read_model(path)
            got = None
        except FormatError as e:
            got = str(e)
        assert got == want


def test_model_reader_refuses_what_is_no_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would wait for a writer
    with pytest.raises(FileError, match=f"{fifo}: expected a .rbnn model file, found a pipe"):
        read_model(fifo)
    with pytest.raises(FileError, match=f"{tmp_path}: expected a .rbnn model file, found a folder"):
        pack.load(tmp_path)


# --- writing ---------------------------------------------------------------------------
def test_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        calls.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "x", lambda f: f.write(b"data"))
    assert calls == ["fsync file", "rename", "fsync folder"]
    assert (tmp_path / "x").read_bytes() == b"data" and os.listdir(tmp_path) == ["x"]


def test_a_symlink_is_followed_not_replaced(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_atomic(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["link.bin", "real.bin"]


class FifoReader:
    """A FIFO in ``folder`` with a thread reading everything written into it."""

    def __init__(self, folder: Path, name: str = "fifo"):
        self.path = folder / name
        os.mkfifo(self.path)
        self.data = b""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:  # waits for the writer
            self.data = f.read()

    def result(self, timeout: float = 30) -> bytes:
        self._t.join(timeout)
        if self._t.is_alive():  # nobody opened the FIFO for writing: free the reader
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            self._t.join(timeout)
            pytest.fail(f"nothing was written into {self.path}")
        assert stat.S_ISFIFO(os.lstat(self.path).st_mode), "the FIFO was replaced"
        return self.data


def test_a_pipe_is_written_into_not_replaced(tmp_path, model_bytes):
    fifo = FifoReader(tmp_path)
    write_atomic(fifo.path, lambda f: f.write(b"through the pipe"))
    assert fifo.result() == b"through the pipe"
    fifo.path.unlink()
    fifo = FifoReader(tmp_path)
    assert pack.save(pack.from_bytes(model_bytes), fifo.path) == len(model_bytes)
    assert fifo.result() == model_bytes
    assert os.listdir(tmp_path) == ["fifo"]  # no temp file beside it


def test_block_devices_and_sockets_are_refused(tmp_path):
    import socket

    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(FileError, match=f"-o {sock_path}: expected a file, a pipe or a character device, found a socket"):
            check_output(sock_path, "-o")
        with pytest.raises(FileError, match=f"{sock_path}: cannot write: expected a file, found a socket"):
            write_atomic(sock_path, lambda f: f.write(b"x"))
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    blk = tmp_path / "blk"
    try:
        os.mknod(blk, stat.S_IFBLK | 0o600, os.makedev(7, 200))  # never opened
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    with pytest.raises(FileError, match="found a block device"):
        check_output(blk, "-o")
    with pytest.raises(FileError, match="found a block device"):
        write_atomic(blk, lambda f: f.write(b"x"))
    assert stat.S_ISBLK(os.lstat(blk).st_mode)


def test_an_output_that_is_an_input_is_refused(tmp_path):
    model = tmp_path / "m.rbnn"
    model.write_bytes(b"model")
    link = tmp_path / "link.npy"
    link.symlink_to(model)
    hard = tmp_path / "hard.npy"
    os.link(model, hard)
    for out in (model, link, hard):
        with pytest.raises(FileError, match="is an input of this command"):
            check_output(out, "--scores", inputs=[model])
    # other files, and inputs that are not there, are fine
    assert check_output(tmp_path / "s.npy", "--scores", inputs=[model, tmp_path / "absent"]) == tmp_path / "s.npy"
    other = tmp_path / "other.npy"
    other.write_bytes(b"x")
    assert check_output(other, "--scores", inputs=[model]) == other
    assert model.read_bytes() == b"model"


# --- paths from the environment -----------------------------------------------------------
def test_env_paths_are_taken_from_the_start_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(rbnn.files, "START_DIR", str(tmp_path))
    monkeypatch.chdir("/")
    monkeypatch.setenv("RBNN_X", "build/bin")
    assert env_path("RBNN_X") == tmp_path / "build" / "bin"
    monkeypatch.setenv("RBNN_X", "/abs/path")
    assert env_path("RBNN_X") == Path("/abs/path")
    monkeypatch.setenv("RBNN_X", "")
    assert env_path("RBNN_X") is None


def test_relative_rbnn_micropython_and_firmware(tmp_path, monkeypatch):
    """`RBNN_MICROPYTHON=build/.../micropython make test`: the board runs in its own folder,
    so a relative path must be made absolute where rbnn started."""
    from rbnn.device.deploy import firmware_dir
    from rbnn.device.virtual import find_micropython

    exe = tmp_path / "build" / "micropython"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "rbnn_server.py").write_text("")
    monkeypatch.setattr(rbnn.files, "START_DIR", str(tmp_path))
    monkeypatch.chdir(fw)  # as a test or the board's process would
    monkeypatch.setenv("RBNN_MICROPYTHON", "build/micropython")
    monkeypatch.setenv("RBNN_FIRMWARE", "fw")
    assert find_micropython() == str(exe)
    assert firmware_dir() == fw
