"""The IDX loader and the MNIST cache: shapes, checksums, and clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from rbnn import data
from rbnn.errors import DataError


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_set(folder, n_train=20, n_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        raw = _idx(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_folder_round_trip(tmp_path, gz):
    arrays = _write_set(tmp_path, gz=gz)
    ds = data.load(str(tmp_path))
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    assert ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, arrays["train-images-idx3-ubyte"].reshape(20, 784))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_missing_file_named(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        data.load(str(tmp_path))


def test_truncated_idx_names_offset_and_sizes(tmp_path):
    _write_set(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"offset 16: IDX data: expected 15680 bytes .* found 15675"):
        data.load(str(tmp_path))


def test_bad_magic(tmp_path):
    _write_set(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(b"\x00\x00\x0d\x01" + p.read_bytes()[4:])
    with pytest.raises(DataError, match="IDX magic"):
        data.load(str(tmp_path))


def test_wrong_image_shape_and_label_range(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((10, 27, 28), np.uint8)))
    with pytest.raises(DataError, match=r"expected shape \(n, 28, 28\), found \(10, 27, 28\)"):
        data.load(str(tmp_path))
    _write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.full(20, 12, np.uint8)))
    with pytest.raises(DataError, match="expected values 0..9, found 12"):
        data.load(str(tmp_path))


def test_label_count_mismatch(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match=r"expected shape \(20,\), found \(19,\)"):
        data.load(str(tmp_path))


def test_sha256_checked(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(DataError, match="sha256 mismatch"):
        data.load_folder(tmp_path, check=data.MNIST_SHA256)


def test_mnist_cache_is_the_real_thing(mnist):
    # The checked cache: 60k/10k, labels balanced-ish, first test labels as published.
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert list(mnist.y_test[:8]) == [7, 2, 1, 0, 4, 1, 4, 9]
    assert np.bincount(mnist.y_train, minlength=10).min() > 5000


def test_missing_cache_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RBNN_DATA", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="make mnist"):
        data.load("mnist")


def test_only_the_parts_asked_for_are_read(tmp_path):
    """eval and infer read the test set only: a folder without training files serves them."""
    arrays = _write_set(tmp_path)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    ds = data.load(str(tmp_path), parts=("t10k",))
    assert np.array_equal(ds.x_test, arrays["t10k-images-idx3-ubyte"].reshape(10, 784))
    assert ds.x_train.shape == (0, 784) and ds.y_train.shape == (0,)
    assert [p.name for p in ds.files] == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        data.load(str(tmp_path))


@pytest.mark.parametrize("dims", [(2**21, 2**21, 2**22), (2**32 - 1,) * 3])
def test_idx_dimensions_that_overflow_int64(tmp_path, dims):
    # 2^21 * 2^21 * 2^22 is 0 in int64: the header would pass as an empty array
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, *dims) + b"\0" * 16)
    want = 1
    for d in dims:
        want *= d
    with pytest.raises(DataError, match=rf"offset 16: IDX data: expected {want} bytes for shape .*, found 16"):
        data.read_idx(path)


def test_relative_rbnn_data_is_taken_from_the_start_directory(tmp_path, monkeypatch):
    import rbnn.files

    monkeypatch.setattr(rbnn.files, "START_DIR", str(tmp_path))
    monkeypatch.setenv("RBNN_DATA", "cache/mnist")
    monkeypatch.chdir("/")
    assert data.cache_dir() == tmp_path / "cache" / "mnist"
