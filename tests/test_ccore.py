"""The C core (cmodules/rbnn/rbnn_core.c) against the numpy twin and the Python reader.

Through ctypes (rbnn.ccore) for volume, and through tests/c/rbnn_harness.c built with
ASan and UBSan for memory safety: every buffer the harness hands the core is malloc'ed at
its exact length, so any read past it is a sanitizer report (and a failed test).
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from rbnn.engines import ccore, twin
from rbnn.errors import CODES, NAMES, FormatError
from rbnn.format import model, pack
from rbnn.format.bits import words
from rbnn.format.model import LIVE, pack_input
from support import charness
from support.charness import SRC
from support.randmodel import bound_model, random_model
from support.v1file import to_bytes_v1

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion",
          "-Wsign-conversion", "-Wshadow", "-Wcast-qual", "-Wstrict-prototypes",
          "-Wmissing-prototypes", "-Wvla"]  # fmt: skip
M0_FLAGS = ["-mcpu=cortex-m0plus", "-mthumb", "-Os", "-std=c99", "-ffreestanding",
            "-Wall", "-Wextra", "-Werror", "-pedantic"]  # fmt: skip


# --- helpers --------------------------------------------------------------------------
def py_check(data: bytes) -> tuple[int, int]:
    """The Python reader's verdict: (code, offset), (0, 0) when valid."""
    try:
        pack.from_bytes(data)
    except FormatError as e:
        return NAMES[e.code], e.offset
    return 0, 0


def with_crc(b: bytearray | bytes) -> bytes:
    b = bytearray(b)
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def put(data: bytes, off: int, fmt: str, value, crc: bool = True) -> bytes:
    b = bytearray(data)
    struct.pack_into("<" + fmt, b, off, value)
    return with_crc(b) if crc else bytes(b)


def run_harness(exe: Path, *args: str, timeout: float = 30) -> str:
    # timeout: a hang guard only; check and infer runs take under 0.1 s under the sanitizers
    return charness.run(exe, *args, timeout=timeout)


def harness_scores(exe: Path, tmp: Path, data: bytes, x: np.ndarray, raw: bool = False):
    """(classes, scores) of the sanitized harness for packed (n,K,W) or raw (n,N) inputs."""
    (tmp / "m.rbnn").write_bytes(data)
    (tmp / "x.bin").write_bytes(np.ascontiguousarray(x, "<u4" if not raw else np.uint8).tobytes())
    out = run_harness(exe, "infer8" if raw else "infer", str(tmp / "m.rbnn"), str(tmp / "x.bin"))
    rows = np.array([[int(v) for v in line.split()] for line in out.splitlines()], np.int64)
    return rows[:, 0], rows[:, 1:]


def harness_check(exe: Path, tmp: Path, bufs: list[bytes], texts: list | None = None) -> list[tuple[int, int]]:
    """rbnn_model_init of the sanitized build on each buffer: [(code, err_offset)]; the
    messages (rbnn_error_text, "" when valid) are appended to ``texts`` if given."""
    path = tmp / "bufs.bin"
    path.write_bytes(b"".join(struct.pack("<I", len(b)) + b for b in bufs))
    out = run_harness(exe, "check", str(path))
    got = []
    for line in out.splitlines():
        code, off, *rest = line.split(" ", 2)
        got.append((int(code), int(off)))
        if texts is not None:
            texts.append(rest[0] if rest else "")
    assert len(got) == len(bufs)
    return got


def arena_model(rng: np.random.Generator) -> model.Model:
    """A model using every part of the format: 3 layers (layer-table pad), 70 inputs and a
    hidden layer of 33 (row and flip padding), 2 input planes, and a recursive arena of 4
    planes: block 0 frozen on plane 2, block 1 live on planes 0 (sign) and 3 (magnitude),
    plane 1 free."""
    m = random_model(rng, n_inputs=70, sizes=[33, 20, 5], plane_mask=0xC0, n_blocks=2)
    other = random_model(rng, n_inputs=70, sizes=[33, 20, 5], plane_mask=0xC0, n_blocks=2)
    arena = np.stack([m.arena[1], other.arena[0], m.arena[0], other.arena[1]])
    m.arena = arena
    m.blocks[0].planes = [2]
    m.blocks[1].state = LIVE
    m.blocks[1].planes = [0, 3]
    m.blocks[1].flips = [np.zeros_like(f) for f in m.blocks[1].flips]  # a live block's are 0
    m.max_blocks = 3  # one empty slot
    return m


def header_only(n_inputs: int, sizes: list[int], n_planes: int, n_blocks: int = 1) -> bytes:
    """A header plus layer table (no body): enough to reach the computed-size checks."""
    h = struct.pack("<4sHHIBBBBHBBIII", b"RBNN", 1, 0, 0, 32, len(sizes), n_blocks, n_planes,
                    n_inputs, 0, 0x80, 0, 0, 0)  # fmt: skip
    t = struct.pack(f"<{len(sizes)}H", *sizes)
    return h + t + b"\0" * ((-len(t)) % 4)


# --- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    """tests/c/rbnn_harness.c + the whole core, with ASan and UBSan."""
    return charness.build(tmp_path_factory.mktemp("harness") / "rbnn_harness")


