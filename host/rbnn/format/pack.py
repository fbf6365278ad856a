"""Read and write .rbnn files (docs/FORMAT.md, version 1)."""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import FormatError, ModelError
from .bits import pack_bits, pad_mask, unpack_bits, words
from .model import FROZEN, LIVE, MAX_BITS, MAX_BLOCKS, MAX_LAYERS, MAX_PLANES, Block, Model

MAGIC = b"RBNN"
VERSION = 1
HEADER_BYTES = 32
BLOCK_ENTRY_BYTES = 20
_HEADER = struct.Struct("<4sHHIBBBBHBBIII")
assert _HEADER.size == HEADER_BYTES
I32_MAX = 2**31 - 1
U32_MAX = 2**32 - 1


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
        raise FormatError("E_TRUNCATED", "header", 0, f">= {HEADER_BYTES} bytes", f"{n} bytes")
    (magic, version, flags, file_bytes, word_bits, n_layers, n_blocks, n_planes, n_inputs,
     input_mode, plane_mask, plane_bytes, arena_offset, params_offset) = _HEADER.unpack_from(buf)  # fmt: skip
    if magic != MAGIC:
        raise FormatError("E_MAGIC", "magic", 0, MAGIC, magic)
    if version != VERSION:
        raise FormatError("E_VERSION", "version", 4, VERSION, version)
    if flags != 0:
        raise FormatError("E_FLAGS", "flags", 6, 0, f"0x{flags:04x}")
    checks = [
        ("word_bits", 12, word_bits, word_bits == 32, "32"),
        ("n_layers", 13, n_layers, 1 <= n_layers <= MAX_LAYERS, f"1..{MAX_LAYERS}"),
        ("n_blocks", 14, n_blocks, 1 <= n_blocks <= MAX_BLOCKS, f"1..{MAX_BLOCKS}"),
        ("n_planes", 15, n_planes, 1 <= n_planes <= MAX_PLANES, f"1..{MAX_PLANES}"),
        ("n_inputs", 16, n_inputs, n_inputs >= 1, ">= 1"),
        ("input_mode", 18, input_mode, input_mode == 0, "0"),
        ("plane_mask", 19, plane_mask, plane_mask != 0, "not 0"),
    ]
    for name, off, val, ok, want in checks:
        if not ok:
            raise FormatError("E_HEADER", name, off, want, val)
    blocks_offset = _blocks_offset(n_layers)
    if n < blocks_offset:
        raise FormatError("E_TRUNCATED", "layer table", HEADER_BYTES, f">= {blocks_offset} bytes", f"{n} bytes")
    sizes = list(struct.unpack_from(f"<{n_layers}H", buf, HEADER_BYTES))
    for i, s in enumerate(sizes):
        if s == 0:
            raise FormatError("E_HEADER", f"size[{i}]", HEADER_BYTES + 2 * i, "1..65535", 0)
    pad_at = HEADER_BYTES + 2 * n_layers
    if any(buf[pad_at:blocks_offset]):
        raise FormatError("E_FLAGS", "layer table pad", pad_at, 0, buf[pad_at:blocks_offset].hex())
    lay = layout(n_inputs, sizes, n_blocks, n_planes)
    if lay["plane_bytes"] > U32_MAX or lay["file_bytes"] > U32_MAX:
        raise FormatError("E_SIZE", "computed file size", 8, f"<= {U32_MAX}", lay["file_bytes"])
    if n < file_bytes:
        raise FormatError("E_TRUNCATED", "file_bytes", 8, f"{file_bytes} bytes", f"{n} bytes")
    if n > file_bytes:
        raise FormatError("E_SIZE", "file_bytes", 8, n, file_bytes)
    for name, off, stored in [
        ("plane_bytes", 20, plane_bytes),
        ("arena_offset", 24, arena_offset),
        ("params_offset", 28, params_offset),
        ("file_bytes", 8, file_bytes),
    ]:
        if stored != lay[name]:
            raise FormatError("E_LAYOUT", name, off, lay[name], stored)
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
        raise FormatError("E_CRC", "crc32", n - 4, f"0x{crc:08x}", f"0x{crc_stored:08x}")

    blocks: list[Block] = []
    owner: dict[int, int] = {}
    for b in range(n_blocks):
        off = blocks_offset + BLOCK_ENTRY_BYTES * b
        state, n_bits, reserved, *planes = struct.unpack_from("<BBH16B", buf, off)
        if state not in (FROZEN, LIVE):
            raise FormatError("E_BLOCK", f"block[{b}].state", off, "0 or 1", state)
        if not 1 <= n_bits <= MAX_BITS or (state == FROZEN and n_bits != 1):
            want = "1 (frozen)" if state == FROZEN else f"1..{MAX_BITS}"
            raise FormatError("E_BLOCK", f"block[{b}].n_bits", off + 1, want, n_bits)
        if reserved:
            raise FormatError("E_BLOCK", f"block[{b}].reserved", off + 2, 0, reserved)
        for i, p in enumerate(planes):
            at = off + 4 + i
            if i >= n_bits:
                if p != 0xFF:
                    raise FormatError("E_BLOCK", f"block[{b}].planes[{i}] (unused)", at, 0xFF, p)
                continue
            if p >= n_planes:
                raise FormatError("E_BLOCK", f"block[{b}].planes[{i}]", at, f"< {n_planes}", p)
            if p in owner:
                raise FormatError("E_BLOCK", f"block[{b}].planes[{i}]", at, f"a plane not owned by block {owner[p]}", p)
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
                raise FormatError("E_PADDING", f"plane {p} layer {layer} row {r} padding", at, 0,
                                  f"0x{int(rows[r, -1]) & ~mask & 0xFFFFFFFF:08x}")  # fmt: skip

    at = params_offset
    for b, blk in enumerate(blocks):
        for layer, s in enumerate(sizes[:-1]):
            blk.thresholds.append(np.frombuffer(buf, "<i4", s, at).astype(np.int32))
            at += 4 * s
            fw = np.frombuffer(buf, "<u4", words(s), at).astype(np.uint32)
            if int(fw[-1]) & ~pad_mask(s) & 0xFFFFFFFF:
                raise FormatError("E_PADDING", f"block[{b}] layer {layer} flip padding",
                                  at + 4 * (words(s) - 1), 0, f"0x{int(fw[-1]):08x}")  # fmt: skip
            blk.flips.append(unpack_bits(fw, s))
            at += 4 * words(s)
        k = sizes[-1]
        blk.scale = np.frombuffer(buf, "<i4", k, at).astype(np.int32)
        blk.offset = np.frombuffer(buf, "<i4", k, at + 4 * k).astype(np.int32)
        at += 8 * k

    smax = m.output_smax()
    bound = sum(
        int(np.max(np.abs(blk.scale.astype(np.int64)) * smax + np.abs(blk.offset.astype(np.int64))))
        for blk in blocks
    )
    if bound > I32_MAX:
        raise FormatError("E_RANGE", "output scale/offset", params_offset, f"score bound <= {I32_MAX}", bound)
    return m
