"""The C core (cmodules/rbnn) on the host: built into a shared library, called via ctypes.

The library is compiled on first use with the system C compiler and cached, keyed by a
hash of the sources, the compiler and the flags, so an edited source is rebuilt and two
processes building at once never load a half-written file (temp file + rename).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .. import resources
from ..errors import CODES, NAMES, FormatError, ModelError, RbnnError
from ..format.bits import pad_mask, words

SOURCES = ("rbnn_core.c", "rbnn_kernel.c", "rbnn_train.c")
HEADERS = ("rbnn_core.h", "rbnn_internal.h", "rbnn_kernel.h", "rbnn_spec.h")
BASE_FLAGS = ("-std=c99", "-O3", "-fPIC", "-shared", "-Wall", "-Wextra")
MAX_LAYERS = 8
CODE_FULL = NAMES["E_FULL"]

class CBuildError(RbnnError):
    """The C core could not be found or compiled."""


def source_dir() -> Path:
    """The C core's sources (cmodules/rbnn of the checkout, or the installed copy)."""
    return resources.c_sources()


def compiler() -> str:
    """$CC, else cc, else gcc."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CBuildError("no C compiler (cc or gcc) on PATH: install gcc (`make deps-c`)")
    return cc


def _cache_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = resources.checkout()
    return ([root / "build" / "host"] if root else []) + [Path(xdg) / "rbnn"]


def _accepts(cc: str, flag: str) -> bool:
    """Whether the compiler takes ``flag`` (e.g. -march=native is x86/ARM-gcc specific)."""
    r = subprocess.run([cc, flag, "-x", "c", "-E", "-o", os.devnull, os.devnull],
                       capture_output=True)  # fmt: skip
    return r.returncode == 0


def _key(cc: str) -> str:
    h = hashlib.sha256()
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h.update(f"{cc}\n{ver}\n{' '.join(BASE_FLAGS)} -march=native?\n".encode())
    src = source_dir()
    for name in SOURCES + HEADERS:
        path = src / name
        if not path.exists():
            raise CBuildError(f"{path}: C core source missing")
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:20]


def build(force: bool = False) -> Path:
    """Compile the core into a cached shared library if needed; returns its path."""
    cc = compiler()
    name = f"librbnn-{_key(cc)}.so"
    dirs = _cache_dirs()
    if not force:
        for d in dirs:
            if (d / name).exists():
                return d / name
    flags = list(BASE_FLAGS)
    if _accepts(cc, "-march=native"):
        flags.append("-march=native")
    src = source_dir()
    errors = []
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".librbnn-", suffix=".tmp", dir=d)
        except OSError as e:
            errors.append(f"{d}: {e.strerror}")
            continue
        os.close(fd)
        cmd = [cc, *flags, "-I", str(src), *(str(src / s) for s in SOURCES), "-o", tmp]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise CBuildError(f"compiling the C core failed: {' '.join(cmd)}\n{r.stderr.strip()}")
            os.replace(tmp, d / name)  # atomic: a concurrent loader sees all or nothing
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # failed or interrupted: no temp file left behind
            raise
        return d / name
    raise CBuildError("no writable cache folder for the C core: " + "; ".join(errors))


class _Model(ctypes.Structure):
    """Mirror of rbnn_model_t (cmodules/rbnn/rbnn_core.h)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("file_bytes", ctypes.c_uint32),
        ("n_inputs", ctypes.c_uint16),
        ("n_layers", ctypes.c_uint8),
        ("n_blocks", ctypes.c_uint8),
        ("n_planes", ctypes.c_uint8),
        ("plane_mask", ctypes.c_uint8),
        ("k_planes", ctypes.c_uint8),
        ("input_mode", ctypes.c_uint8),
        ("sizes", ctypes.c_uint16 * MAX_LAYERS),
        ("plane_words", ctypes.c_uint32),
        ("arena_offset", ctypes.c_uint32),
        ("params_offset", ctypes.c_uint32),
        ("blocks_offset", ctypes.c_uint32),
        ("block_params_bytes", ctypes.c_uint32),
        ("version", ctypes.c_uint8),
        ("max_blocks", ctypes.c_uint8),
        ("score_q", ctypes.c_uint8),
        ("live", ctypes.c_uint8),
        ("train_offset", ctypes.c_uint32),
        ("budget", ctypes.c_uint32),
        ("in_h", ctypes.c_uint16),
        ("in_w", ctypes.c_uint16),
        ("in_c", ctypes.c_uint16),
        ("kinds", ctypes.c_uint8 * MAX_LAYERS),
        ("kernels", ctypes.c_uint8 * MAX_LAYERS),
        ("pads", ctypes.c_uint8 * MAX_LAYERS),
        ("pools", ctypes.c_uint8 * MAX_LAYERS),
        ("layer_in", ctypes.c_uint32 * MAX_LAYERS),
        ("act_words", ctypes.c_uint32),
        ("patch_words", ctypes.c_uint32),
        ("err_offset", ctypes.c_uint32),
        ("err_check", ctypes.c_uint16),
        ("err_i", ctypes.c_uint16),
        ("err_j", ctypes.c_uint16),
        ("err_k", ctypes.c_uint16),
        ("err_want", ctypes.c_uint32),
        ("err_found", ctypes.c_uint32),
    ]


