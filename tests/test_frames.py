"""Frames (docs/PROTOCOL.md): the host codec, and the firmware's codec and receiver run
on the MicroPython unix port, decoding the same damaged streams to the same frames."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib

import numpy as np
import pytest

from rbnn.device import frames as fr


def test_layout_is_the_documented_one():
    f = fr.encode(0x20, 0x1234, b"abc", fr.FLAG_RETRY)
    assert f[:2] == b"\xa5\x5a"
    assert f[2] == 0x20 and f[3] == 1
    assert struct.unpack_from("<HH", f, 4) == (0x1234, 3)
    assert f[8:11] == b"abc"
    assert struct.unpack_from("<I", f, 11)[0] == zlib.crc32(f[2:11])
    assert len(f) == 3 + fr.OVERHEAD


def test_round_trip(rng):
    sent = []
    stream = b""
    for i in range(50):
        n = int(rng.integers(0, 3000)) if i else 0
        f = fr.Frame(int(rng.integers(0, 256)), int(rng.integers(0, 65536)),
                     rng.integers(0, 256, n, dtype=np.uint8).tobytes(), int(rng.integers(0, 2)))  # fmt: skip
        sent.append(f)
        stream += fr.encode(f.type, f.seq, f.payload, f.flags)
    assert fr.decode_all(stream) == sent
    # fed in pieces of any size, the same frames come out
    dec = fr.Decoder()
    got = []
    i = 0
    while i < len(stream):
        k = int(rng.integers(1, 40))
        got += dec.feed(stream[i : i + k])
        i += k
    assert got == sent and dec.pending == 0 and dec.stats.garbage == 0


def test_payload_limit():
    with pytest.raises(ValueError, match="exceeds 65535"):
        fr.encode(1, 0, bytes(65536))


def test_resync_after_garbage_with_false_markers():
    good = fr.encode(fr.INFO, 7, b"x")
    junk = b"\x00\xa5\x01\xa5\x5a\xff\xa5"  # half markers, and a marker with a short header
    dec = fr.Decoder(max_payload=64)
    assert dec.feed(junk + good) == [fr.Frame(fr.INFO, 7, b"x")]
    assert dec.stats.garbage == len(junk)


def test_bad_crc_is_rejected_and_the_next_frame_found():
    a = bytearray(fr.encode(1, 1, b"hello"))
    a[9] ^= 0x10
    b = fr.encode(2, 2, b"world")
    dec = fr.Decoder()
    assert dec.feed(bytes(a) + b) == [fr.Frame(2, 2, b"world")]
    assert dec.stats.bad_crc == 1


def test_frame_hidden_in_a_damaged_one_is_found():
    # a corrupted length makes the first frame swallow the second; the rescan after
    # the CRC failure still finds the second
    a = bytearray(fr.encode(1, 1, b"A" * 10))
    a[6] = 40  # len 10 -> 40
    b = fr.encode(2, 2, b"B" * 10)
    dec = fr.Decoder()
    assert dec.feed(bytes(a) + b + bytes(64)) == [fr.Frame(2, 2, b"B" * 10)]
    assert dec.stats.bad_crc == 1


def test_truncated_frame_stays_pending_until_dropped():
    f = fr.encode(3, 9, b"0123456789")
    dec = fr.Decoder()
    assert dec.feed(f[:-3]) == []
    assert dec.pending == len(f) - 3
    assert dec.drop_partial() == len(f) - 3 and dec.pending == 0
    assert dec.feed(f) == [fr.Frame(3, 9, b"0123456789")]  # the retransmission


def test_too_long_is_skipped():
    dec = fr.Decoder(max_payload=100)
    head = struct.pack("<2sBBHH", fr.SOF, 1, 0, 1, 101)
    good = fr.encode(1, 2, b"ok")
    assert dec.feed(head + good) == [fr.Frame(1, 2, b"ok")]
    assert dec.stats.too_long == 1


def _damaged_stream(rng, n_frames=60, max_payload=4096):
    """Frames with garbage, flipped bits, cut frames and duplicates between them, and
    the frames that survive intact, in order. Ends with zeros so that no false frame
    is left waiting for its length."""
    stream = bytearray()
    intact = []
    for i in range(n_frames):
        payload = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
        f = fr.encode(int(rng.integers(1, 0x7F)), i, payload)
        r = rng.random()
        if r < 0.15:  # garbage before it (with false start markers now and then)
            junk = rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8).tobytes()
            stream += junk
            stream += f
            intact.append(fr.Frame(f[2], i, payload))
        elif r < 0.3:  # one bit flipped
            b = bytearray(f)
            b[int(rng.integers(2, len(b)))] ^= 1 << int(rng.integers(0, 8))
            stream += b
        elif r < 0.4:  # cut short
            stream += f[: int(rng.integers(1, len(f)))]
        elif r < 0.5:  # twice
            stream += f + f
            intact += [fr.Frame(f[2], i, payload)] * 2
        else:
            stream += f
            intact.append(fr.Frame(f[2], i, payload))
    stream += bytes(max_payload + fr.OVERHEAD)
    return bytes(stream), intact


def test_damaged_stream_keeps_every_intact_frame(rng):
    stream, intact = _damaged_stream(rng)
    got = fr.decode_all(stream, 4096)
    assert got == intact


# --- the firmware's side, on MicroPython ------------------------------------------------------
DEVICE_SCRIPT = r"""
import sys, json
sys.path.insert(0, FIRMWARE)
import rbnn_server