@pytest.fixture(scope="module")
def arena_file() -> bytes:
    return pack.to_bytes(arena_model(np.random.default_rng(7)))


# --- bit-exact inference ----------------------------------------------------------------
def _edge_inputs(rng, m, n):
    x = rng.integers(0, 256, (n, m.n_inputs), dtype=np.uint8)
    x[0], x[1] = 0, 255  # every plane all -1, all +1
    return x


def test_random_models_match_twin(rng):
    """>= 200 random models: random shapes (no hidden layer too), widths mostly not
    multiples of 32, 1-4 input planes, 1-3 blocks; scores, classes and shapes."""
    shapes = [(64, [32, 96, 10], 0x80), (32, [7], 0x0F), (1, [1], 0x01), (33, [31, 33, 2], 0x81)]
    n_models = 0
    for i in range(252):
        nb = int(rng.integers(1, 4))
        if i < len(shapes):
            n_in, sizes, mask = shapes[i]
            m = random_model(rng, n_inputs=n_in, sizes=sizes, plane_mask=mask, n_blocks=nb)
        else:
            m = random_model(rng, n_blocks=nb)
        data = pack.to_bytes(m)
        cm = ccore.CModel(data)
        assert (cm.n_inputs, cm.sizes, cm.n_blocks, cm.plane_mask, cm.k_planes) == (
            m.n_inputs, m.sizes, len(m.blocks), m.plane_mask, m.k_planes)
        assert cm.ram_bytes == sum(m.ram_bytes().values())
        assert cm.input_words == m.k_planes * words(m.n_inputs)
        assert cm.file_bytes == len(data)
        x = _edge_inputs(rng, m, 12)
        xb = pack_input(x, m.plane_mask)
        want = twin.scores(m, xb)
        np.testing.assert_array_equal(cm.scores(xb), want)
        np.testing.assert_array_equal(cm.predict(xb), twin.predict(m, xb))
        rc, one = cm.infer_one(xb[2])  # the single-sample entry point too
        assert rc == int(np.argmax(want[2])) and np.array_equal(one, want[2])
        np.testing.assert_array_equal(cm.pack_u8(x[2]), xb[2])  # rbnn_pack_u8
        n_models += 1
    assert n_models >= 200


def test_wide_inputs_all_eight_planes(rng):
    m = random_model(rng, n_inputs=2000, sizes=[300, 10], plane_mask=0xFF, n_blocks=2)
    cm = ccore.CModel(pack.to_bytes(m))
    xb = pack_input(_edge_inputs(rng, m, 20), m.plane_mask)
    np.testing.assert_array_equal(cm.scores(xb), twin.scores(m, xb))


