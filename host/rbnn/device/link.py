"""The host end of the serial protocol (docs/PROTOCOL.md): a pyserial client with
timeouts, bounded retries, resync after garbage, and recovery from a device reboot.

    link = Link.open("/dev/ttyACM0")      # enters the server from the REPL
    link.info()
    link.deploy_model(data, "model.rbnn")  # upload (resumable) + atomic save + load
    classes, scores, us = link.infer(samples_u8)
    link.leave()                           # back to the REPL
"""

from __future__ import annotations

import functools
import importlib.util
import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import resources
from ..errors import RbnnError
from . import frames as fr
from .rawrepl import RawRepl, ReplError

DEFAULT_BAUD = 115200
REBOOT_MARKS = (b"MicroPython v", b"soft reboot\r\n")
CTRL_C = b"\x03"


class LinkError(RbnnError):
    """The device did not answer a request correctly within the retries."""


class DeviceRebooted(LinkError):
    """The device printed its REPL banner while a request was outstanding."""


class DeviceError(RbnnError):
    """The device understood a request and refused it (an ERR frame)."""

    def __init__(self, request: str, code: str, message: str):
        self.request = request
        self.code = code
        self.message = message
        super().__init__(f"device refused {request}: {code}: {message}")


@dataclass
class LinkStats:
    """What the host saw on the link."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    naks: int = 0
    stale: int = 0  # replies to an earlier try, or NAKs for frames already answered
    truncated: int = 0  # partial replies dropped at the deadline
    reconnects: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    train_out: int = 0  # bytes of TRAIN frames sent (resends included)
    train_in: int = 0  # bytes read while streaming TRAIN frames
    train_sent: int = 0  # samples sent in TRAIN frames (resends included)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace").replace("\r", "")


@functools.lru_cache(maxsize=1)
def _store_module():
    # the firmware's own rbnn_store (it runs on CPython too): the name rule, once
    path = resources.firmware() / "rbnn_store.py"
    spec = importlib.util.spec_from_file_location("_rbnn_firmware_store", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_model_name(name: str) -> str:
    """``name`` when the device's store takes it as a model name, else an RbnnError
    ``E_NAME: ...`` in the device's words: the rule is the firmware's
    ``rbnn_store.check_name``, run here, so the host refuses before any upload."""
    store = _store_module()
    try:
        store.check_name(name)
    except store.StoreError as e:
        raise RbnnError(f"{e.args[0]}: {e.args[1]}") from None
    return name


def open_serial(port: str, baudrate: int = DEFAULT_BAUD, error: type[RbnnError] = LinkError):
    """Open a serial port for the link (short read timeout, bounded write timeout).

    A path that exists but is not a character device (a regular file, a folder, a
    pipe) is refused by name; so are a bad baud rate and a port the system will not
    open, as ``error`` (default :class:`LinkError`).
    """
    import os
    import stat

    import serial

    try:
        mode = os.stat(port).st_mode
    except OSError:
        mode = None  # absent, or not a path (COM3): pyserial says why
    if mode is None and os.sep in port:
        raise error(f"{port}: no such serial port (is the board connected? "
                    "`python -m serial.tools.list_ports` lists the ports)")  # fmt: skip
    if mode is not None and not stat.S_ISCHR(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) else "not a device"
        raise error(f"{port}: not a serial port: expected a character device such as /dev/ttyACM0, found {kind}")
    try:
        return serial.Serial(port, baudrate, timeout=0.05, write_timeout=30)
    except (serial.SerialException, ValueError) as e:
        if "Inappropriate ioctl" in str(e):  # ENOTTY: /dev/null and other non-tty devices
            raise error(f"{port}: not a serial port: the device takes no serial settings ({e})") from None
        raise error(f"cannot open {port}: {e}") from None


def device_error(request: str, payload: bytes) -> DeviceError:
    """The DeviceError of an ERR frame's payload (JSON code and message)."""
    try:
        err = json.loads(payload)
        code, msg = err.get("code", "E_?"), err.get("message", "")
    except ValueError:
        code, msg = "E_?", _text(payload)
    return DeviceError(request, code, msg)


