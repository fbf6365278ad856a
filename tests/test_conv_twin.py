"""The numpy twin on version 3 models (conv layers, the fused pool, input mode 1) against a
naive reference written from the text of docs/FORMAT.md (Version 3: Semantics): one
output position at a time, +-1 dot products, the pool in eBNN order (the max or min of
the four sums compared once). Plus the two identities the spec states: a mode 1 file of
equal segments computes what the mode 0 file computes, and removing a plane of a mode 1
model is exact with ceil(threshold / 2^d) (and scale * 2^d)."""

from __future__ import annotations

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import CONV, INPUT_PER_PLANE, INPUT_SHARED, POOL_2X2, Model, kept_planes
from support.randconv import mnist_cnn, random_conv_model, random_inputs


# --- the reference ------------------------------------------------------------------------
def _pm(bits: np.ndarray) -> np.ndarray:
    """0/1 -> -1/+1 as int64."""
    return 2 * np.asarray(bits, np.int64) - 1


def _patch(a: np.ndarray, y: int, x: int, k: int, p: int) -> np.ndarray:
    """Bit (ky*k + kx)*C + c = a[y+ky-p][x+kx-p][c], 0 in the padding (docs/FORMAT.md)."""
    h, w, c = a.shape
    out = np.zeros(k * k * c, np.int64)
    for ky in range(k):
        for kx in range(k):
            yy, xx = y + ky - p, x + kx - p
            if 0 <= yy < h and 0 <= xx < w:
                out[(ky * k + kx) * c : (ky * k + kx + 1) * c] = a[yy, xx]
    return out


