"""Input bit-plane pruning (CBNN): the exact removal rule of docs/FORMAT.md against a
reference forward written from the spec, `rbnn sensitivity` (table, PNG) and `rbnn prune`
(greedy, fine-tuned, within the allowed drop; bad input refused with nothing written).
Tiny synthetic data (tests/test_perplane.py): seconds."""

from __future__ import annotations

import numpy as np
import pytest
from test_perplane import tiny_set

from rbnn.cli import main
from rbnn.engines import twin
from rbnn.errors import ModelError
from rbnn.format import pack
from rbnn.format.model import INPUT_PER_PLANE, Model, kept_planes, pack_input
from rbnn.format.planes import drop_plane
from rbnn.train.net import plane_inputs
from rbnn.train.prune import drop_plane_net, first_layer_bytes, first_layer_macs
from rbnn.train.state import load_state


def _reference(x, mask, w, thr, flips, scale, offset, removed, old_low):
    """Scores by the spec: layer 0 reads the kept planes except ``removed``, in the units of
    the OLD lowest plane (so the old thresholds apply unchanged), then dense +-1 layers."""
    keep = mask & ~(1 << removed)
    kept = kept_planes(mask)
    segs = [w[0][:, i * x.shape[1] : (i + 1) * x.shape[1]] for i, n in enumerate(kept) if n != removed]
    s = np.zeros((len(x), len(w[0])), np.int64)
    for n, seg in zip(kept_planes(keep), segs, strict=True):
        bits = np.where((x >> n & 1).astype(bool), 1, -1)
        s += (bits @ np.where(seg, 1, -1).T) << (n - old_low)
    for lay in range(1, len(w)):
        a = np.where((s >= thr[lay - 1]) ^ flips[lay - 1], 1, -1)
        s = a @ np.where(w[lay], 1, -1).T
    return scale * s + offset


@pytest.mark.parametrize("mask, plane", [(0b10010001, 0), (0b11000110, 1), (0xFF, 4), (0b10100000, 7)])
def test_removal_rule_is_exact_for_a_hidden_first_layer(rng, mask, plane):
    """Dropping the lowest plane raises `low` by d (here 4, 1, 0, 0); ceil(t / 2^d) keeps every
    hidden bit (negative thresholds included)."""
    n_in, k = 13, bin(mask).count("1")
    w = [rng.random((9, k * n_in)) < 0.5, rng.random((4, 9)) < 0.5]
    thr, flips = [rng.integers(-300, 300, 9)], [rng.random(9) < 0.4]
    scale, offset = rng.integers(1, 9, 4), rng.integers(-50, 50, 4)
    m = Model.plain(n_in, mask, w, thr, flips, scale, offset, input_mode=INPUT_PER_PLANE)
    out = drop_plane(m, plane)
    assert out.plane_mask == mask & ~(1 << plane) and out.k_planes == k - 1
    x = rng.integers(0, 256, (300, n_in), dtype=np.uint8)
    got = twin.scores(pack.from_bytes(pack.to_bytes(out)), pack_input(x, out.plane_mask))
    ref = _reference(x, mask, w, thr, flips, scale, offset, plane, kept_planes(mask)[-1])
    assert np.array_equal(got, ref)  # the output layer reads bits: the scores are the same


def test_removal_rule_scales_an_output_first_layer(rng):
    """One layer: the scores keep the old units with scale * 2^d."""
    mask, n_in = 0b01000101, 11  # planes 6, 2, 0: dropping 0 raises low by 2
    w = [rng.random((5, 3 * n_in)) < 0.5]
    scale, offset = rng.integers(-7, 8, 5), rng.integers(-40, 40, 5)
    m = Model.plain(n_in, mask, w, [], [], scale, offset, input_mode=INPUT_PER_PLANE)
    out = drop_plane(m, 0)
    assert out.blocks[0].scale.tolist() == (scale * 4).tolist()
    x = rng.integers(0, 256, (100, n_in), dtype=np.uint8)
    ref = _reference(x, mask, w, None, None, scale, offset, 0, 0)
    assert np.array_equal(twin.scores(out, pack_input(x, out.plane_mask)), ref)


def test_removal_is_refused_where_it_cannot_be_done(rng):
    w = [rng.random((3, 8)) < 0.5, rng.random((2, 3)) < 0.5]
    t, f, sc, off = [np.zeros(3, int)], [np.zeros(3, bool)], np.ones(2, int), np.zeros(2, int)
    with pytest.raises(ModelError, match="input mode 1"):
        drop_plane(Model.plain(8, 0xC0, w, t, f, sc, off), 7)  # shared weights
    one = Model.plain(4, 0x80, [w[0][:, :4], w[1]], t, f, sc, off, input_mode=INPUT_PER_PLANE)
    with pytest.raises(ModelError, match="no input"):
        drop_plane(one, 7)
    two = Model.plain(4, 0xC0, w, t, f, sc, off, input_mode=INPUT_PER_PLANE)
    with pytest.raises(ModelError, match="plane 5 is not kept"):
        drop_plane(two, 5)


