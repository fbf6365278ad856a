"""Version 1 files (docs/FORMAT.md): the package writes version 2 only, but every reader
must keep reading version 1 as before. Developer-only."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from rbnn.format import pack
from rbnn.format.bits import pack_bits
from rbnn.format.model import Model


def to_bytes_v1(m: Model) -> bytes:
    """The version 1 file of ``m`` (no capacity, no training section, v1 score bound)."""
    lay = pack.layout(m.n_inputs, m.sizes, len(m.blocks), m.n_planes, version=1)
    out = bytearray(struct.pack(
        "<4sHHIBBBBHBBIII", b"RBNN", 1, 0, lay["file_bytes"], 32, len(m.sizes), len(m.blocks),
        m.n_planes, m.n_inputs, 0, m.plane_mask, lay["plane_bytes"], lay["arena_offset"],
        lay["params_offset"]))  # fmt: skip
    out += struct.pack(f"<{len(m.sizes)}H", *m.sizes)
    out += b"\0" * (lay["blocks_offset"] - len(out))
    for b in m.blocks:
        out += struct.pack("<BBH16B", b.state, len(b.planes), 0, *(list(b.planes) + [0xFF] * (16 - len(b.planes))))
    out += m.arena.astype("<u4").tobytes()
    for b in m.blocks:
        for t, f in zip(b.thresholds, b.flips, strict=True):
            out += np.asarray(t, "<i4").tobytes() + pack_bits(np.asarray(f, bool)).astype("<u4").tobytes()
        out += np.asarray(b.scale, "<i4").tobytes() + np.asarray(b.offset, "<i4").tobytes()
    out += struct.pack("<I", zlib.crc32(out))
    assert len(out) == lay["file_bytes"]
    return bytes(out)
