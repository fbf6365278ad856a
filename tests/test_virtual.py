"""The virtual device's life cycle and console: its board process ends with `rbnn
virtual` however that ends (SIGTERM, or killed outright), and Ctrl-C interrupts code
running on it as on a board, but not the protocol server, for which 0x03 is data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from rbnn.device import frames as fr
from rbnn.device.rawrepl import RawRepl
from rbnn.device.virtual import VirtualDevice

HANG = 60.0  # s: a guard against hanging, far above what each step takes
BUSY = "while True:\n    pass\n"


def _alive(pid: int) -> bool:
    # running, not a zombie waiting for its parent
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _wait_gone(pid: int, seconds: float = HANG) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def cli_board(tmp_path, micropython):
    """`rbnn virtual` in its own process, with its board running a busy loop:
    (the rbnn process, the board's pid)."""
    if not Path(f"/proc/self/task/{os.getpid()}/children").is_file():
        pytest.skip("needs /proc/PID/task/TID/children to find the board process")
    env = dict(os.environ, RBNN_MICROPYTHON=micropython)
    proc = subprocess.Popen([sys.executable, "-m", "rbnn", "virtual", "--fs", str(tmp_path / "fs")],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        port = proc.stdout.readline().split(": ", 1)[1].strip()
        deadline = time.monotonic() + HANG
        while not (kids := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(kids) == 1, kids
        with serial.Serial(port, 115200, timeout=0.05) as ser:
            repl = RawRepl(ser)
            assert repl.enter(timeout=10)
            repl.start(BUSY)  # the board now spins at full CPU
        yield proc, kids[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(HANG)
        proc.stdout.close()


def test_sigterm_stops_rbnn_virtual_and_its_board(cli_board):
    proc, board = cli_board
    assert _alive(board)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(HANG) == 0
    assert "stopped" in proc.stdout.read()
    assert _wait_gone(board), f"board process {board} still runs after rbnn virtual ended"


def test_board_dies_with_a_killed_supervisor(cli_board):
    proc, board = cli_board
    proc.send_signal(signal.SIGKILL)  # no clean-up at all: the kernel ends the board
    proc.wait(HANG)
    assert _wait_gone(board), f"board process {board} orphaned by a killed rbnn virtual"


@pytest.fixture
def vdev(tmp_path, micropython):
    with VirtualDevice(tmp_path / "fs", micropython=micropython) as dev:
        with serial.Serial(dev.port, 115200, timeout=0.05) as ser:
            yield dev, ser


def test_ctrl_c_interrupts_a_busy_loop_in_the_raw_repl(vdev):
    dev, ser = vdev
    pid = dev.pid
    repl = RawRepl(ser)
    assert repl.enter(timeout=10)
    repl.start(BUSY)
    time.sleep(0.2)
    ser.write(b"\x03")
    out, err = repl.finish(timeout=10)
    assert b"KeyboardInterrupt" in err
    assert repl.exec("print(6 * 7)").strip() == b"42"  # the same board, still at its raw REPL
    assert dev.pid == pid and dev.starts == 1 and dev.interrupts == 1
    # entering the raw REPL interrupts a running program the same way
    repl.start("import time\ntime.sleep(1000)\n")
    assert repl.enter(timeout=10)
    assert dev.pid == pid and dev.interrupts == 2


def test_ctrl_c_interrupts_a_busy_loop_in_the_friendly_repl(vdev):
    dev, ser = vdev
    ser.write(b"\r\x02")  # a fresh friendly prompt
    ser.timeout = HANG
    ser.read_until(b">>> ")
    ser.write(b"while True:\r")
    ser.read_until(b"... ")
    ser.write(b"    pass\r\r")
    time.sleep(0.3)
    ser.write(b"\x03")
    said = ser.read_until(b">>> ")
    assert b"KeyboardInterrupt" in said, said
    ser.write(b"6*7\r")
    assert b"42" in ser.read_until(b">>> ")
    assert dev.starts == 1 and dev.interrupts == 1


def test_ctrl_c_in_a_frame_is_data_to_the_server(vdev, tmp_path, micropython):
    """The server turns the interrupt off: frames full of 0x03 are answered, and the
    board does not restart."""
    from mpy_helpers import firmware_fs

    from rbnn.device.link import Link

    dev, ser = vdev
    ser.close()
    firmware_fs(tmp_path / "fw", micropython)
    for name in os.listdir(tmp_path / "fw"):
        (dev.fs / name).write_bytes((tmp_path / "fw" / name).read_bytes())
    link = Link.open(dev.port, 921600)
    link.seq = 0x0302  # INFO (type 0x02) with seq 0x0303: 03 03 in the header
    payload = bytes([3]) * 100
    assert 3 in fr.encode(fr.INFO, 0x0303)
    assert link.info()["protocol"] == fr.PROTOCOL
    with pytest.raises(Exception, match="E_PROTO: RESET mode must be 0 or 1, got 3"):
        link.request(fr.RESET, payload)
    assert link.device_stats()["errors"] == 1
    link.leave()
    link.close()
    assert dev.starts == 1 and dev.interrupts == 0