def test_float_network_without_a_plane_folds_to_the_exact_rule(rng):
    """drop_plane_net (what fine-tuning starts from) computes what drop_plane computes: its
    BatchNorm moves to the new units of s (eps aside: 1e-12 here)."""
    from rbnn.train.net import init_net

    net = init_net(rng, 20, [10, 3], 0b10010011, eps=1e-12, input_mode=INPUT_PER_PLANE)
    net.mean[0] = rng.normal(0, 40, 10).astype(np.float32)
    net.var[0] = rng.uniform(100, 900, 10).astype(np.float32)
    net.gamma[0] = rng.normal(0, 1, 10).astype(np.float32)
    m = net.fold()
    x = rng.integers(0, 256, (200, 20), dtype=np.uint8)
    for plane in (0, 1, 4, 7):
        a = drop_plane(m, plane)
        b = drop_plane_net(net, plane)
        assert b.weights[0].shape == (10, 3 * 20)
        hid_a = twin.scores(a, pack_input(x, a.plane_mask))
        assert np.array_equal(hid_a, twin.scores(b.fold(), pack_input(x, a.plane_mask))), plane
        s_b = plane_inputs(x, b.plane_mask) @ b.binary_weights(0).T
        assert s_b.shape == (200, 10)


def test_sizes_and_macs(rng):
    w = [rng.random((7, 3 * 40)) < 0.5, rng.random((2, 7)) < 0.5]
    m = Model.plain(40, 0xE0, w, [np.zeros(7, int)], [np.zeros(7, bool)], np.ones(2, int), np.zeros(2, int),
                    input_mode=INPUT_PER_PLANE)  # fmt: skip
    assert first_layer_bytes(m) == 7 * 3 * 2 * 4  # 7 rows of 3 segments of words(40) = 2
    assert first_layer_macs(m) == 7 * 3 * 40


