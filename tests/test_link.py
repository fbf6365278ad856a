"""The host client (rbnn.device.link) against a scripted device in this process: retries,
NAKs, stale and damaged replies, slow requests, errors, reboots, resume and batching."""

from __future__ import annotations

import json
import struct
import time
import zlib

import numpy as np
import pytest

from rbnn.device import frames as fr
from rbnn.device.link import DeviceError, DeviceRebooted, Link, LinkError


class FakePort:
    """A serial port whose far end is ``handler(frame, port)``, returning the bytes to
    send back now; ``port.later(delay, data)`` sends bytes after a delay."""

    def __init__(self, handler):
        self.handler = handler
        self.decoder = fr.Decoder()
        self.frames: list[fr.Frame] = []  # every frame the host sent
        self.out = bytearray()
        self.pending: list[tuple[float, bytes]] = []
        self.timeout = 0.05
        self.baudrate = 10_000_000  # no wire time in the link's timeouts
        self.port = "fake"

    def later(self, delay: float, data: bytes) -> None:
        self.pending.append((time.monotonic() + delay, data))

    def _due(self) -> None:
        now = time.monotonic()
        for item in [p for p in self.pending if p[0] <= now]:
            self.out += item[1]
            self.pending.remove(item)

    def write(self, data: bytes) -> int:
        for f in self.decoder.feed(data):
            self.frames.append(f)
            self.out += self.handler(f, self) or b""
        return len(data)

    @property
    def in_waiting(self) -> int:
        self._due()
        return len(self.out)

    def read(self, n: int = 1) -> bytes:
        deadline = time.monotonic() + (self.timeout or 0)
        while True:
            self._due()
            if self.out or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        data = bytes(self.out[:n])
        del self.out[:n]
        return data

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self.out.clear()

    def close(self) -> None:
        pass


HELLO_REPLY = {"protocol": 2, "max_payload": 4096, "firmware": "test", "rbnn": None,
               "engine": None, "micropython": "-", "platform": "fake", "mpy": None}  # fmt: skip


def reply(f: fr.Frame, payload: bytes = b"", ftype: int | None = None, seq: int | None = None) -> bytes:
    return fr.encode(f.type | fr.REPLY if ftype is None else ftype, f.seq if seq is None else seq, payload)


def make_link(handler, **kw) -> tuple[Link, FakePort]:
    port = FakePort(handler)
    kw.setdefault("timeout", 0.05)
    kw.setdefault("retries", 3)
    return Link(port, **kw), port


def test_no_answer_is_a_clear_error_after_bounded_retries():
    link, port = make_link(lambda f, p: b"")
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=r"INFO \(seq 1\) to fake: no valid reply after 4 tries \(4 timeouts, 0 NAKs"):
        link.info()
    assert time.monotonic() - t0 < 4 * 0.05 + 2  # bounded: 4 tries of 0.05 s, and a margin
    assert len(port.frames) == 4
    assert [f.flags for f in port.frames] == [0, fr.FLAG_RETRY, fr.FLAG_RETRY, fr.FLAG_RETRY]
    assert {f.seq for f in port.frames} == {1}


def test_error_names_what_the_device_printed():
    link, _ = make_link(lambda f, p: b"Traceback (most recent call last):\r\nMemoryError\r\n")
    with pytest.raises(LinkError, match="the device said: .*MemoryError"):
        link.info()


def test_nak_makes_the_host_resend_at_once():
    seen = []

    def dev(f, p):
        seen.append(f.flags)
        if len(seen) == 1:
            return fr.encode(fr.NAK, 0, bytes([fr.NAK_CRC]))
        return reply(f, b'{"ok": 1}')

    link, _ = make_link(dev, timeout=10.0)
    t0 = time.monotonic()
    assert link.info() == {"ok": 1}
    assert time.monotonic() - t0 < 2.0  # the 10 s reply timeout was not waited for
    assert seen == [0, fr.FLAG_RETRY] and link.stats.naks == 1


def test_damaged_reply_is_dropped_and_the_request_repeated():
    def dev(f, p):
        r = bytearray(reply(f, b'{"n": 5}'))
        if f.flags == 0:
            r[9] ^= 0x40  # bad CRC on the first answer
        return bytes(r)

    link, port = make_link(dev)
    assert link.info() == {"n": 5}
    assert len(port.frames) == 2 and link.stats.retries == 1
    assert link.decoder.stats.bad_crc == 1