def test_ties_go_to_the_lowest_class(rng):
    m = random_model(rng, n_inputs=40, sizes=[9, 6], plane_mask=0x80)
    m.blocks[0].scale[:] = 0
    m.blocks[0].offset[:] = [1, 5, 2, 5, 5, 0]
    cm = ccore.CModel(pack.to_bytes(m))
    xb = pack_input(rng.integers(0, 256, (5, 40), dtype=np.uint8), 0x80)
    assert list(cm.predict(xb)) == [1] * 5 == list(twin.predict(m, xb))


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_score_bound_reached_exactly_without_overflow(harness, tmp_path, n_blocks):
    m = bound_model(n_blocks)  # scores reach +-n * budget: an overflow would be a UBSan report
    data = pack.to_bytes(m)
    x = np.array([[255] * 5000, [0] * 5000, [128] * 5000], np.uint8)
    xb = pack_input(x, 0xFF)
    want = twin.scores(m, xb)
    top = n_blocks * ((2**31 - 1) // n_blocks)  # 2^31 - 1 for one block
    assert want[0, 0] == top and want[0, 1] == -top and want[0, 2] == -top
    np.testing.assert_array_equal(ccore.CModel(data).scores(xb), want)
    _, got = harness_scores(harness, tmp_path, data, x, raw=True)
    np.testing.assert_array_equal(got, want)
    # one more unit of offset and the file must be refused, by both readers
    over = bytearray(data)
    lay = pack.layout(m.n_inputs, m.sizes, n_blocks, n_blocks)
    at = lay["params_offset"] + n_blocks * lay["block_params_bytes"] - 4  # last block's offset[2]
    struct.pack_into("<i", over, at, -per_block_bound(m, n_blocks - 1) - 1)
    over = with_crc(over)
    # reported at the scale array of the last block, which passes the block budget
    last_scale = lay["params_offset"] + n_blocks * lay["block_params_bytes"] - 8 * m.sizes[-1]
    assert py_check(over) == ccore.validate(over) == (NAMES["E_RANGE"], last_scale)


def per_block_bound(m: model.Model, b: int) -> int:
    smax = m.output_smax()
    blk = m.blocks[b]
    return int(np.max(np.abs(blk.scale.astype(np.int64)) * smax + np.abs(blk.offset.astype(np.int64))))


def test_sanitized_inference_matches_twin(harness, tmp_path, rng):
    """The ASan/UBSan build on random models (NULL scratch when there is no hidden
    layer), packed inputs and raw features bit-sliced by rbnn_pack_u8."""
    for i in range(36):
        sizes = [int(rng.integers(1, 12))] if i % 6 == 0 else None
        m = random_model(rng, sizes=sizes, n_blocks=int(rng.integers(1, 4)))
        data = pack.to_bytes(m)
        x = _edge_inputs(rng, m, 8)
        xb = pack_input(x, m.plane_mask)
        want = twin.scores(m, xb)
        cls, got = harness_scores(harness, tmp_path, data, x if i % 3 == 0 else xb, raw=i % 3 == 0)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(cls, twin.predict(m, xb))


def test_trained_mnist_all_test_images(trained_mnist, mnist):
    data = Path(trained_mnist).read_bytes()
    m = pack.from_bytes(data)
    xb = pack_input(mnist.x_test, m.plane_mask)
    want = twin.scores(m, xb)
    cm = ccore.CModel(data)
    np.testing.assert_array_equal(cm.scores(xb), want)
    pred = cm.predict(xb)
    np.testing.assert_array_equal(pred, np.argmax(want, axis=1))
    assert len(pred) == 10000 and np.mean(pred == mnist.y_test) > 0.8


def test_trained_mnist_sanitized(harness, tmp_path, trained_mnist, mnist):
    data = Path(trained_mnist).read_bytes()
    m = pack.from_bytes(data)
    x = mnist.x_test[:300]
    cls, got = harness_scores(harness, tmp_path, data, x, raw=True)
    np.testing.assert_array_equal(got, twin.scores_u8(m, x))


def test_cli_eval_engine_c(trained_mnist, tmp_path, capsys):
    from rbnn.cli import main

    lines = {}
    for engine in ("twin", "c"):
        out = tmp_path / f"{engine}.npy"
        assert main(["eval", str(trained_mnist), "--engine", engine, "--limit", "2000", "--scores", str(out)]) == 0
        lines[engine] = capsys.readouterr().out.splitlines()
        assert lines[engine][0].startswith("accuracy: 0.") and lines[engine][0].endswith("/2000)")
    assert lines["twin"][0] == lines["c"][0]
    np.testing.assert_array_equal(np.load(tmp_path / "twin.npy"), np.load(tmp_path / "c.npy"))


# --- inputs and arguments at run time -------------------------------------------------
def test_input_padding_and_shape_rejected(rng):
    m = random_model(rng, n_inputs=50, sizes=[20, 4], plane_mask=0x88)
    cm = ccore.CModel(pack.to_bytes(m))
    xb = pack_input(rng.integers(0, 256, (4, 50), dtype=np.uint8), 0x88)
    bad = xb.copy()
    bad[2, 1, -1] |= np.uint32(1 << 18)  # bit 50 of plane 1 of sample 2: padding
    with pytest.raises(FormatError) as e:
        cm.scores(bad)
    assert e.value.code == "E_INPUT" and "sample 2 plane 1" in str(e.value)
    assert cm.infer_one(bad[2])[0] == NAMES["E_INPUT"]  # the C check itself
    assert cm.infer_one(xb[2])[0] >= 0
    for shape in [(4, 1, 2), (4, 2, 3), (2, 2)]:
        with pytest.raises(ValueError, match="shape"):
            cm.scores(np.zeros(shape, np.uint32))
    assert cm.scores(np.zeros((0, 2, 2), np.uint32)).shape == (0, 4)


def test_null_and_uninitialised_arguments_are_e_arg(rng, arena_file):
    lib = ccore.lib()
    e_arg = NAMES["E_ARG"]
    store, addr = ccore._aligned(arena_file)
    m = ccore._Model()
    assert lib.rbnn_model_init(None, addr, len(arena_file)) == e_arg
    assert lib.rbnn_model_init(ctypes.byref(m), None, 10) == e_arg
    assert lib.rbnn_model_init(ctypes.byref(m), addr, len(arena_file)) == 0
    x = np.zeros(lib.rbnn_input_words(ctypes.byref(m)), np.uint32)
    sc = np.zeros(lib.rbnn_scratch_words(ctypes.byref(m)), np.uint32)
    out = np.zeros(5, np.int32)
    p = ctypes.byref(m)
    assert lib.rbnn_infer(p, x.ctypes.data, sc.ctypes.data, out.ctypes.data) >= 0
    assert lib.rbnn_infer(None, x.ctypes.data, sc.ctypes.data, out.ctypes.data) == e_arg
    assert lib.rbnn_infer(p, None, sc.ctypes.data, out.ctypes.data) == e_arg
    assert lib.rbnn_infer(p, x.ctypes.data, None, out.ctypes.data) == e_arg  # has hidden layers
    assert lib.rbnn_infer(p, x.ctypes.data, sc.ctypes.data, None) == e_arg
    assert lib.rbnn_infer_batch(p, None, 1, sc.ctypes.data, out.ctypes.data, None) == e_arg
    assert lib.rbnn_pack_u8(p, None, x.ctypes.data) == e_arg
    # a model whose init failed cannot be run, even if the caller ignores the code
    bad = arena_file[:-1] + bytes([arena_file[-1] ^ 1])
    s2, a2 = ccore._aligned(bad)
    assert lib.rbnn_model_init(ctypes.byref(m), a2, len(bad)) == NAMES["E_CRC"]
    assert lib.rbnn_infer(ctypes.byref(m), x.ctypes.data, sc.ctypes.data, out.ctypes.data) == e_arg
    del store, s2


def test_unaligned_buffer_is_e_align(arena_file):
    for shift in (1, 2, 3):
        assert ccore.validate(arena_file, shift=shift)[0] == NAMES["E_ALIGN"]
    assert ccore.validate(arena_file) == (0, 0)


def test_strerror_names_every_code():
    texts = {code: ccore.strerror(code) for code in CODES}
    assert len(set(texts.values())) == len(CODES)
    assert "unknown error" not in texts.values()
    assert ccore.strerror(-99) == "unknown error"


def test_crc32_equals_zlib(rng):
    for n in [0, 1, 3, 4, 5, 63, 64, 1000]:
        d = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for shift in range(4):
            assert ccore.crc32(d, shift=shift) == zlib.crc32(d)
        assert ccore.crc32(d[n // 3 :], ccore.crc32(d[: n // 3])) == zlib.crc32(d)  # chained


# --- invalid files: every code, C == Python, sanitized ---------------------------------
def crafted_cases(data: bytes) -> list[tuple[str, bytes, str, int]]:
    """(what, buffer, expected code, expected offset) for the arena model's file (version
    2: 3 block slots, one empty), plus version 1 files."""
    m = pack.from_bytes(data)
    lay = pack.layout(m.n_inputs, m.sizes, len(m.blocks), m.n_planes, max_blocks=m.capacity)
    n = len(data)
    bo, ao, po, pb, bpp, to = (lay[k] for k in ("blocks_offset", "arena_offset", "params_offset",
                                                "plane_bytes", "block_params_bytes", "train_offset"))  # fmt: skip
    hb = 64
    row0 = lambda p, r: ao + p * pb + 4 * (r * 3 + 2)  # noqa: E731  layer 0 row r, last word
    row1 = lambda p, r: ao + p * pb + 4 * (33 * 3 + r * 2 + 1)  # noqa: E731  layer 1
    flip0 = lambda b: po + b * bpp + 4 * 33 + 4  # noqa: E731  block b, layer 0 flips, word 1
    hidden = (4 * 33 + 8) + (4 * 20 + 4)
    scale = lambda b, k: po + b * bpp + hidden + 4 * k  # noqa: E731
    offset = lambda b, k: scale(b, k) + 4 * 5  # noqa: E731
    budget = (2**31 - 1) // 3
    two_bad = bytearray(data)
    struct.pack_into("<I", two_bad, row1(0, 3), struct.unpack_from("<I", data, row1(0, 3))[0] | 1 << 9)
    struct.pack_into("<I", two_bad, row0(3, 7), struct.unpack_from("<I", data, row0(3, 7))[0] | 1 << 31)
    grown = with_crc(put(data[:-4] + b"\0" * 8, 8, "I", n + 4, crc=False))
    # no live block: block 1 frozen on plane 0 (its magnitude plane 3 released)
    frozen = bytearray(data)
    frozen[bo + 20 : bo + 40] = bytes([0, 1, 0, 0, 0]) + b"\xff" * 15
    frozen = with_crc(frozen)
    v1 = to_bytes_v1(m)
    lay1 = pack.layout(m.n_inputs, m.sizes, 2, m.n_planes, version=1)
    scale1 = lambda b, k: lay1["params_offset"] + b * bpp + hidden + 4 * k  # noqa: E731
    return [
        ("31 bytes", data[:31], "E_TRUNCATED", 0),
        ("empty", b"", "E_TRUNCATED", 0),
        ("version 2 header cut", data[:40], "E_TRUNCATED", 0),
        ("header without layer table", data[:hb], "E_TRUNCATED", hb),
        ("half a layer table", data[:hb + 6], "E_TRUNCATED", hb),
        ("no body", data[:bo], "E_TRUNCATED", 8),
        ("last byte cut", data[:-1], "E_TRUNCATED", 8),
        ("magic", b"RBNX" + data[4:], "E_MAGIC", 0),
        ("magic lower case", b"rbnn" + data[4:], "E_MAGIC", 0),
        ("version 0", put(data, 4, "H", 0), "E_VERSION", 4),
        ("version 4", put(data, 4, "H", 4), "E_VERSION", 4),
        ("flags", put(data, 6, "H", 0x8000), "E_FLAGS", 6),
        ("version before flags", put(put(data, 6, "H", 1), 4, "H", 9), "E_VERSION", 4),
        ("layer table pad", put(data, hb + 6, "B", 1), "E_FLAGS", hb + 6),
        ("layer table pad byte 2", put(data, hb + 7, "B", 0x80), "E_FLAGS", hb + 6),
        ("word_bits", put(data, 12, "B", 16), "E_HEADER", 12),
        ("n_layers 0", put(data, 13, "B", 0), "E_HEADER", 13),
        ("n_layers 9", put(data, 13, "B", 9), "E_HEADER", 13),
        ("n_blocks 65", put(data, 14, "B", 65), "E_HEADER", 14),
        ("n_planes 0", put(data, 15, "B", 0), "E_HEADER", 15),
        ("n_inputs 0", put(data, 16, "H", 0), "E_HEADER", 16),
        ("input_mode 1", put(data, 18, "B", 1), "E_HEADER", 18),
        ("plane_mask 0", put(data, 19, "B", 0), "E_HEADER", 19),
        ("max_blocks below n_blocks", put(data, 32, "B", 1), "E_HEADER", 32),
        ("max_blocks 65", put(data, 32, "B", 65), "E_HEADER", 32),
        ("score_q 31", put(data, 33, "B", 31), "E_HEADER", 33),
        ("header reserved 34", put(data, 34, "B", 1), "E_FLAGS", 34),
        ("header reserved 40", put(data, 40, "B", 1), "E_FLAGS", 40),
        ("header reserved 63", put(data, 63, "B", 0x80), "E_FLAGS", 63),
        ("header range before reserved", put(put(data, 63, "B", 1), 33, "B", 99), "E_HEADER", 33),
        ("size[1] 0", put(data, hb + 2, "H", 0), "E_HEADER", hb + 2),
        ("header before pad", put(put(data, hb + 6, "B", 1), hb + 4, "H", 0), "E_HEADER", hb + 4),
        ("planes x plane_bytes overflow", header_only(65535, [65535], 255), "E_SIZE", 8),
        ("params sum overflow", header_only(65535, [65535] * 8, 1), "E_SIZE", 8),
        ("64 blocks overflow", header_only(65535, [65535] * 8, 1, 64), "E_SIZE", 8),
        ("size before truncation", header_only(65535, [65535], 255) + data[36:], "E_SIZE", 8),
        ("trailing byte", data + b"\0", "E_SIZE", 8),
        ("file_bytes says more", put(data, 8, "I", n + 1), "E_TRUNCATED", 8),
        ("file_bytes says less", put(data, 8, "I", n - 1), "E_SIZE", 8),
        ("file_bytes 2^32-1", put(data, 8, "I", 0xFFFFFFFF), "E_TRUNCATED", 8),
        ("plane_bytes", put(data, 20, "I", pb + 4), "E_LAYOUT", 20),
        ("arena_offset", put(data, 24, "I", ao - 4), "E_LAYOUT", 24),
        ("params_offset", put(data, 28, "I", po + 1), "E_LAYOUT", 28),
        ("train_offset", put(data, 36, "I", to + 4), "E_LAYOUT", 36),
        ("file_bytes = buffer != layout", grown, "E_LAYOUT", 8),
        ("layout before crc", put(data, 20, "I", 0, crc=False), "E_LAYOUT", 20),
        ("weight bit", put(data, ao + 5, "B", data[ao + 5] ^ 4, crc=False), "E_CRC", n - 4),
        ("crc field", put(data, n - 4, "I", zlib.crc32(data[:-4]) ^ 1, crc=False), "E_CRC", n - 4),
        ("crc before block", put(data, bo, "B", 7, crc=False), "E_CRC", n - 4),
        ("state 2", put(data, bo + 20, "B", 2), "E_BLOCK", bo + 20),
        ("live but not the last block", put(data, bo, "B", 1), "E_BLOCK", bo),
        ("frozen with 2 planes", put(data, bo + 1, "B", 2), "E_BLOCK", bo + 1),
        ("live with 0 planes", put(data, bo + 21, "B", 0), "E_BLOCK", bo + 21),
        ("live with 17 planes", put(data, bo + 21, "B", 17), "E_BLOCK", bo + 21),
        ("reserved", put(data, bo + 2, "H", 0x100), "E_BLOCK", bo + 2),
        ("plane index >= n_planes", put(data, bo + 4, "B", 4), "E_BLOCK", bo + 4),
        ("plane owned by two blocks", put(data, bo + 25, "B", 2), "E_BLOCK", bo + 25),
        ("plane twice in a block", put(data, bo + 25, "B", 0), "E_BLOCK", bo + 25),
        ("unused entry not 0xFF", put(data, bo + 26, "B", 1), "E_BLOCK", bo + 26),
        ("last unused entry", put(data, bo + 19, "B", 0xFE), "E_BLOCK", bo + 19),
        ("empty slot not empty", put(data, bo + 45, "B", 0), "E_BLOCK", bo + 45),
        ("block before padding", put(put(data, row0(0, 0), "I", 1 << 6), bo + 20, "B", 9), "E_BLOCK", bo + 20),
        ("row padding, layer 0", put(data, row0(0, 0), "I", struct.unpack_from("<I", data, row0(0, 0))[0] | 1 << 6), "E_PADDING", row0(0, 0)),
        ("row padding in a free plane", put(data, row0(1, 5), "I", struct.unpack_from("<I", data, row0(1, 5))[0] | 1 << 20), "E_PADDING", row0(1, 5)),
        ("row padding in a magnitude plane, layer 1", put(data, row1(3, 19), "I", 1 << 1), "E_PADDING", row1(3, 19)),
        ("first padding fault in scan order", with_crc(two_bad), "E_PADDING", row0(3, 7)),
        ("flip padding", put(data, flip0(1), "I", 1 << 1), "E_PADDING", flip0(1)),
        ("weight padding before flip padding", put(put(data, flip0(0), "I", 2), row1(2, 0), "I", 1 << 31), "E_PADDING", row1(2, 0)),
        ("padding before range", put(put(data, flip0(0), "I", 2), scale(0, 0), "i", 2**31 - 1), "E_PADDING", flip0(0)),
        ("empty parameter slot", put(data, po + 2 * bpp + 7, "B", 1), "E_FLAGS", po + 2 * bpp + 7),
        ("a live block's flip", put(data, po + bpp + 4 * 33, "I", 1), "E_TRAIN", po + bpp + 4 * 33),
        # the training section, field by field
        ("rule 2", put(data, to, "I", 2), "E_TRAIN", to),
        ("block_steps > steps", put(data, to + 12, "I", 1), "E_TRAIN", to + 12),
        ("block_steps without a live block", put(put(frozen, to + 8, "I", 5), to + 12, "I", 1), "E_TRAIN", to + 12),
        ("hits > steps", put(data, to + 16, "I", 1), "E_TRAIN", to + 16),
        ("active > steps", put(data, to + 20, "I", 1), "E_TRAIN", to + 20),
        ("stream_base > steps", put(data, to + 32, "I", 1), "E_TRAIN", to + 32),
        ("margin 0", put(data, to + 36, "I", 0), "E_TRAIN", to + 36),
        ("margin over the budget", put(data, to + 36, "I", budget + 1), "E_TRAIN", to + 36),
        ("bits 0", put(data, to + 40, "B", 0), "E_TRAIN", to + 40),
        ("bits 17", put(data, to + 40, "B", 17), "E_TRAIN", to + 40),
        ("grow_left beyond the empty slots", put(data, to + 41, "B", 2), "E_TRAIN", to + 41),
        ("scale_shift too large", put(data, to + 42, "B", 40), "E_TRAIN", to + 42),
        ("decay 32", put(data, to + 43, "B", 32), "E_TRAIN", to + 43),
        ("init_bits 16", put(data, to + 44, "B", 16), "E_TRAIN", to + 44),
        ("loss 2", put(data, to + 45, "B", 2), "E_TRAIN", to + 45),
        ("off_shift -2", put(data, to + 46, "b", -2), "E_TRAIN", to + 46),
        ("off_shift 24", put(data, to + 46, "b", 24), "E_TRAIN", to + 46),
        ("train reserved 47", put(data, to + 47, "B", 1), "E_FLAGS", to + 47),
        ("lr[0] 32", put(data, to + 48, "B", 32), "E_TRAIN", to + 48),
        ("lr[3] beyond 3 layers", put(data, to + 51, "B", 1), "E_TRAIN", to + 51),
        ("thr_shift[1] 25", put(data, to + 57, "b", 25), "E_TRAIN", to + 57),
        ("thr_shift[0] -2", put(data, to + 56, "b", -2), "E_TRAIN", to + 56),
        ("thr_shift[2] beyond 2 hidden layers", put(data, to + 58, "b", -1), "E_TRAIN", to + 58),
        ("gate[0] over smax", put(data, to + 64, "I", 70 * 3 + 1), "E_TRAIN", to + 64),
        ("gate[1] over smax", put(data, to + 68, "I", 34), "E_TRAIN", to + 68),
        ("gate[2] beyond 2 hidden layers", put(data, to + 72, "I", 1), "E_TRAIN", to + 72),
        ("train reserved 92", put(data, to + 92, "I", 1), "E_FLAGS", to + 92),
        ("train before range", put(put(data, to + 43, "B", 99), scale(0, 0), "i", 2**31 - 1), "E_TRAIN", to + 43),
        # E_RANGE: at the scale array of the first block whose bound passes the budget
        ("scale 2^31-1", put(data, scale(0, 2), "i", 2**31 - 1), "E_RANGE", scale(0, 0)),
        # a live block's output within half of the budget (the training state's check)
        ("live scale over half / smax", put(data, scale(1, 2), "i", -(2**31 - 1)), "E_TRAIN", scale(1, 2)),
        ("live offset over half - 1", put(data, offset(1, 4), "i", (budget + 1) // 2), "E_TRAIN", offset(1, 4)),
        ("scale -2^31", put(data, scale(0, 4), "i", -(2**31)), "E_RANGE", scale(0, 0)),
        ("offset -2^31", put(data, offset(0, 0), "i", -(2**31)), "E_RANGE", scale(0, 0)),
        ("offset over the block budget", put(data, offset(0, 3), "i", budget), "E_RANGE", scale(0, 0)),
        # version 1: still read, with its own layout and score bound
        ("version 1", v1, "OK", 0),
        ("version 1, n_blocks 0", put(v1, 14, "B", 0), "E_HEADER", 14),
        ("version 1, sum over blocks", put(put(v1, scale1(0, 0) + 20, "i", 2**30), scale1(1, 3) + 20, "i", -(2**30)),
         "E_RANGE", scale1(1, 0)),
        ("version 1 with version 2 bytes", v1[:32] + data[32:], "E_HEADER", 32 + 2),
    ]  # fmt: skip


def test_crafted_files_reach_every_code_in_c_and_python(harness, tmp_path, arena_file):
    cases = crafted_cases(arena_file)
    assert ccore.validate(arena_file) == py_check(arena_file) == (0, 0)
    reached = set()
    texts: list[str] = []
    got_san = harness_check(harness, tmp_path, [c[1] for c in cases], texts)
    for (what, buf, code, off), san, text in zip(cases, got_san, texts, strict=True):
        assert text == (ccore.error_text(buf) or ""), f"sanitized C message, {what}"
        want = (NAMES.get(code, 0), off)
        assert py_check(buf) == want, f"python, {what}"
        assert ccore.validate(buf) == want, f"C, {what}"
        assert san == want, f"sanitized C, {what}"
        reached.add(code)
        if code == "OK":
            continue
        with pytest.raises(FormatError) as e:
            ccore.CModel(buf)
        assert (e.value.code, e.value.offset) == (code, off)
    # the file-level codes all reached here; E_ALIGN, E_INPUT, E_ARG, E_FULL, E_LABEL
    # are run-time codes, each with its own test
    assert reached == set(NAMES) - {"E_ALIGN", "E_INPUT", "E_ARG", "E_FULL", "E_LABEL"} | {"OK"}


def test_cmodel_error_names_the_field(arena_file):
    with pytest.raises(FormatError, match=r"E_HEADER: n_blocks: expected 0\.\.64, found 65") as e:
        ccore.CModel(put(arena_file, 14, "B", 65))
    assert e.value.offset == 14
    with pytest.raises(FormatError, match=r"E_CRC: crc32"):
        ccore.CModel(arena_file[:-1] + b"\0")


def _mutations(rng: np.random.Generator, data: bytes, count: int) -> list[bytes]:
    """Random damage: bytes anywhere (CRC fixed or not), header and block-table fields set
    to edge values, padding bits, scales, truncation and extension."""
    n = len(data)
    m = pack.from_bytes(data)
    lay = pack.layout(m.n_inputs, m.sizes, len(m.blocks), m.n_planes)
    head = lay["arena_offset"]
    out = []
    for _ in range(count):
        kind = int(rng.integers(0, 7))
        b = bytearray(data)
        if kind == 0:  # a few random bytes anywhere, CRC fixed so later checks run
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, n - 4))] = int(rng.integers(0, 256))
            b = bytearray(with_crc(b))
        elif kind == 1:  # header / layer table / block table bytes, CRC fixed
            for _ in range(int(rng.integers(1, 3))):
                b[int(rng.integers(0, head))] ^= 1 << int(rng.integers(0, 8))
            b = bytearray(with_crc(b))
        elif kind == 2:  # a header field set to an edge value
            off, fmt = [(4, "H"), (6, "H"), (8, "I"), (12, "B"), (13, "B"), (14, "B"), (15, "B"),
                        (16, "H"), (18, "B"), (19, "B"), (20, "I"), (24, "I"), (28, "I")][int(rng.integers(0, 13))]  # fmt: skip
            old = struct.unpack_from("<" + fmt, b, off)[0]
            top = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}[fmt]
            val = [0, 1, top, old + 1, old - 1, old + 4, int(rng.integers(0, top + 1))][int(rng.integers(0, 7))]
            struct.pack_into("<" + fmt, b, off, val & top)
            b = bytearray(with_crc(b)) if rng.random() < 0.7 else b
        elif kind == 3:  # one bit anywhere, CRC not fixed
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 4:  # a word of the arena or parameters set to a random value
            i = head + 4 * int(rng.integers(0, (n - 4 - head) // 4))
            struct.pack_into("<I", b, i, int(rng.integers(0, 2**32)) & [1 << 31, 0xFFFFFFFF, 0x80000001][int(rng.integers(0, 3))])
            b = bytearray(with_crc(b))
        elif kind == 5:  # truncated
            b = b[: int(rng.integers(0, n))]
        else:  # extended, file_bytes maybe following, CRC maybe recomputed at the end
            b += bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
            if rng.random() < 0.5:
                struct.pack_into("<I", b, 8, len(b))
                b = bytearray(with_crc(b))
        out.append(bytes(b))
    return out


def test_random_mutations_same_verdict_c_python_sanitized(harness, tmp_path, rng, arena_file):
    """A few thousand damaged files: the Python reader and the C core give the same code
    and offset; the sanitized build agrees and reports nothing."""
    bases = [
        arena_file,
        pack.to_bytes(random_model(rng, n_inputs=45, sizes=[7], plane_mask=0x31, n_blocks=3)),
        pack.to_bytes(random_model(rng, n_inputs=100, sizes=[40, 40, 40, 3], plane_mask=0x80)),
    ]
    bufs = [buf for base in bases for buf in _mutations(rng, base, 1200)]
    got = [ccore.validate(b) for b in bufs]
    for buf, c in zip(bufs, got, strict=True):
        assert py_check(buf) == c, f"python {py_check(buf)} vs C {c} on a {len(buf)}-byte buffer"
    assert harness_check(harness, tmp_path, bufs) == got
    codes = {c for c, _ in got}
    assert {0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11} <= codes, codes


@pytest.mark.parametrize(
    "shape, deltas",
    [
        ((100, [40, 33, 7], 0xC1, 2), "all"),  # ~2.7 kB: all 255 other values per byte
        # ~62 kB: 3 values per byte, rotating through 12 patterns (single bits 0-7,
        # 0xFF, 0x55, 0xAA, 0x7F) so neighbouring bytes get different ones; the CRC over
        # the whole file per try makes this the costliest test (~30 s of CPU)
        ((784, [260, 96, 10], 0xF0, 2), "3"),
    ],
)
def test_every_corruption_and_truncation_rejected_sanitized(harness, tmp_path, shape, deltas):
    n_in, sizes, mask, nb = shape
    m = random_model(np.random.default_rng(3), n_inputs=n_in, sizes=sizes, plane_mask=mask, n_blocks=nb)
    path = tmp_path / "m.rbnn"
    path.write_bytes(pack.to_bytes(m))
    n = path.stat().st_size
    # about 25 s for the 62 kB model under the sanitizers on 2 busy cores: 10x that
    out = run_harness(harness, "corrupt", str(path), deltas, timeout=240).split()
    per = 255 if deltas == "all" else int(deltas)
    assert out[:4] == ["corruptions", str(per * n), "truncations", str(n)], out
    hist = dict(kv.split(":") for kv in out[5:])
    assert sum(int(v) for v in hist.values()) == per * n + n  # every one rejected, by code


# --- builds -----------------------------------------------------------------------------
@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("source", ["rbnn_core.c", "rbnn_train.c"])
def test_core_compiles_warning_free_on_host(cc, source, tmp_path):
    if not shutil.which(cc):
        pytest.skip(f"{cc} not installed")
    r = subprocess.run([cc, *STRICT, "-O2", "-c", str(SRC / source), "-o", str(tmp_path / "c.o")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and not r.stderr, r.stderr


def test_m0plus_cross_build_warning_free_and_libc_free(tmp_path):
    arm = shutil.which("arm-none-eabi-gcc")
    if not arm:
        pytest.skip("arm-none-eabi-gcc not installed (`make deps-arm` installs gcc-arm-none-eabi)")
    for name in ("rbnn_core", "rbnn_kernel", "rbnn_train"):
        obj = tmp_path / f"{name}.o"
        r = subprocess.run([arm, *M0_FLAGS, "-c", str(SRC / f"{name}.c"), "-o", str(obj)],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0 and not r.stderr, r.stderr
    nm = shutil.which("arm-none-eabi-nm")
    if nm:  # the core calls nothing but the kernel, training nothing but the core: no
        # libc, no libgcc helpers (division, 64-bit arithmetic)
        def undefined(name: str) -> set[str]:
            out = subprocess.run([nm, "-u", str(tmp_path / f"{name}.o")], capture_output=True, text=True).stdout
            return {line.split()[-1] for line in out.splitlines()}

        core_defs = subprocess.run([nm, "--defined-only", "-g", str(tmp_path / "rbnn_core.o")],
                                   capture_output=True, text=True).stdout  # fmt: skip
        assert undefined("rbnn_core") <= {"rbnn_xorpop", "rbnn_xorpop_rows"}
        assert undefined("rbnn_train") <= {line.split()[-1] for line in core_defs.splitlines()}
        assert "rbnn_group_sums" in undefined("rbnn_train")  # the check above would see a helper
        for name in ("rbnn_core", "rbnn_train"):
            syms = subprocess.run([nm, str(tmp_path / f"{name}.o")], capture_output=True, text=True).stdout
            kinds = {line.split()[-2] for line in syms.splitlines() if len(line.split()) >= 2}
            assert not kinds & set("bBdD"), syms  # no writable globals


def test_library_cache_rebuilds_on_change_and_is_race_safe(tmp_path, monkeypatch):
    src = tmp_path / "cmodules" / "rbnn"
    shutil.copytree(SRC, src)
    monkeypatch.setattr(ccore, "source_dir", lambda: src)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(ccore, "_cache_dirs", lambda: [blocked / "sub", tmp_path / "cache"])
    first = ccore.build()
    assert first.parent == tmp_path / "cache"  # fell back past the unwritable folder
    assert ccore.build() == first
    with open(src / "rbnn_core.c", "a") as f:
        f.write("\n/* edited */\n")
    results, errors = [], []

    def go():
        try:
            results.append(ccore.build(force=True))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and results[0] != first
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted({first.name, results[0].name})
    so = ctypes.CDLL(str(results[0]))
    so.rbnn_crc32.restype = ctypes.c_uint32
    so.rbnn_crc32.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    assert so.rbnn_crc32(0, b"rbnn", 4) == zlib.crc32(b"rbnn")


def test_build_error_is_clear(tmp_path, monkeypatch):
    src = tmp_path / "cmodules" / "rbnn"
    shutil.copytree(SRC, src)
    (src / "rbnn_core.c").write_text("this is not C\n")
    monkeypatch.setattr(ccore, "source_dir", lambda: src)
    monkeypatch.setattr(ccore, "_cache_dirs", lambda: [tmp_path / "cache"])
    with pytest.raises(ccore.CBuildError, match="compiling the C core failed"):
        ccore.build()
    assert not list((tmp_path / "cache").iterdir())  # no temp file left behind
    (src / "rbnn_core.c").unlink()
    with pytest.raises(ccore.CBuildError, match="source missing"):
        ccore.build()
