"""Frames of the serial protocol (docs/PROTOCOL.md): encoding, and a decoder that
resyncs after garbage and rejects bad CRCs and over-long frames."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

PROTOCOL = 2
SOF = b"\xa5\x5a"
HEADER = struct.Struct("<2sBBHH")  # sof, type, flags, seq, len
HEADER_BYTES = HEADER.size
CRC_BYTES = 4
OVERHEAD = HEADER_BYTES + CRC_BYTES
MAX_PAYLOAD = 65535
BOOT_PAYLOAD = 256  # what a device accepts before HELLO has told its max_payload

FLAG_RETRY = 0x01

# Requests; the reply to type t is t | REPLY.
HELLO = 0x01
INFO = 0x02
STATS = 0x03
RESET = 0x04
LEAVE = 0x05
UP_BEGIN = 0x10
UP_DATA = 0x11
SAVE = 0x12
LOAD = 0x13
INFER = 0x20
TRAIN_BEGIN = 0x30
TRAIN = 0x31
CHECKPOINT = 0x32
GROW = 0x33
FREEZE = 0x34
PULL = 0x35
REPLY = 0x80
ACK = 0x7D
NAK = 0x7E
ERR = 0x7F

NAK_CRC = 1
NAK_TRUNCATED = 2
NAK_TOO_LONG = 3

# TRAIN reply status (docs/PROTOCOL.md, TRAIN)
TRAIN_APPLIED = 0
TRAIN_GAP = 1
TRAIN_OLD = 2

NAMES = {
    HELLO: "HELLO", INFO: "INFO", STATS: "STATS", RESET: "RESET", LEAVE: "LEAVE",
    UP_BEGIN: "UP_BEGIN", UP_DATA: "UP_DATA", SAVE: "SAVE", LOAD: "LOAD", INFER: "INFER",
    TRAIN_BEGIN: "TRAIN_BEGIN", TRAIN: "TRAIN", CHECKPOINT: "CHECKPOINT", GROW: "GROW", FREEZE: "FREEZE",
    PULL: "PULL",
    ACK: "ACK", NAK: "NAK", ERR: "ERR",
}  # fmt: skip


def type_name(t: int) -> str:
    """Readable name of a frame type, replies as ``NAME+``."""
    if t & REPLY and (t & ~REPLY) in NAMES:
        return NAMES[t & ~REPLY] + "+"
    return NAMES.get(t, f"0x{t:02x}")


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    type: int
    seq: int
    payload: bytes
    flags: int = 0


def encode(ftype: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """The bytes of one frame.

    Parameters
    ----------
    ftype : int
        Frame type, 0..255.
    seq : int
        Sequence number, 0..65535.
    payload : bytes
        At most 65535 bytes.
    flags : int
        ``FLAG_RETRY`` on a retransmission.
    """
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(SOF, ftype, flags, seq & 0xFFFF, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head[2:]))
    return head + bytes(payload) + struct.pack("<I", crc)


@dataclass
class DecoderStats:
    """What the decoder skipped or rejected."""

    frames: int = 0
    garbage: int = 0  # bytes skipped outside frames
    bad_crc: int = 0
    too_long: int = 0
    skipped: bytearray = field(default_factory=bytearray)  # the last garbage, for messages


class Decoder:
    """Turns a byte stream into frames.

    Feed bytes with :meth:`feed`; it returns the complete valid frames found. Bytes that
    are not part of a valid frame are skipped; after a bad CRC the scan restarts at the
    byte after the rejected frame's start, so a frame hidden in a damaged one is found.
    :attr:`pending` is the count of bytes of a frame begun but not complete (a
    truncation once the caller's deadline passes; :meth:`drop_partial` discards them).
    """

    KEEP_SKIPPED = 512

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.stats = DecoderStats()

    @property
    def pending(self) -> int:
        return len(self.buf)

    def _skip(self, n: int) -> None:
        self.stats.garbage += n
        self.stats.skipped += self.buf[:n]
        del self.stats.skipped[: -self.KEEP_SKIPPED]
        del self.buf[:n]

    def drop_partial(self) -> int:
        """Discard a partial frame (after a timeout); returns the bytes dropped."""
        n = len(self.buf)
        self._skip(n)
        return n

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out: list[Frame] = []
        while True:
            i = self.buf.find(SOF)
            if i < 0:
                # keep a trailing first SOF byte: the second may come next
                keep = 1 if self.buf[-1:] == SOF[:1] else 0
                self._skip(len(self.buf) - keep)
                return out
            if i:
                self._skip(i)
            if len(self.buf) < HEADER_BYTES:
                return out
            _, ftype, flags, seq, n = HEADER.unpack_from(self.buf)
            if n > self.max_payload:
                self.stats.too_long += 1
                self._skip(1)
                continue
            end = HEADER_BYTES + n + CRC_BYTES
            if len(self.buf) < end:
                return out
            (crc,) = struct.unpack_from("<I", self.buf, end - CRC_BYTES)
            if zlib.crc32(memoryview(self.buf)[2 : end - CRC_BYTES]) != crc:
                self.stats.bad_crc += 1
                self._skip(1)
                continue
            out.append(Frame(ftype, seq, bytes(self.buf[HEADER_BYTES : end - CRC_BYTES]), flags))
            self.stats.frames += 1
            del self.buf[:end]


def decode_all(data: bytes, max_payload: int = MAX_PAYLOAD) -> list[Frame]:
    """All valid frames in ``data`` (a convenience for tests and tools)."""
    return Decoder(max_payload).feed(data)
