"""Faults on the serial link, end to end: the MicroPython unix port runs the firmware on
a pseudo-terminal (the virtual device) and a seeded fault layer sits between pyserial and
the host client. Every fault is recovered by a retry or ends in a clear error, and
nothing is lost or corrupted: results equal the twin's and stored files are compared
byte for byte."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import serial

from rbnn.device import frames as fr
from rbnn.device.link import DeviceError, Link, LinkError
from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import pack_input
from support.randmodel import random_model

KINDS = ("garbage", "corrupt", "truncate", "duplicate", "drop")


class FaultySerial:
    """A pyserial port with faults injected into frames, deterministically.

    ``plan`` maps the index of a host->device frame (counting frames written since the
    layer was made) to a fault; ``reply_plan`` does the same for device->host frames.
    Faults: garbage (random bytes before the frame), corrupt (one bit flipped after the
    start marker), truncate (a random prefix only), duplicate (sent twice), drop (not
    sent), kill (a prefix, then ``on_kill()``: the device loses power mid-frame).
    Bytes that are not frames (REPL traffic) pass untouched.
    """

    def __init__(self, ser, seed: int, plan=None, reply_plan=None, on_kill=None):
        self.ser = ser
        self.rng = np.random.default_rng(seed)
        self.plan = dict(plan or {})
        self.reply_plan = dict(reply_plan or {})
        self.on_kill = on_kill
        self.sent = 0  # frames written
        self.received = 0  # frames read
        self.applied: list[tuple[str, int, str]] = []
        self.inbuf = bytearray()  # read from the port, not yet released
        self.ready = bytearray()  # released to the reader

    # --- pass-through --------------------------------------------------------------------
    port = property(lambda self: self.ser.port)
    baudrate = property(lambda self: self.ser.baudrate)

    @property
    def timeout(self):
        return self.ser.timeout

    @timeout.setter
    def timeout(self, v):
        self.ser.timeout = v

    def flush(self):
        self.ser.flush()

    def close(self):
        self.ser.close()

    def reset_input_buffer(self):
        self.ser.reset_input_buffer()
        self.inbuf.clear()
        self.ready.clear()

    # --- host -> device ------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        data = bytes(data)
        if not data.startswith(fr.SOF):
            return self.ser.write(data)
        i = self.sent
        self.sent += 1
        kind = self.plan.get(i)
        if kind:
            self.applied.append(("out", i, kind))
        self.ser.write(self._mangle(data, kind))
        if kind == "kill":
            self.ser.flush()
            time.sleep(0.05)
            self.on_kill()
        return len(data)

    def _mangle(self, frame: bytes, kind: str | None) -> bytes:
        if kind is None:
            return frame
        if kind == "garbage":
            junk = self.rng.integers(0, 256, int(self.rng.integers(1, 200)), dtype=np.uint8).tobytes()
            return junk + frame
        if kind == "corrupt":
            b = bytearray(frame)
            at = int(self.rng.integers(2, len(b)))
            b[at] ^= 1 << int(self.rng.integers(0, 8))
            return bytes(b)
        if kind in ("truncate", "kill"):
            return frame[: int(self.rng.integers(1, len(frame)))]
        if kind == "duplicate":
            return frame + frame
        if kind == "drop":
            return b""
        raise ValueError(kind)

    # --- device -> host ------------------------------------------------------------------
    def _pump(self) -> None:
        # split what the device sent into frames (released whole, maybe mangled) and
        # other bytes (released as they are)
        n = self.ser.in_waiting
        if n:
            self.inbuf += self.ser.read(n)
        while self.inbuf:
            at = self.inbuf.find(fr.SOF)
            if at != 0:
                cut = len(self.inbuf) if at < 0 else at
                if at < 0 and self.inbuf[-1:] == fr.SOF[:1]:
                    cut -= 1
                if cut == 0:
                    return
                self.ready += self.inbuf[:cut]
                del self.inbuf[:cut]
                continue
            if len(self.inbuf) < fr.HEADER_BYTES:
                return
            (n,) = struct.unpack_from("<H", self.inbuf, 6)
            end = fr.HEADER_BYTES + n + fr.CRC_BYTES
            if len(self.inbuf) < end:
                return
            frame = bytes(self.inbuf[:end])
            del self.inbuf[:end]
            i = self.received
            self.received += 1
            kind = self.reply_plan.get(i)
            if kind:
                self.applied.append(("in", i, kind))
            self.ready += self._mangle(frame, kind)

    @property
    def in_waiting(self) -> int:
        self._pump()
        return len(self.ready)

    def read(self, size: int = 1) -> bytes:
        deadline = time.monotonic() + (self.ser.timeout or 0)
        while True:
            self._pump()
            if self.ready or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        out = bytes(self.ready[:size])
        del self.ready[:size]
        return out


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    """Two small valid models (old and new: a retrained one, of the same shape and byte
    size, so that only the content tells them apart) and test inputs for them."""
    rng = np.random.default_rng(7)
    old = pack.to_bytes(random_model(rng, n_inputs=784, sizes=[128, 64, 10], plane_mask=0x80))  # 14 kB
    new = pack.to_bytes(random_model(rng, n_inputs=784, sizes=[128, 64, 10], plane_mask=0x80))
    assert len(old) == len(new) and old != new
    return old, new, rng.integers(0, 256, (120, 784), dtype=np.uint8)


BAUD = 921600  # a pty ignores it; the link's timeouts count wire time at this rate


def faulty_link(dev, seed=0, plan=None, reply_plan=None, **kw) -> tuple[Link, FaultySerial]:
    """A connected Link to the virtual device ``dev`` through a FaultySerial (``plan``,
    ``reply_plan`` as there; a kill powers ``dev`` off); short timeouts."""
    ser = serial.Serial(dev.port, BAUD, timeout=0.05)
    fs = FaultySerial(ser, seed, plan, reply_plan, on_kill=dev.kill)
    kw.setdefault("timeout", 0.3)
    kw.setdefault("op_timeout", 20)
    link = Link(fs, **kw)
    link.connect()
    return link, fs


def _samples(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = pack.from_bytes(model_bytes)
    xb = pack_input(x, m.plane_mask)
    return xb.astype("<u4").view(np.uint8).reshape(len(x), -1), twin.scores(m, xb)


def _check_session(link: Link, model: bytes, x: np.ndarray, fs_dir: Path) -> dict:
    saved = link.deploy_model(model, "m.rbnn")
    assert saved["bytes"] == len(model) and saved["crc"] == zlib.crc32(model)
    assert (fs_dir / "m.rbnn").read_bytes() == model
    xb, ref = _samples(model, x)
    classes, scores, _ = link.infer(xb, scores=True)
    np.testing.assert_array_equal(scores, ref)
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    return link.device_stats()


# --- one kind of fault at a time ---------------------------------------------------------------
@pytest.mark.parametrize("direction", ["out", "in"])
@pytest.mark.parametrize("kind", KINDS)
def test_fault_kind_is_recovered(vdev, models, kind, direction):
    """Faults on every 4th frame of an upload + save + batch inference session."""
    old, _, x = models
    plan = {i: kind for i in range(2, 40, 4)}
    link, fs = faulty_link(vdev, seed=zlib.crc32(f"{kind}/{direction}".encode()), chunk=1024,
                     plan=plan if direction == "out" else None,
                     reply_plan=plan if direction == "in" else None)  # fmt: skip
    _check_session(link, old, x, vdev.fs)
    fs.plan.clear()
    fs.reply_plan.clear()
    stats = link.device_stats()
    assert fs.applied, "no fault was injected"
    if direction == "out":  # the device saw and counted it
        seen = {"garbage": stats["garbage"], "truncate": stats["truncated"],
                "duplicate": stats["duplicates"], "drop": stats["retries"],
                "corrupt": stats["bad_crc"] + stats["truncated"] + stats["too_long"]}  # fmt: skip
        assert seen[kind] > 0, stats
    if kind in ("corrupt", "truncate", "drop"):
        assert link.stats.retries > 0
    assert stats["inferences"] == len(x), stats  # a repeated INFER is answered, not recomputed
    link.leave()


def test_random_faults_seeded(vdev, models):
    """A mix of every kind in both directions on ~25 % of frames: same answers."""
    old, new, x = models
    rng = np.random.default_rng(2024)
    plan = {i: KINDS[int(rng.integers(len(KINDS)))] for i in range(1, 200) if rng.random() < 0.25}
    rplan = {i: KINDS[int(rng.integers(len(KINDS)))] for i in range(1, 200) if rng.random() < 0.25}
    link, fs = faulty_link(vdev, seed=11, plan=plan, reply_plan=rplan, chunk=700)
    _check_session(link, old, x, vdev.fs)
    _check_session(link, new, x, vdev.fs)
    assert len(fs.applied) > 10
    link.leave()


def test_retries_are_bounded(vdev, models):
    """Every request frame lost: LinkError after retries+1 tries, naming the request."""
    link, fs = faulty_link(vdev, retries=3, timeout=0.2)
    fs.plan = {i: "drop" for i in range(fs.sent, fs.sent + 100)}
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=r"STATS \(seq \d+\).*no valid reply after 4 tries \(4 timeouts"):
        link.device_stats()
    # bounded: 4 reply timeouts (1.4 s in all) and a margin for a loaded machine
    assert time.monotonic() - t0 < 4 * link._reply_timeout(fr.OVERHEAD) + 3
    fs.plan.clear()
    assert link.device_stats()["frames"] > 0  # the link still works afterwards
    link.leave()


# --- the device loses power --------------------------------------------------------------------
def test_kill_during_upload_resumes(vdev, models):
    old, _, x = models
    link, fs = faulty_link(vdev, chunk=512)
    first = fs.sent
    fs.plan = {first + 12: "kill"}  # UP_BEGIN, then the 11th chunk is cut by a power loss
    saved = link.deploy_model(old, "m.rbnn")
    assert vdev.kills == 1 and vdev.starts == 2
    assert saved["attempts"] == 2
    assert saved["resumed_from"] >= 10 * 512, saved  # the flushed chunks were kept
    assert (vdev.fs / "m.rbnn").read_bytes() == old
    xb, ref = _samples(old, x)
    classes, _, _ = link.infer(xb)
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    link.leave()


def test_kill_while_replacing_a_model_of_the_same_size(vdev, models):
    """A retrained model (same name, same size) is being deployed over the old one when
    the device loses power: after the reboot the host must not take the stored old file
    for the new one (its CRC field differs), and ends with the new one stored and run."""
    old, new, x = models
    link, fs = faulty_link(vdev, chunk=512)
    link.deploy_model(old, "m.rbnn")
    fs.plan = {fs.sent + 8: "kill"}  # UP_BEGIN, then the 7th chunk of the new model is cut
    saved = link.deploy_model(new, "m.rbnn")
    assert vdev.kills == 1 and saved["attempts"] == 2
    assert (vdev.fs / "m.rbnn").read_bytes() == new
    xb, ref = _samples(new, x)
    _, scores, _ = link.infer(xb, scores=True)
    np.testing.assert_array_equal(scores, ref)
    link.leave()


def test_upload_damaged_on_the_flash_is_refused_by_its_crc(vdev, models):
    """Half an upload is on the flash when the device reboots, and a byte of it has
    changed there; the resumed upload completes, and SAVE refuses it (E_UPLOAD, the
    upload's CRC-32, before the file is even parsed) and keeps the old model."""
    old, new, _ = models
    link, _ = faulty_link(vdev, chunk=1024)
    link.deploy_model(old, "m.rbnn")
    link.request(fr.UP_BEGIN, struct.pack("<II", len(new), zlib.crc32(new)))
    for off in range(0, 4096, 1024):
        link.request(fr.UP_DATA, struct.pack("<I", off) + new[off : off + 1024])
    link.leave()
    link.ser.close()
    upload = vdev.fs / ".rbnn_upload"
    damaged = bytearray(upload.read_bytes())
    damaged[1000] ^= 0x01
    vdev.restart()
    upload.write_bytes(damaged)  # before the store reads it back
    link, _ = faulty_link(vdev, chunk=1024)
    assert link.upload(new)["resumed_from"] == 4096
    with pytest.raises(DeviceError) as e:
        link.save("m.rbnn")
    assert e.value.code == "E_UPLOAD" and "discarded" in e.value.message, e.value
    assert (vdev.fs / "m.rbnn").read_bytes() == old and link.info()["upload"] is None
    link.leave()


def test_data_at_another_offset_is_not_written(vdev, models):
    """UP_DATA writes only at the offset the device holds: a chunk sent again in a new
    request (a host that lost the reply and started over) or one from beyond writes
    nothing, and the reply tells where to go on."""
    old, _, _ = models
    link, _ = faulty_link(vdev)
    link.request(fr.UP_BEGIN, struct.pack("<II", len(old), zlib.crc32(old)))

    def put(off: int, data: bytes) -> int:
        return struct.unpack("<I", link.request(fr.UP_DATA, struct.pack("<I", off) + data))[0]

    assert put(0, old[:200]) == 200
    assert put(0, old[:200]) == 200  # a new seq: not a duplicate frame, still not written twice
    assert put(100, old[100:300]) == 200  # overlapping
    assert put(5000, old[5000:5100]) == 200  # ahead
    assert link.upload(old)["resumed_from"] == 200
    link.save("m.rbnn")
    assert (vdev.fs / "m.rbnn").read_bytes() == old
    link.leave()


def test_host_gone_during_upload_resumes(vdev, models):
    """The host process dies mid-upload; a new session continues where the device is."""
    old, _, _ = models
    link, fs = faulty_link(vdev, chunk=512)
    size, crc = len(old), zlib.crc32(old)
    link.request(fr.UP_BEGIN, struct.pack("<II", size, crc))
    for off in range(0, 4096, 512):
        link.request(fr.UP_DATA, struct.pack("<I", off) + old[off : off + 512])
    link.ser.close()  # gone, without LEAVE
    link2, _ = faulty_link(vdev, chunk=512)  # finds the server running
    assert link2.repl is None
    up = link2.upload(old)
    assert up["resumed_from"] == 4096
    link2.save("m.rbnn")
    assert (vdev.fs / "m.rbnn").read_bytes() == old
    link2.leave()


@pytest.mark.parametrize(
    "point,fat",
    [("save:verified", False), ("save:staged", False), ("save:replaced", False), ("save:removed", True)],
)
def test_kill_during_save_keeps_old_or_new(vdev, models, point, fat):
    old, new, x = models
    link, _ = faulty_link(vdev)
    link.deploy_model(old, "m.rbnn")
    link.leave()
    link.ser.close()
    env = {"RBNN_KILL_AT": point}
    if fat:
        env["RBNN_FS_EMULATE"] = "fat"
    vdev.restart(env=env)
    starts = vdev.starts
    link, _ = faulty_link(vdev)
    with pytest.raises(LinkError):
        link.upload(new)
        link.save("m.rbnn")  # the device dies at `point` while saving
    vdev.wait_started(starts + 1)
    assert vdev.kills == 2
    # on the flash right after the power loss: the old file or the new one, complete;
    # or (FAT, between remove and rename) none yet and a complete NAME.new
    path, staged = vdev.fs / "m.rbnn", vdev.fs / "m.rbnn.new"
    if path.exists():
        assert path.read_bytes() in (old, new)
    else:
        assert fat and staged.read_bytes() == new
    # the server's start-up finishes an interrupted save; then the host completes its own
    link.reconnect()
    assert path.read_bytes() in (old, new) and not staged.exists()
    saved = link.deploy_model(new, "m.rbnn")
    assert path.read_bytes() == new and saved["model"]["file_bytes"] == len(new)
    xb, ref = _samples(new, x)
    classes, _, _ = link.infer(xb)
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    link.leave()


# --- bad files ------------------------------------------------------------------------------
@pytest.mark.parametrize("where,code", [(0, "E_MAGIC"), (13, "E_HEADER"), (-1, "E_CRC"), (None, "E_TRUNCATED")])
def test_malformed_model_is_refused_and_old_kept(vdev, models, where, code):
    old, _, x = models
    link, _ = faulty_link(vdev)
    link.deploy_model(old, "m.rbnn")
    bad = bytearray(old)
    if where is None:
        bad = bad[:100]
    else:
        bad[where] ^= 0xFF
    with pytest.raises(DeviceError) as e:
        link.upload(bytes(bad))
        link.save("m.rbnn")
    assert e.value.code == code and "offset" in e.value.message, e.value
    assert (vdev.fs / "m.rbnn").read_bytes() == old
    info = link.info()
    assert info["active"] == "m.rbnn" and info["upload"] is None  # the bad upload is gone
    xb, ref = _samples(old, x)
    classes, _, _ = link.infer(xb)
    np.testing.assert_array_equal(classes, np.argmax(ref, axis=1))
    link.leave()
