"""Run MicroPython code from pytest: the unix port (fixture ``micropython``) with the
repository's ``firmware/`` on its module path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def run_mpy(
    micropython: str,
    script: str | os.PathLike,
    args: Iterable[str] = (),
    *,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    path: Iterable[str | os.PathLike] = (),
    heapsize: str | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a MicroPython script file and capture its output.

    Parameters
    ----------
    micropython : str
        The unix port binary (the ``micropython`` fixture).
    script : path
        The script to run.
    args : strings
        Its ``sys.argv[1:]``.
    cwd : path, optional
        Working directory.
    env : mapping, optional
        Extra environment variables (added to this process's environment).
    path : paths
        Folders searched for modules before ``firmware/`` (MICROPYPATH).
    heapsize : str, optional
        MicroPython's ``-X heapsize=`` value (e.g. ``"100k"``), to mimic a board's heap.
    timeout : float
        Seconds before the run is killed (and the test fails).
    check : bool
        Raise AssertionError with stdout and stderr when the exit status is not 0.

    Returns
    -------
    subprocess.CompletedProcess with text stdout and stderr.
    """
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = os.pathsep.join([*(str(p) for p in path), str(FIRMWARE)])
    full_env.update(env or {})
    cmd = [micropython]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += [str(script), *args]
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"micropython exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def run_mpy_code(
    micropython: str, code: str, tmp_path: Path, name: str = "main.py", **kw
) -> subprocess.CompletedProcess:
    """Write ``code`` to ``tmp_path/name`` and run it with :func:`run_mpy` (cwd = tmp_path)."""
    script = Path(tmp_path) / name
    script.write_text(code)
    kw.setdefault("cwd", tmp_path)
    return run_mpy(micropython, script, **kw)


def firmware_fs(fs: Path, micropython: str, baud: int = 921600) -> Path:
    """A virtual board's filesystem ``fs`` with the firmware put on it through the raw
    REPL, exactly as ``rbnn deploy`` does it to a board."""
    import serial

    from rbnn.device.deploy import put_firmware
    from rbnn.device.rawrepl import RawRepl
    from rbnn.device.virtual import VirtualDevice

    with VirtualDevice(fs, micropython=micropython) as dev:
        with serial.Serial(dev.port, baud, timeout=0.05) as ser:
            repl = RawRepl(ser)
            assert repl.enter(timeout=5), "the virtual board's raw REPL did not answer"
            put_firmware(repl)
            repl.exit()
    return fs
