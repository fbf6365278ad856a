"""Training (rbnn.train) and `rbnn train`: it learns, it is deterministic, the straight-
through gate and the weight clipping do their jobs, the BatchNorm gradient is right, and
the folded integer model agrees with the float network on MNIST."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from rbnn.cli import main
from rbnn.data import Dataset
from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import input_values, pack_input
from rbnn.train import TrainConfig, TrainError, fold, init_net, train
from rbnn.train.augment import augment
from rbnn.train.net import bn_backward, recalibrate, ste_sign
from rbnn.train.net import train_step as _step


def _twin_acc(m, x, y):
    return float(np.mean(twin.predict(m, pack_input(x, m.plane_mask)) == y))


def test_learns_in_one_short_epoch(mnist):
    res = train(mnist, [256], 0xC0, epochs=1, seed=5, progress=False, limit=12000, val=2000,
                batch=50, shift=0.0, threads=1)  # fmt: skip
    assert len(res.history) == 1 and res.model.plane_mask == 0xC0
    acc = _twin_acc(res.model, mnist.x_test, mnist.y_test)
    assert acc > 0.85, acc
    assert res.history[0]["val_acc"] > 0.85


def test_same_seed_same_bytes_other_seed_other_bytes(mnist):
    kw = dict(progress=False, limit=3000, val=500, batch=50, threads=1)
    a = pack.to_bytes(train(mnist, [40, 24], 0x80, 2, seed=7, **kw).model)
    b = pack.to_bytes(train(mnist, [40, 24], 0x80, 2, seed=7, **kw).model)
    c = pack.to_bytes(train(mnist, [40, 24], 0x80, 2, seed=8, **kw).model)
    assert a == b
    assert a != c


def test_ste_gate_blocks_gradient_where_abs_above_one(rng):
    y = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 7.0], np.float32)
    a, gate = ste_sign(y)
    assert a.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]  # sign(0) = +1
    assert gate.tolist() == [False, True, True, True, True, True, False, False]

    # In a network: hidden neurons whose BatchNorm output stays above 1 for the whole
    # batch (beta = 5 > 1 + sqrt(B - 1) bounds |x_hat|) get no gradient at all.
    net = init_net(rng, 30, [12, 4], 0x80)
    net.beta[0][::2] = 5.0
    x = input_values(rng.integers(0, 256, (16, 30), dtype=np.uint8), 0x80)
    labels = rng.integers(0, 4, 16)
    cfg = TrainConfig(hidden=[12], batch=16)
    _, _, grads = _step(net, x, labels, cfg, rng)
    gw0, gg0, gb0 = grads[0], grads[2], grads[4]
    assert np.all(gw0[::2] == 0) and np.all(gg0[::2] == 0) and np.all(gb0[::2] == 0)
    assert np.all(np.abs(gw0[1::2]).sum(axis=1) > 0)


def test_bn_backward_matches_finite_differences(rng):
    b, n = 9, 5
    z = rng.normal(0, 3, (b, n))
    gamma = rng.normal(0, 1, n)
    beta = rng.normal(0, 1, n)
    w = rng.normal(0, 1, (b, n))  # loss = sum(w * y^2): a non-trivial dy
    eps = 1e-3

    def loss(z, gamma, beta):
        mu, var = z.mean(0), z.var(0)
        y = gamma * (z - mu) / np.sqrt(var + eps) + beta
        return float(np.sum(w * y * y)), y, (z - mu) / np.sqrt(var + eps), 1 / np.sqrt(var + eps)

    _, y, xh, inv = loss(z, gamma, beta)
    dz, dg, db = bn_backward(2 * w * y, xh, inv, gamma)
    h = 1e-6
    for arr, grad in ((z, dz), (gamma, dg), (beta, db)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            up = loss(z, gamma, beta)[0]
            arr[idx] = old - h
            down = loss(z, gamma, beta)[0]
            arr[idx] = old
            num[idx] = (up - down) / (2 * h)
        assert np.allclose(grad, num, rtol=1e-5, atol=1e-6)


def test_latent_weights_are_clipped(mnist):
    res = train(mnist, [32], 0x80, 1, seed=1, progress=False, limit=2000, val=0, lr=0.2,
                lr_final=0.2, threads=1)  # fmt: skip
    for w in res.net.weights:
        assert np.abs(w).max() <= 1.0
        assert np.mean(np.abs(w) == 1.0) > 0.01  # the big learning rate pushed many to the clip


def test_recalibrate_sets_exact_statistics(rng):
    net = init_net(rng, 50, [20, 6], 0xC0)
    x = rng.integers(0, 256, (700, 50), dtype=np.uint8)
    recalibrate(net, x, batch=128)  # several chunks
    s0 = input_values(x, 0xC0) @ net.binary_weights(0).T.astype(np.float64)
    assert np.allclose(net.mean[0], s0.mean(0), rtol=1e-6) and np.allclose(net.var[0], s0.var(0), rtol=1e-5)
    a1 = np.where(fold.bn_eval(s0, net.mean[0], net.var[0], net.gamma[0], net.beta[0], net.eps) >= 0, 1, -1)
    s1 = a1 @ net.binary_weights(1).T
    assert np.allclose(net.mean[1], s1.mean(0), rtol=1e-6) and np.allclose(net.var[1], s1.var(0), rtol=1e-5)


def test_augment_shift_and_affine(rng):
    x = rng.integers(0, 256, (50, 28 * 28), dtype=np.uint8)
    s = augment(x, np.random.default_rng(0), (28, 28), 2)
    assert s.dtype == np.uint8 and s.shape == x.shape
    # Integer shifts move pixels without changing them: what is left is from the image.
    assert np.all(np.isin(s[3], np.append(x[3], 0)))
    assert not np.array_equal(s, x)
    assert np.array_equal(s, augment(x, np.random.default_rng(0), (28, 28), 2))
    a = augment(x, rng, (28, 28), 1.5, rotate=10, zoom=0.1)
    assert a.dtype == np.uint8 and a.shape == x.shape
    same = augment(x, rng, (28, 28), 0.0, rotate=1e-9)  # identity map: bilinear is exact
    assert np.array_equal(same, x)
    # Shifted far off the image, a sample reads only the zero border: most come out blank.
    white = np.full((400, 28 * 28), 255, np.uint8)
    far = augment(white, rng, (28, 28), 100.0, rotate=1e-9)
    assert np.mean(far.max(axis=1) == 0) > 0.8


def test_bad_options_are_train_errors(mnist):
    with pytest.raises(TrainError, match="hidden"):
        train(mnist, [0], progress=False)
    with pytest.raises(TrainError, match="validation"):
        train(mnist, [8], progress=False, limit=100, val=100)
    with pytest.raises(TrainError, match="unknown training option"):
        train(mnist, [8], progress=False, colour="red")
    with pytest.raises(TrainError, match="seed: expected an integer >= 0, found -1"):  # numpy: ValueError
        train(mnist, [8], seed=-1, progress=False, limit=300, val=50)
    with pytest.raises(TrainError, match="augment: expected one of auto, on, off, found 'maybe'"):
        train(mnist, [8], progress=False, limit=300, val=50, augment="maybe")
    with pytest.raises(TrainError, match="left after the validation split: lower --batch or --val"):
        train(mnist, [8], progress=False, limit=300, val=250)
    bad = Dataset("bad", mnist.x_train[:300], mnist.y_train[:300] + 10, mnist.x_test, mnist.y_test)
    with pytest.raises(TrainError, match="labels"):
        train(bad, [8], progress=False, val=50)


def test_trained_model_twin_agrees_with_float_network(mnist, trained_mnist, trained_mnist_result):
    """The session model: the folded integer model (twin) predicts what the float64 network
    it was folded from predicts, on all 10k test images. The hidden layers fold exactly;
    the output layer's rounding (scale, offset at 2^q) moves a score by at most
    (smax + 1) / 2 * 2^-q, so a prediction may only differ where the top two float
    scores are closer than twice that: none are (0 disagreements measured, and 0 allowed)."""
    m = pack.load(trained_mnist)
    p_twin = twin.predict(m, pack_input(mnist.x_test, m.plane_mask))
    assert np.mean(p_twin == mnist.y_test) > 0.85
    res = trained_mnist_result
    assert pack.to_bytes(res.model) == trained_mnist.read_bytes()
    s_float = res.net.scores(mnist.x_test)
    top2 = np.sort(s_float, axis=1)[:, -2:]
    tol = (res.net.smax(len(res.net.weights) - 1) + 1) * 2.0 ** -res.model.meta["output_q"]
    near_ties = top2[:, 1] - top2[:, 0] <= tol
    differ = np.argmax(s_float, axis=1) != p_twin
    assert not np.any(differ & ~near_ties)  # a disagreement anywhere else is a folding bug
    assert int(np.sum(differ)) <= int(np.sum(near_ties)) == 0


def test_cli_train_writes_model_plot_and_history(tmp_path, capsys):
    out = tmp_path / "m.rbnn"
    rc = main(["train", "--hidden", "64", "--planes", "2", "--epochs", "2", "--limit", "4000",
               "--no-augment", "--val", "1000", "--seed", "3", "--threads", "1", "--quiet", "-o", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    m = pack.load(out)
    assert m.sizes == [64, 10] and m.plane_mask == 0xC0
    test_line = next(ln for ln in text.splitlines() if ln.startswith("test accuracy"))
    acc = float(test_line.split(":")[1].split()[0])
    assert acc > 0.8
    png = tmp_path / "m.curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = json.loads((tmp_path / "m.history.json").read_text())
    assert [r["epoch"] for r in hist["history"]] == [1, 2]
    assert hist["test_acc"] == acc and hist["plane_mask"] == "0xc0"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--hidden", "256,x"], "--hidden"),
        (["--hidden", "0"], "--hidden"),
        (["--planes", "9"], "--planes"),
        (["--plane-mask", "0x100"], "--plane-mask"),
        (["--epochs", "0"], "epochs"),
        (["--val", "70000"], "validation"),
        (["--batch", "1"], "batch"),
        (["--zoom", "2"], "zoom"),
        (["--epochs", "x"], "--epochs"),
        (["--loss", "foo"], "--loss"),
    ],
)
def test_cli_train_bad_args_one_line(tmp_path, capsys, args, words):
    try:
        rc = main(["train", "-o", str(tmp_path / "x.rbnn"), "--quiet", *args])
    except SystemExit as e:  # argparse-level errors exit from the parser
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("rbnn: error:") and words in err
    assert not (tmp_path / "x.rbnn").exists()


SMALL = ["train", "--hidden", "32", "--epochs", "1", "--limit", "2000", "--no-augment", "--seed", "1"]


def test_no_validation_split_writes_strict_json(tmp_path, capsys):
    """--val 0 wrote bare NaN into the history (not JSON): now null, and no NaN anywhere."""
    out = tmp_path / "m.rbnn"
    assert main([*SMALL, "--val", "0", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "validation accuracy" not in text and "val_acc" not in text
    assert next(ln for ln in text.splitlines() if ln.startswith("epoch")).startswith("epoch   1: loss ")

    def refuse(name):
        raise AssertionError(f"{name} in the history JSON")

    hist = json.loads((tmp_path / "m.history.json").read_text(), parse_constant=refuse)
    assert hist["val_acc"] is None and hist["history"][0]["val_acc"] is None
    assert hist["history"][0]["val_loss"] is None and hist["best_epoch"] == 1
    assert (tmp_path / "m.curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_without_matplotlib(tmp_path, capsys, monkeypatch):
    """matplotlib is the optional extra `plots`: without it, training still works and
    says once that no PNG was written and how to get one."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    out = tmp_path / "m.rbnn"
    assert main([*SMALL, "--val", "500", "--quiet", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("curves: not written: matplotlib is not installed (pip install 'rbnn[plots]')") == 1
    assert "curves:" not in text.replace("curves: not written", "")
    assert not (tmp_path / "m.curves.png").exists() and (tmp_path / "m.history.json").exists()
    assert pack.load(out).sizes == [32, 10]


def test_progress_bars_only_on_a_terminal(trained_mnist, capsys):
    """A log file gets the lines, never a progress bar's carriage-return frames."""
    import fcntl
    import os
    import struct
    import subprocess
    import sys
    import termios

    cmd = [sys.executable, "-m", "rbnn", "eval", str(trained_mnist), "--data", "mnist"]
    r = subprocess.run(cmd, capture_output=True, timeout=60)  # about 1 s
    assert r.returncode == 0 and b"accuracy: " in r.stdout and r.stderr == b"", r.stderr
    # the same command with stderr on a terminal draws its bar there
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 x 0
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.wait(timeout=60) == 0
    assert b"eval (twin)" in seen and b"\r" in seen
    # training: one line per epoch on stdout, nothing on stderr
    assert main([*SMALL, "--val", "500", "-o", str(trained_mnist.parent / "p.rbnn")]) == 0
    out, err = capsys.readouterr()
    assert "epoch   1: " in out and err == ""


# --- augmentation: on where it helps (--augment auto) -----------------------------------
def _bars(n: int = 3000) -> Dataset:
    """10 classes told apart by the column of a vertical bar: a shift of one pixel turns
    one class into the next, so augmentation can only hurt."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        x[i, rng.integers(2, 10) : rng.integers(18, 26), 9 + y[i]] = 255
    x = x.reshape(n, 784)
    return Dataset("bars", x, y, x[:10], y[:10])


def test_auto_drops_augmentation_where_it_hurts():
    ds = _bars()
    res = train(ds, [64], 0x80, 3, 1, progress=False, val=500)
    probe = res.augmentation["probe"]
    assert res.augmentation["augment"] == "off", res.augmentation
    assert probe["val_acc_off"] > probe["val_acc_on"] + 0.1 and probe["images"] == 2500
    # the run is exactly the one --augment off gives: the probe has its own random numbers
    off = train(ds, [64], 0x80, 3, 1, progress=False, val=500, augment="off")
    assert pack.to_bytes(res.model) == pack.to_bytes(off.model)
    on = train(ds, [64], 0x80, 3, 1, progress=False, val=500, augment="on")
    assert _twin_acc(on.model, ds.x_train, ds.y_train) < _twin_acc(res.model, ds.x_train, ds.y_train)


def test_auto_keeps_augmentation_that_scores_at_least_as_well(monkeypatch, mnist):
    """The probe is the run itself (epochs, network) on at most PROBE_IMAGES images, with
    and without augmentation, from its own generator; a tie keeps augmentation."""
    import rbnn.train.fit as fit

    runs = []

    def probe_run(c, rng, x_tr, y_tr, x_va, y_va, n_classes, progress, on_epoch, desc="train"):
        runs.append((c.shift, c.epochs, len(x_tr), len(x_va), rng))
        return None, [{"val_acc": 0.5}, {"val_acc": 0.9}], 2

    monkeypatch.setattr(fit, "_loop", probe_run)
    cfg = TrainConfig(hidden=[8], epochs=7)
    x, y = mnist.x_train[:5000], mnist.y_train[:5000]
    got = fit.choose_augmentation(cfg, x, y, x[:100], y[:100], 10)
    assert got["augment"] == "on" and got["probe"]["val_acc_on"] == got["probe"]["val_acc_off"] == 0.9
    assert [r[:4] for r in runs] == [(1.5, 7, fit.PROBE_IMAGES, 100), (0.0, 7, fit.PROBE_IMAGES, 100)]
    assert runs[0][4] is not runs[1][4]  # a fresh generator each, the same seed
    # without a validation split the probe holds out a fifth of its images
    runs.clear()
    assert fit.choose_augmentation(cfg, x[:1000], y[:1000], x[:0], y[:0], 10)["augment"] == "on"
    assert [r[2:4] for r in runs] == [(800, 200), (800, 200)]
    # "on" and "off" decide without a probe, and there is nothing to decide without augmentation
    runs.clear()
    assert fit.choose_augmentation(replace(cfg, augment="off"), x, y, x, y, 10)["augment"] == "off"
    assert fit.choose_augmentation(replace(cfg, augment="on"), x, y, x, y, 10)["augment"] == "on"
    assert fit.choose_augmentation(replace(cfg, shift=0.0, rotate=0.0, zoom=0.0), x, y, x, y, 10)["augment"] == "off"
    assert fit.choose_augmentation(cfg, x[:, :780], y, x[:, :780], y, 10)["why"] == "780 features are no square image"
    assert runs == []


def test_cli_augment_options(tmp_path, capsys):
    """--no-augment is --augment off; the CLI's defaults are the library's."""
    from dataclasses import fields

    from rbnn.cli.train import AUGMENTS, DEFAULTS
    from rbnn.train.fit import AUGMENTS as LIB_AUGMENTS

    assert AUGMENTS == LIB_AUGMENTS
    lib = {f.name: f.default for f in fields(TrainConfig)}
    assert {k: lib[k] for k in DEFAULTS} == DEFAULTS
    outs = []
    for flag in (["--no-augment"], ["--augment", "off"]):
        out = tmp_path / f"m{len(outs)}.rbnn"
        assert main([*SMALL[:-3], *flag, "--seed", "1", "--val", "500", "--quiet", "-o", str(out)]) == 0
        text = capsys.readouterr().out
        assert "augmentation: off (shift 1.5, rotate 10, zoom 0.1; --augment off)" in text
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
