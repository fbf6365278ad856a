"""Read and write .rbnn files (docs/FORMAT.md): versions 1, 2 and 3 are read; a model is
written in the oldest version that expresses it (2, or 3 for conv layers and input mode 1:
:attr:`Model.file_version`). Every check is one of rbnn.format.checks, in the order of
docs/FORMAT.md, Errors."""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import FormatError, ModelError
from . import checks
from .bits import pack_bits, pad_mask, unpack_bits, words
from .constants import (
    BLOCK_ENTRY_BYTES,
    CONV,
    DENSE,
    FROZEN,
    HEADER_BYTES,
    HEADER_BYTES_V2,
    I32_MAX,
    INPUT_PER_PLANE,
    INPUT_SHARED,
    LAYER_ENTRY_BYTES,
    LAYER_ENTRY_BYTES_V3,
    LIVE,
    MAGIC,
    MAX_BITS,
    MAX_BLOCKS,
    MAX_INPUTS,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_PLANES,
    MAX_SCORE_Q,
    POOL_2X2,
    POOL_NONE,
    READ_VERSIONS,
    TRAIN_BYTES,
    U32_MAX,
    UNUSED_PLANE,
    VERSION_V3,
    WORD_BITS,
)  # fmt: skip
from .model import Block, Geometry, Layer, Model, geometry, plane_shifts
from .trainstate import OFFSETS, RULE, TrainState

_HEADER = struct.Struct("<4sHHIBBBBHBBIII")  # the fields every version starts with
_HEADER_V2 = struct.Struct("<BBHI24x")  # max_blocks, score_q, reserved, train_offset, reserved
_IN_SHAPE = struct.Struct("<HHH")  # version 3: in_h, in_w, in_c at offset 40
_IN_SHAPE_AT = 40
_LAYER_V3 = struct.Struct("<HBBBBH")  # size, kind, kernel, pad, pool, reserved
assert _HEADER.size == HEADER_BYTES and HEADER_BYTES + _HEADER_V2.size == HEADER_BYTES_V2
assert _LAYER_V3.size == LAYER_ENTRY_BYTES_V3


def _fail(check: str, offset: int, **vals: int) -> FormatError:
    """The FormatError of a failed check (rbnn.format.checks), with its integers."""
    code, field, expected, found = checks.message(check, **vals)
    return FormatError(code, field, offset, expected, found)


class _Head(NamedTuple):
    """What :func:`check_head` found valid."""

    version: int
    n_layers: int
    n_blocks: int
    n_planes: int
    n_inputs: int
    input_mode: int
    plane_mask: int
    max_blocks: int
    score_q: int
    sizes: list
    layout: dict
    layers: list | None  # version 3: the Layer of every entry
    in_shape: tuple | None  # version 3 with a conv layer: (in_h, in_w, in_c)


def header_bytes(version: int) -> int:
    return HEADER_BYTES if version == 1 else HEADER_BYTES_V2


def _entry_bytes(version: int) -> int:
    return LAYER_ENTRY_BYTES_V3 if version >= VERSION_V3 else LAYER_ENTRY_BYTES