# --- the commands -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 16-24-3 input mode 1 model on all 8 planes with its float state, and data files."""
    d = tmp_path_factory.mktemp("prune")
    ds = tiny_set(1500)
    np.savez(d / "tiny.npz", x=ds.x_train[:1200], y=ds.y_train[:1200], n_classes=np.int64(3))
    np.savez(d / "test.npz", x=ds.x_train[1200:], y=ds.y_train[1200:], n_classes=np.int64(3))
    assert main(["train", "--data", str(d / "tiny.npz"), "--per-plane", "--hidden", "24", "--epochs", "4", "--val",
                 "300", "--batch", "50", "--augment", "off", "--quiet", "-o", str(d / "m.rbnn")]) == 0  # fmt: skip
    return d


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_sensitivity_table_and_plot(trained, tmp_path, capsys):
    png = tmp_path / "s.png"
    assert main(["sensitivity", str(trained / "m.rbnn"), "--data", str(trained / "tiny.npz"), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "the 300 held out by rbnn train" in out and "never its test set" in out
    lines = [ln.split() for ln in out.splitlines() if ln[:1].isdigit()]
    assert [int(r[0]) for r in lines] == [7, 6, 5, 4, 3, 2, 1, 0]
    drops = {int(r[0]): float(r[-1]) for r in lines}
    assert drops[7] > drops[0]  # the teacher weighs plane 7 by 128, plane 0 by 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_without_float_state_draws_the_split(trained, tmp_path, capsys):
    lone = tmp_path / "lone.rbnn"
    lone.write_bytes((trained / "m.rbnn").read_bytes())
    assert main(["sensitivity", str(lone), "--data", str(trained / "tiny.npz"), "--val", "200", "--seed", "3"]) == 0
    assert "200 drawn with seed 3" in capsys.readouterr().out
    assert (tmp_path / "lone.sensitivity.png").exists()


def test_prune_removes_planes_within_the_drop(trained, tmp_path, capsys):
    out = tmp_path / "p.rbnn"
    rc = main(["prune", str(trained / "m.rbnn"), "--data", str(trained / "tiny.npz"), "--test",
               str(trained / "test.npz"), "--max-drop", "3", "--epochs", "1", "--quiet", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    before, after = pack.load(trained / "m.rbnn"), pack.load(out)
    assert after.input_mode == INPUT_PER_PLANE and after.k_planes < before.k_planes
    assert after.plane_mask & before.plane_mask == after.plane_mask
    row = {ln.split("  ")[0]: ln.split() for ln in text.splitlines()}
    start, end = float(row["validation accuracy"][2]), float(row["validation accuracy"][4])
    assert start - end <= 3.0
    assert "augmentation off" in text
    assert row["first-layer bytes"][-1] == f"{before.k_planes / after.k_planes:.2f}x"
    st = load_state(tmp_path / "p.float.npz")  # its float state: prune it again
    assert np.array_equal(st.net.fold().arena, after.arena)
    # the speed row comes from the C core, which runs the pruned model as the twin does
    from rbnn.engines.ccore import CModel

    xb = pack_input(np.load(trained / "test.npz")["x"], after.plane_mask)
    assert np.array_equal(CModel(out.read_bytes()).scores(xb), twin.scores(after, xb))
    assert row["host C inference (samples/s)"][-1].endswith("x")


def test_prune_that_would_remove_every_plane_writes_nothing(trained, tmp_path, capsys):
    rc = main(["prune", str(trained / "m.rbnn"), "--data", str(trained / "tiny.npz"), "--max-drop", "90",
               "-o", str(tmp_path / "p.rbnn")])  # fmt: skip
    assert rc == 2
    assert "allows removing every plane" in capsys.readouterr().err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("extra, message", [
    (["--max-drop", "-1"], "--max-drop"),
    (["--max-drop", "nan"], "--max-drop"),
    (["--max-drop", "1", "--lr", "0"], "learning rates"),
])  # fmt: skip
def test_prune_bad_options_write_nothing(trained, tmp_path, capsys, extra, message):
    rc = main(["prune", str(trained / "m.rbnn"), "--data", str(trained / "tiny.npz"), *extra,
               "-o", str(tmp_path / "p.rbnn")])  # fmt: skip
    assert rc == 2
    assert message in capsys.readouterr().err
    assert _files(tmp_path) == []


def test_prune_needs_the_float_state_of_the_model(trained, tmp_path, capsys):
    lone = tmp_path / "lone.rbnn"
    lone.write_bytes((trained / "m.rbnn").read_bytes())
    args = ["prune", str(lone), "--data", str(trained / "tiny.npz"), "--max-drop", "1", "-o", str(tmp_path / "p.rbnn")]
    assert main(args) == 2
    assert "no float state beside it" in capsys.readouterr().err
    # a float state of another model is refused too
    other = tmp_path / "other.rbnn"
    assert main(["train", "--data", str(trained / "tiny.npz"), "--per-plane", "--hidden", "24", "--epochs", "1",
                 "--val", "300", "--batch", "50", "--augment", "off", "--quiet", "--seed", "9", "-o", str(other)]) == 0
    (tmp_path / "lone.float.npz").write_bytes((tmp_path / "other.float.npz").read_bytes())
    assert main(args) == 2
    assert "not the float state of" in capsys.readouterr().err
    assert not (tmp_path / "p.rbnn").exists()


def test_prune_refuses_data_that_does_not_fit(trained, tmp_path, capsys):
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((1200, 17), np.uint8), y=np.zeros(1200, np.uint8))
    assert main(["prune", str(trained / "m.rbnn"), "--data", str(wide), "--max-drop", "1",
                 "-o", str(tmp_path / "p.rbnn")]) == 2  # fmt: skip
    assert "17 features" in capsys.readouterr().err
    assert not (tmp_path / "p.rbnn").exists()


def test_shared_weight_model_is_refused(tmp_path, capsys, trained):
    shared = tmp_path / "s.rbnn"
    assert main(["train", "--data", str(trained / "tiny.npz"), "--planes", "2", "--hidden", "8", "--epochs", "1",
                 "--val", "300", "--batch", "50", "--augment", "off", "--quiet", "-o", str(shared)]) == 0
    for cmd in (["sensitivity", str(shared)], ["prune", str(shared), "--max-drop", "1", "-o", str(tmp_path / "p.rbnn")]):
        assert main([*cmd, "--data", str(trained / "tiny.npz")]) == 2
        assert "input mode 1" in capsys.readouterr().err
    assert not (tmp_path / "p.rbnn").exists()


def test_fine_tuning_augments_where_the_training_did(trained):
    """The float state records whether the run augmented; prune's fine-tuning follows it
    unless --no-augment."""
    from argparse import Namespace

    from rbnn.cli.prune import _config

    st = load_state(trained / "m.float.npz")
    assert st.config["augmented"] is False  # trained with --augment off
    args = Namespace(epochs=1, lr=1e-3, lr_final=1e-4, no_augment=False)
    assert (_config(st, args).shift, _config(st, args).rotate) == (0.0, 0.0)
    st.config["augmented"] = True
    assert (_config(st, args).shift, _config(st, args).rotate) == (st.config["shift"], st.config["rotate"]) != (0, 0)
    args.no_augment = True
    assert _config(st, args).shift == 0.0


def test_without_the_c_core_the_twin_scores_and_speed_is_na(trained, tmp_path, capsys, monkeypatch):
    """No compiler (or a C core that cannot read the model): the twin gives the same
    accuracies, the speed row says n/a and why."""
    from rbnn.engines import ccore

    def no_c(data):
        raise ccore.CBuildError("no C compiler found")

    monkeypatch.setattr(ccore, "CModel", no_c)
    out = tmp_path / "p.rbnn"
    assert main(["prune", str(trained / "m.rbnn"), "--data", str(trained / "tiny.npz"), "--max-drop", "3",
                 "--epochs", "1", "--quiet", "-o", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "accuracy engine: twin (C core unavailable: no C compiler found)" in text
    row = {ln.split("  ")[0]: ln.split() for ln in text.splitlines()}
    assert row["host C inference (samples/s)"][-3:] == ["n/a", "n/a", "-"]
    assert pack.load(out).k_planes < 8
