"""The C core on version 3 models (conv layers, the fused 2x2 pool, input mode 1) against
the numpy twin and the Python reader: random models of tests/support/randconv.py through
ctypes (the host build: conv positions 16 at a time) and through the ASan/UBSan harness,
built as is and with -DRBNN_NO_TILE (the one-patch path microcontrollers run)."""

from __future__ import annotations

import numpy as np
import pytest
from test_ccore import harness_check, harness_scores, py_check
from test_fallback import crafted_v3_files, fix_crc, fuzzed_files, version3_models

from rbnn.engines import ccore, twin
from rbnn.errors import NAMES, FormatError
from rbnn.format import checks, pack
from rbnn.format.bits import words
from rbnn.format.model import CONV, Layer, pack_input
from rbnn.learn.step import UNTRAINABLE, StepError
from support import charness
from support.randconv import mnist_cnn, random_conv_model, random_inputs


@pytest.fixture(scope="module", params=["tiled", "one-patch"])
def conv_harness(request, tmp_path_factory):
    """The sanitized harness, with the host's tiled conv path and without it."""
    defines = () if request.param == "tiled" else ("RBNN_NO_TILE",)
    return charness.build(tmp_path_factory.mktemp("convh") / "rbnn_harness", defines)


def _corners(rng: np.random.Generator) -> list:
    """Shapes random draws rarely reach: a 3x3 kernel over one channel and one plane
    (one-word patches, finished channel by channel on microcontrollers), more than 256
    output channels (the one-patch
    path's channel chunks, re-gathering the four pooled patches), interleaved patches too
    big for the host's tile buffer (the host falls back to one patch), 1x1 maps, a kernel
    as large as the map, input mode 1 over four planes, a channel count a multiple of 32
    (the word-aligned gather)."""
    return [
        random_conv_model(rng, in_shape=(6, 8, 1), layers=[Layer.conv(40, 3, 1, pool=True), Layer(5)],
                          plane_mask=0x80, input_mode=0, n_blocks=2),  # one-word patches, pooled
        random_conv_model(rng, in_shape=(4, 6, 1), layers=[Layer.conv(300, 3, 1, pool=True), Layer(5)],
                          plane_mask=0x81, input_mode=0, n_blocks=1),
        random_conv_model(rng, in_shape=(3, 3, 240), layers=[Layer.conv(9, 3, 1), Layer(4)],
                          plane_mask=0xF0, input_mode=1, n_blocks=1),
        random_conv_model(rng, in_shape=(1, 1, 3), layers=[Layer.conv(7, 1, 0), Layer.conv(5, 3, 1), Layer(2)]),
        random_conv_model(rng, in_shape=(5, 7, 2), layers=[Layer.conv(6, 5, 0), Layer(3)], plane_mask=0x0F,
                          input_mode=1),
        random_conv_model(rng, in_shape=(8, 8, 32), layers=[Layer.conv(64, 3, 1, pool=True),
                                                           Layer.conv(32, 3, 1, pool=True), Layer(33), Layer(10)]),
    ]  # fmt: skip


def _models(rng: np.random.Generator, n: int) -> list:
    """n random version 3 models: conv stacks (modes 0 and 1) and, one in six, dense
    models in input mode 1."""
    return [random_conv_model(rng, conv=i % 6 != 5) for i in range(n)]


def test_random_conv_models_match_twin(rng):
    """Scores, classes, the single-sample entry point and the RAM figure of 80 random
    models (kernels 1-5, channels mostly not multiples of 32, odd maps, pools, 1-4 planes,
    modes 0 and 1, 1-3 blocks)."""
    models = _corners(rng) + _models(rng, 75)
    kinds = set()
    for m in models:
        data = pack.to_bytes(m)
        cm = ccore.CModel(data)
        x = random_inputs(rng, m.n_inputs, 6)
        xb = pack_input(x, m.plane_mask)
        want = twin.scores(m, xb)
        np.testing.assert_array_equal(cm.scores(xb), want)
        np.testing.assert_array_equal(cm.predict(xb), twin.predict(m, xb))
        rc, one = cm.infer_one(xb[2])
        assert rc == int(np.argmax(want[2])) and np.array_equal(one, want[2])
        assert cm.ram_bytes == sum(m.ram_bytes().values())
        assert cm.input_words == m.k_planes * words(m.n_inputs)
        kinds.add((m.has_conv, m.input_mode, any(ly.pool for ly in m.layer_specs)))
    assert kinds >= {(True, 0, True), (True, 1, True), (True, 0, False), (True, 1, False), (False, 1, False)}


