"""Read and write .rbnn files (docs/FORMAT.md, version 1)."""

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
    FORMAT_VERSION,
    FROZEN,
    HEADER_BYTES,
    I32_MAX,
    LIVE,
    MAGIC,
    MAX_BITS,
    MAX_BLOCKS,
    MAX_INPUTS,
    MAX_LAYERS,
    MAX_PLANES,
    READ_VERSIONS,
    U32_MAX,
    UNUSED_PLANE,
    WORD_BITS,
)  # fmt: skip
from .model import Block, Model

VERSION = FORMAT_VERSION
_HEADER = struct.Struct("<4sHHIBBBBHBBIII")
assert _HEADER.size == HEADER_BYTES


def _fail(check: str, offset: int, **vals: int) -> FormatError:
    """The FormatError of a failed check (rbnn.format.checks), with its integers."""
    code, field, expected, found = checks.message(check, **vals)
    return FormatError(code, field, offset, expected, found)


class _Head(NamedTuple):
    """What :func:`check_head` found valid."""

    n_layers: int
    n_blocks: int
    n_planes: int
    n_inputs: int
    input_mode: int
    plane_mask: int
    sizes: list
    blocks_offset: int
    arena_offset: int
    params_offset: int
    layout: dict


def _blocks_offset(n_layers: int) -> int:
    return HEADER_BYTES + 4 * ((n_layers + 1) // 2)


# The header and the longest layer table: all check_head needs of a file.
HEAD_MAX_BYTES = _blocks_offset(MAX_LAYERS)


def _block_params_bytes(sizes: list[int]) -> int:
    hidden = sum(4 * s + 4 * words(s) for s in sizes[:-1])
    return hidden + 8 * sizes[-1]


def layout(n_inputs: int, sizes: list[int], n_blocks: int, n_planes: int) -> dict:
    """Byte offsets and sizes of every section (may exceed 32 bits; callers check)."""
    inputs = [n_inputs] + list(sizes[:-1])
    plane_bytes = 4 * sum(o * words(i) for i, o in zip(inputs, sizes, strict=True))
    blocks_offset = _blocks_offset(len(sizes))
    arena_offset = blocks_offset + BLOCK_ENTRY_BYTES * n_blocks
    params_offset = arena_offset + n_planes * plane_bytes
    block_params = _block_params_bytes(sizes)
    file_bytes = params_offset + n_blocks * block_params + 4
    return {
        "plane_bytes": plane_bytes,
        "blocks_offset": blocks_offset,
        "arena_offset": arena_offset,
        "params_offset": params_offset,
        "block_params_bytes": block_params,
        "file_bytes": file_bytes,
    }


def to_bytes(model: Model) -> bytes:
    """Serialise a model; ModelError if it cannot be represented in version 1, FormatError
    if the reader would refuse the bytes."""
    m = model
    sizes = list(m.sizes)
    if not 1 <= len(sizes) <= MAX_LAYERS:
        raise ModelError(f"n_layers must be 1..{MAX_LAYERS}, got {len(sizes)}")
    lay = layout(m.n_inputs, sizes, len(m.blocks), m.n_planes)
    if m.arena.shape != (m.n_planes, lay["plane_bytes"] // 4):
        raise ModelError(f"arena shape {m.arena.shape} != ({m.n_planes}, {lay['plane_bytes'] // 4})")
    out = bytearray()
    out += _HEADER.pack(
        MAGIC, VERSION, 0, lay["file_bytes"], 32, len(sizes), len(m.blocks), m.n_planes,
        m.n_inputs, m.input_mode, m.plane_mask,
        lay["plane_bytes"], lay["arena_offset"], lay["params_offset"],
    )  # fmt: skip
    out += struct.pack(f"<{len(sizes)}H", *sizes)
    out += b"\0" * (lay["blocks_offset"] - len(out))
    for b in m.blocks:
        if not 1 <= len(b.planes) <= MAX_BITS:
            raise ModelError(f"a block owns 1..{MAX_BITS} planes, got {len(b.planes)}")
        planes = list(b.planes) + [0xFF] * (MAX_BITS - len(b.planes))
        out += struct.pack("<BBH16B", b.state, len(b.planes), 0, *planes)
    out += m.arena.astype("<u4").tobytes()
    for b in m.blocks:
        for t, f in zip(b.thresholds, b.flips, strict=True):
            out += np.asarray(t, "<i4").tobytes()
            out += pack_bits(np.asarray(f, bool)).astype("<u4").tobytes()
        out += np.asarray(b.scale, "<i4").tobytes() + np.asarray(b.offset, "<i4").tobytes()
    out += struct.pack("<I", zlib.crc32(out))
    if len(out) != lay["file_bytes"]:
        raise ValueError(f"internal: wrote {len(out)} bytes, layout says {lay['file_bytes']}")
    data = bytes(out)
    from_bytes(data)  # never write what a reader would refuse
    return data


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
    for check, off, val, lo, hi in [
        ("WORD_BITS", 12, word_bits, WORD_BITS, WORD_BITS),
        ("N_LAYERS", 13, n_layers, 1, MAX_LAYERS),
        ("N_BLOCKS", 14, n_blocks, 1, MAX_BLOCKS),
        ("N_PLANES", 15, n_planes, 1, MAX_PLANES),
        ("N_INPUTS", 16, n_inputs, 1, MAX_INPUTS),
        ("INPUT_MODE", 18, input_mode, 0, 0),
        ("PLANE_MASK", 19, plane_mask, 1, 0xFF),
    ]:
        if not lo <= val <= hi:
            raise _fail(check, off, found=val)
    blocks_offset = _blocks_offset(n_layers)
    if n < blocks_offset:
        raise _fail("TRUNC_LAYERS", HEADER_BYTES, want=blocks_offset, found=n)
    sizes = list(struct.unpack_from(f"<{n_layers}H", buf, HEADER_BYTES))
    for i, s in enumerate(sizes):
        if s == 0:
            raise _fail("LAYER_SIZE", HEADER_BYTES + 2 * i, i=i, found=0)
    pad_at = HEADER_BYTES + 2 * n_layers
    if pad_at < blocks_offset and any(buf[pad_at:blocks_offset]):
        raise _fail("LAYER_PAD", pad_at, found=struct.unpack_from("<H", buf, pad_at)[0])
    lay = layout(n_inputs, sizes, n_blocks, n_planes)
    if lay["plane_bytes"] > U32_MAX or lay["file_bytes"] > U32_MAX:
        raise _fail("SIZE_OVERFLOW", 8)
    if n < file_bytes:
        raise _fail("TRUNC_FILE", 8, want=file_bytes, found=n)
    if n > file_bytes:
        raise _fail("FILE_LONGER", 8, want=n, found=file_bytes)
    for check, name, off, stored in [
        ("PLANE_BYTES", "plane_bytes", 20, plane_bytes),
        ("ARENA_OFFSET", "arena_offset", 24, arena_offset),
        ("PARAMS_OFFSET", "params_offset", 28, params_offset),
        ("FILE_BYTES", "file_bytes", 8, file_bytes),
    ]:
        if stored != lay[name]:
            raise _fail(check, off, want=lay[name], found=stored)
    return _Head(n_layers, n_blocks, n_planes, n_inputs, input_mode, plane_mask, sizes, blocks_offset,
                 arena_offset, params_offset, lay)  # fmt: skip


def from_bytes(buf: bytes) -> Model:
    """Parse and validate a model (check order of docs/FORMAT.md, Errors)."""
    buf = bytes(buf)
    n = len(buf)
    h = check_head(buf, n)
    n_blocks, n_planes, n_inputs, input_mode, plane_mask = h.n_blocks, h.n_planes, h.n_inputs, h.input_mode, h.plane_mask
    sizes, blocks_offset, arena_offset, params_offset, lay = h.sizes, h.blocks_offset, h.arena_offset, h.params_offset, h.layout
    crc_stored = struct.unpack_from("<I", buf, n - 4)[0]
    crc = zlib.crc32(buf[: n - 4])
    if crc != crc_stored:
        raise _fail("CRC", n - 4, want=crc, found=crc_stored)

    blocks: list[Block] = []
    owner: dict[int, int] = {}
    for b in range(n_blocks):
        off = blocks_offset + BLOCK_ENTRY_BYTES * b
        state, n_bits, reserved, *planes = struct.unpack_from("<BBH16B", buf, off)
        if state not in (FROZEN, LIVE):
            raise _fail("BLOCK_STATE", off, i=b, found=state)
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
            if p >= n_planes:
                raise _fail("BLOCK_PLANE", at, i=b, j=i, want=n_planes, found=p)
            if p in owner:
                raise _fail("BLOCK_OWNED", at, i=b, j=i, want=owner[p], found=p)
            owner[p] = b
        blocks.append(Block(state, planes[:n_bits], [], [], np.zeros(0, np.int32), np.zeros(0, np.int32)))

    plane_words = lay["plane_bytes"] // 4
    arena = np.frombuffer(buf, "<u4", n_planes * plane_words, arena_offset).reshape(n_planes, plane_words)
    m = Model(n_inputs, plane_mask, sizes, arena.astype(np.uint32), blocks, input_mode)
    offs = m.layer_word_offsets()
    for layer, n_in in enumerate(m.layer_inputs):
        mask = pad_mask(n_in)
        if mask == 0xFFFFFFFF:
            continue
        w = words(n_in)
        for p in range(n_planes):
            rows = m.layer_words(p, layer)
            bad = np.nonzero(rows[:, -1] & ~np.uint32(mask))[0]
            if bad.size:
                r = int(bad[0])
                at = arena_offset + p * lay["plane_bytes"] + 4 * (offs[layer] + r * w + w - 1)
                raise _fail("WEIGHT_PADDING", at, i=p, j=layer, k=r, found=int(rows[r, -1]) & ~mask & U32_MAX)

    at = params_offset
    for b, blk in enumerate(blocks):
        for layer, s in enumerate(sizes[:-1]):
            blk.thresholds.append(np.frombuffer(buf, "<i4", s, at).astype(np.int32))
            at += 4 * s
            fw = np.frombuffer(buf, "<u4", words(s), at).astype(np.uint32)
            if int(fw[-1]) & ~pad_mask(s) & U32_MAX:
                raise _fail("FLIP_PADDING", at + 4 * (words(s) - 1), i=b, j=layer, found=int(fw[-1]))
            blk.flips.append(unpack_bits(fw, s))
            at += 4 * words(s)
        k = sizes[-1]
        blk.scale = np.frombuffer(buf, "<i4", k, at).astype(np.int32)
        blk.offset = np.frombuffer(buf, "<i4", k, at + 4 * k).astype(np.int32)
        at += 8 * k

    # Scores fit i32: the sum over blocks of each block's largest |scale| * smax + |offset|
    # (reported at the scale array of the block where the running sum first passes it).
    smax = m.output_smax()
    lay_params = lay["block_params_bytes"]
    bound = 0
    for b, blk in enumerate(blocks):
        bound += int(np.max(np.abs(blk.scale.astype(np.int64)) * smax + np.abs(blk.offset.astype(np.int64))))
        if bound > I32_MAX:
            at = params_offset + b * lay_params + lay_params - 8 * sizes[-1]
            raise _fail("RANGE", at, i=b)
    return m
