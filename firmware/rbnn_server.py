# rbnn protocol server (docs/PROTOCOL.md), run from the REPL:
#
#     import rbnn_server; rbnn_server.serve()
#
# It serves frames on the console stream until the host sends LEAVE, then returns to
# the REPL. State (loaded model, counters, store) survives between serve() calls.

import gc
import struct
import sys
import time

try:
    import select
except ImportError:
    import uselect as select

try:
    import micropython
except ImportError:  # CPython, for tools
    micropython = None

import rbnn_store
from rbnn_store import StoreError, crc

__version__ = "0.1.0"
PROTOCOL = 1
MAX_PAYLOAD = 4096
MIN_PAYLOAD = 256
FRAME_TIMEOUT_MS = 200
HDR = 8
SOF0 = 0xA5
SOF1 = 0x5A
FLAG_RETRY = 1

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
REPLY = 0x80
ACK = 0x7D
NAK = 0x7E
ERR = 0x7F
SLOW = (SAVE, LOAD, INFER)
NAK_CRC = 1
NAK_TRUNCATED = 2
NAK_TOO_LONG = 3

_COUNTERS = ("frames", "duplicates", "retries", "bad_crc", "truncated", "too_long", "garbage",
             "naks", "errors", "inferences", "uploaded", "saves", "loads")  # fmt: skip


class Refused(Exception):
    """A request understood and refused: args are (code, message)."""


def encode(ftype, seq, payload=b"", flags=0):
    """The bytes of one frame (docs/PROTOCOL.md, Frames)."""
    n = len(payload)
    f = bytearray(HDR + n + 4)
    struct.pack_into("<BBBBHH", f, 0, SOF0, SOF1, ftype, flags, seq & 0xFFFF, n)
    f[HDR : HDR + n] = payload
    struct.pack_into("<I", f, HDR + n, crc(memoryview(f)[2 : HDR + n]))
    return f


class StdioConsole:
    """The board's console: sys.stdin/sys.stdout, binary.

    A board's stdin read blocks until every requested byte has arrived, so this polls
    and reads one byte at a time; a truncated frame then ends in a timeout, not a hang.
    """

    def __init__(self):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)
        self.one = bytearray(1)

    def read(self, buf, timeout_ms):
        poll = self.poller.poll
        if not poll(timeout_ms):
            return 0
        n = 0
        room = len(buf)
        one = self.one
        while n < room:
            self.inp.readinto(one)
            buf[n] = one[0]
            n += 1
            if not poll(0):
                break
        return n

    def write(self, data):
        mv = memoryview(data)
        while mv:
            k = self.out.write(mv)
            mv = mv[k:] if k else mv


def _board_console():
    try:
        import rbnn_board
    except ImportError:
        return StdioConsole()
    return rbnn_board.console() or StdioConsole()


def _reboot():
    try:
        import rbnn_board  # a board (the virtual one) with its own way to restart

        reset = getattr(rbnn_board, "reset", None)
    except ImportError:
        reset = None
    if reset is None:
        import machine

        reset = machine.reset
    reset()


def _engine():
    try:
        import rbnn
    except ImportError:
        return None
    return rbnn


def _error_code(e):
    # rbnn.load's ValueError text names the code: "rbnn: E_CRC at offset 66856: ..."
    s = str(e)
    i = s.find("E_")
    if i < 0:
        return None
    j = i + 2
    while j < len(s) and (s[j].isupper() or s[j] == "_"):
        j += 1
    return s[i:j]


def _default_payload():
    # two frame buffers live as long as the server: keep them small on a small heap
    gc.collect()
    return MAX_PAYLOAD if gc.mem_free() >= 64 * 1024 else 1024


