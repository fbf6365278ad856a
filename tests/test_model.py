"""Input bit-slicing and the integer model's shapes (docs/FORMAT.md, Inputs and Memory)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.format import model
from rbnn.format.bits import pack_bits, unpack_bits, words
from rbnn.format.model import Block, Model
from support.randmodel import random_model


def test_pack_input_layout(rng):
    x = rng.integers(0, 256, (3, 70), dtype=np.uint8)
    xb = model.pack_input(x, 0b1010_0001)  # planes 7, 5, 0 in that order
    assert xb.shape == (3, 3, words(70)) and xb.dtype == np.uint32
    for k, n in enumerate([7, 5, 0]):
        np.testing.assert_array_equal(unpack_bits(xb[:, k], 70), (x >> n) & 1 == 1)
    # padding bits of the last word are zero
    assert not np.any(xb[..., -1] >> np.uint32(70 % 32))


def test_msb_plane_is_threshold_128():
    x = np.arange(256, dtype=np.uint8)
    bits = unpack_bits(model.pack_input(x, 0x80)[0], 256)
    np.testing.assert_array_equal(bits, x >= 128)


@pytest.mark.parametrize("mask", [0x80, 0xC0, 0xF0, 0xFF, 0x81, 0x24])
def test_first_layer_equals_input_values_dot(rng, mask):
    # A one-layer model with scale 1, offset 0 exposes s: it must equal the dot product
    # of input_values with the +-1 weights, which is what training uses.
    n_in, n_out = 45, 6
    w = rng.random((n_out, n_in)) < 0.5
    m = Model.plain(n_in, mask, [w], [], [], np.ones(n_out), np.zeros(n_out))
    x = rng.integers(0, 256, (9, n_in), dtype=np.uint8)
    s = twin.scores_u8(m, x)
    expect = model.input_values(x, mask).astype(np.int64) @ np.where(w, 1, -1).T
    np.testing.assert_array_equal(s, expect)


def test_plane_shifts_and_ram():
    assert model.plane_shifts(0xC0) == [1, 0]
    assert model.plane_shifts(0x81) == [7, 0]
    m = random_model(np.random.default_rng(0), 784, [256, 256, 10], 0x80)
    assert m.ram_bytes() == {"input": 100, "activations": 64, "scores": 40}
    assert m.weights_per_block == 784 * 256 + 256 * 256 + 256 * 10


def test_plain_rejects_unchained_widths():
    with pytest.raises(ValueError, match="do not chain"):
        Model.plain(10, 0x80, [np.ones((4, 10)), np.ones((3, 5))], [np.zeros(4)], [np.zeros(4, bool)],
                    np.ones(3), np.zeros(3))  # fmt: skip


def test_sign_weights_round_trip(rng):
    ws = [rng.random((7, 33)) < 0.5, rng.random((3, 7)) < 0.5]
    m = Model.plain(33, 0x80, ws, [np.zeros(7)], [np.zeros(7, bool)], np.ones(3), np.zeros(3))
    for layer, w in enumerate(ws):
        np.testing.assert_array_equal(m.sign_weights(0, layer), w)


def test_blocks_scores_add(rng):
    # Two blocks give the sum of the two single-block models' scores.
    m = random_model(rng, 50, [20, 4], 0xC0, n_blocks=2)
    x = rng.integers(0, 256, (5, 50), dtype=np.uint8)
    parts = []
    for b in range(2):
        blk = m.blocks[b]
        single = Model(m.n_inputs, m.plane_mask, m.sizes, m.arena[b : b + 1].copy(),
                       [Block(blk.state, [0], blk.thresholds, blk.flips, blk.scale, blk.offset)])  # fmt: skip
        parts.append(twin.scores_u8(single, x).astype(np.int64))
    np.testing.assert_array_equal(twin.scores_u8(m, x), parts[0] + parts[1])


def test_twin_rejects_wrong_input_shape(rng):
    m = random_model(rng, 40, [5], 0x80)
    with pytest.raises(ValueError, match=r"shape \(n, 1, 2\)"):
        twin.scores(m, np.zeros((2, 2, 2), np.uint32))


def test_pack_bits_inverse(rng):
    for n in [1, 31, 32, 33, 64, 100]:
        b = rng.random((4, n)) < 0.5
        np.testing.assert_array_equal(unpack_bits(pack_bits(b), n), b)


def test_bad_models_and_inputs_are_rbnn_errors(rng):
    """What a caller can get wrong is an RbnnError (the CLI prints it as one line), still a
    ValueError for code that catches that."""
    from rbnn.engines import scorer
    from rbnn.engines.ccore import CModel
    from rbnn.errors import ModelError, RbnnError
    from rbnn.format import pack
    from rbnn.train import fold

    m = random_model(rng, 40, [5, 3], 0x80)
    data = pack.to_bytes(m)
    cases = [
        (lambda: model.pack_input(np.zeros((1, 40), np.float32), 0x80), "features must be uint8"),
        (lambda: scorer("gpu", data), "unknown engine 'gpu'"),
        (lambda: twin.scores(m, np.zeros((2, 2, 2), np.uint32)), "packed input must have shape"),
        (lambda: CModel(data).scores(np.zeros((2, 2, 2), np.uint32)), "packed input must have shape"),
        (lambda: CModel(data).pack_u8(np.zeros(39, np.uint8)), "features must be uint8 (40,)"),
        (lambda: fold.fold_hidden(np.zeros(2), np.full(2, np.nan), np.ones(2), np.zeros(2), 1e-4, 10),
         "BatchNorm var: 2 values are not finite"),
        (lambda: Model.plain(10, 0x80, [np.ones(3)], [], [], np.ones(3), np.zeros(3)), "weights must be 2-D"),
    ]
    for call, text in cases:
        with pytest.raises(ModelError, match=re.escape(text)) as e:
            call()
        assert isinstance(e.value, RbnnError) and isinstance(e.value, ValueError)
    m.sizes = [3] * 9
    with pytest.raises(ModelError, match="n_layers must be 1..8"):
        pack.to_bytes(m)


# Raises of Python's own errors left in the host package, each a bug if ever reached (an
# internal check), not something a caller can cause.
INTERNAL_RAISES = {
    "engines/twin.py": ["OverflowError(\"scores left the int32 range"],
    "format/pack.py": ["ValueError(f\"internal: wrote"],
    # the device link's own checks: rbnn.device (another change converts these)
    "device/link.py": ["ValueError(f\"{name} payload of"],
    "device/frames.py": ["ValueError(f\"payload of"],
}


def test_the_host_raises_rbnn_errors_not_bare_python_ones():
    import rbnn

    root = Path(rbnn.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for line in path.read_text().splitlines():
            hit = re.search(r"raise ((?:Value|Runtime|Type|Overflow)Error\(.*)", line)
            if hit and not any(hit.group(1).startswith(ok) for ok in INTERNAL_RAISES.get(rel, [])):
                found.append(f"{rel}: {line.strip()}")
    assert found == []


def test_geometry_follows_shape_changes():
    # Model.geometry is kept between calls: a change of any shape field must show
    from rbnn.format.model import INPUT_PER_PLANE, Layer

    m = Model.plain(8, 0xC0, [np.ones((3, 16)), np.ones((2, 3))], [np.zeros(3)], [np.zeros(3, bool)],
                    np.ones(2), np.zeros(2), input_mode=INPUT_PER_PLANE)  # fmt: skip
    assert [(g.n_in, g.segments) for g in m.geometry()] == [(8, 2), (3, 1)]
    m.plane_mask = 0xE0
    assert m.geometry()[0].segments == 3
    m.sizes, m.n_inputs = [5, 2], 9
    assert [g.n_in for g in m.geometry()] == [9, 5]
    m.layers, m.in_shape, m.n_inputs = [Layer.conv(5, 3), Layer(2)], (3, 3, 1), 9
    assert m.geometry()[0].in_map == (3, 3, 1) and m.geometry()[1].n_in == 45
