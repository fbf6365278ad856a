"""The plain data format (.npz of x and y): read and written by rbnn.data.plain, taken
by every command's --data, refused with a clear error when malformed; and `rbnn data
export` (a part of a set, optionally rotated) that writes it."""

from __future__ import annotations

import numpy as np
import pytest

from rbnn import data
from rbnn.cli import main
from rbnn.data.plain import read_npz, write_npz
from rbnn.errors import DataError
from rbnn.train.augment import rotate


def small_set(rng, n=400, n_classes=4, side=6):
    """A learnable set: one random pattern per class, 10 % of its pixels flipped."""
    y = rng.integers(0, n_classes, n).astype(np.uint8)
    proto = rng.random((n_classes, side * side)) < 0.5
    x = (proto[y] ^ (rng.random((n, side * side)) < 0.1)).astype(np.uint8) * 255
    return x, y


def test_round_trip_keeps_samples_shape_and_classes(tmp_path, rng):
    x, y = small_set(rng)
    write_npz(tmp_path / "a.npz", x.reshape(-1, 6, 6), y, n_classes=7)
    x2, y2, shape, nc, declared = read_npz(tmp_path / "a.npz")
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    assert shape == (6, 6) and nc == 7 and declared
    write_npz(tmp_path / "b.npz", x, y)
    _, _, shape, nc, declared = read_npz(tmp_path / "b.npz")
    assert shape is None and nc == int(y.max()) + 1 and not declared
    ds = data.load(str(tmp_path / "a.npz"), parts=("t10k",))
    assert len(ds.y_train) == 0 and len(ds.y_test) == len(y) and ds.files == (tmp_path / "a.npz",)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"y": np.zeros(3, np.uint8)}, "no array 'x'"),
        ({"x": np.zeros((3, 4), np.uint8)}, "no array 'y'"),
        ({"x": np.zeros((3, 4), np.float32), "y": np.zeros(3, np.uint8)}, "x: expected uint8 features, found float32 (scale them"),
        ({"x": np.zeros(3, np.uint8), "y": np.zeros(3, np.uint8)}, "x: expected shape (n, features) or (n, h, w)"),
        ({"x": np.zeros((0, 4), np.uint8), "y": np.zeros(0, np.uint8)}, "with n >= 1, found (0, 4)"),
        ({"x": np.zeros((3, 4), np.uint8), "y": np.zeros(2, np.uint8)}, "y: expected 3 labels"),
        ({"x": np.zeros((3, 4), np.uint8), "y": np.array([0, -1, 2])}, "labels must be >= 0, found -1"),
        ({"x": np.zeros((3, 4), np.uint8), "y": np.array([0.0, 1, 2])}, "y: expected integer labels"),
        ({"x": np.zeros((3, 4), np.uint8), "y": np.array([0, 5, 2]), "n_classes": np.array(5)},
         "expected labels 0..4 (n_classes), found 5"),
        ({"x": np.zeros((3, 4), np.uint8), "y": np.array([0, 1, 2]), "n_classes": np.array([3, 4])},
         "n_classes: expected one integer"),
        ({"x": np.zeros((3, 70000), np.uint8), "y": np.array([0, 1, 2])}, "expected 1..65535 features"),
    ],
)  # fmt: skip
def test_malformed_files_are_refused_by_name(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        read_npz(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_not_a_zip_and_pickles_are_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable .npz file"):
        read_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([object()]), y=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="not a readable .npz file"):  # never unpickled
        read_npz(tmp_path / "obj.npz")
    with pytest.raises(DataError, match="no such file"):
        read_npz(tmp_path / "missing.npz")


def test_commands_take_plain_files(tmp_path, rng, capsys):
    x, y = small_set(rng, n=600)
    write_npz(tmp_path / "train.npz", x.reshape(-1, 6, 6), y, n_classes=4)
    write_npz(tmp_path / "test.npz", x[:100], y[:100])  # no n_classes stated
    m = str(tmp_path / "m.rbnn")
    assert main(["train", "--data", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
                 "--hidden", "16", "--epochs", "3", "--val", "100", "--augment", "off", "-o", m]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "test accuracy (folded integer model, twin)" in out and "(100 test.npz)" not in out
    assert main(["eval", m, "--data", str(tmp_path / "test.npz"), "--engine", "c"]) == 0
    acc = float(capsys.readouterr().out.split()[1])
    assert acc > 0.5  # learnt something real from the plain file (4 classes)
    # without --test a plain file has no test set, and says so
    assert main(["train", "--data", str(tmp_path / "train.npz"), "--hidden", "8", "--epochs", "1",
                 "--val", "100", "--augment", "off", "-o", m]) == 0  # fmt: skip
    assert "no test set" in capsys.readouterr().out
    # labels the model cannot output are refused, not scored
    write_npz(tmp_path / "more.npz", x[:10], np.full(10, 6, np.uint8))
    assert main(["eval", m, "--data", str(tmp_path / "more.npz")]) == 2
    assert "has 4 classes, data set has labels up to 6" in capsys.readouterr().err
    # a stated class count must be the model's
    write_npz(tmp_path / "ten.npz", x[:10], y[:10], n_classes=10)
    assert main(["eval", m, "--data", str(tmp_path / "ten.npz")]) == 2
    assert "has 4 classes, data set has 10" in capsys.readouterr().err


def test_rotate_is_exact_at_0_and_keeps_mass(rng):
    x = np.zeros((3, 28 * 28), np.uint8)
    x[:, 28 * 10 + 8 : 28 * 10 + 20] = 255  # a horizontal bar through the middle
    assert np.array_equal(rotate(x, (28, 28), 0.0), x)
    r90 = rotate(x, (28, 28), 90.0).reshape(3, 28, 28)
    # a horizontal bar above the centre becomes a vertical one right of it (clockwise
    # as displayed, row 0 at the top)
    assert r90[:, 8:20, 17].min() == 255 and r90[:, :, :17].max() == 0 and r90[:, :, 18:].max() == 0
    blob = np.zeros((1, 28, 28), np.uint8)
    blob[0, 9:19, 7:21] = 200  # a solid block away from the border
    r45 = rotate(blob.reshape(1, -1), (28, 28), 45.0)
    assert abs(int(r45.astype(int).sum()) - int(blob.astype(int).sum())) < 0.05 * int(blob.astype(int).sum())
    assert not np.array_equal(r45, blob.reshape(1, -1))


def test_data_export_rotated_part(tmp_path, mnist, capsys):
    out = tmp_path / "rot.npz"
    assert main(["data", "export", "--part", "test", "--offset", "10", "--limit", "50", "--rotate", "45",
                 "-o", str(out)]) == 0  # fmt: skip
    assert "50 samples of mnist (test 10..59, rotated 45 degrees)" in capsys.readouterr().out
    x, y, shape, nc, declared = read_npz(out)
    assert shape == (28, 28) and nc == 10 and declared
    assert np.array_equal(y, mnist.y_test[10:60])
    assert np.array_equal(x, rotate(mnist.x_test[10:60], (28, 28), 45.0))
    assert main(["data", "export", "--part", "test", "--offset", "10000", "-o", str(out)]) == 2
    assert "--offset 10000: the test part of mnist has 10000 samples" in capsys.readouterr().err
    assert main(["data", "export", "--part", "test"]) == 2
    assert "give the file to write with -o" in capsys.readouterr().err
