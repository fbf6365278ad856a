"""Tiled batch inference (rbnn_infer_batch runs several samples through each weight row)
and every XOR-popcount kernel the host build can pick at run time (AVX2, AVX-512
VPOPCNTDQ), against the numpy twin: batches whose sizes are not multiples of the tile,
every layer shape the tile code branches on, and the sanitized harness built -march=native.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest

from rbnn.engines import ccore, twin
from rbnn.errors import ModelError
from rbnn.format import pack
from rbnn.format.model import pack_input
from support import charness
from support.randmodel import random_model, saturated_model, tie_model

KERNELS = ccore.kernels()
TILES = [1, 3, 16]  # one at a time, 3 of the 16 lanes, the full tile
SIZES = [0, 1, 2, 15, 16, 17, 35]  # partial tiles, tails of 1 (one at a time) and 3


@pytest.fixture(params=KERNELS)
def kernel(request):
    old = ccore.select_kernel(request.param)
    yield request.param
    ccore.select_kernel(old)


@pytest.fixture(params=TILES)
def tile(request):
    old = ccore.set_batch_tile(request.param)
    yield request.param
    ccore.set_batch_tile(old)


def _edge(rng, m, n):
    x = rng.integers(0, 256, (n, m.n_inputs), dtype=np.uint8)
    if n >= 2:
        x[0], x[1] = 0, 255
    return x


def _models(rng):
    yield random_model(rng, n_inputs=784, sizes=[256, 256, 10], plane_mask=0x80)
    yield random_model(rng, n_inputs=33, sizes=[31, 33, 2], plane_mask=0x81, n_blocks=3)
    yield random_model(rng, n_inputs=100, sizes=[70, 5], plane_mask=0xFF, n_blocks=2)  # 8 planes
    yield random_model(rng, n_inputs=17, sizes=[3], plane_mask=0x10)  # no hidden layer
    # The tile buffer (8192 words) holds 16 * (input words + both activation buffers):
    yield random_model(rng, n_inputs=2000, sizes=[128, 128, 3], plane_mask=0xFF)  # 16 * (504 + 8): fits
    yield random_model(rng, n_inputs=2000, sizes=[160, 160, 3], plane_mask=0xFF)  # 16 * 514: one at a time
    yield saturated_model(1000, [300, 5], plane_mask=0xC0)  # largest popcounts
    yield saturated_model(1300, [3], plane_mask=0xC0)  # ... reaching the scores: 41 words of 32
    yield tie_model(rng, [3, 7, 7, 1, 7])  # ties: lowest class
    for _ in range(12):
        yield random_model(rng, n_blocks=int(rng.integers(1, 4)))


def test_every_kernel_and_tile_matches_twin(rng, kernel, tile):
    assert ccore.lib().rbnn_kernel_active().decode() == kernel if len(KERNELS) > 1 else True
    for m in _models(rng):
        cm = ccore.CModel(pack.to_bytes(m))
        xb = pack_input(_edge(rng, m, max(SIZES)), m.plane_mask)
        for n in SIZES:
            want = twin.scores(m, xb[:n])
            np.testing.assert_array_equal(cm.scores(xb[:n]), want, err_msg=f"{m.sizes} n={n}")
            np.testing.assert_array_equal(cm.predict(xb[:n]), twin.predict(m, xb[:n]))


@pytest.mark.parametrize("bad", [0, 5, 15, 16, 20])
def test_bad_input_stops_the_batch_there(rng, kernel, tile, bad):
    """E_INPUT at sample `bad` (inside a tile, or in the tail): the samples before it are
    scored, the ones after it are not touched, whatever the tile."""
    m = random_model(rng, n_inputs=50, sizes=[40, 6], plane_mask=0x88)
    cm = ccore.CModel(pack.to_bytes(m))
    xb = pack_input(rng.integers(0, 256, (21, 50), dtype=np.uint8), 0x88)
    want = twin.scores(m, xb)
    xb[bad, 1, -1] |= np.uint32(1 << 31)  # a padding bit
    scores = np.full((21, 6), 12345, np.int32)
    classes = np.full(21, -7, np.int32)
    scratch = np.empty(cm.scratch_words, np.uint32)
    rc = ccore.lib().rbnn_infer_batch(ctypes.byref(cm._m), xb.ctypes.data, 21, scratch.ctypes.data,
                                      scores.ctypes.data, classes.ctypes.data)  # fmt: skip
    assert ccore.CODES[rc] == "E_INPUT"
    np.testing.assert_array_equal(scores[:bad], want[:bad])
    np.testing.assert_array_equal(classes[:bad], np.argmax(want[:bad], axis=1))
    assert (scores[bad + 1 :] == 12345).all() and (classes[bad + 1 :] == -7).all()


def test_kernel_selection_and_tile_knob_reject_bad_values():
    with pytest.raises(ModelError, match="not available"):
        ccore.select_kernel("neon")
    with pytest.raises(ModelError, match="must be >= 1"):
        ccore.set_batch_tile(0)
    if hasattr(ccore.lib(), "rbnn_set_batch_tile"):  # clamped to 1..RBNN_TILE
        old = ccore.set_batch_tile(1000)
        assert ccore.set_batch_tile(old) == 16


@pytest.fixture(scope="module")
def native_harness(tmp_path_factory):
    """The sanitized harness built -march=native: the AVX2 build with its run-time choice."""
    out = tmp_path_factory.mktemp("harness") / "rbnn_harness_native"
    src = charness.SRC
    cmd = [ccore.compiler(), *charness.SAN, "-march=native", "-I", str(src), str(charness.HARNESS),
           *(str(src / s) for s in ccore.SOURCES), "-o", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return out


@pytest.mark.parametrize("name", KERNELS)
def test_sanitized_native_kernels_match_twin(native_harness, tmp_path, rng, name, monkeypatch):
    """Every kernel under ASan and UBSan: the harness checks rbnn_infer_batch (tiled)
    against rbnn_infer sample by sample; both against the twin here. 19 samples: a
    full tile and a partial one."""
    if name not in ("avx2", "avx512vpopcntdq", "popcnt64", "swar") or len(KERNELS) == 1:
        pytest.skip(f"no run-time kernel choice in this build ({name})")
    monkeypatch.setenv("RBNN_KERNEL", name)
    for m in [random_model(rng, n_inputs=784, sizes=[256, 61, 10], plane_mask=0x80),
              random_model(rng, n_inputs=45, sizes=[33, 3], plane_mask=0xFF, n_blocks=2),
              saturated_model(300, [40, 3]),
              saturated_model(1300, [3], plane_mask=0xC0),
              random_model(rng, n_inputs=2000, sizes=[128, 128, 3], plane_mask=0xFF),  # fills the buffer
              random_model(rng, n_inputs=2000, sizes=[160, 160, 3], plane_mask=0xFF)]:  # one at a time; fmt: skip
        data = pack.to_bytes(m)
        x = _edge(rng, m, 19)  # a full tile and a partial one
        (tmp_path / "m.rbnn").write_bytes(data)
        (tmp_path / "x.bin").write_bytes(x.tobytes())
        out = charness.run(native_harness, "infer8", str(tmp_path / "m.rbnn"), str(tmp_path / "x.bin"))
        rows = np.array([[int(v) for v in line.split()] for line in out.splitlines()], np.int64)
        want = twin.scores(m, pack_input(x, m.plane_mask))
        np.testing.assert_array_equal(rows[:, 1:], want)
        np.testing.assert_array_equal(rows[:, 0], np.argmax(want, axis=1))
    monkeypatch.setenv("RBNN_KERNEL", "no-such-kernel")
    r = subprocess.run([str(native_harness), "infer8", str(tmp_path / "m.rbnn"), str(tmp_path / "x.bin")],
                       capture_output=True, text=True, env={**os.environ, **charness.SAN_ENV})  # fmt: skip
    assert r.returncode == 1 and "not available" in r.stderr