@functools.lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The loaded library, built on first use."""
    so = ctypes.CDLL(str(build()))
    P, U32, INT = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    M = ctypes.POINTER(_Model)
    sigs = {
        "rbnn_model_init": (INT, [M, P, ctypes.c_size_t]),
        "rbnn_input_words": (U32, [M]),
        "rbnn_scratch_words": (U32, [M]),
        "rbnn_n_classes": (U32, [M]),
        "rbnn_ram_bytes": (U32, [M]),
        "rbnn_pack_u8": (INT, [M, P, P]),
        "rbnn_infer": (INT, [M, P, P, P]),
        "rbnn_infer_batch": (INT, [M, P, U32, P, P, P]),
        "rbnn_strerror": (ctypes.c_char_p, [INT]),
        "rbnn_code_name": (ctypes.c_char_p, [INT]),
        "rbnn_error_text": (U32, [M, INT, P, U32]),
        "rbnn_crc32": (U32, [U32, P, ctypes.c_size_t]),
        "rbnn_train_scratch_bytes": (U32, [M]),
        "rbnn_train_step": (INT, [M, P, P, U32, P, P]),
        "rbnn_train_batch": (INT, [M, P, P, P, U32, P, P]),
        "rbnn_new_block": (INT, [M, P]),
        "rbnn_freeze": (INT, [M, P]),
        "rbnn_reseal": (None, [M, P]),
    }
    for fn, (res, args) in sigs.items():
        f = getattr(so, fn)
        f.restype, f.argtypes = res, args
    # Host tuning knobs: present only in the builds that have them (rbnn_kernel.h).
    optional = {
        "rbnn_set_batch_tile": (U32, [U32]),
        "rbnn_kernel_select": (INT, [ctypes.c_char_p]),
        "rbnn_kernel_active": (ctypes.c_char_p, []),
    }
    for fn, (res, args) in optional.items():
        if hasattr(so, fn):
            f = getattr(so, fn)
            f.restype, f.argtypes = res, args
    return so


def kernels() -> list[str]:
    """The XOR-popcount kernels this build and CPU can run (the first is the default):
    ["avx512vpopcntdq", "avx2"], ["avx2"], or the one compiled version's name."""
    so = lib()
    if not hasattr(so, "rbnn_kernel_select"):
        return [ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(so, "rbnn_kernel_name"))).decode()]
    old = so.rbnn_kernel_active()
    have = [k for k in ("avx512vpopcntdq", "avx2") if so.rbnn_kernel_select(k.encode()) == 0]
    so.rbnn_kernel_select(old)
    return have


def select_kernel(name: str) -> str:
    """Use kernel ``name`` (one of kernels(), or "auto") for every later call; returns the
    one in use before. Raises ModelError when this build or CPU has no such kernel."""
    so = lib()
    if not hasattr(so, "rbnn_kernel_select"):
        only = kernels()[0]
        if name not in ("auto", only):
            raise ModelError(f"kernel {name!r} not available: this build has only {only!r}")
        return only
    old = so.rbnn_kernel_active().decode()
    if so.rbnn_kernel_select(name.encode()) != 0:
        raise ModelError(f"kernel {name!r} not available: this build and CPU have {kernels()}")
    return old


