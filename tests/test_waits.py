"""Every wait on a port has a deadline and ends in a clear error: a device that never
stops printing (a print loop that ignores Ctrl-C, or another device on the port), one
that never answers, one that never takes the bytes written to it, a flashing tool that
never ends. A port here is an in-process fake, or a pseudo-terminal for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from rbnn.device import flash
from rbnn.device.link import Link, LinkError
from rbnn.device.rawrepl import MAX_REPLY, RawRepl, ReplError, read_until

HANG = 60.0  # s: a guard against hanging, far above every deadline under test


class ChattyPort:
    """A serial port whose far end prints ``line`` forever, whatever it is sent."""

    def __init__(self, line: bytes = b"tick 12345\r\n"):
        self.line = line
        self.timeout = 0.05
        self.baudrate = 115200
        self.port = "chatty"
        self.sent = bytearray()
        self.waiting = 64  # bytes in_waiting reports

    @property
    def in_waiting(self) -> int:
        return self.waiting

    def read(self, n: int = 1) -> bytes:
        time.sleep(0.0005)  # a fast board: about 100 kB/s
        k = max(1, n)
        return (self.line * (k // len(self.line) + 1))[:k]

    def write(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        pass

    def close(self) -> None:
        pass


class StuckPort(ChattyPort):
    """A port that takes no bytes: pyserial's write timeout (a board that does not read)."""

    def write(self, data: bytes) -> int:
        import serial

        raise serial.SerialTimeoutException("Write timeout")


def bounded(fn, seconds: float = HANG):
    """fn() in a thread; its result or exception, or a failure if it hangs."""
    box: dict = {}

    def go():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still waiting after {seconds} s: a wait without a deadline"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_raw_repl_enter_on_a_device_that_never_stops_printing():
    port = ChattyPort()
    with pytest.raises(ReplError, match=r"chatty: the device keeps sending .* even after Ctrl-C.*tick 12345"):
        bounded(lambda: RawRepl(port).enter())
    assert port.sent.startswith(b"\r\x03")  # it did try to interrupt the program


def test_read_until_ends_at_its_size_limit_and_its_deadline():
    port = ChattyPort()
    with pytest.raises(ReplError, match=r"did not send b'>' in [\d,]+ bytes"):
        bounded(lambda: read_until(port, b">", timeout=HANG, limit=10_000))
    with pytest.raises(ReplError, match=r"did not send b'>' within 0.3 s"):
        bounded(lambda: read_until(port, b">", timeout=0.3, limit=MAX_REPLY))


def test_link_on_a_device_that_never_stops_printing():
    link = Link(ChattyPort(), timeout=0.2, retries=2)
    with pytest.raises(ReplError, match="keeps sending"):
        bounded(link.connect)
    # a server thought to be running: the request is refused before it is sent
    with pytest.raises(LinkError, match=r"chatty: the device keeps sending .* before a request.*tick"):
        bounded(link.info)
    assert link.stats.bytes_out == 0


def test_a_port_that_takes_no_bytes_is_a_clear_error():
    port = StuckPort()
    with pytest.raises(ReplError, match=r"chatty: the board did not take 2 bytes \(Write timeout\)"):
        bounded(lambda: RawRepl(port).enter())
    port.waiting = 0
    link = Link(port, timeout=0.1)
    with pytest.raises(LinkError, match=r"chatty: the device did not take a 12-byte frame \(Write timeout\)"):
        bounded(link.info)


def _chatter(master: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            os.write(master, b"hello from another device\r\n" * 8)
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            return


@pytest.mark.parametrize("argv", [["device", "info"], ["deploy", "MODEL"]])
def test_cli_on_a_port_that_never_stops_printing(tmp_path, argv):
    """`rbnn device info` and `rbnn deploy` on a pseudo-terminal that prints forever:
    one line naming the port and the cause, exit status 2, no hang."""
    import tty

    import numpy as np

    from rbnn.format import pack
    from support.randmodel import random_model

    model = tmp_path / "m.rbnn"
    pack.save(random_model(np.random.default_rng(3), n_inputs=16, sizes=[8, 4]), model)
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    port = os.ttyname(slave)
    stop = threading.Event()
    t = threading.Thread(target=_chatter, args=(master, stop), daemon=True)
    t.start()
    try:
        args = [str(model) if a == "MODEL" else a for a in argv]
        r = subprocess.run([sys.executable, "-m", "rbnn", *args, "--port", port],
                           capture_output=True, text=True, timeout=HANG)  # fmt: skip
    finally:
        stop.set()
        t.join(5)
        os.close(master)
        os.close(slave)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"rbnn: error: {port}: the device keeps sending"), lines[0]
    assert "hello from another device" in lines[0]


def test_a_flashing_tool_that_never_ends_is_stopped():
    cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
    with pytest.raises(flash.FlashError, match=r"esptool did not finish within 0.5 s and was stopped"):
        bounded(lambda: flash.run(cmd, "esptool", timeout=0.5))
