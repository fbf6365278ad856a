"""Input mode 1 training (`rbnn train --per-plane`, CBNN's per-plane first-layer weights):
the first layer's float inputs give the integers of docs/FORMAT.md, the folded integer
model predicts what the float binarized network predicts, and the command writes a
version 3 model with its float state. Tiny synthetic data: seconds."""

from __future__ import annotations

import numpy as np
import pytest

from rbnn.cli import main
from rbnn.data import Dataset
from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import INPUT_PER_PLANE, Model, kept_planes, pack_input, plane_shifts
from rbnn.train import TrainError, train
from rbnn.train.net import init_net, plane_inputs
from rbnn.train.state import StateError, load_state


def tiny_set(n: int = 800, features: int = 16, seed: int = 3) -> Dataset:
    """3 classes: the argmax of 3 random binary "teacher" neurons over the per-plane inputs
    of all 8 planes; one mode 1 neuron can compute each, shared weights cannot (measured:
    about 0.55 vs 0.69 after 4 epochs, chance 0.36)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, features), dtype=np.uint8)
    teacher = np.where(rng.random((3, 8 * features)) < 0.5, 1.0, -1.0)
    y = np.argmax(plane_inputs(x, 0xFF) @ teacher.T, axis=1).astype(np.uint8)
    return Dataset("tiny", x, y, x[:0], y[:0], shape=None, n_classes=3)


def test_plane_inputs_give_the_format_integers(rng):
    """s = sum_n 2^(n-low) * (N - 2 popcount(w_n XOR x_n)), computed from unpacked bits."""
    mask, n_in = 0b10110010, 21
    x = rng.integers(0, 256, (9, n_in), dtype=np.uint8)
    w = rng.random((5, 4 * n_in)) < 0.5  # 4 kept planes
    s = plane_inputs(x, mask).astype(np.int64) @ np.where(w, 1, -1).T
    expect = np.zeros((9, 5), np.int64)
    for k, (n, sh) in enumerate(zip(kept_planes(mask), plane_shifts(mask), strict=True)):
        bits = (x >> n & 1).astype(bool)
        seg = w[:, k * n_in : (k + 1) * n_in]
        mismatch = (bits[:, None, :] ^ seg[None, :, :]).sum(-1)
        expect += (n_in - 2 * mismatch) << sh
    assert np.array_equal(s, expect)


def test_folded_model_predicts_what_the_float_network_predicts(rng):
    """A random mode 1 network with random BatchNorm: its folded integer model (twin) and its
    float binarized forward agree on every sample (hidden layers exactly; the output's
    rounding is 2^-q)."""
    net = init_net(rng, 37, [23, 11, 6], 0xE1, input_mode=INPUT_PER_PLANE)
    assert net.weights[0].shape == (23, 4 * 37)
    for lay in range(3):
        n = net.sizes[lay]
        net.mean[lay] = rng.normal(0, 30, n).astype(np.float32)
        net.var[lay] = rng.uniform(1, 900, n).astype(np.float32)
        net.gamma[lay] = rng.normal(0, 1, n).astype(np.float32)
        net.beta[lay] = rng.normal(0, 1, n).astype(np.float32)
    m = net.fold()
    assert m.input_mode == INPUT_PER_PLANE and m.sizes == [23, 11, 6]
    x = rng.integers(0, 256, (400, 37), dtype=np.uint8)
    got = twin.predict(pack.from_bytes(pack.to_bytes(m)), pack_input(x, 0xE1))
    assert np.array_equal(got, net.predict(x))


def test_trained_per_plane_model_learns_and_matches_the_float_network():
    ds = tiny_set()
    res = train(ds, [24], 0xF0, epochs=4, seed=1, progress=False, val=200, batch=40, threads=1,
                augment="off", input_mode=INPUT_PER_PLANE)  # fmt: skip
    m = res.model
    assert m.input_mode == INPUT_PER_PLANE and m.k_planes == 4
    assert m.sign_weights(0, 0).shape == (24, 4 * 16)  # K segments of 16
    pred = twin.predict(m, pack_input(ds.x_train, m.plane_mask))
    assert np.array_equal(pred, res.net.predict(ds.x_train))
    assert np.mean(pred == ds.y_train) > 0.6  # chance is 0.36


def test_all_equal_segments_compute_the_shared_weight_model(rng):
    """docs/FORMAT.md: a mode 1 file whose segments are all equal computes the mode 0 file."""
    mask, n_in = 0xC4, 19
    w0 = rng.random((7, n_in)) < 0.5
    w1 = rng.random((3, 7)) < 0.5
    t, f = [rng.integers(-40, 40, 7)], [rng.random(7) < 0.3]
    sc, off = rng.integers(-5, 6, 3), rng.integers(-9, 9, 3)
    shared = Model.plain(n_in, mask, [w0, w1], t, f, sc, off)
    per = Model.plain(n_in, mask, [np.tile(w0, 3), w1], t, f, sc, off, input_mode=INPUT_PER_PLANE)
    xb = pack_input(rng.integers(0, 256, (50, n_in), dtype=np.uint8), mask)
    assert np.array_equal(twin.scores(shared, xb), twin.scores(per, xb))


def test_cli_per_plane_writes_v3_model_and_float_state(tmp_path, capsys):
    ds = tiny_set()
    data = tmp_path / "tiny.npz"
    np.savez(data, x=ds.x_train, y=ds.y_train, n_classes=np.int64(3))
    out = tmp_path / "m.rbnn"
    rc = main(["train", "--data", str(data), "--per-plane", "--plane-mask", "0xE0", "--hidden", "16",
               "--epochs", "1", "--val", "100", "--batch", "50", "--augment", "off", "--quiet", "-o", str(out)])
    assert rc == 0
    m = pack.load(out)
    assert m.input_mode == INPUT_PER_PLANE and m.plane_mask == 0xE0 and m.version == 3
    st = load_state(tmp_path / "m.float.npz")
    assert st.net.input_mode == INPUT_PER_PLANE and st.net.weights[0].shape == (16, 3 * 16)
    assert len(st.val_idx) == 100 and st.n_train == 800
    refolded = st.net.fold()  # the float state is the network the file was folded from
    assert np.array_equal(refolded.arena, m.arena)
    assert "per-plane weights" in capsys.readouterr().out


def test_cli_per_plane_default_is_all_planes(tmp_path):
    ds = tiny_set(300)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=ds.x_train, y=ds.y_train)
    out = tmp_path / "m.rbnn"
    assert main(["train", "--data", str(data), "--per-plane", "--hidden", "8", "--epochs", "1", "--val", "50",
                 "--batch", "50", "--augment", "off", "--quiet", "-o", str(out)]) == 0
    assert pack.load(out).plane_mask == 0xFF


def test_cli_per_plane_with_arena_is_refused_before_any_file(tmp_path, capsys):
    ds = tiny_set(300)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=ds.x_train, y=ds.y_train)
    rc = main(["train", "--data", str(data), "--per-plane", "--arena", "4", "--hidden", "8", "--epochs", "1",
               "-o", str(tmp_path / "m.rbnn")])
    assert rc == 2
    assert "--arena" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.npz"]


def test_bad_input_mode_is_refused():
    with pytest.raises(TrainError, match="input mode"):
        train(tiny_set(300), [8], 0x80, epochs=1, progress=False, val=50, batch=50, input_mode=2)


def test_float_state_of_another_kind_is_refused(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(StateError, match="not an rbnn float state"):
        load_state(bad)
    with pytest.raises(StateError, match="no such file"):
        load_state(tmp_path / "none.npz")