# What Waiting.on_frame asks of the reader.
WAIT, EXTEND, RESEND, DONE = "wait", "extend", "resend", "done"


class Waiting:
    """The retry state of one request (docs/PROTOCOL.md, Sending), apart from the bytes
    on the wire: what each frame read and each timeout means for it.

    :meth:`on_frame` returns ``(action, payload)``: WAIT (keep reading), EXTEND (an ACK:
    wait ``poll`` seconds more), RESEND, or DONE with the reply's payload; it raises
    :class:`DeviceError` for an ERR. :meth:`on_timeout` counts a try (or, after an ACK,
    doubles ``poll``) and raises :class:`LinkError` when ``op_timeout`` has passed.
    """

    def __init__(self, name: str, ftype: int, seq: int, retries: int, poll: float,
                 op_timeout: float, stats: LinkStats, where: str):  # fmt: skip
        self.name, self.seq, self.where = name, seq, where
        self.retries = retries
        self.poll = poll  # after an ACK: how long until the request is sent again
        self.op_timeout = op_timeout
        self.stats = stats
        self.attempt = 0  # tries used up (timeouts and NAKs before an ACK)
        self.timeouts = self.naks = 0
        self.acked_at: float | None = None  # when the device first ACKed
        self.resending = False  # the next frame sent is a retransmission
        self.on_type: dict[int, Callable[[fr.Frame], tuple[str, bytes]]] = {
            fr.ACK: self._ack, fr.ERR: self._err, ftype | fr.REPLY: self._reply,
        }  # fmt: skip

    def can_send(self) -> bool:
        return self.attempt <= self.retries

    def _use_try(self) -> None:
        self.attempt += 1
        self.resending = True
        if self.attempt <= self.retries:
            self.stats.retries += 1

    def on_timeout(self, now: float) -> None:
        if self.acked_at is None:
            self.timeouts += 1
            self.stats.timeouts += 1
            self._use_try()
            return
        waited = now - self.acked_at
        if waited >= self.op_timeout:
            raise LinkError(
                f"{self.name} (seq {self.seq}) to {self.where}: accepted, but no result "
                f"within {waited:.1f} s (op_timeout {self.op_timeout:g} s)"
            )
        # the request arrived; its result may be lost or still coming. Ask again, less
        # and less often: a duplicate is answered from the device's kept reply once done
        self.poll = min(2 * self.poll, self.op_timeout - waited)
        self.stats.retries += 1
        self.resending = True

    def on_frame(self, f: fr.Frame) -> tuple[str, bytes]:
        if f.type == fr.NAK:  # NAKs carry no seq: they answer the last frame sent
            return self._nak(f)
        if f.seq != self.seq:
            self.stats.stale += 1
            return WAIT, b""
        return self.on_type.get(f.type, self._stale)(f)

    def _nak(self, f: fr.Frame) -> tuple[str, bytes]:
        if self.acked_at is not None:  # for a damaged copy of a frame already taken
            self.stats.stale += 1
            return WAIT, b""
        self.naks += 1
        self.stats.naks += 1
        self._use_try()
        return RESEND, b""

    def _ack(self, f: fr.Frame) -> tuple[str, bytes]:
        if self.acked_at is None:
            self.acked_at = time.monotonic()
        return EXTEND, b""

    def _err(self, f: fr.Frame) -> tuple[str, bytes]:
        raise device_error(self.name, f.payload)

    def _reply(self, f: fr.Frame) -> tuple[str, bytes]:
        return DONE, f.payload

    def _stale(self, f: fr.Frame) -> tuple[str, bytes]:
        self.stats.stale += 1
        return WAIT, b""


