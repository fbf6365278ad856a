"""The binary CNN trainer (rbnn.train.conv): conv forward against naive loops, the
im2col/col2im and pool/unpool adjoints, the fold against a naive integer reading of
docs/FORMAT.md version 3, a tiny CNN that learns, and clear errors for bad --conv."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rbnn.cli import main
from rbnn.engines import ccore, twin
from rbnn.format import pack
from rbnn.format.model import CONV, POOL_2X2, kept_planes, pack_input, plane_shifts
from rbnn.train import TrainError, fold, train
from rbnn.train.conv import (
    ArchError,
    ConvSpec,
    col2im,
    conv_shapes,
    im2col,
    init_conv_net,
    maxpool,
    parse_convs,
    recalibrate,
    unpool,
)
from rbnn.train.fit import RECALIBRATE_IMAGES


def _random_net(rng, shape, convs, dense, mask):
    """A net with random latent weights and random BatchNorm (both signs of gamma)."""
    net = init_conv_net(rng, shape, convs, dense, mask)
    for lay, w in enumerate(net.weights):
        w[...] = rng.uniform(-1, 1, w.shape)
        n = w.shape[0]
        fan = net.smax(lay)
        net.mean[lay] = rng.uniform(-0.3, 0.3, n).astype(np.float32) * fan
        net.var[lay] = rng.uniform(0.2, 1.0, n).astype(np.float32) * fan
        net.gamma[lay] = rng.choice([-1.0, 1.0], n).astype(np.float32) * rng.uniform(0.5, 2, n).astype(np.float32)
        net.beta[lay] = rng.normal(0, 0.5, n).astype(np.float32)
    return net


def _naive_sums(net, x):
    """Output sums of ``net`` by explicit loops over positions (float weights, pads by
    value): the definition im2col must reproduce."""
    from rbnn.format.model import input_values

    n_conv = len(net.convs)
    outs = []
    for xs in x:
        a = input_values(xs, net.plane_mask).reshape(net.shape).astype(np.float64)
        for lay, cv in enumerate(net.convs):
            w = np.where(net.weights[lay] >= 0, 1.0, -1.0)  # (out, k, k, in)
            h, wd, _ = a.shape
            k, p = cv.kernel, cv.pad
            ho, wo = h + 2 * p - k + 1, wd + 2 * p - k + 1
            y = np.empty((ho, wo, cv.channels))
            for oy in range(ho):
                for ox in range(wo):
                    s = np.zeros(cv.channels)
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = oy + ky - p, ox + kx - p
                            inside = 0 <= iy < h and 0 <= ix < wd
                            v = a[iy, ix] if inside else np.full(a.shape[2], net.fill(lay))
                            s += w[:, ky, kx, :] @ v
                    y[oy, ox] = fold.bn_eval(s, *net._bn(lay))
            if cv.pool:
                y = np.maximum.reduce([y[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])
            a = np.where(y >= 0, 1.0, -1.0)
        a = a.reshape(-1)
        for lay in range(n_conv, len(net.weights)):
            s = np.where(net.weights[lay] >= 0, 1.0, -1.0) @ a
            a = np.where(fold.bn_eval(s, *net._bn(lay)) >= 0, 1.0, -1.0)
        outs.append(s)
    return np.array(outs)


def _format_scores(m, x):
    """Integer scores of a one-block folded model, read straight from docs/FORMAT.md
    version 3 (Semantics of the new layers): per-plane popcounts, padded bits 0, pool as
    the OR of four threshold bits. Slow and literal: the fold's reference."""
    blk = m.blocks[0]
    geo = m.geometry()
    shifts = plane_shifts(m.plane_mask)
    out = []
    for xs in x:
        planes = [((xs.astype(np.int64) >> n) & 1) for n in kept_planes(m.plane_mask)]
        maps = [p.reshape(m.in_shape) for p in planes]  # bit maps, one per plane (layer 0)
        vec = None
        for lay, (ly, g) in enumerate(zip(m.layer_specs, geo, strict=True)):
            w = m.sign_weights(0, lay).astype(np.int64)  # (out, in) bits
            weights = [1 << sh for sh in shifts] if lay == 0 else [1]
            if ly.kind == CONV:
                h, wd, c = g.in_map
                k, p = ly.kernel, ly.pad
                h1, w1 = g.conv_hw
                bits = np.zeros((h1, w1, ly.size), np.int64)
                for oy in range(h1):
                    for ox in range(w1):
                        s = np.zeros(ly.size, np.int64)
                        for wt, mp in zip(weights, maps, strict=True):
                            patch = np.zeros((k, k, c), np.int64)
                            for ky in range(k):
                                for kx in range(k):
                                    iy, ix = oy + ky - p, ox + kx - p
                                    if 0 <= iy < h and 0 <= ix < wd:
                                        patch[ky, kx] = mp[iy, ix]
                            pc = np.sum(w ^ patch.reshape(-1), axis=1)
                            s += wt * (g.n_in - 2 * pc)
                        bits[oy, ox] = (s >= blk.thresholds[lay]) ^ blk.flips[lay]
                if ly.pool == POOL_2X2:
                    bits = np.bitwise_or.reduce([bits[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])
                maps = [bits]
                vec = bits.reshape(-1)
                continue
            ins = [pl for pl in planes] if lay == 0 else [vec]
            s = sum(wt * (g.n_in - 2 * np.sum(w ^ v, axis=1)) for wt, v in zip(weights, ins, strict=True))
            if lay < len(geo) - 1:
                vec = ((s >= blk.thresholds[lay]) ^ blk.flips[lay]).astype(np.int64)
            else:
                out.append(blk.scale.astype(np.int64) * s + blk.offset)
    return np.array(out)


ARCHS = [  # (input shape, plane mask, conv layers, dense sizes): odd maps, pads, pools, channels
    ((6, 8, 1), 0x80, [ConvSpec(3, 3, 1, True)], [5]),
    ((7, 5, 2), 0xC1, [ConvSpec(5, 3, 0, False), ConvSpec(4, 1, 0, False)], [6, 3]),
    ((10, 8, 1), 0xF0, [ConvSpec(33, 5, 2, False), ConvSpec(2, 3, 0, True)], [4]),
]


@pytest.mark.parametrize("shape,mask,convs,dense", ARCHS)
def test_forward_matches_naive_loops(rng, shape, mask, convs, dense):
    net = _random_net(rng, shape, convs, dense, mask)
    x = rng.integers(0, 256, (4, int(np.prod(shape))), dtype=np.uint8)
    np.testing.assert_array_equal(net.output_sums(x, batch=3), _naive_sums(net, x))


@pytest.mark.parametrize("shape,mask,convs,dense", ARCHS)
def test_fold_is_exact_against_format_semantics(rng, shape, mask, convs, dense):
    """Hidden bits agree for every input (so the output sums do), and the integer scores
    are scale * s + offset of the float network's exact sums."""
    net = _random_net(rng, shape, convs, dense, mask)
    m = net.fold()
    assert m.has_conv and m.in_shape == shape and m.file_version == 3
    x = rng.integers(0, 256, (5, int(np.prod(shape))), dtype=np.uint8)
    s = net.output_sums(x).astype(np.int64)
    blk = m.blocks[0]
    np.testing.assert_array_equal(_format_scores(m, x), blk.scale.astype(np.int64) * s + blk.offset)


@pytest.mark.parametrize("shape,mask,convs,dense", ARCHS)
def test_folded_file_through_the_twin(rng, shape, mask, convs, dense):
    """The folded model, written to version 3 bytes and read back, gives through the twin
    exactly ``scale * s + offset`` of the float network's sums: the fold is exact."""
    net = _random_net(rng, shape, convs, dense, mask)
    m = pack.from_bytes(pack.to_bytes(net.fold()))
    x = rng.integers(0, 256, (64, int(np.prod(shape))), dtype=np.uint8)
    s = net.output_sums(x).astype(np.int64)
    blk = m.blocks[0]
    np.testing.assert_array_equal(twin.scores(m, pack_input(x, mask)), blk.scale.astype(np.int64) * s + blk.offset)


def test_fold_pads_the_first_layer_with_feature_zero(rng):
    """A padded position of layer 0 is a feature 0 (every kept plane's bit 0): with 3
    planes its value is -(4 + 2 + 1), not -1."""
    net = _random_net(rng, (4, 4, 1), [ConvSpec(2, 3, 1, False)], [3], 0xE0)
    assert net.fill(0) == -7.0 and net.fill(1) == -1.0
    x = np.zeros((2, 16), np.uint8)  # all-zero images: every patch is all "feature 0"
    np.testing.assert_array_equal(net.output_sums(x), _naive_sums(net, x))
    m = net.fold()
    s = net.output_sums(x).astype(np.int64)
    np.testing.assert_array_equal(_format_scores(m, x), m.blocks[0].scale.astype(np.int64) * s + m.blocks[0].offset)


def test_recalibrate_sets_exact_statistics(rng):
    """Every layer's mean/var become those of its exact sums over the data, each layer fed
    by the layers before it in inference mode (with the new statistics)."""
    net = _random_net(rng, (6, 8, 1), [ConvSpec(3, 3, 1, True)], [5, 4], 0xC0)
    x = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    recalibrate(net, x, batch=16)
    s = net.output_sums(x)  # uses the recalibrated hidden layers
    np.testing.assert_allclose(net.mean[-1], s.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.var[-1], s.var(axis=0), rtol=1e-4, atol=1e-4)
    from rbnn.format.model import input_values

    s0, _ = net.conv_sums(input_values(x, 0xC0).reshape(40, 6, 8, 1), 0)
    np.testing.assert_allclose(net.mean[0], s0.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_im2col_col2im_are_adjoint(rng):
    """<im2col(a), g> == <a, col2im(g)> with a zero fill: the conv input gradient is the
    transpose of the forward patches."""
    a = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    for k, p in ((3, 1), (3, 0), (5, 2), (1, 0)):
        cols = im2col(a, k, p, 0.0)
        g = rng.normal(size=cols.shape).astype(np.float32)
        lhs = float(np.sum(cols.astype(np.float64) * g))
        rhs = float(np.sum(a.astype(np.float64) * col2im(g, a.shape, k, p)))
        assert abs(lhs - rhs) < 1e-3 * max(1.0, abs(lhs))


def test_maxpool_routes_the_gradient_to_one_argmax(rng):
    y = rng.integers(-2, 3, (2, 4, 6, 3)).astype(np.float32)  # small integers: many ties
    pooled, masks = maxpool(y)
    ref = np.maximum.reduce([y[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])
    np.testing.assert_array_equal(pooled, ref)
    g = rng.normal(size=pooled.shape).astype(np.float32)
    back = unpool(g, masks)
    windows = back.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 2, 3, 3, 4)
    assert np.all(np.count_nonzero(windows, axis=-1) <= 1)  # one position per window, ties too
    np.testing.assert_allclose(windows.sum(axis=-1), g)
    assert np.all(y[back != 0] == np.repeat(np.repeat(ref, 2, 1), 2, 2)[back != 0])  # at a max


def test_tiny_cnn_learns_and_folds(mnist):
    """A few hundred steps of a small CNN on MNIST: well above chance, and the folded
    model's hidden bits equal the float network's (its integer sums are the same)."""
    res = train(mnist, [32], 0x80, epochs=1, seed=3, progress=False, limit=6000, val=500,
                conv=parse_convs("16p"), augment="off", lr=0.005)  # fmt: skip
    net, m = res.net, res.model
    assert res.history[0]["val_acc"] > 0.75  # measured 0.83; chance is 0.1
    x = mnist.x_test[:300]
    assert float(np.mean(net.predict(x) == mnist.y_test[:300])) > 0.75
    assert [ly.kind for ly in m.layer_specs] == [CONV, 0, 0] and m.in_shape == (28, 28, 1)
    # the kept net holds the exact statistics of the first training images (conv: each epoch)
    first = mnist.x_train[:6000][res.split["train"][:RECALIBRATE_IMAGES]]
    np.testing.assert_allclose(net.mean[-1], net.output_sums(first).mean(axis=0), rtol=1e-4, atol=1e-3)
    s = net.output_sums(x).astype(np.int64)
    blk = m.blocks[0]
    np.testing.assert_array_equal(twin.scores(m, pack_input(x, 0x80)), blk.scale.astype(np.int64) * s + blk.offset)


def test_same_seed_same_weights(mnist):
    kw = dict(epochs=1, seed=4, progress=False, limit=600, val=100, batch=50, conv=parse_convs("4p"),
              augment="on", shift=1.0, rotate=0.0, zoom=0.0)  # fmt: skip
    a, b = train(mnist, [8], 0x80, **kw), train(mnist, [8], 0x80, **kw)
    for wa, wb in zip(a.net.weights, b.net.weights, strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize(
    "text,words",
    [
        ("32p,x", "expected comma-separated layers CHANNELS[kKERNEL][p]"),
        ("32p,,64", "found ''"),
        ("32k4p", "kernel 4 in '32k4p': expected an odd size"),
        ("p32", "found 'p32'"),
    ],
)
def test_bad_conv_text_is_named(text, words):
    with pytest.raises(ArchError, match=None) as e:
        parse_convs(text)
    assert words in str(e.value)


def test_bad_pad_rule_is_named():
    with pytest.raises(ArchError, match="--pad: expected same, valid or a number"):
        parse_convs("8", pad="wide")
    assert parse_convs("8k5p", pad="valid") == [ConvSpec(8, 5, 0, True)]
    assert parse_convs("8k5", pad="1") == [ConvSpec(8, 5, 1, False)]
    assert parse_convs("8,4p", kernel=5) == [ConvSpec(8, 5, 2, False), ConvSpec(4, 5, 2, True)]


def test_shapes_that_do_not_chain_are_refused(mnist):
    with pytest.raises(ArchError, match="conv layer 3: 2x2 max-pool needs an even map, found 7x7"):
        conv_shapes((28, 28, 1), parse_convs("8p,8p,8p"))
    with pytest.raises(ArchError, match="conv layer 1: padding 3 must be 0..1"):
        conv_shapes((28, 28, 1), [ConvSpec(8, 3, 3, False)])
    with pytest.raises(ArchError, match="does not fit the 2x2 map"):
        conv_shapes((2, 2, 1), [ConvSpec(8, 5, 0, False)])
    with pytest.raises(TrainError, match="2x2 max-pool needs an even map"):  # before any training
        train(mnist, [8], progress=False, limit=300, val=50, conv=parse_convs("8p,8p,8p"))
    with pytest.raises(TrainError, match="785 features are no square one-channel image"):
        from rbnn.data import Dataset

        x = np.zeros((300, 785), np.uint8)
        train(Dataset("odd", x, mnist.y_train[:300], x, mnist.y_train[:300]), [8], progress=False, val=50,
              conv=parse_convs("8"))  # fmt: skip
    with pytest.raises(TrainError, match="image: shape 28x27x1 does not hold the 784 features"):
        train(mnist, [8], progress=False, limit=300, val=50, conv=parse_convs("8"), image=(28, 27, 1))
    with pytest.raises(TrainError, match="dropout: not available with conv layers"):
        train(mnist, [8], progress=False, limit=300, val=50, conv=parse_convs("8"), dropout=0.2)


def test_cli_trains_a_cnn(tmp_path, capsys, mnist):
    out = tmp_path / "c.rbnn"
    rc = main(["train", "--conv", "8p", "--hidden", "16", "--epochs", "1", "--limit", "2000", "--val", "300",
               "--no-augment", "--seed", "2", "--quiet", "-o", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    m = pack.load(out)
    assert m.has_conv and m.in_shape == (28, 28, 1) and m.sizes == [8, 16, 10]
    assert "784-c8k3p-16-10" in text and "input map 28x28x1; inference RAM in eBNN order" in text
    assert "10000/10000 predictions agree" in text  # float64 network vs twin on the test set
    hist = json.loads((tmp_path / "c.history.json").read_text())
    assert hist["config"]["conv"] == [{"channels": 8, "kernel": 3, "pad": 1, "pool": True}]
    xbits = pack_input(mnist.x_test[:300], m.plane_mask)  # the C core runs the trained file as the twin does
    np.testing.assert_array_equal(ccore.CModel(out.read_bytes()).scores(xbits), twin.scores(m, xbits))


@pytest.mark.parametrize(
    "args,words",
    [
        (["--conv", "32x"], "--conv: expected comma-separated layers"),
        (["--conv", "8p,8p,8p"], "conv layer 3: 2x2 max-pool needs an even map, found 7x7"),
        (["--conv", "8", "--kernel", "4"], "--conv: kernel 4 in '8'"),
        (["--conv", "8k17"], "expected an odd size 1..15"),
        (["--conv", "8", "--pad", "wide"], "--pad: expected same, valid or a number"),
        (["--conv", "8", "--pad", "2"], "conv layer 1: padding 2 must be 0..1"),
        (["--conv", "8", "--image", "28x28"], "--image: expected HxWxC such as 28x28x1"),
        (["--conv", "8", "--image", "28x14x2"], "augmentation works on one-channel images"),
        (["--image", "28x28x1"], "--image: only with --conv"),
        (["--conv", "8", "--arena", "8"], "--arena: not for conv models"),
        (["--conv", "8", "--per-plane"], "--per-plane: not with --conv"),
    ],
)
def test_cli_bad_conv_args_one_line(tmp_path, capsys, args, words):
    rc = main(["train", "-o", str(tmp_path / "x.rbnn"), "--quiet", "--limit", "500", "--val", "100", *args])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("rbnn: error:") and words in err, err
    assert not (tmp_path / "x.rbnn").exists()
