"""Version 3 on the pure-MicroPython engine (firmware/rbnn_py.py, rbnn_pyconv.py) on the
real MicroPython unix port: conv layers and input mode 1 give the numpy twin's int32
scores (viper and plain code), broken version 3 files give the Python reader's words,
and the model's figures and refusals (info(), no allocation per call, no training).

A few small models and samples: the plain engine runs a conv layer in Python."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from mpy_helpers import FIRMWARE, run_mpy_code
from test_fallback import (
    ENGINES,
    ERR_RE,
    check_error_parity,
    check_parity,
    corpus_reach,
    fuzzed_files,
    le_bytes,
    patched,
    random_inputs,
)

from rbnn.engines import twin
from rbnn.format import checks, pack
from rbnn.format.model import FROZEN, LIVE, Block, Layer, Model, geometry, pack_input
from rbnn.learn.step import UNTRAINABLE
from support.randconv import random_conv_model


def conv_model(
    rng: np.random.Generator, in_shape: tuple[int, int, int], layers: list[Layer], plane_mask: int,
    input_mode: int = 0, n_blocks: int = 1, max_blocks: int | None = None, zero_last_flips: bool = False,
) -> Model:  # fmt: skip
    """A random frozen version 3 model: ``n_blocks`` blocks on planes 0.. (one
    Model.plain each), thresholds around the middle of each layer's range so the bits
    vary; ``zero_last_flips``: the last block's flips 0 (so that it may be marked live
    in a crafted file and reach the version 3 live-block check)."""
    n_inputs = int(np.prod(in_shape))
    k = bin(plane_mask).count("1")
    geo = geometry(n_inputs, layers, in_shape, k, input_mode)
    plains = []
    for b in range(n_blocks):
        weights = [rng.random((ly.size, g.segments * g.n_in)) < 0.5 for ly, g in zip(layers, geo, strict=True)]
        smax = [g.n_in * (k if i == 0 else 1) for i, g in enumerate(geo)]
        thr = [rng.integers(-int(np.sqrt(s)) - 1, int(np.sqrt(s)) + 2, ly.size)
               for s, ly in zip(smax[:-1], layers[:-1], strict=True)]  # fmt: skip
        flips = [(rng.random(ly.size) < 0.3) & (not (zero_last_flips and b == n_blocks - 1)) for ly in layers[:-1]]
        c = layers[-1].size
        plains.append(Model.plain(n_inputs, plane_mask, weights, thr, flips, rng.integers(-9, 10, c),
                                  rng.integers(-500, 500, c), layers=layers, in_shape=in_shape,
                                  input_mode=input_mode))  # fmt: skip
    blocks = [Block(FROZEN, [b], p.blocks[0].thresholds, p.blocks[0].flips, p.blocks[0].scale, p.blocks[0].offset)
              for b, p in enumerate(plains)]  # fmt: skip
    arena = np.concatenate([p.arena for p in plains])
    return Model(n_inputs, plane_mask, [ly.size for ly in layers], arena, blocks, input_mode=input_mode,
                 max_blocks=max_blocks, layers=list(layers), in_shape=in_shape)  # fmt: skip


# --- broken version 3 files: the Python reader's words -----------------------------------
def v3_bases(rng: np.random.Generator) -> list[Model]:
    """The crafted files' bases: a pooled conv then a conv and two dense layers in input
    mode 1 (two blocks, an empty slot, the last block's flips 0); one conv straight into
    the output layer; a dense model in input mode 1 (a padded row segment per plane)."""
    return [
        conv_model(rng, (6, 6, 2), [Layer.conv(5, 3, pool=True), Layer.conv(7, 3, pad=0), Layer(9), Layer(4)],
                   0xC1, input_mode=1, n_blocks=2, max_blocks=3, zero_last_flips=True),
        conv_model(rng, (5, 4, 1), [Layer.conv(3, 3), Layer(2)], 0x80),
        conv_model(rng, (3, 3, 5), [Layer(9), Layer(3)], 0xE0, input_mode=1, n_blocks=2),
    ]  # fmt: skip


def crafted_v3(m: Model) -> list[bytes]:
    """``m``'s file (valid) and files with a valid CRC that each break one version 3 rule
    (docs/FORMAT.md, New checks), at offsets from pack.model_layout."""
    base = pack.to_bytes(m)
    lay = pack.model_layout(m)
    hb, bo, ao, to = (lay[k] for k in ("header_bytes", "blocks_offset", "arena_offset", "train_offset"))
    conv = m.has_conv
    edits = [(18, "B", 2), (46, "B", 1), (63, "B", 0x80), (to + 41, "B", 1)]
    if conv:
        h, w, _ = m.in_shape
        edits += [(40, "<H", 0), (42, "<H", 0), (44, "<H", 0), (40, "<H", h + 1), (44, "<H", 2)]
    else:
        edits += [(40, "<H", 1), (42, "<H", 7), (44, "<H", 65535)]
    specs = m.layer_specs
    for i, ly in enumerate(specs):
        at = hb + 8 * i
        edits += [(at + 2, "B", 2), (at + 2, "B", 255), (at + 6, "<H", 1), (at + 7, "B", 0x80)]
        if ly.kind:
            edits += [(at + 3, "B", 0), (at + 3, "B", 2), (at + 3, "B", 17), (at + 4, "B", ly.kernel // 2 + 1),
                      (at + 5, "B", 1), (at + 5, "B", 3), (at + 3, "<H", 15)]  # fmt: skip
        else:
            edits += [(at + 3, "B", 1), (at + 4, "B", 1), (at + 5, "B", 2)]
            # a conv layer (kernel 1) here: after a dense layer, or as the output layer
            edits.append((at + 2, "<H", 0x0101))
    if conv and specs[0].pool:  # the same input size as an odd map: the pool refuses it
        edits.append((40, "<I", 9 | 4 << 16))
    g0 = m.geometry()[0]
    if g0.segments > 1 and g0.n_in % 32:  # padding of row 0's second segment (input mode 1)
        wd = (g0.n_in + 31) // 32
        edits.append((ao + 4 * (2 * wd - 1), "<I", 1 << 31))
    last = len(m.blocks) - 1
    edits.append((bo + 20 * last, "B", LIVE))  # a live block: refused in version 3
    return [base] + [patched(base, off, fmt, v) for off, fmt, v in edits]


def error_corpus_v3() -> list[bytes]:
    """Crafted version 3 files of every base, and truncations and corruptions of every
    header and table byte (every 7th beyond) and of the training section."""
    rng = np.random.default_rng(33)
    files = []
    for m in v3_bases(rng):
        lay = pack.model_layout(m)
        files += crafted_v3(m)
        files += fuzzed_files(rng, pack.to_bytes(m), lay["arena_offset"], 7, lay["train_offset"])
    return files


V3_CHECKS = {"INPUT_MODE_V3", "LAYER_KIND", "CONV_KERNEL", "DENSE_KERNEL", "CONV_PAD", "DENSE_PAD", "CONV_POOL",
             "DENSE_POOL", "LAYER_RESERVED", "CONV_AFTER_DENSE", "OUTPUT_DENSE", "IN_H_UNUSED", "IN_W_UNUSED",
             "IN_C_UNUSED", "IN_H", "IN_W", "IN_C", "IN_SHAPE", "CONV_FIT", "POOL_ODD", "V3_GROW_LEFT",
             "V3_LIVE"}  # fmt: skip


def test_v3_corpus_reaches_every_v3_check():
    # These files add to test_fallback.error_corpus's version 3 part (every layer of three
    # bases, a padded segment per plane): each version 3 check fails on some of them.
    seen, versions = corpus_reach(error_corpus_v3())
    assert V3_CHECKS <= set(checks.BY_NAME)  # (a check renamed: this list follows)
    assert V3_CHECKS <= seen and "WEIGHT_PADDING" in seen
    assert versions == {3}


@pytest.mark.parametrize("engine,crc", [("viper", "binascii"), ("python", "table")])
def test_fallback_rejects_what_pack_rejects_v3(micropython, tmp_path, engine, crc):
    check_error_parity(micropython, tmp_path, error_corpus_v3(), engine, crc, ERR_RE, 5)


# --- the twin's scores ---------------------------------------------------------------
def parity_models(rng: np.random.Generator) -> list[Model]:
    """Small version 3 models: random ones (support.randconv: conv stacks with and without
    pools, hidden dense layers, modes 0 and 1, several blocks, a free plane), a dense one
    in input mode 1, and the corners: a 64-bit patch row (33 channels x 5 x 5... of a map
    whose rows are not whole words), 40 output channels (a flip vector of two words), all
    8 planes, a 5x5 kernel at pad 2 on a 7x5 map."""
    return [
        *[random_conv_model(rng) for _ in range(5)],
        random_conv_model(rng, conv=False),
        conv_model(rng, (8, 8, 1), [Layer.conv(4, 3, pool=True), Layer.conv(6, 3, pool=True), Layer(5)], 0x80),
        conv_model(rng, (6, 6, 2), [Layer.conv(5, 3, pool=True), Layer.conv(7, 3, pad=0), Layer(9), Layer(4)],
                   0xC1, input_mode=1, n_blocks=2),
        conv_model(rng, (5, 7, 3), [Layer.conv(33, 5, pad=1), Layer.conv(3, 1), Layer(3)], 0xFF),
        conv_model(rng, (4, 10, 2), [Layer.conv(40, 3, pad=1, pool=True), Layer(6)], 0x1A, input_mode=1),
        conv_model(rng, (3, 3, 5), [Layer(9), Layer(3)], 0xE0, input_mode=1, n_blocks=2),
        conv_model(rng, (7, 5, 1), [Layer.conv(2, 5, pad=2), Layer(37), Layer(2)], 0x81, n_blocks=3),
    ]  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_fallback_conv_matches_twin(micropython, tmp_path, engine):
    rng = np.random.default_rng(909)
    check_parity(micropython, tmp_path, parity_models(rng), engine, rng, n_samples=3)


# --- info(), no allocation per call, no training -------------------------------------
API = r"""
from array import array
import micropython
import rbnn

def err(f, *a):
    try:
        f(*a)
    except (ValueError, TypeError) as e:
        return "%s: %s" % (type(e).__name__, e)
    return "no error"

m = rbnn.load("m.rbnn")
print("INFO", m.info())
raw = open("x.raw", "rb").read()
packed = open("x.packed", "rb").read()
out = array("i", [0] * m.n_classes)
c1 = m.scores(raw, out)
r = []
micropython.heap_lock()
try:
    r.append(m.predict(raw))
    r.append(m.scores(packed, out))
    r.append(m.scores(raw, out))
except MemoryError:
    pass
micropython.heap_unlock()
print("NOALLOC", len(r), r == [c1] * 3)
print("SCORES", " ".join([str(v) for v in out]))
print("LEN", err(m.predict, raw[:-1]))
print("TRAIN", err(m.train, raw, 0))
print("BATCH", err(m.train_batch, raw, bytes(1)))
print("GROW", err(m.grow))
print("FREEZE", err(m.freeze))
print("STATS", m.stats()["grow_left"], m.stats()["live"])
"""


def check_conv_api(micropython: str, tmp_path, engine: str) -> None:
    """Run the API script with ``engine`` on a version 3 model and check every answer:
    the same from every engine (the fallback's two, and the C module's)."""
    rng = np.random.default_rng(12)
    # room to grow (free planes, empty slots): a version 3 model still may not open a block
    m = conv_model(rng, (6, 6, 2), [Layer.conv(5, 3, pool=True), Layer.conv(33, 3, pad=0), Layer(9), Layer(4)],
                   0xC1, input_mode=1, n_blocks=2, max_blocks=4)  # fmt: skip
    m.arena = np.concatenate([m.arena, np.zeros_like(m.arena)])
    (tmp_path / "m.rbnn").write_bytes(pack.to_bytes(m))
    x = random_inputs(rng, m.n_inputs, 3)[2]
    xb = pack_input(x, m.plane_mask)
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    (tmp_path / "x.packed").write_bytes(le_bytes(xb))
    proc = run_mpy_code(micropython, API, tmp_path, env={"RBNN_ENGINE": engine})
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    ram = m.ram_bytes()
    assert ram["patch"] == 4 * 3  # K = 3 patches of 18 bits for layer 0; layer 1: 45 bits
    assert eval(got["INFO"], {}) == {
        "engine": engine, "inputs": 72, "plane_mask": 0xC1, "layers": [72, 5, 33, 9, 4], "blocks": 2,
        "max_blocks": 4, "live": None, "planes": 4, "weight_bits": 2 * m.weights_per_block,
        "file_bytes": len(pack.to_bytes(m)), "ram": sum(ram.values()), "input_bytes": ram["input"], "train_ram": 0,
    }  # fmt: skip
    assert got["NOALLOC"] == "3 True"
    assert [int(v) for v in got["SCORES"].split()] == twin.scores(m, xb[None])[0].tolist()
    assert got["LEN"] == "ValueError: rbnn: input has 71 bytes; expected 72 raw features or 36 bytes of packed bits"
    for key in ("TRAIN", "BATCH", "GROW", "FREEZE"):  # the twin's words (rbnn.learn.step)
        assert got[key] == "ValueError: rbnn: E_FULL: " + UNTRAINABLE, key
    assert got["STATS"] == "0 None"


@pytest.mark.parametrize("engine", ENGINES)
def test_fallback_conv_api(micropython, tmp_path, engine):
    check_conv_api(micropython, tmp_path, engine)


CNN_HEAP = r"""
import gc
import rbnn, rbnn_pyconv
rbnn_pyconv.kernel(rbnn.engine)  # the conv code first: what follows is the model's own
x = open("x.raw", "rb").read()
gc.collect()
free0 = gc.mem_free()
m = rbnn.load("cnn.rbnn")
gc.collect()
free1 = gc.mem_free()
print("CLASS", m.predict(x))
gc.collect()
print("HEAP", free0 - free1, free0 - gc.mem_free(), m.info()["ram"])
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_mnist_cnn_runs_in_file_size_plus_scratch(micropython, tmp_path, engine):
    # The 28x28 CNN of issue 9 (conv 32 + pool, conv 64 + pool, dense 128, dense 10; 54 kB)
    # with the firmware as .mpy: the model holds its file and the eBNN-order scratch (two
    # pooled maps, one patch: 1,744 bytes), never an unpooled map (3,136 bytes for conv 32
    # on 28x28), and an inference allocates nothing that stays.
    from test_fallback import mpy_cross

    from support.randconv import mnist_cnn

    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("rbnn", "rbnn_py", "rbnn_pyconv"):
        subprocess.run([mpy_cross(), "-o", str(lib / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")], check=True)
    rng = np.random.default_rng(28)
    m = mnist_cnn(rng)
    data = pack.to_bytes(m)
    (tmp_path / "cnn.rbnn").write_bytes(data)
    x = random_inputs(rng, 784, 3)[2]
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    proc = run_mpy_code(micropython, CNN_HEAP, tmp_path, env={"RBNN_ENGINE": engine}, heapsize="256k", path=[lib])
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert int(got["CLASS"]) == int(twin.predict(m, pack_input(x, 0x80)[None])[0])
    loaded, after, ram = map(int, got["HEAP"].split())
    assert ram == sum(m.ram_bytes().values()) == 1744
    # + the parsed shape and plans (about 3.2 kB on this 64-bit port), less than a map
    assert len(data) + ram <= loaded < len(data) + ram + 3584
    assert after - loaded < 256  # the inference kept nothing


NO_VIPER_CONV = r"""
from array import array
import rbnn_py, rbnn_pyconv
rbnn_py.use("viper")
rbnn_pyconv._VIPER_SRC = "@micropython.viper\ndef _conv_v(a: ptr32):\n    return a +\n"  # will not compile
m = rbnn_py.Model(open("m.rbnn", "rb").read())
out = array("i", [0] * m.n_classes)
m.scores(open("x.raw", "rb").read(), out)
print(m.engine, rbnn_pyconv._v is rbnn_pyconv._conv_py, " ".join([str(v) for v in out]))
"""


def test_viper_engine_runs_conv_in_plain_code_where_its_kernel_does_not_compile(micropython, tmp_path):
    # A port whose native emitter refuses the conv kernel still runs the model, with the
    # twin's scores: the plain kernel reads the viper engine's buffers.
    rng = np.random.default_rng(5)
    m = conv_model(rng, (6, 6, 2), [Layer.conv(5, 3, pool=True), Layer(4)], 0xC1, input_mode=1)
    (tmp_path / "m.rbnn").write_bytes(pack.to_bytes(m))
    x = random_inputs(rng, m.n_inputs, 3)[2]
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    got = run_mpy_code(micropython, NO_VIPER_CONV, tmp_path).stdout.split()
    assert got[:2] == ["viper", "True"]
    assert [int(v) for v in got[2:]] == twin.scores_u8(m, x[None])[0].tolist()