def test_mnist_cnn_matches_twin_and_fits_4_kb(rng):
    """The CNN of issue 9 (28x28: conv 32 + pool, conv 64 + pool, 128, 10) in both input
    modes: the twin's scores, and the RAM of docs/FORMAT.md (Version 3: Memory)."""
    for mask, mode in [(0x80, 0), (0xC0, 1)]:
        m = mnist_cnn(rng, plane_mask=mask, input_mode=mode)
        cm = ccore.CModel(pack.to_bytes(m))
        xb = pack_input(random_inputs(rng, 784, 20), mask)
        np.testing.assert_array_equal(cm.scores(xb), twin.scores(m, xb))
        assert cm.ram_bytes == sum(m.ram_bytes().values()) <= 4096
    # input 4 * 25, maps 2 * 4 * words(14 * 14 * 32), patch 4 * words(288), scores 4 * 10
    assert ccore.CModel(pack.to_bytes(mnist_cnn(rng))).ram_bytes == 100 + 1568 + 36 + 40


def test_sanitized_conv_inference(conv_harness, tmp_path, rng):
    """ASan/UBSan, tiled and one-patch builds: packed inputs and raw features (the core's
    rbnn_pack_u8), rbnn_infer and rbnn_infer_batch (the harness checks they agree)."""
    for i, m in enumerate(_corners(rng)[:4] + _models(rng, 12)):
        data = pack.to_bytes(m)
        x = random_inputs(rng, m.n_inputs, 5)
        xb = pack_input(x, m.plane_mask)
        cls, got = harness_scores(conv_harness, tmp_path, data, x if i % 2 else xb, raw=bool(i % 2))
        np.testing.assert_array_equal(got, twin.scores(m, xb))
        np.testing.assert_array_equal(cls, twin.predict(m, xb))


def test_input_padding_rejected_on_conv_models(rng):
    m = random_conv_model(rng, in_shape=(5, 7, 1), plane_mask=0x88)  # 35 inputs: 29 padding bits
    cm = ccore.CModel(pack.to_bytes(m))
    xb = pack_input(random_inputs(rng, 35, 3), 0x88)
    bad = xb.copy()
    bad[1, 1, -1] |= np.uint32(1 << 3)  # bit 35 of plane 1
    with pytest.raises(FormatError) as e:
        cm.scores(bad)
    assert e.value.code == "E_INPUT"
    assert cm.infer_one(bad[1])[0] == NAMES["E_INPUT"]  # the C check itself
    assert cm.infer_one(xb[1])[0] >= 0


# --- bad files ------------------------------------------------------------------------------
def _v3_corpus(rng: np.random.Generator) -> list[bytes]:
    """Every version 3 rule broken once (test_fallback.crafted_v3_files), truncations and
    corruptions of two version 3 models, and a few random models' files."""
    conv, dense = version3_models(rng)
    files = crafted_v3_files(conv, dense)
    for m in (conv, dense):
        lay = pack.model_layout(m)
        files += fuzzed_files(rng, pack.to_bytes(m), lay["arena_offset"], 7, lay["train_offset"])
    files += [pack.to_bytes(m) for m in _models(rng, 6)]
    return files


