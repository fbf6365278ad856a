"""The console of the virtual board: a MicroPython script, run by the unix port.

``micropython vboard.py FSDIR [--bytewise]`` behaves on its stdin/stdout like a board's
USB console: friendly REPL (echo, ``>>> ``), raw REPL (Ctrl-A; Ctrl-D runs the code and
answers ``OK``, output, ``\\x04``, error, ``\\x04``; raw-paste mode), Ctrl-B back to the
friendly REPL, Ctrl-D on an empty line soft-resets (fresh modules and globals, then
boot.py, and main.py in the friendly REPL). FSDIR is the board's filesystem.

It registers a module ``rbnn_board`` whose ``console()`` is this console, so
``rbnn_server`` reads whole frames at once from the non-blocking stdin pipe the host's
supervisor (``rbnn.device.virtual``) gives it. With ``--bytewise`` stdin is blocking and
``console()`` returns None: the firmware then uses its own console, which polls and
reads byte by byte, exactly as on a real board. ``rbnn_board.reset()`` ends the process
(a reboot: the supervisor starts it again).

Ctrl-C: on a board the USB or UART driver turns 0x03 into a KeyboardInterrupt while code
runs, unless the code turned that off (``micropython.kbd_intr(-1)``). Here the
supervisor does it with SIGINT, which the unix port turns into KeyboardInterrupt; with
``--state PATH`` this console writes "<run> <1|0>" to PATH whenever that changes (the
number of the code run, and whether 0x03 interrupts it now), and ``rbnn_board.kbd_intr``
stands in for ``micropython.kbd_intr`` (whose -1 would make SIGINT kill the process).
This file runs under MicroPython, not CPython.
"""

import gc
import os
import select
import sys

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_WINDOW = 4096
_open = open  # the real one: Flash may stand in for the builtin


class HostGone(BaseException):
    """The supervisor closed our stdin: leave the process."""


class Reboot(BaseException):
    """rbnn_board.reset(): end the process; the supervisor starts it again."""


class Console:
    """The board's console stream; also what ``rbnn_board.console()`` returns."""

    def __init__(self, nonblocking):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)
        self.nonblocking = nonblocking
        self.one = bytearray(1)

    def _eof(self):
        # the supervisor is gone: a board without its host has nothing to do
        raise HostGone()

    def read(self, buf, timeout_ms):
        """Read at least 1 byte into ``buf`` (a memoryview); 0 on timeout."""
        if not self.poller.poll(timeout_ms):
            return 0
        if self.nonblocking:
            n = self.inp.readinto(buf)
            if n is None:
                return 0
            if n == 0:
                self._eof()
            return n
        n = 0
        while n < len(buf):
            if not self.inp.readinto(self.one):
                self._eof()
            buf[n] = self.one[0]
            n += 1
            if not self.poller.poll(0):
                break
        return n

    def getc(self):
        """Next input byte, waiting as long as it takes."""
        while not self.read(memoryview(self.one), -1):
            pass
        return self.one[0]

    def write(self, data):
        if isinstance(data, str):
            data = data.encode()
        mv = memoryview(data)
        while len(mv):
            k = self.out.write(mv)
            mv = mv[k:] if k else mv


class Board:
    """What ``import rbnn_board`` gives the firmware."""

    def __init__(self, console, state=None):
        self._console = console
        self._state = state  # where the supervisor reads whether 0x03 interrupts
        self._run = 0
        self._running = False
        self._kbd = True
        self._told = None
        self._tell()

    def _tell(self):
        s = f"{self._run} {1 if self._running and self._kbd else 0}"
        if self._state and s != self._told:
            with _open(self._state, "w") as f:
                f.write(s)
            self._told = s

    def running(self, on):
        """Code starts (on) or ends: Ctrl-C interrupts it, as a board's REPL sets it."""
        if on:
            self._run += 1
            self._kbd = True
        self._running = on
        self._tell()

    def kbd_intr(self, c):
        """micropython.kbd_intr for the firmware: -1 makes 0x03 data, 3 an interrupt."""
        self._kbd = c == 3
        self._tell()

    def console(self):
        # None with --bytewise: the firmware then reads stdin itself, as on a board
        return self._console if self._console.nonblocking else None

    def reset(self):
        raise Reboot()