def test_stale_replies_are_ignored():
    def dev(f, p):
        return reply(f, b'{"old": 1}', seq=(f.seq - 1) & 0xFFFF) + reply(f, b'{"new": 1}')

    link, _ = make_link(dev)
    assert link.info() == {"new": 1}
    assert link.stats.stale == 1


def test_err_is_raised_and_not_retried():
    def dev(f, p):
        return reply(f, json.dumps({"code": "E_NOFILE", "message": "no model 'x.rbnn'"}).encode(), ftype=fr.ERR)

    link, port = make_link(dev)
    with pytest.raises(DeviceError, match="device refused LOAD: E_NOFILE: no model") as e:
        link.load("x.rbnn")
    assert e.value.code == "E_NOFILE"
    assert len(port.frames) == 1


def test_slow_request_waits_past_the_reply_timeout_after_ack():
    result = {}

    def dev(f, p):
        if f.flags == 0:
            result["r"] = reply(f, b'{"slow": true}')
            p.later(0.4, result["r"])  # 8 reply timeouts later
            return fr.encode(fr.ACK, f.seq)
        return b""  # copies arrive while the device is busy: it answers once

    link, port = make_link(dev, retries=1)
    assert link.load("m.rbnn") == {"slow": True}
    # the host asked again, less and less often, without using up its 1 retry
    assert 2 <= len(port.frames) <= 5


def test_lost_result_of_an_acked_request_is_asked_for_again():
    def dev(f, p):
        if f.flags == 0:
            return fr.encode(fr.ACK, f.seq)  # the result frame is lost
        return reply(f, b'{"again": true}')  # a copy: answered with the kept result

    link, _ = make_link(dev, op_timeout=30)
    t0 = time.monotonic()
    assert link.save("m.rbnn") == {"again": True}
    assert time.monotonic() - t0 < 2.0  # asked again after 0.05 s, long before the 30 s op timeout


def test_acked_request_without_result_ends_at_op_timeout():
    link, _ = make_link(lambda f, p: fr.encode(fr.ACK, f.seq) if f.flags == 0 else b"", op_timeout=0.3)
    with pytest.raises(LinkError, match=r"SAVE \(seq 1\).*accepted, but no result within"):
        link.save("m.rbnn")


def test_reboot_banner_fails_fast():
    def dev(f, p):
        return b"\r\nMicroPython v1.29.0 on 2026-01-01; Raspberry Pi Pico with RP2040\r\n>>> "

    link, port = make_link(dev, timeout=10.0)
    t0 = time.monotonic()
    with pytest.raises(DeviceRebooted, match="rebooted"):
        link.info()
    assert time.monotonic() - t0 < 2.0 and len(port.frames) == 1  # no retry, not the 10 s timeout


def test_hello_checks_the_protocol_version():
    link, _ = make_link(lambda f, p: reply(f, json.dumps(dict(HELLO_REPLY, protocol=1)).encode()))
    with pytest.raises(LinkError, match="protocol 1"):
        link.hello()
    link, _ = make_link(lambda f, p: reply(f, json.dumps(dict(HELLO_REPLY, max_payload=300)).encode()))
    link.hello()
    assert link.max_payload == 300


class UploadDevice:
    """Holds an upload; ``skew`` makes it report an offset the host did not expect."""

    def __init__(self, have: int = 0, lose_at: int | None = None):
        self.data = bytearray()
        self.size = self.crc = None
        self.have0 = have
        self.lose_at = lose_at

    def __call__(self, f: fr.Frame, p: FakePort) -> bytes:
        if f.type == fr.HELLO:
            return reply(f, json.dumps(HELLO_REPLY).encode())
        if f.type == fr.UP_BEGIN:
            self.size, self.crc = struct.unpack("<II", f.payload)
            return reply(f, struct.pack("<I", len(self.data)))
        if f.type == fr.UP_DATA:
            (off,) = struct.unpack_from("<I", f.payload)
            if off == len(self.data):
                self.data += f.payload[4:]
            if self.lose_at is not None and len(self.data) > self.lose_at:
                del self.data[self.lose_at :]  # e.g. a reset lost the unflushed tail
                self.lose_at = None
            return reply(f, struct.pack("<I", len(self.data)))
        raise AssertionError(f)


