"""Version 3 of the file format on the host (docs/FORMAT.md, Version 3): round trips, the
version the writer picks, and bad input: a clear FormatError with offset, field, expected
and found for a file, a clear ModelError for a model built in Python."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.errors import FormatError, ModelError
from rbnn.files import read_model
from rbnn.format import pack
from rbnn.format.model import DENSE, LIVE, Layer, Model, geometry, pack_input
from support.randconv import random_conv_model, random_inputs
from support.randmodel import random_model


def _fix(b: bytearray) -> bytes:
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def _edit(data: bytes, *edits: tuple[int, str, tuple]) -> bytes:
    b = bytearray(data)
    for off, fmt, vals in edits:
        struct.pack_into(fmt, b, off, *vals)
    return _fix(b)


def _err(data: bytes) -> tuple:
    with pytest.raises(FormatError) as e:
        pack.from_bytes(data)
    return e.value.code, e.value.offset, e.value.field, e.value.expected, e.value.found


ENTRY = lambda i: 64 + 8 * i  # noqa: E731  version 3 layer table entry i


def cnn(rng: np.random.Generator, **kw) -> Model:
    """8x8x1 -> conv 6 (3x3, pad 1, pool) -> conv 5 (3x3, pad 0) -> dense 9 -> 4."""
    layers = [Layer.conv(6, 3, 1, pool=True), Layer.conv(5, 3, 0), Layer(9), Layer(4)]
    return random_conv_model(rng, in_shape=(8, 8, 1), layers=layers, **kw)


# --- round trips and the version written --------------------------------------------------
def test_v3_round_trip_keeps_every_field(rng):
    for i in range(30):
        m = random_conv_model(rng, conv=i % 3 != 0)
        data = pack.to_bytes(m)
        back = pack.from_bytes(data)
        assert back.version == 3 and data[4:6] == b"\x03\x00"
        assert back.layer_specs == m.layer_specs and back.in_shape == m.in_shape
        assert back.input_mode == m.input_mode and back.layers is not None
        assert np.array_equal(back.arena, m.arena) and pack.to_bytes(back) == data
        x = random_inputs(rng, m.n_inputs, 4)
        assert np.array_equal(twin.scores_u8(back, x), twin.scores_u8(m, x))


def test_writer_picks_the_oldest_version(rng):
    dense = random_model(rng, n_inputs=30, sizes=[7, 3], plane_mask=0x81)
    assert pack.to_bytes(dense)[4] == 2 and dense.file_version == 2
    # a dense model spelled with Layer entries is still version 2, byte for byte
    spelled = Model.plain(30, 0x81, [dense.sign_weights(0, 0), dense.sign_weights(0, 1)],
                          dense.blocks[0].thresholds, dense.blocks[0].flips, dense.blocks[0].scale,
                          dense.blocks[0].offset, layers=[Layer(7), Layer(3)])  # fmt: skip
    assert pack.to_bytes(spelled) == pack.to_bytes(dense)
    assert cnn(rng).file_version == 3
    mode1 = random_conv_model(rng, conv=False)
    assert mode1.file_version == 3 and pack.to_bytes(mode1)[18] == 1


def test_v3_layout_and_in_shape_fields(rng):
    m = cnn(rng, input_mode=1, plane_mask=0x0B, n_blocks=1)
    data = pack.to_bytes(m)
    assert struct.unpack_from("<HHH", data, 40) == (8, 8, 1)
    assert data[18] == 1
    entries = [struct.unpack_from("<HBBBBH", data, ENTRY(i)) for i in range(4)]
    assert entries == [(6, 1, 3, 1, 2, 0), (5, 1, 3, 0, 0, 0), (9, 0, 0, 0, 0, 0), (4, 0, 0, 0, 0, 0)]
    lay = pack.model_layout(m)
    assert lay["blocks_offset"] == 64 + 32
    # plane_bytes: 3 segments of words(9) for layer 0, words(54) for layer 1, 2x2x5 = 20 in, 9 in
    assert lay["plane_bytes"] == 4 * (6 * 3 * 1 + 5 * 2 + 9 * 1 + 4 * 1)


def test_read_model_checks_the_v3_head_first(rng, tmp_path):
    data = pack.to_bytes(cnn(rng))
    p = tmp_path / "m.rbnn"
    p.write_bytes(data)
    assert read_model(p)[1].layer_specs[0].kernel == 3
    p.write_bytes(_edit(data, (ENTRY(1) + 5, "B", (2,)), (ENTRY(0) + 4, "B", (0,))) + bytes(100_000))  # odd pool
    with pytest.raises(FormatError, match=r"m.rbnn @ offset 77: E_HEADER: layer\[1\].pool"):
        read_model(p)


# --- bad files: offset, field, expected, found -------------------------------------------
def test_conv_whose_shapes_do_not_chain(rng):
    data = pack.to_bytes(cnn(rng))
    # layer 1 reads the 4x4 map with a 7x7 kernel, pad 1: 4 + 2 - 7 + 1 = 0 positions
    bad = _edit(data, (ENTRY(1) + 3, "<BB", (7, 1)))
    assert _err(bad) == ("E_HEADER", ENTRY(1) + 3, "layer[1].kernel", "<= 6 (the 4x4 input map with its pad)", "7")


def test_pool_on_an_odd_map(rng):
    data = pack.to_bytes(cnn(rng))
    # layer 0 with pad 0 gives 6x6, pooled to 3x3; layer 1 (pad 0) gives 1x1: a pool is odd
    bad = _edit(data, (ENTRY(1) + 5, "B", (2,)), (ENTRY(0) + 4, "B", (0,)))
    assert _err(bad) == ("E_HEADER", ENTRY(1) + 5, "layer[1].pool", "0 (the 1x1 conv output is not even)", "2")
    # a pool on layer 1 with pad 1: a 4x4 output pooled to 2x2, the map it had: valid
    assert pack.from_bytes(_edit(data, (ENTRY(1) + 4, "<BB", (1, 2)))).layer_specs[1] == Layer.conv(5, 3, 1, True)


def test_conv_after_dense_and_output_conv(rng):
    data = pack.to_bytes(cnn(rng))
    bad = _edit(data, (ENTRY(3) + 2, "<BBBB", (1, 1, 0, 0)))
    assert _err(bad) == ("E_HEADER", ENTRY(3) + 2, "layer[3].kind", "0 (no conv layer after a dense layer)", "1")
    bad = _edit(data, (ENTRY(2) + 2, "<BBBB", (1, 1, 0, 0)), (ENTRY(3) + 2, "<BBBB", (1, 1, 0, 0)))
    assert _err(bad) == ("E_HEADER", ENTRY(3) + 2, "layer[3].kind", "0 (the output layer is dense)", "1")


def test_in_shape_mismatch(rng):
    data = pack.to_bytes(cnn(rng))
    assert _err(_edit(data, (40, "<HHH", (8, 9, 1)))) == (
        "E_HEADER", 40, "in_h x in_w x in_c", "64 (n_inputs)", "8x9x1")  # fmt: skip
    assert _err(_edit(data, (42, "<H", (0,)))) == ("E_HEADER", 42, "in_w", "1..65535 (a conv layer)", "0")
    dense = pack.to_bytes(random_conv_model(rng, conv=False))
    assert _err(_edit(dense, (44, "<H", (3,)))) == ("E_HEADER", 44, "in_c", "0 (no conv layer)", "3")


def test_layer_entry_fields(rng):
    data = pack.to_bytes(cnn(rng))
    cases = [
        ((ENTRY(0) + 2, "B", (3,)), ("E_HEADER", ENTRY(0) + 2, "layer[0].kind", "0 (dense) or 1 (conv)", "3")),
        ((ENTRY(0) + 3, "B", (2,)), ("E_HEADER", ENTRY(0) + 3, "layer[0].kernel", "odd, 1..15 (conv)", "2")),
        ((ENTRY(0) + 4, "B", (2,)), ("E_HEADER", ENTRY(0) + 4, "layer[0].pad", "0..1 (kernel / 2)", "2")),
        ((ENTRY(0) + 5, "B", (4,)), ("E_HEADER", ENTRY(0) + 5, "layer[0].pool", "0 or 2 (conv)", "4")),
        ((ENTRY(2) + 3, "B", (1,)), ("E_HEADER", ENTRY(2) + 3, "layer[2].kernel", "0 (dense)", "1")),
        ((ENTRY(2) + 6, "<H", (9,)), ("E_FLAGS", ENTRY(2) + 6, "layer[2].reserved", "0", "9")),
        ((47, "B", (1,)), ("E_FLAGS", 47, "reserved header byte 47", "0", "1")),
        ((18, "B", (2,)), ("E_HEADER", 18, "input_mode", "0..1", "2")),
    ]
    for edit, want in cases:
        assert _err(_edit(data, edit)) == want


def test_weight_padding_per_segment(rng):
    # input mode 1: each plane's segment of a layer 0 row has its own padded last word
    m = random_conv_model(rng, in_shape=(40, 1, 1), input_mode=1, plane_mask=0x07, n_blocks=1, conv=False,
                          layers=[Layer(3), Layer(2)])  # fmt: skip
    data = pack.to_bytes(m)
    ao = pack.model_layout(m)["arena_offset"]
    # row 1 = words 6..11 (3 segments of 2 words); segment 2's last word is word 11
    b = bytearray(data)
    struct.pack_into("<I", b, ao + 4 * 11, struct.unpack_from("<I", b, ao + 4 * 11)[0] | 1 << 20)
    assert _err(_fix(b)) == ("E_PADDING", ao + 44, "plane 0 layer 0 row 1 padding", "0", "0x00100000")


def test_v3_has_no_live_block_and_no_schedule(rng):
    m = cnn(rng, n_blocks=1)
    m.max_blocks = 2
    data = pack.to_bytes(m)
    lay = pack.model_layout(m)
    assert _err(_edit(data, (lay["train_offset"] + 41, "B", (1,)))) == (
        "E_TRAIN", lay["train_offset"] + 41, "train.grow_left", "0 (a version 3 model is not trained)", "1")  # fmt: skip
    m.blocks[0].flips = [np.zeros_like(f) for f in m.blocks[0].flips]
    m.blocks[0].scale[:] = 0
    m.blocks[0].offset[:] = 0
    live = _edit(pack.to_bytes(m), (lay["blocks_offset"], "B", (LIVE,)))
    assert _err(live) == ("E_TRAIN", lay["blocks_offset"], "block[0].state",
                          "0 (a version 3 model has no live block)", "1")  # fmt: skip
    # the writer says so before the reader would
    m.blocks[0].state = LIVE
    with pytest.raises(ModelError, match="no live block"):
        pack.to_bytes(m)
    m.blocks[0].state = 0
    m.state().grow_left = 1
    with pytest.raises(ModelError, match="grow_left"):
        pack.to_bytes(m)


# --- models built in Python: ModelError -----------------------------------------------------
@pytest.mark.parametrize(
    "layers, in_shape, words",
    [
        ([Layer(4), Layer.conv(3), Layer(2)], (4, 4, 1), "after a dense layer"),
        ([Layer.conv(3), Layer(2)], None, "without an input shape"),
        ([Layer.conv(3, 4), Layer(2)], (4, 4, 1), "kernel must be odd"),
        ([Layer.conv(3, 3, 2), Layer(2)], (4, 4, 1), "pad must be 0..1"),
        ([Layer.conv(3, 5, 0), Layer(2)], (3, 3, 1), "does not fit a 3x3 map"),
        ([Layer.conv(3, 3, 1, pool=True), Layer(2)], (5, 4, 1), "2x2 pool needs an even map, got 5x4"),
        ([Layer.conv(3), Layer.conv(2)], (4, 4, 1), "output layer must be dense"),
        ([Layer(3, 7), Layer(2)], (4, 4, 1), "kind must be"),
    ],
)
def test_geometry_says_what_is_wrong(layers, in_shape, words):
    with pytest.raises(ModelError, match=words):
        geometry(16, layers, in_shape, 1, 0)


def test_plain_refuses_wrong_widths_and_sizes():
    layers = [Layer.conv(3, 3, 1), Layer(2)]
    with pytest.raises(ModelError, match=r"do not chain, expected \[9, 48\]"):
        Model.plain(16, 0x80, [np.ones((3, 16)), np.ones((2, 48))], [np.zeros(3)], [np.zeros(3, bool)],
                    np.ones(2), np.zeros(2), layers=layers, in_shape=(4, 4, 1))  # fmt: skip
    with pytest.raises(ModelError, match="differ from the weights"):
        Model.plain(16, 0x80, [np.ones((4, 9)), np.ones((2, 64))], [np.zeros(4)], [np.zeros(4, bool)],
                    np.ones(2), np.zeros(2), layers=layers, in_shape=(4, 4, 1))  # fmt: skip
    assert geometry(16, [Layer(2)], None, 2, 1)[0].segments == 2 and Layer(2).kind == DENSE


# --- rbnn summary and rbnn eval on a version 3 file -----------------------------------------
def test_summary_of_a_cnn(rng, tmp_path, capsys):
    from rbnn.cli import main
    from rbnn.format.summary import rows
    from support.randconv import mnist_cnn

    m = mnist_cnn(rng, plane_mask=0xC0)
    r = rows(m)
    # conv 0: 28x28 positions x 3*3*1 x 32 channels x 2 planes; conv 1: 14x14 x 3*3*32 x 64
    assert [x["macs1"] for x in r] == [784 * 9 * 32 * 2, 196 * 288 * 64, 3136 * 128, 128 * 10]
    assert [x["map_bits"] for x in r] == [14 * 14 * 32, 7 * 7 * 64, 128, 0]
    assert [x["bits1"] for x in r] == [9 * 32, 288 * 64, 3136 * 128, 1280]
    # eBNN order: input 2 planes x 25 words, maps 2 x words(6272), one patch of 9 words
    assert m.ram_bytes() == {"input": 200, "activations": 1568, "patch": 36, "scores": 40}
    p = tmp_path / "cnn.rbnn"
    size = pack.save(m, p)
    assert main(["summary", str(p)]) == 0
    out = capsys.readouterr().out
    assert "layers 28x28x1-conv3x3:32/pool-conv3x3:64/pool-128-10" in out
    assert "| conv_0        | 2x1b  | 28x28x1->14x14x32 | 3x3 p1 pool 2x2 |" in out
    assert "inference RAM: 1,844 bytes (input 200, activations 1568, patch 36, scores 40)" in out
    assert "training: none" in out and f"file: {size:,} bytes" in out and "format version 3" in out


def test_summary_of_a_mode1_dense_model(rng):
    from rbnn.format.summary import summary

    m = random_conv_model(rng, in_shape=(40, 1, 1), input_mode=1, plane_mask=0x07, n_blocks=1, conv=False,
                          layers=[Layer(3), Layer(2)])  # fmt: skip
    text = summary(m)
    assert "input mode 1" in text and "| dense_0       | 3x1b/own | 40->3 |" in text
    assert "|     360 |" in text  # 3 segments of 40 weights, 3 rows


def test_eval_twin_on_a_v3_file(rng, tmp_path, capsys):
    from rbnn.cli import main
    from rbnn.data.plain import write_npz

    m = cnn(rng, n_blocks=2)
    p = tmp_path / "c.rbnn"
    pack.save(m, p)
    x = random_inputs(rng, m.n_inputs, 60)
    pred = twin.predict(m, pack_input(x, m.plane_mask))
    y = pred.copy()
    y[:15] = (y[:15] + 1) % m.n_classes  # 45 of 60 right
    write_npz(tmp_path / "t.npz", x, y.astype(np.uint8), m.n_classes)
    assert main(["eval", str(p), "--data", str(tmp_path / "t.npz"), "--engine", "twin"]) == 0
    assert "accuracy: 0.7500 (45/60)" in capsys.readouterr().out
