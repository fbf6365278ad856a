"""MicroPython's raw REPL over a serial port: enter, run code, put files, soft reset.

The same exchange as MicroPython's own tools (``mpremote``): Ctrl-A enters the raw REPL
(banner ``raw REPL; CTRL-B to exit``); code ends with Ctrl-D and the board answers
``OK``, the output, ``\\x04``, the traceback if any, ``\\x04``. Raw-paste mode (flow
controlled) is used when the board offers it, else code is written in small pieces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import time

from ..errors import RbnnError

BANNER = b"raw REPL; CTRL-B to exit\r\n"
PROMPT = b">"


class ReplError(RbnnError):
    """The board's REPL did not answer as expected, or code raised on the board."""


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace").replace("\r", "")


# The most a board may send while the host waits for a marker, and how long the host
# waits for it to fall silent after Ctrl-C (a board that keeps talking is not at a REPL:
# a program that ignores Ctrl-C, or another device on the port).
MAX_REPLY = 1 << 20
QUIET_LIMIT = 2.0


def read_until(ser, ending: bytes, timeout: float, pending: bytearray | None = None,
               limit: int = MAX_REPLY) -> bytes:  # fmt: skip
    """Read from ``ser`` up to and including ``ending``; ReplError after ``timeout``
    seconds or ``limit`` bytes without it.

    Bytes read past ``ending`` are kept in ``pending`` (and taken from it first).
    """
    data = bytearray()
    if pending is None:
        pending = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        start = max(0, len(data) - len(ending) + 1)  # only new bytes can complete it
        data += pending
        pending.clear()
        i = data.find(ending, start) if ending else 0
        if i >= 0:
            pending[:] = data[i + len(ending) :]
            return bytes(data[: i + len(ending)])
        left = deadline - time.monotonic()
        if left <= 0 or len(data) > limit:
            tail = bytes(data[-200:])
            why = f"within {timeout:g} s" if left <= 0 else f"in {len(data):,} bytes"
            raise ReplError(f"{_where(ser)}: board did not send {ending!r} {why}; got {tail!r}")
        ser.timeout = min(left, 0.05)
        pending += ser.read(max(1, ser.in_waiting))


def _where(ser) -> str:
    return getattr(ser, "port", None) or "the board"