def test_upload_resumes_from_what_the_device_holds(rng):
    data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    dev = UploadDevice()
    dev.data += data[:1234]  # an earlier, cut transfer
    link, port = make_link(dev, chunk=500)
    link.upload(data[:10])  # before HELLO: frames of at most 256 bytes
    assert max(len(f.payload) for f in port.frames) <= fr.BOOT_PAYLOAD
    dev.data[:] = data[:1234]
    link.hello()
    up = link.upload(data)
    assert up == {"bytes": 5000, "crc": zlib.crc32(data), "resumed_from": 1234}
    assert bytes(dev.data) == data
    offsets = [struct.unpack_from("<I", f.payload)[0] for f in port.frames[-8:] if f.type == fr.UP_DATA]
    assert offsets[0] == 1234 and np.all(np.diff(offsets) == 500)


def test_upload_follows_the_device_when_it_has_less(rng):
    data = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    dev = UploadDevice(lose_at=700)
    link, _ = make_link(dev, chunk=500)
    link.hello()
    link.upload(data)
    assert bytes(dev.data) == data


def test_infer_splits_batches_to_fit_the_frames(rng):
    k, width = 10, 32
    samples = rng.integers(0, 256, (57, width), dtype=np.uint8)
    sizes = []

    def dev(f, p):
        if f.type == fr.HELLO:
            return reply(f, json.dumps(dict(HELLO_REPLY, max_payload=300)).encode())
        sizes.append(len(f.payload))
        flags, _, n = struct.unpack_from("<BBH", f.payload)
        x = np.frombuffer(f.payload, np.uint8, n * width, 4).reshape(n, width)
        sc = (x[:, :k].astype(np.int32) * 1000 - 7).astype("<i4")  # a fake model
        out = struct.pack("<HHI", n, k, 5 * n) + sc.argmax(1).astype("<u2").tobytes()
        if flags & 1:
            out += sc.tobytes()
        return fr.encode(fr.ACK, f.seq) + reply(f, out)

    link, _ = make_link(dev)
    link.hello()
    classes, scores, us = link.infer(samples, scores=True)
    want = samples[:, :k].astype(np.int32) * 1000 - 7
    np.testing.assert_array_equal(scores, want)
    np.testing.assert_array_equal(classes, want.argmax(1))
    assert us == 5 * 57
    assert max(sizes) <= 300 and len(sizes) > 1
    classes2, none, _ = link.infer(samples)
    assert none is None
    np.testing.assert_array_equal(classes2, classes)


def test_hello_frames_hold_no_ctrl_c():
    """The first frame after serve() starts may reach the board before the server has
    turned Ctrl-C off: HELLO picks a seq whose frames (first try and retry) hold no 0x03."""
    link, port = make_link(lambda f, p: reply(f, json.dumps(HELLO_REPLY).encode()))
    sent = []
    for start in range(0, 300):
        link.seq = start
        link.hello()
        f = port.frames[-1]
        sent.append(f.seq)
        for flags in (0, fr.FLAG_RETRY):
            assert 3 not in fr.encode(fr.HELLO, f.seq, b"", flags), f.seq
    assert 3 not in sent and sent != list(range(1, 301))  # some seqs were skipped
    link.seq = 2
    link.info()  # other requests take the next seq as it comes
    assert port.frames[-1].seq == 3


def test_a_false_start_longer_than_the_devices_frames_is_skipped_at_once():
    """After HELLO the decoder knows the device's max_payload: a false start marker whose
    length field exceeds it is skipped at once, not waited for until the reply timeout."""
    big = dict(HELLO_REPLY, max_payload=1024)

    def dev(f, p):
        if f.type == fr.HELLO:
            return reply(f, json.dumps(big).encode())
        false_start = struct.pack("<2sBBHH", fr.SOF, 0x82, 0, f.seq, 2000)  # 2000 > 1024
        return false_start + reply(f, b'{"ok": 1}')

    link, port = make_link(dev, timeout=5.0)
    link.hello()
    assert link.info() == {"ok": 1}
    assert link.decoder.stats.too_long == 1 and link.stats.timeouts == 0 and len(port.frames) == 2


