"""Version 1 files, which readers still accept (docs/FORMAT.md, Versioning) but the
package no longer writes: a 32-byte header, ``n_blocks`` block entries and parameter
slots, no training section, and the version 1 score bound (developer-only)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from rbnn.format import pack
from rbnn.format.bits import pack_bits
from rbnn.format.constants import HEADER_BYTES, MAGIC, MAX_BITS, UNUSED_PLANE, WORD_BITS
from rbnn.format.model import Model


def to_bytes_v1(m: Model, check: bool = True) -> bytes:
    """``m`` as a version 1 file (its ``max_blocks``, ``score_q`` and training state are
    not stored). ``check``: assert that rbnn.format.pack reads it back as version 1."""
    lay = pack.layout(m.n_inputs, m.sizes, len(m.blocks), m.n_planes, version=1)
    out = bytearray(struct.pack(
        "<4sHHIBBBBHBBIII", MAGIC, 1, 0, lay["file_bytes"], WORD_BITS, len(m.sizes), len(m.blocks), m.n_planes,
        m.n_inputs, m.input_mode, m.plane_mask, lay["plane_bytes"], lay["arena_offset"], lay["params_offset"],
    ))  # fmt: skip
    assert len(out) == HEADER_BYTES
    out += struct.pack(f"<{len(m.sizes)}H", *m.sizes)
    out += bytes(lay["blocks_offset"] - len(out))
    for b in m.blocks:
        out += struct.pack("<BBH16B", b.state, len(b.planes), 0, *b.planes, *[UNUSED_PLANE] * (MAX_BITS - len(b.planes)))
    out += m.arena.astype("<u4").tobytes()
    for b in m.blocks:
        for t, f in zip(b.thresholds, b.flips, strict=True):
            out += np.asarray(t, "<i4").tobytes() + pack_bits(np.asarray(f, bool)).astype("<u4").tobytes()
        out += np.asarray(b.scale, "<i4").tobytes() + np.asarray(b.offset, "<i4").tobytes()
    out += struct.pack("<I", zlib.crc32(out))
    assert len(out) == lay["file_bytes"]
    data = bytes(out)
    if check:
        assert pack.from_bytes(data).version == 1
    return data


def file_bytes(m: Model) -> bytes:
    """The file of ``m`` in the version it asks for (``m.version``: 1, else 2)."""
    return to_bytes_v1(m) if m.version == 1 else pack.to_bytes(m)
