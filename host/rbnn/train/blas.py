"""The OpenBLAS numpy was built with: its thread count (pinned while training, since
results depend on it) and the conditions a benchmark should print beside its ratios
(library, kernel, threads, CPU)."""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

# Symbol names of the OpenBLAS builds numpy wheels and distributions ship: (prefix, suffix)
# around e.g. "set_num_threads".
_SYMBOLS = (("scipy_openblas_", "64_"), ("openblas_", "64_"), ("openblas_", ""))
# Environment variables that change which OpenBLAS kernel runs and how it blocks.
OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@functools.cache
def _openblas() -> tuple[ctypes.CDLL, tuple[str, str]] | None:
    """(library, symbol prefix and suffix) of numpy's bundled OpenBLAS, if it has one."""
    libdir = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(libdir, "numpy.libs", "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre, suf in _SYMBOLS:
            if hasattr(lib, f"{pre}set_num_threads{suf}") and hasattr(lib, f"{pre}get_num_threads{suf}"):
                return lib, (pre, suf)
    return None


def openblas_function(name: str, restype: type | None = ctypes.c_int) -> Callable | None:
    """The OpenBLAS function ``name`` (e.g. ``"get_corename"``), or None."""
    found = _openblas()
    if found is None:
        return None
    lib, (pre, suf) = found
    fn = getattr(lib, f"{pre}{name}{suf}", None)
    if fn is not None:
        fn.restype = restype
    return fn


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenBLAS threads (None: leave as is), then restore.

    Training results depend on the thread count (BLAS splits the float sums of the
    gradients differently), so training pins it: same seed and threads, same bytes.
    """
    set_fn = openblas_function("set_num_threads", None) if n else None
    get_fn = openblas_function("get_num_threads") if n else None
    if set_fn is None or get_fn is None:
        yield
        return
    before = int(get_fn())
    set_fn(int(n))
    try:
        yield
    finally:
        set_fn(before)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def conditions() -> str:
    """One line: numpy, its BLAS (library, version, kernel in use, threads), the
    environment overrides set, and the CPU. What a speed ratio against numpy depends on."""
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    lib = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    core = openblas_function("get_corename", ctypes.c_char_p)
    threads = openblas_function("get_num_threads")
    kernel = f", kernel {core().decode()}" if core else ""
    nthreads = f", {threads()} thread(s)" if threads else ""
    env = ", ".join(f"{k}={os.environ[k]}" for k in OVERRIDES if k in os.environ) or "none"
    return (f"numpy {np.__version__}, BLAS {lib}{kernel}{nthreads}; OpenBLAS kernel overrides: {env}; "
            f"CPU {_cpu()}, {os.cpu_count()} cores")  # fmt: skip