def test_infer_reply_for_fewer_samples_is_an_error():
    def dev(f, p):
        if f.type == fr.HELLO:
            return reply(f, json.dumps(HELLO_REPLY).encode())
        return reply(f, struct.pack("<HHI", 1, 10, 5) + struct.pack("<H", 7))  # 1 of 3 answered

    link, _ = make_link(dev)
    link.hello()
    with pytest.raises(LinkError, match="INFER: sent 3 samples, device answered 1"):
        link.infer(np.zeros((3, 16), np.uint8))


def test_stored_model_is_matched_by_name_size_and_crc():
    """After a reboot mid-deploy the host skips the upload only when the device stores
    this very file: a retrained model of the same name and size is not it."""
    old = bytes(range(200)) + struct.pack("<I", 0x11111111)
    new = bytes(range(200)) + struct.pack("<I", 0x22222222)
    info = {"models": [{"name": "m.rbnn", "bytes": len(old), "file_crc": 0x11111111}]}
    assert Link._stored(info, "m.rbnn", old)
    assert not Link._stored(info, "m.rbnn", new)
    assert not Link._stored(info, "n.rbnn", old)
    assert not Link._stored(info, "m.rbnn", old + b"x")


# --- the training stream (Link.train) -----------------------------------------------------------
class TrainDevice:
    """TRAIN by position, as the server does it (docs/PROTOCOL.md, TRAIN): ``applied``
    counts samples; ``lose`` replies to drop (by the index of the TRAIN frame received)."""

    def __init__(self, lose=()):
        self.applied = 0
        self.got: list[int] = []  # labels in the order applied
        self.frames = 0
        self.lose = set(lose)

    def __call__(self, f: fr.Frame, port) -> bytes:
        if f.type == fr.HELLO:
            return reply(f, json.dumps(dict(HELLO_REPLY, window=2)).encode())
        pos, n, width = struct.unpack_from("<IHH", f.payload, 0)
        labels = struct.unpack_from(f"<{n}H", f.payload, 8)
        if pos > self.applied:
            status = fr.TRAIN_GAP
        elif pos + n <= self.applied:
            status = fr.TRAIN_OLD
        else:
            self.got += labels[self.applied - pos :]
            self.applied = pos + n
            status = fr.TRAIN_APPLIED
        i, self.frames = self.frames, self.frames + 1
        if i in self.lose:
            return b""
        return reply(f, struct.pack("<IIIIB", self.applied, self.applied, 0, 10, status))


def _samples(a: int, b: int):
    return np.zeros((b - a, 3), np.uint8), np.arange(a, b) % 60000


def test_train_applies_every_sample_once_across_lost_replies():
    dev = TrainDevice(lose={0, 3, 4, 9})
    link, port = make_link(dev)
    link.hello()
    link.train_chunk = 7
    last = link.train(_samples, 0, 200)
    assert last.applied == 200 and dev.got == list(range(200))  # in order, none twice
    assert link.stats.timeouts >= 1 and link.stats.train_sent > 200  # some frames went twice


def test_train_with_no_answer_is_a_bounded_error():
    link, port = make_link(lambda f, p: reply(f, json.dumps(HELLO_REPLY).encode()) if f.type == fr.HELLO else b"")
    link.hello()
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=r"TRAIN to fake: no progress from sample 5 after 4 resends"):
        link.train(_samples, 5, 50)
    # bounded: 4 silences of the reply timeout plus the device time 45 unmeasured samples
    # may take (2 x 10 ms each), and a margin for a loaded machine
    assert time.monotonic() - t0 < 4 * (0.05 + 2 * 45 * 0.01) + 3


def test_train_on_a_line_that_damages_every_frame_is_a_bounded_error():
    def nak_all(f, p):
        if f.type == fr.HELLO:
            return reply(f, json.dumps(dict(HELLO_REPLY, window=2)).encode())
        return fr.encode(fr.NAK, 0, bytes([fr.NAK_CRC]))

    link, port = make_link(nak_all)
    link.hello()
    with pytest.raises(LinkError, match=r"TRAIN to fake: no progress from sample 0 after 16 resends \(the last for a NAK"):
        link.train(_samples, 0, 50)
    assert len(port.frames) < 40  # HELLO and a bounded number of TRAIN frames