class Link:
    """A session with the rbnn server on an open serial port.

    Parameters
    ----------
    ser : serial.Serial
        An open port (or an object with the same read/write/in_waiting/timeout).
    retries : int
        Retransmissions of a request before :class:`LinkError`.
    timeout : float
        Seconds to wait for a reply, plus the wire time at ``ser.baudrate``.
    op_timeout : float
        Seconds to wait for the result of a slow request after its ACK.
    chunk : int, optional
        Upload bytes per frame (default: as many as the device's frames hold).
    """

    def __init__(
        self,
        ser,
        *,
        retries: int = 5,
        timeout: float = 1.0,
        op_timeout: float = 60.0,
        chunk: int | None = None,
    ):
        self.ser = ser
        self.retries = retries
        self.timeout = timeout
        self.op_timeout = op_timeout
        self.chunk = chunk
        self.train_chunk: int | None = None  # most samples per TRAIN frame (None: as many as fit)
        self.max_payload = fr.BOOT_PAYLOAD
        self.seq = 0
        self.decoder = fr.Decoder()
        self.stats = LinkStats()
        self.hello_info: dict = {}
        self.repl: RawRepl | None = None  # set when we started the server from the REPL
        self.port_name = getattr(ser, "port", None) or "<port>"

    # --- opening and closing --------------------------------------------------------
    @classmethod
    def open(cls, port: str, baudrate: int = DEFAULT_BAUD, name: str | None = None, **kw) -> Link:
        """Open ``port`` and enter the server (see :meth:`connect`); ``name`` is how
        messages call the port (default ``port``; e.g. ``virtual``)."""
        ser = open_serial(port, baudrate)
        link = cls(ser, **kw)
        link.port_name = name or port
        try:
            link.connect()
        except BaseException:
            ser.close()
            raise
        return link

    def connect(self) -> dict:
        """Start the server from the board's REPL, or find it running; then HELLO."""
        repl = RawRepl(self.ser)
        if repl.enter(timeout=1.5):
            try:
                repl.exec("import rbnn_server")
            except ReplError as e:
                raise LinkError(
                    f"no rbnn firmware on the device at {self.port_name} ({str(e).strip().splitlines()[-1]}); "
                    f"put it there with `rbnn deploy MODEL --port {self.port_name}`"
                ) from None
            repl.start("rbnn_server.serve()")
            self.decoder.feed(bytes(repl.pending))
            repl.pending.clear()
            self.repl = repl
        try:
            return self.hello()
        except LinkError as e:
            raise LinkError(
                f"no rbnn server answers at {self.port_name}: not at the REPL and no HELLO reply ({e})"
            ) from None

    def reconnect(self) -> dict:
        """After a device reboot: enter the server again and start a new session."""
        self.stats.reconnects += 1
        self.max_payload = fr.BOOT_PAYLOAD
        self.decoder = fr.Decoder()
        return self.connect()

    def leave(self) -> None:
        """LEAVE: the server returns and the board is back at its friendly REPL."""
        self.request(fr.LEAVE)
        # the raw REPL closes the serve() call with \x04 \x04 >; the decoder may have
        # read those already (as bytes outside frames)
        seen = bytearray(self.decoder.stats.skipped[-8:])
        deadline = time.monotonic() + (2.0 if self.repl is not None else 0.2)
        while b"\x04\x04>" not in seen and time.monotonic() < deadline:
            self.ser.timeout = 0.05
            seen += self.ser.read(max(1, self.ser.in_waiting))
        (self.repl or RawRepl(self.ser)).exit()
        self.repl = None

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one request --------------------------------------------------------------------
    def _reply_timeout(self, frame_bytes: int) -> float:
        baud = getattr(self.ser, "baudrate", DEFAULT_BAUD) or DEFAULT_BAUD
        wire = (frame_bytes + self.max_payload + fr.OVERHEAD) * 10 / baud
        return self.timeout + 2 * wire

    def _read(self, deadline: float) -> list[fr.Frame]:
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        self.ser.timeout = min(left, 0.05)
        data = self.ser.read(max(1, self.ser.in_waiting))
        if not data:
            return []
        self.stats.bytes_in += len(data)
        before = self.decoder.stats.garbage
        got = self.decoder.feed(data)
        if self.decoder.stats.garbage > before:
            self._check_reboot()
        return got

    def _check_reboot(self) -> None:
        # a board that reset prints its banner: fail now instead of after every retry
        tail = bytes(self.decoder.stats.skipped[-300:])
        if any(mark in tail for mark in REBOOT_MARKS):
            self.decoder.stats.skipped.clear()
            raise DeviceRebooted(f"the device at {self.port_name} rebooted: {_text(tail[-120:])!r}")

    def _flush_stale(self) -> None:
        # stop and wait: nothing valid can be on its way before a new request; a device
        # that keeps sending for longer than a reply timeout is not answering requests
        deadline = time.monotonic() + self.timeout
        flushed = 0
        while self.ser.in_waiting:
            if time.monotonic() > deadline:
                said = _text(bytes(self.decoder.stats.skipped[-80:]))
                raise LinkError(
                    f"{self.port_name}: the device keeps sending ({flushed:,} bytes in {self.timeout:g} s "
                    f"before a request; another program or device on this port?): {said!r}"
                )
            data = self.ser.read(self.ser.in_waiting)
            flushed += len(data)
            self.stats.bytes_in += len(data)
            for _ in self.decoder.feed(data):
                self.stats.stale += 1
        self.decoder.drop_partial()
        self._check_reboot()

    def _next_seq(self, ftype: int, payload: bytes, avoid: bytes) -> tuple[int, bytes, bytes]:
        # the next seq whose frames (first try and retry) hold none of the bytes `avoid`
        while True:
            self.seq = (self.seq + 1) & 0xFFFF
            tries = (fr.encode(ftype, self.seq, payload), fr.encode(ftype, self.seq, payload, fr.FLAG_RETRY))
            if not any(b in f for b in avoid for f in tries):
                return self.seq, tries[0], tries[1]

    def _write(self, frame: bytes) -> None:
        try:
            self.ser.write(frame)
            self.ser.flush()
        except OSError as e:  # pyserial's write timeout: nothing reads on the far end
            raise LinkError(f"{self.port_name}: the device did not take a {len(frame)}-byte frame ({e})") from None
        self.stats.bytes_out += len(frame)

    def request(self, ftype: int, payload: bytes = b"", avoid: bytes = b"") -> bytes:
        """Send one request and return the payload of its reply.

        ``avoid``: bytes its frames must not contain (the seq is chosen so): the first
        frame after ``serve()`` starts must not hold Ctrl-C (0x03), which interrupts the
        server until it has turned the keyboard interrupt off.

        Raises
        ------
        DeviceError
            The device answered ERR.
        LinkError
            No valid reply after ``retries`` retransmissions.
        """
        name = fr.type_name(ftype)
        if len(payload) > self.max_payload:
            raise ValueError(f"{name} payload of {len(payload)} bytes exceeds the device's {self.max_payload}")
        seq, first, again = self._next_seq(ftype, payload, avoid)
        self.stats.requests += 1
        self._flush_stale()
        wait = Waiting(name, ftype, seq, self.retries, self.timeout, self.op_timeout, self.stats, self.port_name)
        reply_timeout = self._reply_timeout(len(first))
        while wait.can_send():
            self._write(again if wait.resending else first)
            done, result = self._await(wait, reply_timeout)
            if done:
                return result
        said = _text(bytes(self.decoder.stats.skipped[-160:])).strip()
        raise LinkError(
            f"{name} (seq {seq}) to {self.port_name}: no valid reply after {wait.attempt} tries "
            f"({wait.timeouts} timeouts, {wait.naks} NAKs, {self.decoder.stats.bad_crc} bad CRCs so far)"
            + (f"; the device said: {said!r}" if said else "")
        )

    def _await(self, wait: Waiting, reply_timeout: float) -> tuple[bool, bytes]:
        # read frames until `wait` has its reply (True, payload) or wants a resend
        deadline = time.monotonic() + (wait.poll if wait.acked_at is not None else reply_timeout)
        while True:
            got = self._read(deadline)
            if not got and time.monotonic() >= deadline:
                if self.decoder.pending:
                    self.stats.truncated += 1
                    self.decoder.drop_partial()
                wait.on_timeout(time.monotonic())
                return False, b""
            for f in got:
                action, result = wait.on_frame(f)
                if action == DONE:
                    return True, result
                if action == RESEND:
                    return False, b""
                if action == EXTEND:
                    deadline = time.monotonic() + wait.poll

    def _json(self, ftype: int, payload: bytes = b"", avoid: bytes = b"") -> dict:
        return json.loads(self.request(ftype, payload, avoid))

    # --- commands -------------------------------------------------------------------------
    def hello(self) -> dict:
        """HELLO: start a session; learns the device's max_payload. Its frames hold no
        Ctrl-C byte: the server may not have turned the keyboard interrupt off yet."""
        info = self._json(fr.HELLO, avoid=CTRL_C)
        if info.get("protocol") != fr.PROTOCOL:
            raise LinkError(f"device speaks protocol {info.get('protocol')}, this host {fr.PROTOCOL}: put this "
                            f"version's firmware on it (`rbnn deploy MODEL --port {self.port_name}`)")  # fmt: skip
        self.max_payload = int(info["max_payload"])
        self.decoder.max_payload = max(self.max_payload, fr.BOOT_PAYLOAD)
        self.hello_info = info
        return info

    def info(self) -> dict:
        return self._json(fr.INFO)

    def device_stats(self) -> dict:
        return self._json(fr.STATS)

    def reset(self, reboot: bool = False) -> None:
        """RESET: forget the loaded model and the counters; or reboot the board."""
        self.request(fr.RESET, bytes([1 if reboot else 0]))

    def upload(self, data: bytes, progress: Callable[[int], None] | None = None) -> dict:
        """Upload ``data`` (resuming what the device already holds).

        Returns ``{"bytes", "crc", "resumed_from"}``; ``progress(have)`` is called after
        every chunk.
        """
        size, crc = len(data), zlib.crc32(data)
        (have,) = struct.unpack("<I", self.request(fr.UP_BEGIN, struct.pack("<II", size, crc)))
        resumed = have
        if progress:
            progress(have)
        step = min(self.chunk or self.max_payload, self.max_payload - 4)
        while have < size:
            piece = data[have : have + step]
            (new,) = struct.unpack("<I", self.request(fr.UP_DATA, struct.pack("<I", have) + piece))
            if new > size:
                raise LinkError(f"device reports {new} bytes of a {size}-byte upload")
            have = new
            if progress:
                progress(have)
        return {"bytes": size, "crc": crc, "resumed_from": resumed}

    def save(self, name: str, load: bool = True) -> dict:
        """SAVE the complete upload as ``name`` (atomic), and load it."""
        return self._json(fr.SAVE, bytes([1 if load else 0]) + check_model_name(name).encode())

    def load(self, name: str) -> dict:
        """LOAD a stored model; returns its info()."""
        return self._json(fr.LOAD, check_model_name(name).encode())

    def deploy_model(
        self,
        data: bytes,
        name: str = "model.rbnn",
        progress: Callable[[int], None] | None = None,
        attempts: int = 3,
    ) -> dict:
        """Upload, save and load a model, riding out device reboots.

        After a reboot the session is entered again; when the device already stores
        this exact file (size and CRC field match) the save had completed, otherwise the
        upload resumes where the device's copy ends and the save is repeated.
        Returns the SAVE reply, with ``resumed_from`` of the last upload and ``attempts``.
        """
        check_model_name(name)  # before the upload, not after it
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                if attempt > 1:
                    self.reconnect()
                    if self._stored(self.info(), name, data):
                        model = self.load(name)
                        return {"name": name, "bytes": len(data), "crc": zlib.crc32(data),
                                "model": model, "resumed_from": len(data), "attempts": attempt}  # fmt: skip
                up = self.upload(data, progress)
                saved = self.save(name, load=True)
                saved.update(resumed_from=up["resumed_from"], attempts=attempt)
                return saved
            except LinkError as e:
                last = e
        raise LinkError(f"deploying {name} failed after {attempts} attempts: {last}")

    @staticmethod
    def _stored(info: dict, name: str, data: bytes) -> bool:
        tail = struct.unpack("<I", data[-4:])[0] if len(data) >= 4 else None
        return any(m["name"] == name and m["bytes"] == len(data) and m.get("file_crc") == tail
                   for m in info.get("models", []))  # fmt: skip

    def ensure_model(self, name: str | None = None) -> dict:
        """The loaded model's info(), loading ``name`` (or the device's default) if needed."""
        info = self.info()
        if name is None and info.get("model") is not None:
            return info["model"]
        if name is not None and info.get("active") == name and info.get("model") is not None:
            return info["model"]
        want = name or info.get("default")
        if not want:
            stored = [m["name"] for m in info.get("models", [])]
            raise LinkError(
                f"no model loaded on {self.port_name} and no default; stored: {stored or 'none'}; "
                "deploy one with `rbnn deploy MODEL`"
            )
        return self.load(want)

    def infer(
        self,
        samples: np.ndarray,
        scores: bool = False,
        progress: Callable[[int], None] | None = None,
        reconnect: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Classes (and scores) of a batch of samples, in as few frames as fit.

        Parameters
        ----------
        samples : ndarray of uint8, shape (n, L)
            One sample per row: packed input bits (``input_bytes`` of info()) or raw
            8-bit features.
        scores : bool
            Also return the int32 scores.

        Returns
        -------
        classes : ndarray of int64, shape (n,)
        scores : ndarray of int32, shape (n, n_classes), or None
        compute_us : int
            Device time spent inside predict/scores, in microseconds.
        """
        samples = np.ascontiguousarray(samples, dtype=np.uint8)
        n, width = samples.shape
        classes = np.empty(n, np.int64)
        out_scores: np.ndarray | None = None
        k_classes: int | None = None
        total_us = 0
        lo = 0
        reconnects = 0
        while lo < n:
            per = self._batch(width, k_classes, scores)
            hi = min(n, lo + per)
            payload = struct.pack("<BBH", 1 if scores else 0, 0, hi - lo) + samples[lo:hi].tobytes()
            try:
                rep = self.request(fr.INFER, payload)
            except LinkError:
                if not reconnect or reconnects >= 2:
                    raise
                reconnects += 1
                self.reconnect()  # the batch is idempotent: send it again
                continue
            got, k, us = struct.unpack_from("<HHI", rep, 0)
            if got != hi - lo:
                raise LinkError(f"INFER: sent {hi - lo} samples, device answered {got}")
            k_classes = k
            total_us += us
            classes[lo:hi] = np.frombuffer(rep, "<u2", got, 8)
            if scores:
                if out_scores is None:
                    out_scores = np.empty((n, k), np.int32)
                out_scores[lo:hi] = np.frombuffer(rep, "<i4", got * k, 8 + 2 * got).reshape(got, k)
            lo = hi
            if progress:
                progress(hi)
        return classes, out_scores, total_us

    def _batch(self, width: int, k_classes: int | None, scores: bool) -> int:
        per = min((self.max_payload - 4) // max(1, width), 65535)
        if scores:
            if k_classes is None:
                per = min(per, 1)  # the first reply tells the number of classes
            else:
                per = min(per, (self.max_payload - 8) // (2 + 4 * k_classes))
        else:
            per = min(per, (self.max_payload - 8) // 2)
        if per < 1:
            raise LinkError(
                f"a {width}-byte sample{' and its scores' if scores else ''} does not fit "
                f"the device's {self.max_payload}-byte frames"
            )
        return per

    # --- the training stream (docs/PROTOCOL.md, The training stream) ------------------------
    def _state(self, ftype: int, payload: bytes = b"") -> dict:
        return self._json(ftype, payload)

    def train_begin(self, stream_id: int) -> dict:
        """TRAIN_BEGIN: the loaded model's training state, ``applied`` included (the
        device loads its default model first when none is loaded). DeviceError
        ``E_STREAM`` when the model belongs to another stream."""
        return self._state(fr.TRAIN_BEGIN, struct.pack("<I", stream_id & 0xFFFFFFFF))

    def grow(self) -> dict:
        """GROW: open a live block now; the training state after it."""
        return self._state(fr.GROW)

    def freeze(self) -> dict:
        """FREEZE: freeze the live block; the training state after it."""
        return self._state(fr.FREEZE)

    def checkpoint(self, name: str) -> dict:
        """CHECKPOINT: save the loaded model atomically as ``name`` (it becomes the
        default); ``{"name", "bytes", "crc", "applied"}``."""
        return self._json(fr.CHECKPOINT, check_model_name(name).encode())

    def pull(self, progress: Callable[[int], None] | None = None) -> bytes:
        """PULL the loaded model's file (CRC resealed by the device), in frames of
        ``max_payload - 4`` bytes until one comes back short. Not checked here: see
        :func:`rbnn.device.stream.pull_model`."""
        data = bytearray()
        step = min(self.max_payload - 4, 65535)
        while True:
            rep = self.request(fr.PULL, struct.pack("<IH", len(data), step))
            (off,) = struct.unpack_from("<I", rep, 0)
            if off != len(data):
                raise LinkError(f"PULL: asked for offset {len(data)}, device answered {off}")
            data += rep[4:]
            if progress:
                progress(len(data))
            if len(rep) - 4 < step:
                return bytes(data)

    def train(
        self,
        samples: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
        start: int,
        stop: int,
        on_reply: Callable[[TrainReply], None] | None = None,
    ) -> TrainReply:
        """Stream the samples of positions ``start .. stop - 1`` in TRAIN frames, with up
        to ``window`` frames unanswered (HELLO), until the device has applied them all.

        ``samples(a, b)`` returns (uint8 rows of ``L`` bytes, labels) of positions ``a ..
        b - 1``. The device applies samples by position, so a lost, damaged or duplicated
        frame in either direction costs a resend from where the device stands (a gap
        reply, a NAK or a silence), never a sample applied twice. ``start`` must be the
        device's ``applied`` (TRAIN_BEGIN).

        Raises
        ------
        DeviceError
            The device refused a sample (E_LABEL, E_INPUT, E_FULL, E_STREAM): the samples
            before it are applied.
        LinkError
            No progress after ``retries`` resends in a row.
        """
        window = max(1, int(self.hello_info.get("window", 1)))
        probe_x, _ = samples(start, min(stop, start + 1))
        width = int(probe_x.shape[1]) if len(probe_x) else 0
        fit = min(65535, (self.max_payload - 8) // (2 + width))
        if fit < 1:
            raise LinkError(f"a {width}-byte sample does not fit the device's {self.max_payload}-byte frames")
        baud = getattr(self.ser, "baudrate", DEFAULT_BAUD) or DEFAULT_BAUD
        per_sample = 0.0  # seconds of device time per sample, measured (0: not yet)
        last = TrainReply(start, 0, 0, 0, fr.TRAIN_OLD)
        confirmed = nxt = start
        out: list[tuple[int, int, int]] = []  # (seq, first, end) sent since the last rewind
        session: dict[int, tuple[int, int]] = {}  # every TRAIN seq of this call
        self._flush_stale()
        quiet_since = time.monotonic()
        stalls = 0  # silences in a row without progress
        fruitless = 0  # resends in a row without progress (NAKs, gaps, silences)
        in0 = self.stats.bytes_in

        def rewind(why: str) -> None:
            nonlocal nxt, fruitless
            fruitless += 1
            if fruitless > 4 * (self.retries + 1):  # a line that damages every frame
                raise LinkError(f"TRAIN to {self.port_name}: no progress from sample {confirmed} after "
                                f"{fruitless - 1} resends (the last for a {why}; {self.stats.naks} NAKs so far)")  # fmt: skip
            nxt = confirmed
            out.clear()
            self.stats.retries += 1

        while confirmed < stop:
            while len(out) < window and nxt < stop:
                n = fit if per_sample <= 0 else max(1, min(fit, int(TRAIN_FRAME_SECONDS / per_sample)))
                n = min(n, stop - nxt, self.train_chunk or n)
                x, y = samples(nxt, nxt + n)
                x = np.ascontiguousarray(x, np.uint8)  # L is the frame's: each frame says it
                payload = struct.pack("<IHH", nxt, n, x.shape[1]) + np.asarray(y, "<u2").tobytes() + x.tobytes()
                if len(payload) > self.max_payload:
                    raise LinkError(f"TRAIN: {n} samples of {x.shape[1]} bytes exceed the device's "
                                    f"{self.max_payload}-byte frames")  # fmt: skip
                seq, frame, _ = self._next_seq(fr.TRAIN, payload, b"")
                self._write(frame)
                self.stats.requests += 1
                self.stats.train_out += len(frame)
                self.stats.train_sent += n
                out.append((seq, nxt, nxt + n))
                session[seq] = (nxt, nxt + n)
                nxt += n
            for f in self._read(time.monotonic() + 0.05):
                if f.type == fr.NAK:  # a frame was damaged: go on from where the device is
                    self.stats.naks += 1
                    rewind("NAK")
                    continue
                if f.seq not in session:
                    self.stats.stale += 1
                    continue
                if f.type == fr.ERR:
                    raise device_error("TRAIN", f.payload)
                if f.type != fr.TRAIN | fr.REPLY or len(f.payload) < 17:
                    self.stats.stale += 1
                    continue
                last = TrainReply(*struct.unpack_from("<IIIIB", f.payload, 0))
                first, end = session[f.seq]
                if last.status == fr.TRAIN_APPLIED and last.compute_us:
                    got = last.applied - max(first, confirmed)
                    if got > 0:
                        per_sample = last.compute_us / 1e6 / got
                if last.applied > confirmed:
                    confirmed = last.applied
                    stalls = fruitless = 0
                quiet_since = time.monotonic()
                if on_reply:
                    on_reply(last)
                mine = [i for i, o in enumerate(out) if o[0] == f.seq]
                if mine:
                    del out[: mine[0] + 1]  # replies come in order: older ones are lost
                    if last.status == fr.TRAIN_GAP:
                        rewind("gap")
            if out:
                pending = sum(e - a for _, a, e in out)
                wire = len(out) * (self.max_payload + fr.OVERHEAD + 29) * 10 / baud
                allow = self.timeout + 2 * wire + 2 * pending * max(per_sample, 0.01)
                if time.monotonic() - quiet_since > allow:
                    self.stats.timeouts += 1
                    stalls += 1
                    if stalls > self.retries:
                        said = _text(bytes(self.decoder.stats.skipped[-160:])).strip()
                        raise LinkError(
                            f"TRAIN to {self.port_name}: no progress from sample {confirmed} after "
                            f"{stalls} resends ({self.stats.naks} NAKs so far)" + (f"; the device said: {said!r}" if said else "")
                        )  # fmt: skip
                    if self.decoder.pending:
                        self.stats.truncated += 1
                        self.decoder.drop_partial()
                    rewind("silence")
                    quiet_since = time.monotonic()
        self.stats.train_in += self.stats.bytes_in - in0
        return last


# Device time one TRAIN frame should take at most, once the device's speed is known: a
# slow engine gets shorter frames, so a fault costs little and progress shows.
TRAIN_FRAME_SECONDS = 0.25


@dataclass
class TrainReply:
    """A TRAIN reply (docs/PROTOCOL.md, TRAIN)."""

    applied: int
    steps: int
    hits: int
    compute_us: int
    status: int