def set_batch_tile(t: int) -> int:
    """Cap the samples rbnn_infer_batch runs together at ``t`` (1: one at a time); returns
    the previous cap (1 on builds without tiles)."""
    so = lib()
    if not hasattr(so, "rbnn_set_batch_tile"):
        return 1
    if t < 1:
        raise ModelError(f"batch tile must be >= 1, got {t}")
    return int(so.rbnn_set_batch_tile(t))


def strerror(code: int) -> str:
    """The C core's text for an error code."""
    return lib().rbnn_strerror(code).decode()


def crc32(data: bytes, crc: int = 0, shift: int = 0) -> int:
    """rbnn_crc32 of ``data`` placed ``shift`` bytes past a 4-byte boundary (= zlib.crc32)."""
    data = bytes(data)
    store, addr = _aligned(data, shift)
    out = int(lib().rbnn_crc32(crc, addr, len(data)))
    del store
    return out


def _aligned(data: bytes, shift: int = 0) -> tuple[np.ndarray, int]:
    """A copy of ``data`` at a 4-byte aligned address (+ ``shift``): (owner, address)."""
    store = np.zeros(max(1, (len(data) + shift + 3) // 4), np.uint32)
    store.view(np.uint8)[shift : shift + len(data)] = np.frombuffer(data, np.uint8)
    return store, store.ctypes.data + shift


def validate(data: bytes, shift: int = 0) -> tuple[int, int]:
    """Run rbnn_model_init on a copy of ``data``: (code, err_offset); code 0 is valid.

    ``shift`` places the copy that many bytes past a 4-byte boundary (E_ALIGN tests).
    """
    rc, m = _init(bytes(data), shift)
    return rc, int(m.err_offset)


def error_text(data: bytes, shift: int = 0) -> str | None:
    """The C core's one-line message for a bad file (``rbnn_error_text``), None if valid."""
    rc, m = _init(bytes(data), shift)
    return None if rc == 0 else _text(m, rc)


def _init(data: bytes, shift: int = 0) -> tuple[int, _Model]:
    store, addr = _aligned(data, shift)
    m = _Model()
    rc = lib().rbnn_model_init(ctypes.byref(m), addr, len(data))
    del store
    return int(rc), m


def _text(m: _Model, rc: int) -> str:
    n = int(lib().rbnn_error_text(ctypes.byref(m), rc, None, 0))
    buf = ctypes.create_string_buffer(n + 1)
    lib().rbnn_error_text(ctypes.byref(m), rc, buf, n + 1)
    return buf.value.decode()


_MESSAGE = re.compile(r"^(E_[A-Z_]+) at offset (\d+): (.*): expected (.*), found (.*)$")


def format_error(m: _Model, rc: int) -> FormatError:
    """The FormatError of a failed rbnn_model_init, from the core's own message."""
    text = _text(m, rc)
    g = _MESSAGE.match(text)
    if g is None:  # a code without a check (E_ALIGN, E_ARG)
        return FormatError(CODES.get(rc, f"E_{rc}"), strerror(rc))
    return FormatError(g.group(1), g.group(3), int(g.group(2)), g.group(4), g.group(5))


class CModel:
    """A model validated and run by the C core.

    Parameters
    ----------
    data : bytes-like
        A .rbnn file. An aligned private copy is kept for the model's lifetime.

    Raises
    ------
    FormatError
        With the C core's code name, the field at fault and its byte offset.
    """

    def __init__(self, data: bytes | bytearray | memoryview):
        self._lib = lib()
        raw = bytes(data)
        self._store, addr = _aligned(raw)
        self._m = _Model()
        rc = self._lib.rbnn_model_init(ctypes.byref(self._m), addr, len(raw))
        if rc != 0:
            raise format_error(self._m, rc)
        self.input_words = int(self._lib.rbnn_input_words(ctypes.byref(self._m)))
        self.scratch_words = int(self._lib.rbnn_scratch_words(ctypes.byref(self._m)))
        self.n_classes = int(self._lib.rbnn_n_classes(ctypes.byref(self._m)))
        self.ram_bytes = int(self._lib.rbnn_ram_bytes(ctypes.byref(self._m)))

    # --- shape ------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return int(self._m.n_inputs)

    @property
    def sizes(self) -> list[int]:
        return [int(s) for s in self._m.sizes[: self._m.n_layers]]

    @property
    def n_blocks(self) -> int:
        return int(self._m.n_blocks)

    @property
    def n_planes(self) -> int:
        return int(self._m.n_planes)

    @property
    def plane_mask(self) -> int:
        return int(self._m.plane_mask)

    @property
    def k_planes(self) -> int:
        return int(self._m.k_planes)

    @property
    def file_bytes(self) -> int:
        return int(self._m.file_bytes)

    # --- inference ----------------------------------------------------------------
    def _check(self, xbits: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(xbits, dtype=np.uint32)
        want = (self.k_planes, words(self.n_inputs))
        if x.ndim != 3 or x.shape[1:] != want:
            raise ModelError(f"packed input must have shape (n, {want[0]}, {want[1]}), got {x.shape}")
        # Named here (sample, plane); the C core checks again and would only say E_INPUT.
        bad = x[:, :, -1] & np.uint32(~pad_mask(self.n_inputs) & 0xFFFFFFFF)
        if bad.any():
            i, k = (int(v[0]) for v in np.nonzero(bad))
            raise FormatError("E_INPUT", f"packed input sample {i} plane {k} padding bits",
                              None, 0, f"0x{int(bad[i, k]):08x}")  # fmt: skip
        return x

    def _run(self, xbits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._check(xbits)
        n = x.shape[0]
        scores = np.empty((n, self.n_classes), np.int32)
        classes = np.empty(n, np.int32)
        scratch = np.empty(max(1, self.scratch_words), np.uint32)
        if n:
            rc = self._lib.rbnn_infer_batch(ctypes.byref(self._m), x.ctypes.data, n,
                                            scratch.ctypes.data, scores.ctypes.data,
                                            classes.ctypes.data)  # fmt: skip
            if rc != 0:
                raise FormatError(CODES.get(rc, f"E_{rc}"), f"inference ({strerror(rc)})")
        return scores, classes

    def scores(self, xbits: np.ndarray) -> np.ndarray:
        """Integer class scores.

        Parameters
        ----------
        xbits : ndarray of uint32, shape (n, K, words(n_inputs))
            Packed inputs (:func:`rbnn.format.model.pack_input`), padding bits 0.

        Returns
        -------
        ndarray of int32, shape (n, n_classes)
        """
        return self._run(xbits)[0]

    def predict(self, xbits: np.ndarray) -> np.ndarray:
        """Class per sample (ties to the lowest index): int64 (n,)."""
        return self._run(xbits)[1].astype(np.int64)

    def pack_u8(self, features: np.ndarray) -> np.ndarray:
        """Bit-slice one sample in C (rbnn_pack_u8).

        Parameters
        ----------
        features : ndarray of uint8, shape (n_inputs,)

        Returns
        -------
        ndarray of uint32, shape (K, words(n_inputs))
        """
        f = np.ascontiguousarray(features)
        if f.dtype != np.uint8 or f.shape != (self.n_inputs,):
            raise ModelError(f"features must be uint8 ({self.n_inputs},), got {f.dtype} {f.shape}")
        out = np.empty((self.k_planes, words(self.n_inputs)), np.uint32)
        rc = self._lib.rbnn_pack_u8(ctypes.byref(self._m), f.ctypes.data, out.ctypes.data)
        if rc != 0:
            raise FormatError(CODES.get(rc, f"E_{rc}"), f"pack ({strerror(rc)})")
        return out

    def infer_one(self, xbits: np.ndarray) -> tuple[int, np.ndarray]:
        """One sample through rbnn_infer (the device's entry point), no Python-side checks.

        Parameters
        ----------
        xbits : ndarray of uint32, shape (K, words(n_inputs))

        Returns
        -------
        (int, ndarray of int32 (n_classes,))
            The return code (class >= 0, or a negative error code) and the scores.
        """
        x = np.ascontiguousarray(xbits, dtype=np.uint32).reshape(-1)
        if x.size != self.input_words:
            raise ModelError(f"packed input must have {self.input_words} words, got {x.size}")
        scores = np.zeros(self.n_classes, np.int32)
        scratch = np.empty(max(1, self.scratch_words), np.uint32)
        rc = self._lib.rbnn_infer(ctypes.byref(self._m), x.ctypes.data, scratch.ctypes.data,
                                  scores.ctypes.data)  # fmt: skip
        return int(rc), scores


class CTrainer:
    """A version 2 model trained in place by the C core (docs/TRAINING.md, rule 1): the
    same bytes as :func:`rbnn.learn.step.step` on the same samples.

    Parameters
    ----------
    data : bytes-like
        A version 2 .rbnn file; an aligned private copy is trained.

    Raises
    ------
    FormatError
        The file is refused (the C core's code, field and offset).
    ModelError
        A version 1 file (it has no training state).

    Refused requests raise :class:`rbnn.learn.step.StepError` (``E_LABEL``, ``E_FULL``)
    as the twin does, and change nothing.
    """

    def __init__(self, data: bytes | bytearray | memoryview):
        self._lib = lib()
        raw = bytes(data)
        self._store, self._addr = _aligned(raw)
        self._m = _Model()
        rc = self._lib.rbnn_model_init(ctypes.byref(self._m), self._addr, len(raw))
        if rc != 0:
            raise format_error(self._m, rc)
        if self._m.version < 2:
            raise ModelError(f"a version {self._m.version} file has no training state; "
                             "write it as version 2 (rbnn.format.pack.to_bytes) to train it")  # fmt: skip
        self.n_classes = int(self._lib.rbnn_n_classes(ctypes.byref(self._m)))
        self.input_words = int(self._lib.rbnn_input_words(ctypes.byref(self._m)))
        self.scratch_bytes = int(self._lib.rbnn_train_scratch_bytes(ctypes.byref(self._m)))
        self._shape = (int(self._m.k_planes), words(int(self._m.n_inputs)))
        self._scratch = np.zeros(max(1, self.scratch_bytes // 4), np.uint32)

    @property
    def n_blocks(self) -> int:
        return int(self._m.n_blocks)

    @property
    def live(self) -> int | None:
        """Index of the live block, or None."""
        return None if self._m.live == 0xFF else int(self._m.live)

    def _inputs(self, xbits: np.ndarray, batch: bool) -> np.ndarray:
        x = np.ascontiguousarray(xbits, dtype=np.uint32)
        want = ((x.shape[0],) if batch and x.ndim else ()) + self._shape
        if x.shape != want:
            what = "(n, K, W)" if batch else "(K, W)"
            raise ModelError(f"packed input must have shape {what} = {want}, got {x.shape}")
        return x

    def _fail(self, rc: int, label: int, sample: int | None = None) -> Exception:
        from ..learn.step import StepError

        at = "" if sample is None else f"sample {sample}: "
        name = CODES.get(rc, f"E_{rc}")
        if name == "E_LABEL":
            return StepError(name, f"{at}label {label}: expected 0..{self.n_classes - 1}")
        if name == "E_FULL":
            return StepError(name, at + self._full_reason())
        if name == "E_INPUT":
            return FormatError(name, f"{at}packed input padding bits")
        return ModelError(f"{at}training step: {name} ({strerror(rc)})")

    def _room(self) -> tuple[int, int, int, int]:
        """(grow_left, free planes, bits, empty slots) from the file's bytes."""
        m, b = self._m, self._buf()
        owned = {b[m.blocks_offset + 20 * i + 4 + j] for i in range(m.n_blocks)
                 for j in range(b[m.blocks_offset + 20 * i + 1])}  # fmt: skip
        t = m.train_offset
        return b[t + 41], m.n_planes - len(owned), b[t + 40], m.max_blocks - m.n_blocks

    def _full_reason(self) -> str:
        """Why the step may open no block, in the twin's words (rbnn.learn.step.step)."""
        g, free, bits, slots = self._room()
        return f"no live block, and none may open (grow_left {g}, {free} free planes, bits {bits}, {slots} empty slots)"

    def _buf(self) -> memoryview:
        return memoryview(self._store.view(np.uint8))[: int(self._m.file_bytes)]

    def step(self, xbits: np.ndarray, label: int, z: np.ndarray | None = None) -> int:
        """One training step (rbnn_train_step).

        Parameters
        ----------
        xbits : ndarray of uint32, shape (K, words(n_inputs))
            The packed input, padding bits 0.
        label : int
        z : ndarray of int32, shape (n_classes,), optional
            Receives the summed scores before the update.

        Returns
        -------
        int : the class predicted before the update.
        """
        x = self._inputs(xbits, batch=False)
        zp = None
        if z is not None:
            if z.dtype != np.int32 or z.shape != (self.n_classes,) or not z.flags.c_contiguous:
                raise ModelError(f"z must be a contiguous int32 array of shape ({self.n_classes},)")
            zp = z.ctypes.data
        rc = self._lib.rbnn_train_step(ctypes.byref(self._m), self._addr, x.ctypes.data, int(label) & 0xFFFFFFFF,
                                       self._scratch.ctypes.data, zp)  # fmt: skip
        if rc < 0:
            raise self._fail(rc, label)
        return int(rc)

    def steps(self, xbits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Many steps in one call (rbnn_train_batch); stops at the first refused sample.

        Parameters
        ----------
        xbits : ndarray of uint32, shape (n, K, words(n_inputs))
        labels : array_like of int, shape (n,)

        Returns
        -------
        ndarray of int32, shape (n,): the class predicted at each step, before its update.

        Raises
        ------
        StepError, FormatError
            At the first refused sample; ``sample`` is its index and ``preds`` the
            classes of the steps before it, which stay taken.
        """
        x = self._inputs(xbits, batch=True)
        y = np.asarray(labels)
        if y.shape != (len(x),):
            raise ModelError(f"labels must have shape ({len(x)},), got {y.shape}")
        yu = np.ascontiguousarray(y.astype(np.int64) & 0xFFFFFFFF, dtype=np.uint32)
        preds = np.zeros(len(x), np.int32)
        if len(x):
            rc = self._lib.rbnn_train_batch(ctypes.byref(self._m), self._addr, x.ctypes.data, yu.ctypes.data,
                                            len(x), self._scratch.ctypes.data, preds.ctypes.data)  # fmt: skip
            if rc < 0:
                i = int(np.flatnonzero(preds < 0)[0])
                err = self._fail(rc, int(y[i]), sample=i)
                err.sample, err.preds = i, preds[:i]
                raise err
        return preds

    def new_block(self) -> int:
        """Open a live block (rbnn_new_block); returns its index."""
        rc = self._lib.rbnn_new_block(ctypes.byref(self._m), self._addr)
        if rc == CODE_FULL:
            from ..learn.step import StepError

            if self.live is not None:  # the twin's words (rbnn.learn.step.new_block)
                raise StepError("E_FULL", "a live block exists; freeze it before opening another")
            _, free, bits, slots = self._room()
            raise StepError("E_FULL", f"no room for a {bits}-bit block: {free} free planes, {slots} empty block slots")
        if rc < 0:
            raise self._fail(rc, 0)
        return int(rc)

    def freeze(self) -> None:
        """Freeze the live block (rbnn_freeze)."""
        rc = self._lib.rbnn_freeze(ctypes.byref(self._m), self._addr)
        if rc == CODE_FULL:
            from ..learn.step import StepError

            raise StepError("E_FULL", "no live block to freeze")
        if rc < 0:
            raise self._fail(rc, 0)

    def data(self) -> bytes:
        """The file as trained so far, its CRC recomputed (rbnn_reseal)."""
        self._lib.rbnn_reseal(ctypes.byref(self._m), self._addr)
        return bytes(self._buf())