def _blocks_offset(n_layers: int, version: int = 2) -> int:
    table = _entry_bytes(version) * n_layers
    return header_bytes(version) + 4 * ((table + 3) // 4)


# The header and the longest layer table: all check_head needs of a file.
HEAD_MAX_BYTES = max(_blocks_offset(MAX_LAYERS, v) for v in READ_VERSIONS)


def _block_params_bytes(sizes: list[int]) -> int:
    hidden = sum(4 * s + 4 * words(s) for s in sizes[:-1])
    return hidden + 8 * sizes[-1]


def layout(
    n_inputs: int, sizes: list[int], n_blocks: int, n_planes: int, max_blocks: int | None = None,
    version: int = 2, geo: list[Geometry] | None = None,
) -> dict:  # fmt: skip
    """Byte offsets and sizes of every section (may exceed 32 bits; callers check).

    ``max_blocks``: the capacity of a version 2 or 3 file (default ``n_blocks``, at least
    1); version 1 has ``n_blocks`` slots and no training section. ``geo`` (version 3):
    the layers' :class:`Geometry` (row words of conv layers and of input mode 1); None:
    dense layers in input mode 0.
    """
    slots = n_blocks if version == 1 else max(1, n_blocks) if max_blocks is None else max_blocks
    if geo is None:
        inputs = [n_inputs] + list(sizes[:-1])
        row_words = [words(i) for i in inputs]
    else:
        row_words = [g.row_words for g in geo]
    plane_bytes = 4 * sum(o * rw for rw, o in zip(row_words, sizes, strict=True))
    blocks_offset = _blocks_offset(len(sizes), version)
    arena_offset = blocks_offset + BLOCK_ENTRY_BYTES * slots
    params_offset = arena_offset + n_planes * plane_bytes
    block_params = _block_params_bytes(sizes)
    train_offset = params_offset + slots * block_params
    train_bytes = 0 if version == 1 else TRAIN_BYTES
    file_bytes = train_offset + train_bytes + 4
    return {
        "header_bytes": header_bytes(version),
        "plane_bytes": plane_bytes,
        "blocks_offset": blocks_offset,
        "arena_offset": arena_offset,
        "params_offset": params_offset,
        "block_params_bytes": block_params,
        "train_offset": train_offset,
        "train_bytes": train_bytes,
        "slots": slots,
        "file_bytes": file_bytes,
    }


def model_layout(m: Model) -> dict:
    """:func:`layout` of a model as this package writes it (version ``m.file_version``)."""
    v = m.file_version
    return layout(m.n_inputs, m.sizes, len(m.blocks), m.n_planes, m.capacity, v,
                  m.geometry() if v >= VERSION_V3 else None)  # fmt: skip


def _layer_table(m: Model, version: int) -> bytes:
    """Versions 1 and 2: u16 sizes padded to 4 bytes; version 3: 8-byte entries."""
    if version < VERSION_V3:
        out = struct.pack(f"<{m.n_layers}H", *m.sizes)
        return out + b"\0" * (-len(out) % 4)
    return b"".join(_LAYER_V3.pack(ly.size, ly.kind, ly.kernel, ly.pad, ly.pool, 0) for ly in m.layer_specs)


def to_bytes(model: Model) -> bytes:
    """Serialise a model in the oldest version that expresses it (:attr:`Model.file_version`:
    a dense input-mode-0 model is version 2, byte for byte as before); ModelError if it
    cannot be represented, FormatError if the reader would refuse the bytes."""
    m = model
    sizes = list(m.sizes)
    if not 1 <= len(sizes) <= MAX_LAYERS:
        raise ModelError(f"n_layers must be 1..{MAX_LAYERS}, got {len(sizes)}")
    if len(m.blocks) > m.capacity:
        raise ModelError(f"{len(m.blocks)} blocks do not fit max_blocks {m.capacity}")
    version = m.file_version
    if version >= VERSION_V3 and (m.live_index() is not None or m.state().grow_left):
        # docs/FORMAT.md, Training a version 3 model: say it here, not as a reader's E_TRAIN
        raise ModelError("a model with conv layers or input mode 1 is not trained by the integer step: "
                         "it may have no live block and no grow_left (freeze it first)")  # fmt: skip
    lay = model_layout(m)
    if m.arena.shape != (m.n_planes, lay["plane_bytes"] // 4):
        raise ModelError(f"arena shape {m.arena.shape} != ({m.n_planes}, {lay['plane_bytes'] // 4})")
    out = bytearray()
    out += _HEADER.pack(
        MAGIC, version, 0, lay["file_bytes"], WORD_BITS, len(sizes), len(m.blocks), m.n_planes,
        m.n_inputs, m.input_mode, m.plane_mask,
        lay["plane_bytes"], lay["arena_offset"], lay["params_offset"],
    )  # fmt: skip
    out += _HEADER_V2.pack(m.capacity, m.score_q, 0, lay["train_offset"])
    if version >= VERSION_V3 and m.has_conv:
        _IN_SHAPE.pack_into(out, _IN_SHAPE_AT, *m.in_shape)
    out += _layer_table(m, version)
    for b in m.blocks:
        if not 1 <= len(b.planes) <= MAX_BITS:
            raise ModelError(f"a block owns 1..{MAX_BITS} planes, got {len(b.planes)}")
        planes = list(b.planes) + [UNUSED_PLANE] * (MAX_BITS - len(b.planes))
        out += struct.pack("<BBH16B", b.state, len(b.planes), 0, *planes)
    out += b"\xff" * (BLOCK_ENTRY_BYTES * (m.capacity - len(m.blocks)))  # empty slots
    out += m.arena.astype("<u4").tobytes()
    for b in m.blocks:
        for t, f in zip(b.thresholds, b.flips, strict=True):
            out += np.asarray(t, "<i4").tobytes()
            out += pack_bits(np.asarray(f, bool)).astype("<u4").tobytes()
        out += np.asarray(b.scale, "<i4").tobytes() + np.asarray(b.offset, "<i4").tobytes()
    out += bytes(lay["block_params_bytes"] * (m.capacity - len(m.blocks)))
    out += m.state().to_bytes()
    out += struct.pack("<I", zlib.crc32(out))
    if len(out) != lay["file_bytes"]:
        raise ModelError(f"internal: wrote {len(out)} bytes, layout says {lay['file_bytes']}")
    data = bytes(out)
    from_bytes(data)  # never write what a reader would refuse
    return data


def reseal(buf: bytearray) -> None:
    """Recompute the CRC of a file changed in place (as the C core's rbnn_reseal)."""
    struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(memoryview(buf)[:-4]))


def save(model: Model, path: str | os.PathLike) -> int:
    """Write ``model`` to ``path`` atomically (:func:`rbnn.files.write_atomic`: temp file,
    fsync, rename; a pipe or character device is written into); returns bytes written."""
    from ..files import write_atomic

    data = to_bytes(model)
    write_atomic(path, lambda f: f.write(data))
    return len(data)


def load(path: str | os.PathLike) -> Model:
    """Read and check a .rbnn file (:func:`rbnn.files.read_model`); FormatError names
    the file, offset and field."""
    from ..files import read_model

    return read_model(path)[1]


def _check_layers_v3(buf: bytes, hb: int, sizes: list[int]) -> list[Layer]:
    """Version 3: each entry's kind, kernel, pad, pool, reserved (layer by layer, fields in
    table order), then the order of kinds (docs/FORMAT.md, New checks)."""
    layers = []
    for i, size in enumerate(sizes):
        at = hb + LAYER_ENTRY_BYTES_V3 * i
        _, kind, kernel, pad, pool, reserved = _LAYER_V3.unpack_from(buf, at)
        if kind not in (DENSE, CONV):
            raise _fail("LAYER_KIND", at + 2, i=i, found=kind)
        conv = kind == CONV
        if conv and not (kernel % 2 == 1 and kernel <= MAX_KERNEL):
            raise _fail("CONV_KERNEL", at + 3, i=i, found=kernel)
        if not conv and kernel:
            raise _fail("DENSE_KERNEL", at + 3, i=i, found=kernel)
        if conv and pad > kernel // 2:
            raise _fail("CONV_PAD", at + 4, i=i, want=kernel // 2, found=pad)
        if not conv and pad:
            raise _fail("DENSE_PAD", at + 4, i=i, found=pad)
        if conv and pool not in (POOL_NONE, POOL_2X2):
            raise _fail("CONV_POOL", at + 5, i=i, found=pool)
        if not conv and pool:
            raise _fail("DENSE_POOL", at + 5, i=i, found=pool)
        if reserved:
            raise _fail("LAYER_RESERVED", at + 6, i=i, found=reserved)
        layers.append(Layer(size, kind, kernel, pad, pool))
    kind_at = lambda i: hb + LAYER_ENTRY_BYTES_V3 * i + 2  # noqa: E731
    for i in range(1, len(layers)):
        if layers[i].kind == CONV and layers[i - 1].kind == DENSE:
            raise _fail("CONV_AFTER_DENSE", kind_at(i), i=i, found=CONV)
    if layers[-1].kind != DENSE:
        raise _fail("OUTPUT_DENSE", kind_at(len(layers) - 1), i=len(layers) - 1, found=layers[-1].kind)
    return layers


def _check_shapes_v3(buf: bytes, hb: int, n_inputs: int, layers: list[Layer]) -> tuple[int, int, int] | None:
    """Version 3: the input shape (all 0 without conv layers; else each >= 1 and the product
    ``n_inputs``), then the conv maps chaining layer by layer."""
    shape = _IN_SHAPE.unpack_from(buf, _IN_SHAPE_AT)
    if not any(ly.kind == CONV for ly in layers):
        for n, (name, v) in enumerate(zip(("IN_H_UNUSED", "IN_W_UNUSED", "IN_C_UNUSED"), shape, strict=True)):
            if v:
                raise _fail(name, _IN_SHAPE_AT + 2 * n, found=v)
        return None
    for n, (name, v) in enumerate(zip(("IN_H", "IN_W", "IN_C"), shape, strict=True)):
        if v == 0:
            raise _fail(name, _IN_SHAPE_AT + 2 * n, found=v)
    h, w, c = shape
    if h * w * c != n_inputs:
        raise _fail("IN_SHAPE", _IN_SHAPE_AT, i=h, j=w, k=c, want=n_inputs)
    for i, ly in enumerate(layers):
        if ly.kind != CONV:
            break
        at = hb + LAYER_ENTRY_BYTES_V3 * i
        h1, w1 = h + 2 * ly.pad - ly.kernel + 1, w + 2 * ly.pad - ly.kernel + 1
        if h1 < 1 or w1 < 1:
            raise _fail("CONV_FIT", at + 3, i=i, j=h, k=w, want=min(h, w) + 2 * ly.pad, found=ly.kernel)
        if ly.pool == POOL_2X2 and (h1 % 2 or w1 % 2):
            raise _fail("POOL_ODD", at + 5, i=i, j=h1, k=w1, found=ly.pool)
        div = 2 if ly.pool == POOL_2X2 else 1
        h, w = h1 // div, w1 // div
    return shape


def check_head(buf: bytes, n: int) -> _Head:
    """The checks of :func:`from_bytes` that need only the first bytes of a file and its
    size: header fields, layer table, ``file_bytes`` against ``n``, the section offsets.

    Parameters
    ----------
    buf : bytes
        The file's first ``min(n, HEAD_MAX_BYTES)`` bytes (or all of them).
    n : int
        The file's size in bytes.

    Same errors, in the same order, as :func:`from_bytes` on the whole file, so a reader
    can refuse a file of any size after reading :data:`HEAD_MAX_BYTES` of it.
    """
    if n < HEADER_BYTES:
        raise _fail("TRUNC_HEADER", 0, found=n)
    (magic, version, flags, file_bytes, word_bits, n_layers, n_blocks, n_planes, n_inputs,
     input_mode, plane_mask, plane_bytes, arena_offset, params_offset) = _HEADER.unpack_from(buf)  # fmt: skip
    if magic != MAGIC:
        raise _fail("MAGIC", 0, found=int.from_bytes(magic, "big"))
    if version not in READ_VERSIONS:
        raise _fail("VERSION", 4, found=version)
    if flags != 0:
        raise _fail("FLAGS", 6, found=flags)
    v3 = version >= VERSION_V3
    for check, off, val, lo, hi in [
        ("WORD_BITS", 12, word_bits, WORD_BITS, WORD_BITS),
        ("N_LAYERS", 13, n_layers, 1, MAX_LAYERS),
        ("N_BLOCKS", 14, n_blocks, 1, MAX_BLOCKS) if version == 1 else ("N_BLOCKS_V2", 14, n_blocks, 0, MAX_BLOCKS),
        ("N_PLANES", 15, n_planes, 1, MAX_PLANES),
        ("N_INPUTS", 16, n_inputs, 1, MAX_INPUTS),
        ("INPUT_MODE_V3", 18, input_mode, INPUT_SHARED, INPUT_PER_PLANE) if v3 else ("INPUT_MODE", 18, input_mode, 0, 0),
        ("PLANE_MASK", 19, plane_mask, 1, 0xFF),
    ]:
        if not lo <= val <= hi:
            raise _fail(check, off, found=val)
    hb = header_bytes(version)
    max_blocks, score_q, train_offset = n_blocks, 0, 0
    if version >= 2:
        if n < hb:
            raise _fail("TRUNC_HEADER_V2", 0, found=n)
        max_blocks, score_q, reserved, train_offset = _HEADER_V2.unpack_from(buf, HEADER_BYTES)
        if not max(1, n_blocks) <= max_blocks <= MAX_BLOCKS:
            raise _fail("MAX_BLOCKS", 32, want=max(1, n_blocks), found=max_blocks)
        if score_q > MAX_SCORE_Q:
            raise _fail("SCORE_Q", 33, found=score_q)
        # version 3 keeps in_h, in_w, in_c in 40..45
        for at in [34, 35, *range(_IN_SHAPE_AT + (_IN_SHAPE.size if v3 else 0), HEADER_BYTES_V2)]:
            if buf[at]:
                raise _fail("HEADER_RESERVED", at, i=at, found=buf[at])
    blocks_offset = _blocks_offset(n_layers, version)
    if n < blocks_offset:
        raise _fail("TRUNC_LAYERS", hb, want=blocks_offset, found=n)
    eb = _entry_bytes(version)
    sizes = [struct.unpack_from("<H", buf, hb + eb * i)[0] for i in range(n_layers)]
    for i, s in enumerate(sizes):
        if s == 0:
            raise _fail("LAYER_SIZE", hb + eb * i, i=i, found=0)
    pad_at = hb + eb * n_layers
    if pad_at < blocks_offset and any(buf[pad_at:blocks_offset]):
        raise _fail("LAYER_PAD", pad_at, found=struct.unpack_from("<H", buf, pad_at)[0])
    layers, in_shape, geo = None, None, None
    if v3:
        layers = _check_layers_v3(buf, hb, sizes)
        in_shape = _check_shapes_v3(buf, hb, n_inputs, layers)
        geo = geometry(n_inputs, layers, in_shape, bin(plane_mask).count("1"), input_mode)  # cannot fail now
    lay = layout(n_inputs, sizes, n_blocks, n_planes, max_blocks, version, geo)
    if lay["plane_bytes"] > U32_MAX or lay["file_bytes"] > U32_MAX:
        raise _fail("SIZE_OVERFLOW", 8)
    if n < file_bytes:
        raise _fail("TRUNC_FILE", 8, want=file_bytes, found=n)
    if n > file_bytes:
        raise _fail("FILE_LONGER", 8, want=n, found=file_bytes)
    stored = [("PLANE_BYTES", "plane_bytes", 20, plane_bytes), ("ARENA_OFFSET", "arena_offset", 24, arena_offset),
              ("PARAMS_OFFSET", "params_offset", 28, params_offset)]  # fmt: skip
    if version >= 2:
        stored.append(("TRAIN_OFFSET", "train_offset", 36, train_offset))
    stored.append(("FILE_BYTES", "file_bytes", 8, file_bytes))
    for check, name, off, value in stored:
        if value != lay[name]:
            raise _fail(check, off, want=lay[name], found=value)
    return _Head(version, n_layers, n_blocks, n_planes, n_inputs, input_mode, plane_mask, max_blocks, score_q,
                 sizes, lay, layers, in_shape)  # fmt: skip


def from_bytes(buf: bytes) -> Model:
    """Parse and validate a model (check order of docs/FORMAT.md, Errors)."""
    buf = bytes(buf)
    n = len(buf)
    h = check_head(buf, n)
    sizes, lay = h.sizes, h.layout
    crc_stored = struct.unpack_from("<I", buf, n - 4)[0]
    crc = zlib.crc32(buf[: n - 4])
    if crc != crc_stored:
        raise _fail("CRC", n - 4, want=crc, found=crc_stored)

    blocks = _read_blocks(buf, h)
    plane_words = lay["plane_bytes"] // 4
    arena = np.frombuffer(buf, "<u4", h.n_planes * plane_words, lay["arena_offset"]).reshape(h.n_planes, plane_words)
    m = Model(h.n_inputs, h.plane_mask, sizes, arena.astype(np.uint32), blocks, h.input_mode,
              max_blocks=h.max_blocks if h.version >= 2 else None, score_q=h.score_q, version=h.version,
              layers=h.layers, in_shape=h.in_shape)  # fmt: skip
    _check_weight_padding(m, lay)
    _read_params(buf, m, lay)
    if h.version >= 2:
        _check_empty_params(buf, m, lay)
        _check_live_flips(m, lay)
        if h.version >= VERSION_V3:
            _check_untrained(buf, m, lay)
        m.train = _read_train(buf, m, lay)
    _check_range(m, lay, h.version)
    return m


def _check_untrained(buf: bytes, m: Model, lay: dict) -> None:
    """Version 3 (docs/FORMAT.md, Training a version 3 model): ``grow_left`` 0, then no
    live block."""
    at = lay["train_offset"] + OFFSETS["grow_left"]
    if buf[at]:
        raise _fail("V3_GROW_LEFT", at, found=buf[at])
    live = m.live_index()
    if live is not None:
        raise _fail("V3_LIVE", lay["blocks_offset"] + BLOCK_ENTRY_BYTES * live, i=live, found=LIVE)


def _read_blocks(buf: bytes, h: _Head) -> list[Block]:
    """The block table: blocks in use (each plane owned once, only the last live), then
    the empty slots (version 2)."""
    blocks: list[Block] = []
    owner: dict[int, int] = {}
    at0 = h.layout["blocks_offset"]
    for b in range(h.n_blocks):
        off = at0 + BLOCK_ENTRY_BYTES * b
        state, n_bits, reserved, *planes = struct.unpack_from("<BBH16B", buf, off)
        if state not in (FROZEN, LIVE):
            raise _fail("BLOCK_STATE", off, i=b, found=state)
        if state == LIVE and h.version >= 2 and b != h.n_blocks - 1:
            raise _fail("BLOCK_LIVE_LAST", off, i=b, found=state)
        if state == FROZEN and n_bits != 1:
            raise _fail("BLOCK_BITS_FROZEN", off + 1, i=b, found=n_bits)
        if not 1 <= n_bits <= MAX_BITS:
            raise _fail("BLOCK_BITS", off + 1, i=b, found=n_bits)
        if reserved:
            raise _fail("BLOCK_RESERVED", off + 2, i=b, found=reserved)
        for i, p in enumerate(planes):
            at = off + 4 + i
            if i >= n_bits:
                if p != UNUSED_PLANE:
                    raise _fail("BLOCK_UNUSED", at, i=b, j=i, found=p)
                continue
            if p >= h.n_planes:
                raise _fail("BLOCK_PLANE", at, i=b, j=i, want=h.n_planes, found=p)
            if p in owner:
                raise _fail("BLOCK_OWNED", at, i=b, j=i, want=owner[p], found=p)
            owner[p] = b
        blocks.append(Block(state, planes[:n_bits], [], [], np.zeros(0, np.int32), np.zeros(0, np.int32)))
    for slot in range(h.n_blocks, h.layout["slots"]):
        off = at0 + BLOCK_ENTRY_BYTES * slot
        for j in range(BLOCK_ENTRY_BYTES):
            if buf[off + j] != UNUSED_PLANE:
                raise _fail("BLOCK_EMPTY", off + j, i=slot, j=j, found=buf[off + j])
    return blocks


def _check_weight_padding(m: Model, lay: dict) -> None:
    """Layer by layer, each plane in order, row by row, each row's segments in order
    (input mode 1: one per kept plane; docs/FORMAT.md, Version 3)."""
    offs = m.layer_word_offsets()
    for layer, g in enumerate(m.geometry()):
        mask = pad_mask(g.n_in)
        if mask == U32_MAX:
            continue
        w = words(g.n_in)
        for p in range(m.n_planes):
            last = m.layer_words(p, layer).reshape(-1, g.segments, w)[:, :, -1]  # (rows, segments)
            bad = np.flatnonzero(last & ~np.uint32(mask))
            if bad.size:
                r, seg = divmod(int(bad[0]), g.segments)
                word = int(last[r, seg])
                at = lay["arena_offset"] + p * lay["plane_bytes"] + 4 * (offs[layer] + r * g.row_words + seg * w + w - 1)
                raise _fail("WEIGHT_PADDING", at, i=p, j=layer, k=r, found=word & ~mask & U32_MAX)


def _read_params(buf: bytes, m: Model, lay: dict) -> None:
    """Thresholds, flips (padding checked), scale and offset of every block in use."""
    at = lay["params_offset"]
    for b, blk in enumerate(m.blocks):
        for layer, s in enumerate(m.sizes[:-1]):
            blk.thresholds.append(np.frombuffer(buf, "<i4", s, at).astype(np.int32))
            at += 4 * s
            fw = np.frombuffer(buf, "<u4", words(s), at).astype(np.uint32)
            if int(fw[-1]) & ~pad_mask(s) & U32_MAX:
                raise _fail("FLIP_PADDING", at + 4 * (words(s) - 1), i=b, j=layer, found=int(fw[-1]))
            blk.flips.append(unpack_bits(fw, s))
            at += 4 * words(s)
        k = m.sizes[-1]
        blk.scale = np.frombuffer(buf, "<i4", k, at).astype(np.int32)
        blk.offset = np.frombuffer(buf, "<i4", k, at + 4 * k).astype(np.int32)
        at += 8 * k


def _check_empty_params(buf: bytes, m: Model, lay: dict) -> None:
    bpb = lay["block_params_bytes"]
    for slot in range(len(m.blocks), lay["slots"]):
        at = lay["params_offset"] + slot * bpb
        chunk = buf[at : at + bpb]
        if any(chunk):
            j = next(i for i, v in enumerate(chunk) if v)
            raise _fail("PARAMS_EMPTY", at + j, i=slot, want=j, found=chunk[j])


def _check_live_flips(m: Model, lay: dict) -> None:
    """A live block's flips are 0, and its output stays within half of the block budget
    (|scale| * smax <= half, |offset| < half: docs/TRAINING.md), as the step keeps it."""
    live = m.live_index()
    if live is None:
        return
    at = lay["params_offset"] + live * lay["block_params_bytes"]
    for layer, s in enumerate(m.sizes[:-1]):
        fw = pack_bits(m.blocks[live].flips[layer])
        at += 4 * s
        for w, v in enumerate(fw):
            if v:
                raise _fail("LIVE_FLIPS", at + 4 * w, i=live, j=layer, found=int(v))
        at += 4 * words(s)
    blk, k = m.blocks[live], m.n_classes
    top = m.half // m.output_smax()
    for j, v in enumerate(blk.scale.tolist()):
        if abs(v) > top:
            raise _fail("LIVE_SCALE", at + 4 * j, i=live, j=j, want=top, found=v & U32_MAX)
    for j, v in enumerate(blk.offset.tolist()):
        if abs(v) > m.half - 1:
            raise _fail("LIVE_OFFSET", at + 4 * (k + j), i=live, j=j, want=m.half - 1, found=v & U32_MAX)


def layer_smax(m: Model, layer: int) -> int:
    """The largest |s| of a layer (docs/FORMAT.md, Semantics)."""
    if layer == 0:  # in[0] * sum over kept planes of 2^(n - low), both input modes
        return m.layer_inputs[0] * sum(1 << s for s in plane_shifts(m.plane_mask))
    return m.layer_inputs[layer]


def max_scale_shift(m: Model) -> int:
    """The largest ``scale_shift`` with 2^scale_shift * smax <= half (-1: none)."""
    smax, half = m.output_smax(), m.half
    sh = -1
    while (1 << (sh + 1)) * smax <= half:
        sh += 1
    return sh


def _read_train(buf: bytes, m: Model, lay: dict) -> TrainState:
    """The training section, field by field in table order (docs/FORMAT.md)."""
    base = lay["train_offset"]
    st, raw = TrainState.unpack(buf, base, m.n_layers)
    at = lambda f: base + OFFSETS[f]  # noqa: E731
    if raw["rule"] != RULE:
        raise _fail("TRAIN_RULE", at("rule"), found=raw["rule"])
    steps = raw["steps"]
    if raw["block_steps"] > steps:
        raise _fail("TRAIN_BLOCK_STEPS", at("block_steps"), want=steps, found=raw["block_steps"])
    if m.live_index() is None and raw["block_steps"]:
        raise _fail("TRAIN_NO_LIVE", at("block_steps"), found=raw["block_steps"])
    for f, check in (("hits", "TRAIN_HITS"), ("active", "TRAIN_ACTIVE"), ("stream_base", "TRAIN_STREAM_BASE")):
        if raw[f] > steps:
            raise _fail(check, at(f), want=steps, found=raw[f])
    if not 1 <= raw["margin"] <= m.budget:
        raise _fail("TRAIN_MARGIN", at("margin"), want=m.budget, found=raw["margin"])
    if not 1 <= raw["bits"] <= MAX_BITS:
        raise _fail("TRAIN_BITS", at("bits"), found=raw["bits"])
    if raw["grow_left"] > lay["slots"] - len(m.blocks):
        raise _fail("TRAIN_GROW_LEFT", at("grow_left"), want=lay["slots"] - len(m.blocks), found=raw["grow_left"])
    if raw["scale_shift"] > max_scale_shift(m):
        raise _fail("TRAIN_SCALE_SHIFT", at("scale_shift"), want=max_scale_shift(m) & U32_MAX, found=raw["scale_shift"])
    for f, check, hi in (("decay", "TRAIN_DECAY", 31), ("init_bits", "TRAIN_INIT_BITS", 15), ("loss", "TRAIN_LOSS", 1)):
        if raw[f] > hi:
            raise _fail(check, at(f), found=raw[f])
    if not -1 <= raw["off_shift"] <= 23:
        raise _fail("TRAIN_OFF_SHIFT", at("off_shift"), found=raw["off_shift"] & U32_MAX)
    if raw["reserved47"]:
        raise _fail("TRAIN_RESERVED", at("reserved47"), i=47, found=raw["reserved47"])
    L = m.n_layers
    for i, v in enumerate(raw["lr"]):
        if i < L and v > 31:
            raise _fail("TRAIN_LR", at("lr") + i, i=i, found=v)
        if i >= L and v:
            raise _fail("TRAIN_LR_UNUSED", at("lr") + i, i=i, found=v)
    for i, v in enumerate(raw["thr_shift"]):
        if i < L - 1 and not -1 <= v <= 24:
            raise _fail("TRAIN_THR", at("thr_shift") + i, i=i, found=v & U32_MAX)
        if i >= L - 1 and v:
            raise _fail("TRAIN_THR_UNUSED", at("thr_shift") + i, i=i, found=v & U32_MAX)
    for i, v in enumerate(raw["gate"]):
        if i < L - 1 and v > layer_smax(m, i):
            raise _fail("TRAIN_GATE", at("gate") + 4 * i, i=i, want=layer_smax(m, i), found=v)
        if i >= L - 1 and v:
            raise _fail("TRAIN_GATE_UNUSED", at("gate") + 4 * i, i=i, found=v)
    if raw["reserved92"]:
        raise _fail("TRAIN_RESERVED", at("reserved92"), i=92, found=raw["reserved92"])
    return st


def _check_range(m: Model, lay: dict, version: int) -> None:
    """Scores fit i32 (docs/FORMAT.md, Semantics): version 2, every block within the block
    budget; version 1, the running sum of the blocks' bounds. Reported at the scale array
    of the first block that passes."""
    smax = m.output_smax()
    bpb = lay["block_params_bytes"]
    total = 0
    for b, blk in enumerate(m.blocks):
        bound = int(np.max(np.abs(blk.scale.astype(np.int64)) * smax + np.abs(blk.offset.astype(np.int64))))
        at = lay["params_offset"] + b * bpb + bpb - 8 * m.sizes[-1]
        if version >= 2 and bound > m.budget:
            raise _fail("RANGE_BLOCK", at, i=b, want=m.budget)
        total += bound
        if version == 1 and total > I32_MAX:
            raise _fail("RANGE", at, i=b)
