"""The C core's sanitizer harness (tests/c/rbnn_harness.c) for tests: build flags, the
build, and a run that fails on any ASan or UBSan report (developer-only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rbnn.engines import ccore

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "cmodules" / "rbnn"
HARNESS = TESTS / "c" / "rbnn_harness.c"
SAN = ["-std=c99", "-O2", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
       "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", "-pedantic"]  # fmt: skip
SAN_ENV = {
    # quarantine off: the truncation sweep mallocs tens of thousands of buffers
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:quarantine_size_mb=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def build(out: Path, defines: tuple[str, ...] = ()) -> Path:
    """The harness and every source of the core (rbnn.engines.ccore.SOURCES), with ASan
    and UBSan, at ``out``; ``defines``: extra ``-D`` names (e.g. RBNN_NO_TILE, the
    microcontrollers' one-patch conv path on a host)."""
    cmd = [ccore.compiler(), *SAN, *(f"-D{d}" for d in defines), "-I", str(SRC), str(HARNESS),
           *(str(SRC / s) for s in ccore.SOURCES), "-o", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return out


def run(exe: Path, *args: str, timeout: float = 30) -> str:
    """The harness's stdout; a sanitizer report or a non-zero exit fails the test.

    ``timeout`` is a hang guard only, never a speed check."""
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **SAN_ENV})  # fmt: skip
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0, f"harness exit {r.returncode}: {r.stderr[-3000:]}"
    return r.stdout