class RawRepl:
    """The raw REPL of the board on ``ser`` (an open pyserial port)."""

    def __init__(self, ser, timeout: float = 10.0):
        self.ser = ser
        self.timeout = timeout
        self.use_paste = True
        self.active = False
        self.pending = bytearray()  # bytes read past what a call wanted

    def _until(self, ending: bytes, timeout: float | None = None) -> bytes:
        return read_until(self.ser, ending, self.timeout if timeout is None else timeout, self.pending)

    def _read(self, n: int) -> bytes:
        # exactly n bytes (fewer on timeout), pending bytes first
        out = bytes(self.pending[:n])
        del self.pending[:n]
        if len(out) < n:
            self.ser.timeout = self.timeout
            out += self.ser.read(n - len(out))
        return out

    def _write(self, data: bytes) -> None:
        try:
            self.ser.write(data)
        except OSError as e:  # pyserial's write timeout: nothing reads on the far end
            raise ReplError(f"{_where(self.ser)}: the board did not take {len(data)} bytes ({e})") from None

    def _drain(self, quiet: float = 0.05, limit: float = QUIET_LIMIT) -> tuple[int, bytes]:
        # read until the line stays quiet for `quiet` seconds, for at most `limit`
        # seconds; returns (bytes read, the last of them) if it never went quiet, else
        # (0, b"")
        tail = bytearray()
        total = 0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.ser.timeout = quiet
            chunk = self.ser.read(max(1, self.ser.in_waiting))
            if not chunk:
                return 0, b""
            total += len(chunk)
            tail = (tail + chunk)[-200:]
        return total, bytes(tail)

    def enter(self, timeout: float = 1.0, soft_reset: bool = False) -> bool:
        """Interrupt what runs and enter the raw REPL.

        Returns False when no raw REPL banner came within ``timeout`` (the board runs
        something that ignores Ctrl-C, such as the rbnn protocol server).
        """
        self._write(b"\r\x03")
        time.sleep(0.05)
        self._write(b"\x03")
        talked, said = self._drain()
        if talked:
            raise ReplError(
                f"{_where(self.ser)}: the device keeps sending ({talked:,} bytes in {QUIET_LIMIT:g} s, "
                f"even after Ctrl-C): a program that ignores Ctrl-C, or not a MicroPython board? "
                f"It sent: {_text(said[-80:])!r}"
            )
        self.ser.reset_input_buffer()
        self.pending.clear()
        self._write(b"\r\x01")
        try:
            self._until(BANNER + PROMPT, timeout)
        except ReplError:
            return False
        self.active = True
        if soft_reset:
            self.soft_reset()
        return True

    def soft_reset(self) -> None:
        """Soft-reset the board (fresh modules) and come back to the raw REPL."""
        self._write(b"\x04")
        self._until(b"soft reboot\r\n")
        self._until(BANNER + PROMPT)

    def exit(self) -> None:
        """Back to the friendly REPL (Ctrl-B)."""
        self._write(b"\r\x02")
        self._drain(0.1)  # what the board says meanwhile, for at most QUIET_LIMIT s
        self.pending.clear()
        self.active = False

    # --- running code ---------------------------------------------------------------
    def _send_paste(self, code: bytes) -> bool:
        self._write(b"\x05A\x01")
        head = self._read(2)
        if head == b"R\x00":
            return False
        if head != b"R\x01":
            # a board without raw-paste: it took the bytes as code; restart its raw REPL
            self._until(BANNER + PROMPT)
            return False
        raw = self._read(2)
        if len(raw) != 2:
            raise ReplError(f"raw-paste: no window size from the board ({raw!r})")
        window = credit = int.from_bytes(raw, "little")
        i = 0
        while i < len(code):
            while credit == 0 or self.ser.in_waiting or self.pending:
                c = self._read(1)
                if c == b"\x01":
                    credit += window
                elif c == b"\x04":  # the board ends the paste early
                    self._write(b"\x04")
                    raise ReplError("board aborted raw-paste")
                else:
                    raise ReplError(f"unexpected byte {c!r} during raw-paste")
            piece = code[i : i + credit]
            self._write(piece)
            credit -= len(piece)
            i += len(piece)
        self._write(b"\x04")
        self._until(b"\x04")
        return True

    def start(self, code: str | bytes) -> None:
        """Send ``code`` and have it started, without waiting for it to finish."""
        if not self.active:
            raise ReplError("not in the raw REPL")
        code = code.encode() if isinstance(code, str) else code
        if self.use_paste and self._send_paste(code):
            return
        self.use_paste = False
        for i in range(0, len(code), 256):  # a board without flow control drops bytes
            self._write(code[i : i + 256])
            time.sleep(0.01)
        self._write(b"\x04")
        ok = self._read(2)
        if ok != b"OK":
            raise ReplError(f"board did not accept the code: {ok!r}")

    def finish(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Wait for code started with :meth:`start`: (output, traceback)."""
        out = self._until(b"\x04", timeout)[:-1]
        err = self._until(b"\x04", timeout)[:-1]
        self._until(PROMPT, timeout)
        return out, err

    def exec(self, code: str | bytes, timeout: float | None = None) -> bytes:
        """Run ``code`` on the board and return its output; ReplError with the board's
        traceback when it raises."""
        self.start(code)
        out, err = self.finish(timeout)
        if err:
            raise ReplError(f"board raised:\n{err.decode(errors='replace').strip()}")
        return out

    # --- files ------------------------------------------------------------------------
    def board_info(self) -> dict:
        """sys.platform, version, ``_mpy``, which helper modules the board has, and
        ``fs``: [block bytes, free blocks] of its file system (None if it cannot tell)."""
        code = (
            "import sys, json\n"
            "def _has(m):\n"
            "    try:\n"
            "        __import__(m)\n"
            "        return True\n"
            "    except ImportError:\n"
            "        return False\n"
            "def _fs():\n"  # [block bytes, free blocks] of the file system, if it says
            "    try:\n"
            "        import os\n"
            "        s = os.statvfs('.')\n"
            "        return [s[0], s[3]]\n"
            "    except Exception:\n"
            "        return None\n"
            "print(json.dumps({'platform': sys.platform, "
            "'version': [sys.implementation.version[0], sys.implementation.version[1], sys.implementation.version[2]], "
            "'mpy': getattr(sys.implementation, '_mpy', None), "
            "'binascii': _has('binascii'), 'hashlib': _has('hashlib'), 'fs': _fs()}))\n"
            "del _has, _fs\n"
        )
        return json.loads(self.exec(code).decode().strip())

    def file_hashes(self, names: list[str]) -> dict[str, str | None]:
        """sha256 hex of each named file on the board (None: missing)."""
        code = (
            "import json, hashlib, binascii\n"
            "def _h(n):\n"
            "    try:\n"
            "        f = open(n, 'rb')\n"
            "    except OSError:\n"
            "        return None\n"
            "    h = hashlib.sha256()\n"
            "    b = bytearray(512)\n"
            "    while True:\n"
            "        k = f.readinto(b)\n"
            "        if not k:\n"
            "            break\n"
            "        h.update(memoryview(b)[:k])\n"
            "    f.close()\n"
            "    return binascii.hexlify(h.digest()).decode()\n"
            f"print(json.dumps({{n: _h(n) for n in {names!r}}}))\n"
            "del _h\n"
        )
        return json.loads(self.exec(code).decode().strip())

    def exec_fs(self, code: str) -> bytes:
        """:meth:`exec` for code that works on the board's files: an OSError there is
        raised here as :class:`BoardFsError` with its number."""
        wrapped = (
            "try:\n" + textwrap.indent(code.rstrip("\n"), "    ") + "\n"
            "except OSError as _e:\n"
            f"    print({FS_ERROR.decode()!r}, _e.args[0] if _e.args else 0)\n"
        )
        out = self.exec(wrapped)
        at = out.rfind(FS_ERROR)
        if at >= 0:
            raise BoardFsError(int(out[at + len(FS_ERROR) :].split()[0]))
        return out

    def write_file(self, name: str, data: bytes, b64: bool = True, chunk: int = 2048) -> None:
        """Write ``data`` to the board's file ``name`` (created or truncated); an OSError
        on the board (full, read-only) is a :class:`BoardFsError` and the file is closed."""
        self.exec_fs(f"_f = open({name!r}, 'wb')\n" + ("from binascii import a2b_base64 as _d\n" if b64 else ""))
        try:
            for i in range(0, len(data), chunk):
                piece = data[i : i + chunk]
                arg = f"_d({base64.b64encode(piece).decode()!r})" if b64 else repr(piece)
                self.exec_fs(f"_f.write({arg})")
        finally:  # whatever happened: no file left open, no names left behind
            self.exec("try:\n    _f.close()\nexcept (NameError, OSError):\n    pass\n"
                      "globals().pop('_f', None)\nglobals().pop('_d', None)\n")  # fmt: skip


FS_ERROR = b"rbnn:OSError"  # how exec_fs's code reports an OSError on the board


class BoardFsError(ReplError):
    """An OSError on the board's file system: ``errno`` 28 full, 30 read-only, ..."""

    def __init__(self, errno: int):
        self.errno = errno
        super().__init__(f"OSError {errno} on the board's file system")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