def reference_scores(m: Model, x: np.ndarray, skip_plane: int | None = None) -> np.ndarray:
    """Scores of one uint8 sample, position by position. ``skip_plane``: leave that kept
    plane's term out of the first layer (in the original 2^(n - low) units)."""
    low = kept_planes(m.plane_mask)[-1]
    planes = [n for n in kept_planes(m.plane_mask) if n != skip_plane]
    specs = m.layer_specs
    total = np.zeros(m.n_classes, np.int64)
    for b, blk in enumerate(m.blocks):
        act = None  # +-1 dense activations, or a 0/1 map (H, W, C)
        for layer, ly in enumerate(specs):
            w = _pm(m.sign_weights(b, layer))  # (out, segments * N)
            g = m.geometry()[layer]
            def seg(n: int, w=w, g=g) -> np.ndarray:  # row segment of kept plane n (mode 1), or the row
                at = g.n_in * kept_planes(m.plane_mask).index(n) if g.segments > 1 else 0
                return w[:, at : at + g.n_in]

            hidden = layer < m.n_layers - 1
            if ly.kind == CONV:
                h, wd, _ = g.in_map
                h1, w1 = g.conv_hw
                if layer == 0:
                    maps = {n: ((x.astype(np.int64) >> n) & 1).reshape(m.in_shape) for n in planes}
                s = np.zeros((h1, w1, ly.size), np.int64)
                for y in range(h1):
                    for xx in range(w1):
                        if layer == 0:
                            s[y, xx] = sum((1 << (n - low)) * (seg(n) @ _pm(_patch(maps[n], y, xx, ly.kernel, ly.pad)))
                                           for n in planes)  # fmt: skip
                        else:
                            s[y, xx] = w @ _pm(_patch(act, y, xx, ly.kernel, ly.pad))
                t, f = blk.thresholds[layer].astype(np.int64), blk.flips[layer]
                if ly.pool == POOL_2X2:  # eBNN order: max of four s when flip 0, min when flip 1
                    quads = s.reshape(h1 // 2, 2, w1 // 2, 2, -1)
                    best = np.where(f, quads.min(axis=(1, 3)), quads.max(axis=(1, 3)))
                    act = (best >= t) ^ f
                else:
                    act = (s >= t) ^ f
                continue
            if act is not None and act.ndim == 3:
                act = _pm(act.reshape(-1))  # flatten in (y, x, c) order
            if layer == 0:
                s = sum((1 << (n - low)) * (seg(n) @ _pm((x.astype(np.int64) >> n) & 1)) for n in planes)
            else:
                s = w @ act
            if hidden:
                act = _pm((s >= blk.thresholds[layer]) ^ blk.flips[layer])
            else:
                total += blk.scale.astype(np.int64) * s + blk.offset
    return total


# --- twin == reference ------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_twin_equals_the_naive_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    seen = set()
    for i in range(8):
        m = pack.from_bytes(pack.to_bytes(random_conv_model(rng, conv=i % 4 != 3)))
        seen.add((m.has_conv, m.input_mode, any(ly.pool for ly in m.layer_specs)))
        x = random_inputs(rng, m.n_inputs, 3)
        got = twin.scores_u8(m, x)
        want = np.stack([reference_scores(m, xi) for xi in x])
        assert np.array_equal(got, want), (seed, i, m.layer_specs, m.in_shape, m.input_mode)
    assert len(seen) >= 2


def test_reference_catches_a_wrong_pool_order():
    # The pool is the OR of four thresholded bits, which eBNN computes as the max (min
    # with a flip) of four sums: a model whose flips are set tells OR from AND.
    rng = np.random.default_rng(5)
    m = random_conv_model(rng, in_shape=(4, 4, 1), n_conv=1, plane_mask=0x80, n_blocks=1, input_mode=0)
    while not m.layer_specs[0].pool:
        m = random_conv_model(rng, in_shape=(4, 4, 1), n_conv=1, plane_mask=0x80, n_blocks=1, input_mode=0)
    x = random_inputs(rng, m.n_inputs, 40)
    want = np.stack([reference_scores(m, xi) for xi in x])
    assert np.array_equal(twin.scores_u8(m, x), want)
    m.blocks[0].flips[0] = ~m.blocks[0].flips[0]  # flipped bits: min instead of max
    assert np.array_equal(twin.scores_u8(m, x), np.stack([reference_scores(m, xi) for xi in x]))


# --- mode 1 identities -------------------------------------------------------------------
def _as_mode1(m: Model) -> Model:
    """The same model with layer 0's rows repeated once per kept plane (input mode 1)."""
    weights = [np.tile(m.sign_weights(0, 0), (1, m.k_planes))] + [m.sign_weights(0, i) for i in range(1, m.n_layers)]
    blk = m.blocks[0]
    return Model.plain(m.n_inputs, m.plane_mask, weights, blk.thresholds, blk.flips, blk.scale, blk.offset,
                       layers=m.layer_specs, in_shape=m.in_shape, input_mode=INPUT_PER_PLANE)  # fmt: skip


def _dense_mode0(rng: np.random.Generator) -> Model:
    """A random dense model in input mode 0 (layer 0 keeps plane 0's segment of a mode 1 one)."""
    m = random_conv_model(rng, n_blocks=1, conv=False)
    blk = m.blocks[0]
    weights = [m.sign_weights(0, i)[:, : m.geometry()[i].n_in] for i in range(m.n_layers)]
    return Model.plain(m.n_inputs, m.plane_mask, weights, blk.thresholds, blk.flips, blk.scale, blk.offset)


@pytest.mark.parametrize("conv", [True, False])
def test_mode1_with_equal_segments_scores_as_mode0(rng, conv):
    for _ in range(6):
        m0 = random_conv_model(rng, input_mode=INPUT_SHARED, n_blocks=1) if conv else _dense_mode0(rng)
        assert pack.to_bytes(m0)[4] == (3 if conv else 2)  # a dense mode 0 model stays version 2
        m1 = _as_mode1(m0)
        data = pack.to_bytes(m1)
        assert data[4] == 3 and data[18] == INPUT_PER_PLANE
        x = random_inputs(rng, m0.n_inputs, 20)
        assert np.array_equal(twin.scores_u8(pack.from_bytes(data), x), twin.scores_u8(m0, x))


def _drop_plane(m: Model, n: int) -> Model:
    """docs/FORMAT.md, Version 3: drop plane n's segment; if low rises by d, thresholds
    ceil(t / 2^d) (and scale * 2^d when the first layer is the output layer)."""
    kept = kept_planes(m.plane_mask)
    i = kept.index(n)
    g = m.geometry()[0]
    mask = m.plane_mask & ~(1 << n)
    d = kept_planes(mask)[-1] - kept[-1]
    blk = m.blocks[0]
    w0 = m.sign_weights(0, 0)
    w0 = np.delete(w0, np.s_[i * g.n_in : (i + 1) * g.n_in], axis=1)
    weights = [w0] + [m.sign_weights(0, j) for j in range(1, m.n_layers)]
    thr = [t.copy() for t in blk.thresholds]
    scale = blk.scale.copy()
    if m.n_layers > 1:
        thr[0] = (-((-thr[0].astype(np.int64)) >> d)).astype(np.int32)  # ceil(t / 2^d)
    else:
        scale = scale << d
    return Model.plain(m.n_inputs, mask, weights, thr, blk.flips, scale, blk.offset, layers=m.layer_specs,
                       in_shape=m.in_shape, input_mode=INPUT_PER_PLANE)  # fmt: skip


@pytest.mark.parametrize("which", ["lowest", "other"])
def test_removing_a_plane_of_a_mode1_model_is_exact(rng, which):
    # the pruned file scores exactly as the reference with that plane's term left out
    checked_d = 0
    for i in range(10):
        mask = 0
        while bin(mask).count("1") < 2:
            mask = int(rng.integers(1, 256))
        m = random_conv_model(rng, input_mode=INPUT_PER_PLANE, plane_mask=mask, n_blocks=1, conv=i % 3 != 0,
                              n_hidden=0 if i % 5 == 4 else None)  # fmt: skip
        kept = kept_planes(mask)
        n = kept[-1] if which == "lowest" else kept[int(rng.integers(0, len(kept) - 1))]
        pruned = pack.from_bytes(pack.to_bytes(_drop_plane(m, n)))
        checked_d += kept_planes(pruned.plane_mask)[-1] - kept[-1]
        x = random_inputs(rng, m.n_inputs, 6)
        want = np.stack([reference_scores(m, xi, skip_plane=n) for xi in x])
        assert np.array_equal(twin.scores_u8(pruned, x), want), (i, n, mask)
    if which == "lowest":
        assert checked_d > 0  # low rose: the ceil(t / 2^d) rule was exercised


def test_removal_rule_is_not_floor():
    # Rounding the threshold down instead of up changes some output bits: the rule is tight.
    rng = np.random.default_rng(11)
    wrong = 0
    for _ in range(20):
        m = random_conv_model(rng, input_mode=INPUT_PER_PLANE, plane_mask=0b11, n_blocks=1, conv=False, n_hidden=1)
        pruned = _drop_plane(m, 0)
        blk = pruned.blocks[0]
        floor = m.blocks[0].thresholds[0] >> 1
        bad = Model.plain(pruned.n_inputs, pruned.plane_mask, [pruned.sign_weights(0, j) for j in range(2)],
                          [floor], blk.flips, blk.scale, blk.offset, input_mode=INPUT_PER_PLANE)  # fmt: skip
        x = random_inputs(rng, m.n_inputs, 30)
        want = np.stack([reference_scores(m, xi, skip_plane=0) for xi in x])
        assert np.array_equal(twin.scores_u8(pruned, x), want)
        wrong += not np.array_equal(twin.scores_u8(bad, x), want)
    assert wrong > 0


# --- scale ---------------------------------------------------------------------------------
def test_mnist_cnn_10000_images_chunked(rng):
    # conv 32 + pool, conv 64 + pool, dense 128, 10 over 10,000 28x28 images: bounded
    # temporaries (chunks of whole images), the same scores chunked as one by one.
    m = mnist_cnn(rng, plane_mask=0x80)
    x = rng.integers(0, 256, (10_000, 784), dtype=np.uint8)
    s = twin.scores_u8(m, x)
    assert s.shape == (10_000, 10)
    few = x[[0, 4_321, 9_999]]
    assert np.array_equal(np.stack([twin.scores_u8(m, xi[None])[0] for xi in few]), s[[0, 4_321, 9_999]])
    assert np.array_equal(reference_scores(m, x[4_321]), s[4_321])