class Server:
    def __init__(self, console=None, max_payload=None):
        if max_payload is None:
            max_payload = _default_payload()
        if max_payload < MIN_PAYLOAD:
            max_payload = MIN_PAYLOAD
        self.con = console or _board_console()
        self.max_payload = max_payload
        self.rx = bytearray(HDR + max_payload + 4)
        self.rxmv = memoryview(self.rx)
        self.n = 0  # bytes held in rx
        self.store = rbnn_store.Store()
        self.model = None
        self.active = None
        self.last_seq = -1
        self.last_type = -1
        self.last_reply = None
        self.reboot = False
        self.t0 = time.ticks_ms()
        self.stats = {}
        self.reset_stats()

    def reset_stats(self):
        for k in _COUNTERS:
            self.stats[k] = 0
        self.t0 = time.ticks_ms()

    # --- receiving ------------------------------------------------------------
    def _drop(self, k):
        # discard the first k bytes of rx (rare: garbage and rejected frames)
        rest = bytes(self.rxmv[k : self.n])
        self.rxmv[0 : len(rest)] = rest
        self.n = len(rest)

    def _fill(self, upto):
        # read until rx holds `upto` bytes; False when a begun frame times out
        while self.n < upto:
            got = self.con.read(self.rxmv[self.n : upto], -1 if self.n == 0 else FRAME_TIMEOUT_MS)
            if got <= 0:
                return False
            self.n += got
        return True

    def _nak(self, reason):
        self.stats["naks"] += 1
        self.con.write(encode(NAK, 0, bytes((reason,))))

    def recv(self):
        """The next valid frame: (type, flags, seq, payload memoryview)."""
        rx = self.rx
        st = self.stats
        while True:
            if not self._fill(1):
                continue
            if rx[0] != SOF0:
                st["garbage"] += 1
                self._drop(1)
                continue
            if not self._fill(2):
                self._truncated()
                continue
            if rx[1] != SOF1:
                st["garbage"] += 1
                self._drop(1)
                continue
            if not self._fill(HDR):
                self._truncated()
                continue
            ftype, flags, seq, n = struct.unpack_from("<BBHH", rx, 2)
            if n > self.max_payload:
                st["too_long"] += 1
                st["garbage"] += 1
                self._nak(NAK_TOO_LONG)
                self._drop(1)
                continue
            end = HDR + n + 4
            if not self._fill(end):
                self._truncated()
                continue
            (want,) = struct.unpack_from("<I", rx, end - 4)
            if crc(self.rxmv[2 : end - 4]) != want:
                st["bad_crc"] += 1
                st["garbage"] += 1
                self._nak(NAK_CRC)
                self._drop(1)  # and scan the rest: a frame may hide in the damaged one
                continue
            return ftype, flags, seq, self.rxmv[HDR : end - 4], end

    def _truncated(self):
        # a begun frame stalled: drop its first byte and scan what did arrive, which
        # may hold a whole frame behind a false start marker
        self.stats["truncated"] += 1
        self.stats["garbage"] += 1
        self._nak(NAK_TRUNCATED)
        self._drop(1)

    # --- sending ----------------------------------------------------------------
    def _send(self, ftype, seq, payload=b""):
        f = encode(ftype, seq, payload)
        self.con.write(f)
        return f

    def _json(self, obj):
        import json

        return json.dumps(obj).encode()

    # --- the loop -----------------------------------------------------------------
    def run(self):
        if micropython is not None and hasattr(micropython, "kbd_intr"):
            micropython.kbd_intr(-1)  # 0x03 in a frame is data, not Ctrl-C
        try:
            while True:
                ftype, flags, seq, payload, end = self.recv()
                st = self.stats
                st["frames"] += 1
                if flags & FLAG_RETRY:
                    st["retries"] += 1
                if ftype != HELLO and seq == self.last_seq and ftype == self.last_type:
                    st["duplicates"] += 1
                    self._drop(end)
                    if self.last_reply is not None:
                        self.con.write(self.last_reply)
                    continue
                if ftype in SLOW:
                    self._send(ACK, seq)
                try:
                    rtype, out = self.handle(ftype, payload)
                except Refused as e:
                    rtype, out = ERR, self._json({"code": e.args[0], "message": e.args[1]})
                except StoreError as e:
                    rtype, out = ERR, self._json({"code": e.args[0], "message": e.args[1]})
                except MemoryError as e:
                    gc.collect()
                    msg = "%s; %d bytes free in all (a buffer needs one free block)" % (e, gc.mem_free())
                    rtype, out = ERR, self._json({"code": "E_MEMORY", "message": msg})
                except OSError as e:
                    rtype, out = ERR, self._json({"code": "E_IO", "message": "filesystem: %r" % (e,)})
                except Exception as e:  # never leave the loop on a bad request
                    rtype, out = ERR, self._json({"code": "E_INTERNAL", "message": repr(e)})
                if rtype == ERR:
                    st["errors"] += 1
                self._drop(end)
                self.last_seq = seq
                self.last_type = ftype
                self.last_reply = None  # free the old reply before building the new
                self.last_reply = self._send(rtype, seq, out)
                if ftype == LEAVE:
                    return
                if self.reboot:
                    time.sleep_ms(50)  # let the reply leave
                    _reboot()
        finally:
            if micropython is not None and hasattr(micropython, "kbd_intr"):
                micropython.kbd_intr(3)

    # --- requests -------------------------------------------------------------------
    def handle(self, ftype, p):
        if ftype == HELLO:
            self.last_seq = -1
            return ftype | REPLY, self._json(self.hello())
        if ftype == INFO:
            return ftype | REPLY, self._json(self.info())
        if ftype == STATS:
            st = dict(self.stats)
            st["mem_free"] = gc.mem_free()
            st["uptime_ms"] = time.ticks_diff(time.ticks_ms(), self.t0)
            return ftype | REPLY, self._json(st)
        if ftype == RESET:
            mode = p[0] if len(p) else 0
            if mode not in (0, 1):
                raise Refused("E_PROTO", "RESET mode must be 0 or 1, got %d" % mode)
            self.model = None
            self.active = None
            self.reset_stats()
            gc.collect()
            self.reboot = mode == 1  # run() reboots after sending the reply
            return ftype | REPLY, b""
        if ftype == LEAVE:
            return ftype | REPLY, b""
        if ftype == UP_BEGIN:
            self._need(p, 8, "UP_BEGIN")
            size, want = struct.unpack_from("<II", p, 0)
            return ftype | REPLY, struct.pack("<I", self.store.begin(size, want))
        if ftype == UP_DATA:
            self._need(p, 4, "UP_DATA")
            (off,) = struct.unpack_from("<I", p, 0)
            before = self.store.have
            have = self.store.write(off, p[4:])
            self.stats["uploaded"] += have - before
            return ftype | REPLY, struct.pack("<I", have)
        if ftype == SAVE:
            self._need(p, 2, "SAVE")
            return ftype | REPLY, self._json(self.save(self._name(p[1:]), p[0] & 1))
        if ftype == LOAD:
            return ftype | REPLY, self._json(self.load(self._name(p)))
        if ftype == INFER:
            return ftype | REPLY, self.infer(p)
        raise Refused("E_PROTO", "unknown frame type 0x%02x" % ftype)

    @staticmethod
    def _need(p, n, what):
        if len(p) < n:
            raise Refused("E_PROTO", "%s payload of %d bytes, expected >= %d" % (what, len(p), n))

    @staticmethod
    def _name(p):
        try:
            name = str(bytes(p), "utf-8")
        except UnicodeError:
            raise Refused("E_NAME", "model name is not UTF-8")
        rbnn_store.check_name(name)
        return name

    def hello(self):
        r = _engine()
        impl = sys.implementation
        return {
            "protocol": PROTOCOL,
            "max_payload": self.max_payload,
            "firmware": __version__,
            "rbnn": getattr(r, "__version__", None) if r else None,
            "engine": getattr(r, "engine", None) if r else None,
            "micropython": ".".join(str(v) for v in impl.version[:3]),
            "platform": sys.platform,
            "mpy": getattr(impl, "_mpy", None),
        }

    def info(self):
        d = self.hello()
        gc.collect()
        d["mem_free"] = gc.mem_free()
        d["mem_alloc"] = gc.mem_alloc()
        d["fs_free"] = self.store.fs_free()
        d["models"] = self.store.models()
        d["active"] = self.active
        d["default"] = self.store.default()
        d["model"] = self.model.info() if self.model is not None else None
        d["upload"] = self.store.upload_state()
        return d

    # --- models ---------------------------------------------------------------------
    def _rbnn(self):
        r = _engine()
        if r is None:
            raise Refused("E_NOENGINE", "no rbnn module on the device: deploy the firmware")
        return r

    def _open(self, path):
        # rbnn.load with its ValueError turned into the file's code
        r = self._rbnn()
        try:
            return r.load(path)
        except ValueError as e:
            raise Refused(_error_code(e) or "E_HEADER", str(e))

    def _swap(self, path, name):
        # load `path` as the active model, freeing the old one first (RAM for one
        # model only); on failure reload the old one from its file
        old = self.active
        self.model = None
        self.active = None
        gc.collect()
        try:
            m = self._open(path)
        except Exception:
            if old is not None and self.store.exists(old):
                try:
                    self.model = self._open(old)
                    self.active = old
                except Exception:
                    pass
            raise
        self.model = m
        self.active = name
        self.stats["loads"] += 1
        return m

    def save(self, name, load):
        path = self.store.verified_upload()
        size, want = self.store.bytes, self.store.want_crc
        try:
            if load:
                self._swap(path, None)
            else:
                self._open(path)
                gc.collect()
        except Refused as e:
            if e.args[0] != "E_NOENGINE":
                self.store.discard()  # a malformed file is not kept for a resume
            raise
        self.store.commit(name)
        self.stats["saves"] += 1
        info = None
        if load:
            self.active = name
            self.store.set_default(name)
            info = self.model.info()
        return {"name": name, "bytes": size, "crc": want, "model": info}

    def load(self, name):
        if not self.store.exists(name):
            raise Refused("E_NOFILE", "no model %r on the device" % name)
        m = self._swap(name, name)
        self.store.set_default(name)
        return m.info()

    def infer(self, p):
        self._need(p, 4, "INFER")
        flags = p[0]
        (n,) = struct.unpack_from("<H", p, 2)
        if n == 0 or (len(p) - 4) % n:
            raise Refused("E_PROTO", "INFER: %d sample bytes do not split into %d samples" % (len(p) - 4, n))
        if self.model is None:
            name = self.store.default()
            if name is None or not self.store.exists(name):
                raise Refused("E_NOMODEL", "no model loaded and no default model stored")
            self._swap(name, name)
        m = self.model
        k = m.n_classes  # not info(): it builds a dict on every batch
        want = flags & 1
        size = 8 + 2 * n + (4 * n * k if want else 0)
        if size > self.max_payload:
            raise Refused("E_PROTO", "INFER reply of %d bytes exceeds max_payload %d" % (size, self.max_payload))
        step = (len(p) - 4) // n
        out = bytearray(size)
        scores = None
        if want:
            from array import array

            scores = array("i", [0] * k)
        t = time.ticks_us()
        at = 8 + 2 * n
        try:
            for i in range(n):
                x = p[4 + i * step : 4 + (i + 1) * step]
                if want:
                    c = m.scores(x, scores)
                    out[at : at + 4 * k] = bytes(scores)
                    at += 4 * k
                else:
                    c = m.predict(x)
                struct.pack_into("<H", out, 8 + 2 * i, c)
        except ValueError as e:  # a sample of the wrong length or with padding bits set
            raise Refused(_error_code(e) or "E_INPUT", str(e))
        us = time.ticks_diff(time.ticks_us(), t)
        struct.pack_into("<HHI", out, 0, n, k, us)
        self.stats["inferences"] += n
        return out


_server = None


def serve(console=None, max_payload=None):
    """Serve the protocol on the console stream until the host sends LEAVE.

    max_payload: the largest frame payload (default 4096, or 1024 when less than 64 kB
    of heap is free); the server keeps two buffers of that size.
    """
    global _server
    if _server is None or (console is not None and console is not _server.con):
        _server = Server(console, max_payload)
    _server.n = 0
    _server.run()