class Feed:
    # a console that hands out the stream in pieces of 1..13 bytes
    def __init__(self, data):
        self.data = data
        self.i = 0
        self.k = 7
        self.out = bytearray()
    def read(self, buf, timeout_ms):
        if self.i >= len(self.data):
            if timeout_ms < 0:
                raise KeyboardInterrupt  # the stream is over
            return 0  # a begun frame times out
        self.k = (self.k * 5 + 3) % 13 + 1
        k = min(len(buf), self.k, len(self.data) - self.i)
        buf[0:k] = self.data[self.i:self.i + k]
        self.i += k
        return k
    def write(self, b):
        self.out += b

with open("stream.bin", "rb") as f:
    feed = Feed(f.read())
srv = rbnn_server.Server(feed, 4096)
got = []
try:
    while True:
        t, flags, seq, p, end = srv.recv()
        got.append([t, seq, bytes(p).hex(), flags])
        srv._drop(end)
except KeyboardInterrupt:
    pass
naks = []
i = 0
while i < len(feed.out):
    n = feed.out[i + 6] | feed.out[i + 7] << 8
    naks.append(feed.out[i + 2])
    i += 12 + n
enc = [rbnn_server.encode(t, s, bytes.fromhex(p), f).hex() for t, s, p, f in ENCODE]
print(json.dumps({"frames": got, "stats": srv.stats, "nak_types": naks, "encoded": enc}))
"""


def _run_device(micropython, repo, tmp_path, stream: bytes, encode_cases):
    (tmp_path / "stream.bin").write_bytes(stream)
    script = DEVICE_SCRIPT.replace("FIRMWARE", repr(str(repo / "firmware"))).replace(
        "ENCODE", repr([[t, s, p.hex(), f] for t, s, p, f in encode_cases])
    )
    (tmp_path / "dev.py").write_text(script)
    r = subprocess.run([micropython, "dev.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


def test_firmware_decodes_the_same_frames(micropython, repo, tmp_path, rng):
    stream, intact = _damaged_stream(rng, n_frames=80)
    cases = [(1, 0, b"", 0), (0x20, 65535, bytes(range(256)), 1), (0x7F, 300, b"x" * 999, 0)]
    out = _run_device(micropython, repo, tmp_path, stream, cases)
    got = [fr.Frame(t, s, bytes.fromhex(p), f) for t, s, p, f in out["frames"]]
    assert got == intact
    # the same bytes as the host's encoder
    assert out["encoded"] == [fr.encode(t, s, p, f).hex() for t, s, p, f in cases]
    st = out["stats"]
    host = fr.Decoder(4096)
    host.feed(stream)
    assert st["bad_crc"] == host.stats.bad_crc > 0
    assert st["too_long"] == host.stats.too_long
    assert st["garbage"] == host.stats.garbage > 0
    # every rejected frame was answered with a NAK naming why
    assert all(t == fr.NAK for t in out["nak_types"])
    assert len(out["nak_types"]) == st["naks"] == st["bad_crc"] + st["too_long"] + st["truncated"]


def test_firmware_times_out_a_truncated_frame(micropython, repo, tmp_path):
    f = fr.encode(fr.HELLO, 5, b"")
    g = fr.encode(fr.INFO, 6, b"")
    out = _run_device(micropython, repo, tmp_path, f[:5], [])  # cut, then silence
    assert out["frames"] == [] and out["stats"]["truncated"] >= 1 and fr.NAK in out["nak_types"]
    # a cut frame whose header swallows the next, whole frame: after the timeout the
    # rescan of what arrived finds the whole one
    out = _run_device(micropython, repo, tmp_path, f[:5] + g + bytes(32), [])
    assert [x[:2] for x in out["frames"]] == [[fr.INFO, 6]]
    assert out["stats"]["truncated"] == 1


def test_firmware_and_host_share_the_protocol_constants(repo):
    # The two codecs cannot import each other (MicroPython vs CPython); their numbers must
    # not drift apart: the protocol version, frame types, flags and NAK reasons of
    # docs/PROTOCOL.md. (MAX_PAYLOAD differs by design: the device's default vs the
    # largest the format allows.)
    import ast

    tree = ast.parse((repo / "firmware" / "rbnn_server.py").read_text())
    fw = {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, int)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id.isupper()
    }  # fmt: skip
    types = ["PROTOCOL", "HELLO", "INFO", "STATS", "RESET", "LEAVE", "UP_BEGIN", "UP_DATA", "SAVE",
             "LOAD", "INFER", "TRAIN_BEGIN", "TRAIN", "CHECKPOINT", "GROW", "FREEZE", "PULL", "REPLY",
             "ACK", "NAK", "ERR", "FLAG_RETRY", "NAK_CRC", "NAK_TRUNCATED", "NAK_TOO_LONG", "TRAIN_APPLIED",
             "TRAIN_GAP", "TRAIN_OLD"]  # fmt: skip
    for name in types:
        assert name in fw, f"firmware/rbnn_server.py lacks {name}"
        assert fw[name] == getattr(fr, name), f"{name}: firmware {fw[name]}, host {getattr(fr, name)}"
