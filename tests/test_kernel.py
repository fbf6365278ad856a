"""The host builds of the XOR-popcount kernel (cmodules/rbnn/rbnn_kernel.c) against numpy.

Each variant the host can compile is built into its own shared library: the one the
core gets (-O3 -march=native: AVX2 or hardware popcount where the CPU has them), a
-mpopcnt build (64-bit popcounts without AVX2), the portable SWAR fallback
(RBNN_KERNEL_PORTABLE), and a plain -O2 build. Every x86-64 build but the portable one
carries the AVX2 and AVX-512 VPOPCNTDQ kernels beside its scalar one and picks one at
run time (cpuid): each test runs every kernel the build and CPU can select, and the
automatic choice. The ARMv6-M kernel is checked in tests/test_m0plus.py.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest

from rbnn.engines.ccore import compiler

VARIANTS = {
    "native": ["-O3", "-march=native"],
    "popcnt": ["-O3", "-mpopcnt"],
    "portable": ["-O3", "-DRBNN_KERNEL_PORTABLE"],
    "plain": ["-O2"],
}
LENGTHS = list(range(0, 201))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def kernel(request, repo, tmp_path_factory):
    """(name, ctypes library) of one build of the kernel."""
    cc = compiler()
    flags = VARIANTS[request.param]
    for flag in ("-march=native", "-mpopcnt"):  # x86 flags: other hosts build without
        if flag in flags and not _accepts(cc, flag):
            flags = [f for f in flags if f != flag]
    out = tmp_path_factory.mktemp("kernel") / f"kernel-{request.param}.so"
    src = repo / "cmodules" / "rbnn" / "rbnn_kernel.c"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", *flags,
           str(src), "-o", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    lib = ctypes.CDLL(str(out))
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.rbnn_xorpop.argtypes = [u32p, u32p, ctypes.c_uint32]
    lib.rbnn_xorpop.restype = ctypes.c_uint32
    lib.rbnn_xorpop_rows.argtypes = [u32p, u32p, ctypes.c_uint32, ctypes.c_uint32, u32p]
    lib.rbnn_xorpop_rows.restype = None
    lib.rbnn_xorpop_lanes.argtypes = [u32p, u32p, ctypes.c_uint32, ctypes.c_uint32, u32p]
    lib.rbnn_xorpop_lanes.restype = None
    if hasattr(lib, "rbnn_kernel_select"):
        lib.rbnn_kernel_select.argtypes = [ctypes.c_char_p]
        lib.rbnn_kernel_select.restype = ctypes.c_int
    return request.param, lib, flags


def _accepts(cc: str, flag: str) -> bool:
    r = subprocess.run([cc, flag, "-x", "c", "-E", "-", "-o", os.devnull], input="",
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode == 0


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))


def _xorpop(lib, a: np.ndarray, b: np.ndarray) -> int:
    # Copies one word longer than needed, so a kernel reading past n would see
    # all-ones and miscount rather than pass by luck.
    n = len(a)
    pa = np.full(n + 1, 0xFFFFFFFF, np.uint32)
    pb = np.zeros(n + 1, np.uint32)
    pa[:n], pb[:n] = a, b
    return lib.rbnn_xorpop(_ptr(pa), _ptr(pb), n)


def test_name_says_which_version(kernel, repo):
    """The hardware-popcount version is compiled exactly when the target has one."""
    name, lib, flags = kernel
    got = ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(lib, "rbnn_kernel_name")))
    macros = subprocess.run([compiler(), *flags, "-dM", "-E", "-x", "c", "-"], input="",
                            capture_output=True, text=True).stdout  # fmt: skip
    has = {m for m in ("__AVX2__", "__x86_64__", "__POPCNT__", "__aarch64__", "__riscv_zbb")
           if f"#define {m} " in macros}  # fmt: skip
    if name == "portable":
        want = "swar"
    elif {"__AVX2__", "__x86_64__"} <= has:
        want = "avx2"
    elif "__x86_64__" in has:
        want = "x86-dispatch"  # the scalar kernel the flags give is one of its choices
    elif has & {"__POPCNT__", "__aarch64__", "__riscv_zbb"}:
        want = "popcnt64"
    else:
        want = "swar"
    assert got.decode() == want


SCALAR = ("popcnt64", "swar")  # a dispatching build's fallback: the one its flags give


def _kinds(lib) -> list[str | None]:
    """The run-time choices of this build and CPU (None: the one compiled version)."""
    if not hasattr(lib, "rbnn_kernel_select"):
        return [None]
    return [k for k in ("avx512vpopcntdq", "avx2", *SCALAR) if lib.rbnn_kernel_select(k.encode()) == 0]


def _each_kernel(lib):
    """Select each kernel of the build in turn (yields its name), then "auto" again."""
    for kind in _kinds(lib):
        if kind is not None:
            assert lib.rbnn_kernel_select(kind.encode()) == 0
        yield kind
    if hasattr(lib, "rbnn_kernel_select"):
        assert lib.rbnn_kernel_select(b"auto") == 0


def test_dispatch_picks_the_fastest_the_cpu_has(kernel):
    """x86-64 builds: "auto" takes the first usable of AVX-512 VPOPCNTDQ, AVX2, the scalar
    one (cpuid, as the CPU reports in /proc/cpuinfo); exactly one scalar kernel is
    compiled (the flags' one), and bad or absent names are refused, changing nothing."""
    name, lib, flags = kernel
    if not hasattr(lib, "rbnn_kernel_select"):
        assert name == "portable" or "x86_64" not in os.uname().machine
        return
    lib.rbnn_kernel_active.restype = ctypes.c_char_p
    flags_cpu = set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags_cpu = set(line.split(":", 1)[1].split())
                break
    kinds = _kinds(lib)
    assert len([k for k in kinds if k in SCALAR]) == 1, kinds
    scalar = kinds[-1]
    assert scalar == ("popcnt64" if "-mpopcnt" in flags or "-march=native" in flags else "swar")
    if flags_cpu:
        want = ("avx512vpopcntdq" if {"avx512f", "avx512_vpopcntdq"} <= flags_cpu
                else "avx2" if {"avx2", "popcnt"} <= flags_cpu else scalar)  # fmt: skip
        assert ("avx2" in kinds) == ({"avx2", "popcnt"} <= flags_cpu)
        assert lib.rbnn_kernel_select(b"auto") == 0
        assert lib.rbnn_kernel_active().decode() == want
    before = lib.rbnn_kernel_active()
    for bad in (b"neon", b"", b"AVX2", b"popcnt64" if scalar == "swar" else b"swar"):
        assert lib.rbnn_kernel_select(bad) == -1
        assert lib.rbnn_kernel_active() == before
    assert lib.rbnn_kernel_select(b"auto") == 0


def test_random_vectors_of_every_length(kernel, rng):
    _, lib, _ = kernel
    for kind in _each_kernel(lib):
        _random_vectors(lib, rng, kind)


def _random_vectors(lib, rng, kind) -> None:
    for n in LENGTHS:
        a = rng.integers(0, 2**32, n, dtype=np.uint32)
        b = rng.integers(0, 2**32, n, dtype=np.uint32)
        want = int(np.bitwise_count(a ^ b).sum())
        assert _xorpop(lib, a, b) == want, f"{kind} n={n}"


@pytest.mark.parametrize("fill", ["ones", "zeros", "equal", "one_bit"])
def test_extreme_vectors(kernel, fill):
    _, lib, _ = kernel
    for kind, n in ((k, n) for k in _each_kernel(lib) for n in LENGTHS):
        a = np.full(n, 0xFFFFFFFF, np.uint32)
        b = np.zeros(n, np.uint32)
        if fill == "zeros":
            a = b.copy()
        elif fill == "equal":
            b = a.copy()
        elif fill == "one_bit":
            a = np.full(n, 0x80000000, np.uint32)
        assert _xorpop(lib, a, b) == int(np.bitwise_count(a ^ b).sum()), f"{kind} {fill} n={n}"


def test_long_rows(kernel, rng):
    """Rows far longer than any layer of the tests (65535 inputs = 2048 words)."""
    _, lib, _ = kernel
    for _kind, n in ((k, n) for k in _each_kernel(lib) for n in (2047, 2048)):
        a = rng.integers(0, 2**32, n, dtype=np.uint32)
        assert _xorpop(lib, a, ~a) == 32 * n
        b = rng.integers(0, 2**32, n, dtype=np.uint32)
        assert _xorpop(lib, a, b) == int(np.bitwise_count(a ^ b).sum())


def test_rows_match_one_row_at_a_time(kernel, rng):
    _, lib, _ = kernel
    for kind in _each_kernel(lib):
        _rows(lib, rng, kind)


def _rows(lib, rng, kind) -> None:
    for n, rows in [(0, 3), (1, 1), (2, 32), (3, 5), (8, 32), (25, 32), (25, 7), (130, 4)]:
        w = rng.integers(0, 2**32, (rows, n), dtype=np.uint32)
        x = rng.integers(0, 2**32, n, dtype=np.uint32)
        out = np.full(rows + 1, 0xDEADBEEF, np.uint32)
        lib.rbnn_xorpop_rows(_ptr(w), _ptr(x), n, rows, _ptr(out))
        assert (out[:rows] == np.bitwise_count(w ^ x).sum(axis=1)).all(), f"{kind} n={n} rows={rows}"
        assert out[rows] == 0xDEADBEEF, "wrote past rows"
    for n, rows in [(248, 5), (249, 4)]:  # AVX2's four-row blocks up to 31 * 8 words: all-ones XORs
        x = rng.integers(0, 2**32, n, dtype=np.uint32)
        w = np.tile(~x, (rows, 1))
        w[-1, ::3] = x[::3]
        out = np.zeros(rows, np.uint32)
        lib.rbnn_xorpop_rows(_ptr(w), _ptr(x), n, rows, _ptr(out))
        assert (out == np.bitwise_count(w ^ x).sum(axis=1)).all(), f"{kind} n={n} rows={rows}"
    out = np.full(1, 7, np.uint32)
    lib.rbnn_xorpop_rows(_ptr(w), _ptr(x), 5, 0, _ptr(out))
    assert out[0] == 7, "rows=0 must write nothing"


TILE = 16  # RBNN_TILE of a host build (rbnn_kernel.h)


@pytest.mark.parametrize("fill", ["random", "ones"])
def test_lanes_match_numpy(kernel, rng, fill):
    """rbnn_xorpop_lanes: 16 interleaved inputs against each row, for row lengths across
    the AVX2 byte-counter flush (31 words) and the vector widths, with every kernel the
    build can select; all-ones XORs give the largest counts."""
    _, lib, _ = kernel
    kinds = _kinds(lib)
    for kind in kinds:
        if kind is not None:
            assert lib.rbnn_kernel_select(kind.encode()) == 0
        for n, rows in [(0, 2), (1, 3), (7, 1), (8, 32), (16, 5), (17, 2), (31, 3), (32, 3), (62, 2), (63, 2), (130, 4)]:
            w = rng.integers(0, 2**32, (rows, n), dtype=np.uint32)
            x = rng.integers(0, 2**32, (TILE, n), dtype=np.uint32)
            if fill == "ones":
                x = ~np.broadcast_to(w[:1], (TILE, n)).astype(np.uint32) if rows else x
                w[:] = w[:1]
            xt = np.ascontiguousarray(x.T)  # xt[i, t] = word i of sample t
            out = np.full(rows * TILE + 1, 0xDEADBEEF, np.uint32)
            lib.rbnn_xorpop_lanes(_ptr(w), _ptr(xt), n, rows, _ptr(out))
            want = np.bitwise_count(w[:, None, :] ^ x[None, :, :]).sum(axis=2)
            assert (out[:-1].reshape(rows, TILE) == want).all(), f"{kind} n={n} rows={rows}"
            assert out[-1] == 0xDEADBEEF, "wrote past rows * 16"
    if kinds[0] is not None:
        assert lib.rbnn_kernel_select(b"auto") == 0
        assert lib.rbnn_kernel_select(b"neon") == -1
