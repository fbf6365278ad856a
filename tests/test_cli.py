"""CLI behaviour shared by every command: output lines and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from rbnn.format import model, pack
from support.randmodel import random_model


def rbnn(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rbnn", *args], capture_output=True, text=True, env=env)


def test_summary_table(tmp_path):
    m = random_model(np.random.default_rng(3), 784, [480, 256, 10], 0x80)
    p = tmp_path / "m.rbnn"
    size = pack.save(m, p)
    r = rbnn("summary", str(p))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "784->480" in out and "480->256" in out and "256->10" in out
    assert "376,320" in out and "501,760" in out  # 1-bit weights per layer and in total
    assert "inference RAM: 260 bytes (input 100, activations 120, scores 40)" in out
    assert f"file: {size:,} bytes" in out


def test_errors_are_one_line(tmp_path):
    m = random_model(np.random.default_rng(4), 30, [8, 3], 0x80)
    p = tmp_path / "m.rbnn"
    pack.save(m, p)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # a weight bit: only the CRC sees it
    bad = tmp_path / "bad.rbnn"
    bad.write_bytes(bytes(raw))
    for cmd in (["summary", str(bad)], ["eval", str(bad), "--limit", "5"]):
        r = rbnn(*cmd)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert str(bad) in lines[0] and "E_CRC" in lines[0] and "offset" in lines[0]
    r = rbnn("summary", str(tmp_path / "absent.rbnn"))
    assert r.returncode == 2 and "absent.rbnn: no such file" in r.stderr


def test_eval_table_of_models_and_test_sets(tmp_path, mnist):
    # Two models x two test sets (MNIST and a .npz): every cell is the twin's accuracy.
    from rbnn.data.plain import write_npz
    from rbnn.engines import twin

    rng = np.random.default_rng(6)
    ms = [random_model(rng, 784, [24, 10], 0x80), random_model(rng, 784, [40, 10], 0xC0)]
    paths = [tmp_path / "a.rbnn", tmp_path / "b.rbnn"]
    for m, p in zip(ms, paths, strict=True):
        pack.save(m, p)
    x, y = mnist.x_test[:200][:, ::-1].copy(), mnist.y_test[:200]  # mirrored digits
    write_npz(tmp_path / "mirror.npz", x, y, n_classes=10)
    r = rbnn("eval", *map(str, paths), "--data", "mnist", "--data", str(tmp_path / "mirror.npz"), "--limit", "300")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["accuracy", "(twin)", "mnist", str(tmp_path / "mirror.npz")]
    for m, p, line in zip(ms, paths, lines[1:], strict=True):
        want = [100 * np.mean(twin.predict(m, model.pack_input(xs, m.plane_mask)) == ys)
                for xs, ys in ((mnist.x_test[:300], mnist.y_test[:300]), (x, y))]  # fmt: skip
        assert line.split() == [str(p), f"{want[0]:.2f}", "%", "of", "300", f"{want[1]:.2f}", "%", "of", "200"]
    r = rbnn("eval", *map(str, paths), "--scores", str(tmp_path / "s.npy"))
    assert r.returncode == 2 and "--scores goes with one model and one --data" in r.stderr
    assert not (tmp_path / "s.npy").exists()


def test_eval_twin_prints_accuracy_line(tmp_path, mnist):
    # A random 784-input model: the line's numbers must be what the twin computes.
    from rbnn.engines import twin

    m = random_model(np.random.default_rng(5), 784, [40, 10], 0xC0)
    p = tmp_path / "m.rbnn"
    pack.save(m, p)
    out = tmp_path / "s.npy"
    r = rbnn("eval", str(p), "--engine", "twin", "--limit", "300", "--scores", str(out))
    assert r.returncode == 0, r.stderr
    pred = twin.predict(m, model.pack_input(mnist.x_test[:300], 0xC0))
    correct = int(np.sum(pred == mnist.y_test[:300]))
    assert f"accuracy: {correct / 300:.4f} ({correct}/300)" in r.stdout
    np.testing.assert_array_equal(np.argmax(np.load(out), axis=1), pred)