class _Counted:
    """A file open for writing on a Flash: every write is charged to the flash."""

    def __init__(self, flash, f):
        self._flash = flash
        self._f = f

    def write(self, data):
        self._flash.charge(len(data))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class Flash:
    """The board's file system with the faults of a small or failing flash, for tests
    (environment of the board process): RBNN_FS_BYTES=N holds N bytes in all (writes
    past it raise OSError 28, statvfs says what is left); RBNN_FS_STATVFS=0: no
    os.statvfs (ports without it); RBNN_FS_READONLY=1: writes, renames and removes
    raise OSError 30; RBNN_FS_FAIL=OP:K: the K-th call of os.OP (rename, remove) raises
    OSError 5. Code on the board sees it as ``open`` and ``os``."""

    BLOCK = 4096

    def __init__(self, env):
        self.capacity = int(env("RBNN_FS_BYTES") or 0)
        self.statvfs_ok = env("RBNN_FS_STATVFS") != "0"
        self.read_only = env("RBNN_FS_READONLY") == "1"
        op, _, k = (env("RBNN_FS_FAIL") or "").partition(":")
        self.fail_op, self.fail_at, self.calls = op, int(k or 0), 0

    @staticmethod
    def wanted(env):
        return any(env(v) for v in ("RBNN_FS_BYTES", "RBNN_FS_STATVFS", "RBNN_FS_READONLY", "RBNN_FS_FAIL"))

    def used(self):
        n = 0
        for name in os.listdir():
            st = os.stat(name)
            if st[0] & 0x8000:  # a regular file
                n += st[6]
        return n

    def charge(self, n):
        if self.capacity and self.used() + n > self.capacity:
            raise OSError(28)  # ENOSPC

    def _writable(self, op):
        if self.read_only:
            raise OSError(30)  # EROFS
        if op == self.fail_op:
            self.calls += 1
            if self.calls == self.fail_at:
                raise OSError(5)  # EIO

    def open(self, path, mode="r", *args):
        if "r" in mode and "+" not in mode:
            return _open(path, mode, *args)
        self._writable("open")
        return _Counted(self, _open(path, mode, *args))

    def module(self):
        """An ``os`` for code on the board."""
        flash = self

        class Os:
            def __getattr__(self, name):
                return getattr(os, name)

            def rename(self, a, b):
                flash._writable("rename")
                os.rename(a, b)

            def remove(self, path):
                flash._writable("remove")
                os.remove(path)

            def statvfs(self, path):
                if not flash.statvfs_ok:
                    raise AttributeError("statvfs")
                if not flash.capacity:
                    return os.statvfs(path)
                b = flash.BLOCK
                free = max(0, flash.capacity - flash.used()) // b
                return (b, b, flash.capacity // b, free, free, 0, 0, 0, 0, 255)

        return Os()


class VirtualBoard:
    def __init__(self, fs, nonblocking, state=None):
        os.chdir(fs)
        sys.path[:] = ["", ".frozen"]
        self.con = Console(nonblocking)
        self.board = Board(self.con, state)
        self.os = None
        getenv = getattr(os, "getenv", lambda name: None)
        if Flash.wanted(getenv):
            import builtins

            flash = Flash(getenv)
            builtins.open = flash.open
            self.os = flash.module()
        self.boot_modules = list(sys.modules)
        self.g = {}
        impl = sys.implementation
        ver = ".".join(str(v) for v in impl.version[:3])
        # a real board's banner: "MicroPython v1.22.0 on 2024-01-01; Raspberry Pi Pico with RP2040"
        self.banner = f"MicroPython v{ver} on rbnn virtual board; unix port ({sys.platform})\r\n"

    # --- running code ---------------------------------------------------------------
    def soft_reset(self, friendly):
        for name in list(sys.modules):
            if name not in self.boot_modules:
                del sys.modules[name]
        sys.modules["rbnn_board"] = self.board
        if self.os is not None:
            sys.modules["os"] = self.os
        self.g = {"__name__": "__main__"}
        gc.collect()
        self.run_file("boot.py")
        if friendly:
            self.run_file("main.py")

    def run_file(self, name):
        try:
            os.stat(name)
        except OSError:
            return
        with _open(name) as f:
            src = f.read()
        self.run(src, "exec", name)

    def run(self, src, mode, filename="<stdin>", report=True):
        """Compile and run ``src``; returns the exception it raised, or None."""
        self.board.running(True)
        try:
            exec(compile(src, filename, mode), self.g)
            return None
        except (HostGone, Reboot):
            raise
        except SystemExit:
            return None
        except BaseException as e:  # KeyboardInterrupt included, as a board does
            if report:
                sys.print_exception(e, sys.stdout)
            return e
        finally:
            self.board.running(False)

    # --- friendly REPL --------------------------------------------------------------
    def friendly(self):
        w = self.con.write
        w(self.banner)
        w('Type "help()" for more information.\r\n>>> ')
        line = bytearray()
        block = []
        while True:
            c = self.con.getc()
            if c == 0x01:  # Ctrl-A
                w(b"\r\n")
                return "raw"
            if c == 0x02:  # Ctrl-B
                w(b"\r\n" + self.banner.encode() + b">>> ")
                line = bytearray()
                block = []
            elif c == 0x03:  # Ctrl-C
                w(b"\r\nKeyboardInterrupt\r\n>>> ")
                line = bytearray()
                block = []
            elif c == 0x04:  # Ctrl-D
                if not line and not block:
                    w(b"\r\n")
                    return "reset-friendly"
            elif c in (0x08, 0x7F):  # backspace
                if line:
                    line = line[:-1]
                    w(b"\b \b")
            elif c in (0x0D, 0x0A):
                w(b"\r\n")
                text = line.decode()
                line = bytearray()
                if block:
                    if text.strip():
                        block.append(text)
                        w(b"... ")
                        continue
                    src, block = "\n".join(block) + "\n", []
                elif text.rstrip().endswith(":"):
                    block = [text]
                    w(b"... ")
                    continue
                else:
                    src = text
                if src.strip():
                    self.run(src, "single")
                w(b">>> ")
            elif c >= 0x20:
                line.append(c)
                w(bytes((c,)))

    # --- raw REPL ---------------------------------------------------------------------
    def raw(self):
        w = self.con.write
        w(RAW_BANNER)
        line = bytearray()
        w(b">")
        while True:
            c = self.con.getc()
            if c == 0x01:  # Ctrl-A: raw-paste request "\x05A\x01", else restart raw REPL
                if line == b"\x05A":
                    line = bytearray()
                    self.raw_paste()
                    w(b">")
                    continue
                line = bytearray()
                w(RAW_BANNER + b">")
            elif c == 0x02:  # Ctrl-B
                w(b"\r\n")
                return "friendly"
            elif c == 0x03:  # Ctrl-C
                line = bytearray()
            elif c == 0x04:  # Ctrl-D
                if not line:
                    w(b"\r\n")
                    return "reset-raw"
                w(b"OK")
                self.run_raw(bytes(line))
                line = bytearray()
                w(b">")
            else:
                line.append(c)

    def run_raw(self, code):
        # output, \x04, the traceback if any, \x04: what a board's raw REPL sends
        e = self.run(code.decode(), "exec", report=False)
        self.con.write(b"\x04")
        if e is not None:
            sys.print_exception(e, sys.stdout)
        self.con.write(b"\x04")

    def raw_paste(self):
        w = self.con.write
        # credit: the host may send PASTE_WINDOW bytes, then one more window per \x01
        w(b"R\x01" + bytes((PASTE_WINDOW & 0xFF, PASTE_WINDOW >> 8)))
        code = bytearray()
        got = 0
        while True:
            c = self.con.getc()
            if c == 0x04:
                break
            code.append(c)
            got += 1
            if got == PASTE_WINDOW:
                got = 0
                w(b"\x01")
        w(b"\x04")
        self.run_raw(bytes(code))

    def main(self):
        mode = "friendly"
        self.soft_reset(friendly=True)
        while True:
            try:
                new = self.friendly() if mode == "friendly" else self.raw()
            except KeyboardInterrupt:  # a Ctrl-C that came as the code ended: start over
                continue
            mode = new
            if mode.startswith("reset-"):
                self.con.write(b"MPY: soft reboot\r\n")
                mode = mode[6:]
                self.soft_reset(friendly=mode == "friendly")


def main():
    args = sys.argv[1:]
    if not args:
        sys.stderr.write("usage: micropython vboard.py FSDIR [--bytewise] [--state PATH]\n")
        sys.exit(2)
    state = args[args.index("--state") + 1] if "--state" in args else None
    try:
        VirtualBoard(args[0], nonblocking="--bytewise" not in args, state=state).main()
    except (HostGone, Reboot):
        pass


main()