def test_bad_v3_files_same_verdict_and_words_as_python(conv_harness, tmp_path, rng):
    """Code, offset and message of the Python reader, the C core and its sanitized build
    (no report) on every file; every version 3 check is among them."""
    files = _v3_corpus(rng)
    texts: list[str] = []
    got = harness_check(conv_harness, tmp_path, files, texts)
    seen = set()
    for i, data in enumerate(files):
        want = py_check(data)
        assert ccore.validate(data) == want == got[i], f"file {i}"
        try:
            pack.from_bytes(data)
            line = None
        except FormatError as e:
            line = checks.text(e.code, e.offset, e.field, e.expected, e.found)
            seen.add((e.code, e.field.split(".")[-1].split("[")[0]))
        assert ccore.error_text(data) == line == (texts[i] or None), f"file {i}"
    fields = {f for _, f in seen}
    assert {"kind", "kernel", "pad", "pool", "reserved", "in_h", "in_w", "in_c", "in_h x in_w x in_c",
            "grow_left", "state", "input_mode"} <= fields, fields  # fmt: skip


def test_conv_shape_errors_name_the_layer(rng):
    """The acceptance's bad input: shapes that do not chain, a pool on an odd map."""
    conv, _ = version3_models(rng)
    data = bytearray(pack.to_bytes(conv))
    e1 = 64 + 8 * 1  # layer 1: conv 4, 3x3 pad 0 on the pooled 3x3 map
    fit = bytes(data)
    fit = fit[:e1 + 3] + bytes([5]) + fit[e1 + 4:]  # a 5x5 kernel does not fit 3x3 + 0
    pool = fit[:e1 + 3] + bytes([3, 1, 2]) + fit[e1 + 6:]  # pad 1, pool on the 3x3 output
    for broken, want in [(fit, "layer[1].kernel: expected <= 3 (the 3x3 input map with its pad), found 5"),
                         (pool, "layer[1].pool: expected 0 (the 3x3 conv output is not even), found 2")]:
        b = fix_crc(bytearray(broken))
        assert ccore.error_text(b) == f"E_HEADER at offset {e1 + (3 if 'kernel' in want else 5)}: {want}"
        assert py_check(b) == ccore.validate(b)


# --- training entry points ------------------------------------------------------------------
def test_training_a_v3_model_is_e_full_and_changes_nothing(rng):
    """rbnn_train_step, rbnn_train_batch, rbnn_new_block and rbnn_freeze on version 3
    files (conv, and dense in input mode 1): E_FULL with the twin's words, even for a bad
    label (the twin refuses the model first), the bytes unchanged."""
    for m in version3_models(rng):
        data = pack.to_bytes(m)
        tr = ccore.CTrainer(data)
        assert tr.scratch_bytes == 0  # rbnn_train_scratch_bytes: nothing to train
        x = pack_input(random_inputs(rng, m.n_inputs, 2), m.plane_mask)
        calls = [(tr.step, (x[0], 0)), (tr.step, (x[0], 99)), (tr.steps, (x, [0, 1])), (tr.new_block, ()),
                 (tr.freeze, ())]  # fmt: skip
        for fn, args in calls:
            with pytest.raises(StepError) as e:
                fn(*args)
            assert e.value.code == "E_FULL" and UNTRAINABLE in str(e.value)
        assert tr.data() == data
        assert any(ly.kind == CONV for ly in m.layer_specs) or m.input_mode == 1


def test_input_mode_1_dense_models_in_batch_tiles(rng):
    """Dense models in input mode 1 run rbnn_infer_batch's tiles (one segment per plane
    per row): the twin's scores for every tile cap and a batch that ends in a partial
    tile, wide layers (several groups of 32) among them."""
    models = [random_conv_model(rng, conv=False, in_shape=(n, 1, 1), plane_mask=mask,
                                layers=[Layer(s) for s in sizes]) for n, mask, sizes in
              [(70, 0xF0, [33, 10]), (300, 0x81, [70, 40, 5]), (31, 0x3C, [7])]]  # fmt: skip
    old = ccore.set_batch_tile(16)
    try:
        for m in models:
            cm = ccore.CModel(pack.to_bytes(m))
            xb = pack_input(random_inputs(rng, m.n_inputs, 37), m.plane_mask)
            want = twin.scores(m, xb)
            for cap in (1, 5, 16):
                ccore.set_batch_tile(cap)
                np.testing.assert_array_equal(cm.scores(xb), want)
    finally:
        ccore.set_batch_tile(old)
