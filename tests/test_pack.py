"""The Python reader and writer (rbnn.format.pack) and the twin against a slow reference that
reads the file bytes itself, straight from docs/FORMAT.md."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.errors import FormatError
from rbnn.files import FileError
from rbnn.format import pack
from rbnn.format.model import LIVE, Block, Model
from support.randmodel import random_model


def _arena_model(rng: np.random.Generator) -> Model:
    """Two blocks over 4 planes: frozen on plane 2, live on planes 0 (sign) and 3, plane 1
    free; the sign planes are not the block indices."""
    m = random_model(rng, n_inputs=70, sizes=[33, 20, 5], plane_mask=0xC0, n_blocks=2)
    other = random_model(rng, n_inputs=70, sizes=[33, 20, 5], plane_mask=0xC0, n_blocks=2)
    m.arena = np.stack([m.arena[1], other.arena[0], m.arena[0], other.arena[1]])
    m.blocks[0].planes = [2]
    m.blocks[1].state = LIVE
    m.blocks[1].planes = [0, 3]
    m.blocks[1].flips = [np.zeros_like(f) for f in m.blocks[1].flips]  # a live block's are 0
    return m


def _models(rng: np.random.Generator, n: int) -> list[Model]:
    ms = [_arena_model(rng), random_model(rng, n_inputs=64, sizes=[32, 10], plane_mask=0xFF)]
    ms += [random_model(rng, n_blocks=int(rng.integers(1, 4))) for _ in range(n - len(ms))]
    return ms


def reference_scores(data: bytes, x: np.ndarray) -> np.ndarray:
    """Scores from the file's bytes and raw uint8 features (n, N), by docs/FORMAT.md:
    weights unpacked to +-1 int64 matrices, layers as matmuls. Shares no code with
    rbnn.format.model, rbnn.format.pack or rbnn.engines.twin."""
    (_, version, _, _, _, n_layers, n_blocks, _, n_in, _, mask, plane_bytes, arena_offset,
     params_offset) = struct.unpack_from("<4sHHIBBBBHBBIII", data)  # fmt: skip
    head = 32 if version == 1 else 64
    sizes = list(struct.unpack_from(f"<{n_layers}H", data, head))
    blocks_offset = head + 4 * ((n_layers + 1) // 2)
    inputs = [n_in] + sizes[:-1]
    kept = [n for n in range(8) if mask >> n & 1]
    xi = x.astype(np.int64)
    feat = sum((2 * ((xi >> n) & 1) - 1) * 2 ** (n - kept[0]) for n in kept)

    def bits(at: int, rows: int, n: int) -> np.ndarray:
        nw = (n + 31) // 32
        raw = np.frombuffer(data, np.uint8, rows * nw * 4, at).reshape(rows, nw * 4)
        return np.unpackbits(raw, axis=1, bitorder="little")[:, :n].astype(bool)

    total = np.zeros((len(x), sizes[-1]), np.int64)
    at = params_offset
    for b in range(n_blocks):
        w_at = arena_offset + data[blocks_offset + 20 * b + 4] * plane_bytes
        a = feat
        for layer, (i, o) in enumerate(zip(inputs, sizes, strict=True)):
            w = np.where(bits(w_at, o, i), 1, -1).astype(np.int64)
            w_at += 4 * o * ((i + 31) // 32)
            s = a @ w.T
            if layer < n_layers - 1:
                thr = np.frombuffer(data, "<i4", o, at).astype(np.int64)
                flip = bits(at + 4 * o, 1, o)[0]
                at += 4 * o + 4 * ((o + 31) // 32)
                a = np.where((s >= thr) ^ flip, 1, -1)
            else:
                scale = np.frombuffer(data, "<i4", o, at).astype(np.int64)
                offset = np.frombuffer(data, "<i4", o, at + 4 * o).astype(np.int64)
                at += 8 * o
                total += scale * s + offset
    return total


def test_pack_load_pack_is_byte_identical(rng, tmp_path):
    for i, m in enumerate(_models(rng, 40)):
        data = pack.to_bytes(m)
        path = tmp_path / f"m{i}.rbnn"
        assert pack.save(m, path) == len(data) == path.stat().st_size
        assert path.read_bytes() == data
        back = pack.load(path)
        assert pack.to_bytes(back) == data
        assert (back.n_inputs, back.plane_mask, back.sizes) == (m.n_inputs, m.plane_mask, m.sizes)
        np.testing.assert_array_equal(back.arena, m.arena)
        for b0, b1 in zip(m.blocks, back.blocks, strict=True):
            assert (b0.state, list(b0.planes)) == (b1.state, list(b1.planes))
            for t0, t1, f0, f1 in zip(b0.thresholds, b1.thresholds, b0.flips, b1.flips, strict=True):
                np.testing.assert_array_equal(t0, t1)
                np.testing.assert_array_equal(f0, f1)
            np.testing.assert_array_equal(b0.scale, b1.scale)
            np.testing.assert_array_equal(b0.offset, b1.offset)


def test_file_layout_matches_the_spec(rng):
    m = _arena_model(rng)
    m.max_blocks, m.score_q = 3, 17  # one empty slot
    m.state().seed = 0xDEADBEEF
    data = pack.to_bytes(m)
    lay = pack.layout(m.n_inputs, m.sizes, 2, 4, max_blocks=3)
    head = struct.unpack_from("<4sHHIBBBBHBBIII", data)
    assert head == (b"RBNN", 2, 0, len(data), 32, 3, 2, 4, 70, 0, 0xC0,
                    lay["plane_bytes"], lay["arena_offset"], lay["params_offset"])  # fmt: skip
    assert struct.unpack_from("<BBHI", data, 32) == (3, 17, 0, lay["train_offset"]) and not any(data[40:64])
    assert lay["plane_bytes"] == 4 * (33 * 3 + 20 * 2 + 5 * 1)
    assert lay["blocks_offset"] == 72 and lay["arena_offset"] == 72 + 3 * 20
    assert lay["params_offset"] == 132 + 4 * lay["plane_bytes"]
    bpb = 4 * 33 + 8 + 4 * 20 + 4 + 8 * 5
    assert lay["block_params_bytes"] == bpb and lay["train_offset"] == lay["params_offset"] + 3 * bpb
    assert len(data) == lay["train_offset"] + 96 + 4
    assert struct.unpack_from("<3HH", data, 64) == (33, 20, 5, 0)
    assert data[72:92] == bytes([0, 1, 0, 0, 2]) + b"\xff" * 15
    assert data[92:112] == bytes([1, 2, 0, 0, 0, 3]) + b"\xff" * 14
    assert data[112:132] == b"\xff" * 20  # the empty slot
    assert not any(data[lay["params_offset"] + 2 * bpb : lay["train_offset"]])
    assert struct.unpack_from("<II", data, lay["train_offset"]) == (1, 0xDEADBEEF)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_twin_equals_slow_reference(rng):
    for m in _models(rng, 60):
        data = pack.to_bytes(m)
        x = rng.integers(0, 256, (10, m.n_inputs), dtype=np.uint8)
        x[0] = 255
        np.testing.assert_array_equal(twin.scores_u8(m, x), reference_scores(data, x))


def test_twin_equals_slow_reference_on_trained_mnist(trained_mnist, mnist):
    data = trained_mnist.read_bytes()
    x = mnist.x_test[:500]
    np.testing.assert_array_equal(twin.scores_u8(pack.from_bytes(data), x), reference_scores(data, x))


def _plain_args(rng):
    ws = [rng.random((7, 33)) < 0.5, rng.random((3, 7)) < 0.5]
    return dict(n_inputs=33, plane_mask=0x80, weights=ws, thresholds=[np.zeros(7, np.int32)],
                flips=[np.zeros(7, bool)], scale=np.ones(3), offset=np.zeros(3))  # fmt: skip


@pytest.mark.parametrize(
    "field, bad, words",
    [
        ("weights", lambda a: [a["weights"][0], a["weights"][1][:, :6]], "chain"),
        ("weights", lambda a: [a["weights"][0][:, :32], a["weights"][1]], "chain"),
        ("weights", lambda a: [a["weights"][0][0], a["weights"][1]], "2-D"),
        ("thresholds", lambda a: [], "thresholds"),
        ("thresholds", lambda a: [np.zeros(8, np.int32)], "thresholds"),
        ("flips", lambda a: [np.zeros(8, bool)], "flips"),
        ("flips", lambda a: [np.zeros(7, bool), np.zeros(3, bool)], "flips"),
        ("scale", lambda a: np.ones(4), "scale"),
        ("offset", lambda a: np.zeros((3, 1)), "offset"),
    ],
)
def test_plain_shape_errors(rng, field, bad, words):
    args = _plain_args(rng)
    Model.plain(**args)  # the good arguments build
    args[field] = bad(args)
    with pytest.raises(ValueError, match=words):
        Model.plain(**args)


def test_writer_refuses_what_the_reader_refuses(rng):
    m = random_model(rng, n_inputs=40, sizes=[5, 3])
    m.arena[0, 1] |= np.uint32(1 << 31)  # row 0 of layer 0: bit 63 of 40 is padding
    with pytest.raises(FormatError, match="E_PADDING"):
        pack.to_bytes(m)
    m = random_model(rng, n_inputs=4, sizes=[1] * 9)
    with pytest.raises(ValueError, match="n_layers"):
        pack.to_bytes(m)
    m = random_model(rng, n_inputs=10, sizes=[3])
    m.blocks[0].scale[:] = 2**31 - 1
    with pytest.raises(FormatError, match="E_RANGE"):
        pack.to_bytes(m)


def test_load_error_names_file_offset_and_field(rng, tmp_path):
    data = bytearray(pack.to_bytes(random_model(rng, n_inputs=50, sizes=[4])))
    data[len(data) // 2] ^= 1  # a weight bit: only the CRC can tell
    path = tmp_path / "bad.rbnn"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError) as e:
        pack.load(path)
    msg = str(e.value)
    assert str(path) in msg and "E_CRC" in msg and f"offset {len(data) - 4}" in msg and "crc32" in msg


def test_save_is_atomic(rng, tmp_path, monkeypatch):
    good = random_model(rng, n_inputs=30, sizes=[6, 2])
    path = tmp_path / "m.rbnn"
    pack.save(good, path)
    before = path.read_bytes()
    # an unwritable model: nothing is written, the old file stays
    bad = random_model(rng, n_inputs=30, sizes=[6, 2])
    bad.blocks[0].scale[:] = 2**31 - 1
    with pytest.raises(FormatError):
        pack.save(bad, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.rbnn"]
    # the disk failing half way: the old file stays whole, no partial file is left

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(FileError, match=f"{path}: cannot write: No space left on device"):
        pack.save(random_model(rng, n_inputs=30, sizes=[6, 2]), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.rbnn"]
    # and a new path that fails leaves nothing at all
    with pytest.raises(FileError):
        pack.save(good, tmp_path / "new.rbnn")
    assert os.listdir(tmp_path) == ["m.rbnn"]


def test_sign_planes_anywhere_in_the_arena(rng):
    """Blocks whose sign planes sit at other indices (a 16-plane live block, a free plane)
    compute what the same weights compute at plane b; both readers keep the table."""
    m = random_model(rng, n_inputs=20, sizes=[5, 2], n_blocks=3)
    x = rng.integers(0, 256, (6, 20), dtype=np.uint8)
    want = twin.scores_u8(m, x)
    arena = np.zeros((19, m.plane_words), np.uint32)
    arena[16], arena[0], arena[3] = m.arena
    arena[5] = m.arena[1]  # a magnitude plane with content
    m.arena = arena
    m.blocks[0].planes = [16]
    m.blocks[1].planes = [0]
    m.blocks[2] = Block(LIVE, [3, 15, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2, 1, 17],
                        m.blocks[2].thresholds, [np.zeros_like(f) for f in m.blocks[2].flips],
                        m.blocks[2].scale, m.blocks[2].offset)  # fmt: skip
    want = twin.scores_u8(m, x)  # (a live block's flips are 0)
    data = pack.to_bytes(m)  # plane 18 is free
    back = pack.from_bytes(data)
    assert [(b.state, list(b.planes)) for b in back.blocks] == [(0, [16]), (0, [0]), (1, m.blocks[2].planes)]
    np.testing.assert_array_equal(twin.scores_u8(back, x), want)
    np.testing.assert_array_equal(reference_scores(data, x), want)
    m.blocks[1].planes = [1]  # plane 1 is also block 2's
    with pytest.raises(FormatError, match="E_BLOCK"):
        pack.to_bytes(m)
