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
PROTOCOL = 2
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
TRAIN_APPLIED = 0
TRAIN_GAP = 1
TRAIN_OLD = 2
# TRAIN frames a host may keep unanswered (HELLO "window"): one being applied, the next
# one arriving; its bytes wait in the port's buffer (USB CDC and the virtual device's
# pipe hold them; a board module may say otherwise with rbnn_board.WINDOW).
WINDOW = 2
# Handler modes (HANDLERS): SLOW requests are ACKed as soon as they arrive, their result
# follows; FRESH ones are applied even when they repeat the last seq (HELLO).
MODE_SLOW = 1
MODE_FRESH = 2

_COUNTERS = ("frames", "duplicates", "retries", "bad_crc", "truncated", "too_long", "garbage",
             "naks", "errors", "inferences", "uploaded", "saves", "loads", "trained", "checkpoints")  # fmt: skip


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


def _kbd_intr(c):
    # Ctrl-C on (3) or off (-1); a board module may do it its own way (the virtual
    # board tells its supervisor, which turns 0x03 into SIGINT only while it is on).
    try:
        import rbnn_board

        hook = getattr(rbnn_board, "kbd_intr", None)
    except ImportError:
        hook = None
    if hook is not None:
        hook(c)
    elif micropython is not None and hasattr(micropython, "kbd_intr"):
        micropython.kbd_intr(c)


def _window():
    try:
        import rbnn_board

        return getattr(rbnn_board, "WINDOW", WINDOW)
    except ImportError:
        return WINDOW


def _engine():
    try:
        import rbnn
    except ImportError:
        return None
    return rbnn


def _code_in(msg):
    # The E_ code an engine's ValueError names in its documented form (firmware/rbnn.py):
    # "rbnn: [path: ]E_<CODE> at offset <N>: ..."; None when it names none.
    for part in msg.split(": "):
        word = part.split(" ", 1)[0]
        if len(word) > 2 and word[:2] == "E_" and word[2:].replace("_", "A").isupper():
            return word
    return None


def _engine_refusal(e, default):
    """A Refused for an engine's ValueError ``e``: the code it carries (a ``code``
    attribute), else the one its message names, else ``default``; its text as it is."""
    code = getattr(e, "code", None)
    if not (isinstance(code, str) and code[:2] == "E_"):
        code = _code_in(str(e)) or default
    return Refused(code, str(e))


# OSError numbers (MicroPython's, the POSIX ones on every port) with a code of their own.
_OS_CODES = {28: ("E_NOSPACE", "filesystem full"), 30: ("E_IO", "read-only filesystem")}


def _refused_args(e):
    return e.args[0], e.args[1]


def _memory(e):
    gc.collect()
    return "E_MEMORY", "%s; %d bytes free in all (a buffer needs one free block)" % (e, gc.mem_free())


def _os_error(e):
    num = e.args[0] if e.args else None
    code, what = _OS_CODES.get(num, ("E_IO", "filesystem"))
    return code, "%s: %r" % (what, e)


def _internal(e):
    return "E_INTERNAL", repr(e)


# How a failed request is answered: the first class that matches gives (code, message).
_REFUSALS = (
    (Refused, _refused_args),
    (StoreError, _refused_args),
    (MemoryError, _memory),
    (OSError, _os_error),
    (Exception, _internal),  # never leave the loop on a bad request
)


def refusal(e):
    """(code, message) of the ERR reply to a request that raised ``e``."""
    for cls, fn in _REFUSALS:
        if isinstance(e, cls):
            return fn(e)
    raise e


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
        self.buf = None  # the loaded model's bytes (bytearray), trained in place
        self.active = None
        self.stream = None  # stream_id accepted by TRAIN_BEGIN for the loaded model
        self.last_seq = -1
        self.last_type = -1
        self.last_reply = None
        self.reboot = False
        self.leaving = False
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
        _kbd_intr(-1)  # 0x03 in a frame is data, not Ctrl-C
        self.leaving = False
        try:
            while not self.leaving:
                ftype, flags, seq, payload, end = self.recv()
                self.stats["frames"] += 1
                if flags & FLAG_RETRY:
                    self.stats["retries"] += 1
                self.dispatch(ftype, seq, payload)
                self._drop(end)
                if self.reboot:
                    time.sleep_ms(50)  # let the reply leave
                    _reboot()
        finally:
            _kbd_intr(3)

    def dispatch(self, ftype, seq, payload):
        """Answer one request: from the kept reply when it is a copy of the last one,
        else by its handler (ACK first when it is slow); an ERR when it is refused."""
        entry = HANDLERS.get(ftype)
        mode = entry[3] if entry else 0
        if not mode & MODE_FRESH and seq == self.last_seq and ftype == self.last_type:
            self.stats["duplicates"] += 1
            if self.last_reply is not None:
                self.con.write(self.last_reply)
            return
        if mode & MODE_SLOW:
            self._send(ACK, seq)
        try:
            if entry is None:
                raise Refused("E_PROTO", "unknown frame type 0x%02x" % ftype)
            name, fn, least = entry[:3]
            if len(payload) < least:
                raise Refused("E_PROTO", "%s payload of %d bytes, expected >= %d" % (name, len(payload), least))
            rtype, out = ftype | REPLY, fn(self, payload)
        except Exception as e:
            self.stats["errors"] += 1
            code, msg = refusal(e)
            rtype, out = ERR, self._json({"code": code, "message": msg})
        self.last_seq = seq
        self.last_type = ftype
        self.last_reply = None  # free the old reply before building the new
        self.last_reply = self._send(rtype, seq, out)

    # --- requests: one handler each, payload in, reply payload out (HANDLERS) ---------
    def do_hello(self, p):
        self.stream = None  # a new session begins its stream again (TRAIN_BEGIN)
        return self._json(self.hello())

    def do_info(self, p):
        return self._json(self.info())

    def do_stats(self, p):
        st = dict(self.stats)
        st["mem_free"] = gc.mem_free()
        st["uptime_ms"] = time.ticks_diff(time.ticks_ms(), self.t0)
        return self._json(st)

    def do_reset(self, p):
        mode = p[0] if len(p) else 0
        if mode not in (0, 1):
            raise Refused("E_PROTO", "RESET mode must be 0 or 1, got %d" % mode)
        self.model = None
        self.buf = None
        self.active = None
        self.stream = None
        self.reset_stats()
        gc.collect()
        self.reboot = mode == 1  # run() reboots after sending the reply
        return b""

    def do_leave(self, p):
        self.leaving = True  # run() returns after sending the reply
        return b""

    def do_up_begin(self, p):
        size, want = struct.unpack_from("<II", p, 0)
        return struct.pack("<I", self.store.begin(size, want))

    def do_up_data(self, p):
        (off,) = struct.unpack_from("<I", p, 0)
        before = self.store.have
        have = self.store.write(off, p[4:])
        self.stats["uploaded"] += have - before
        return struct.pack("<I", have)

    def do_save(self, p):
        return self._json(self.save(self._name(p[1:]), p[0] & 1))

    def do_load(self, p):
        return self._json(self.load(self._name(p)))

    def do_infer(self, p):
        return self.infer(p)

    # --- the training stream (docs/PROTOCOL.md, The training stream) -------------------
    def _trainable(self):
        m = self._loaded()
        if not hasattr(m, "train_batch"):
            raise Refused("E_NOENGINE", "the device's rbnn engine cannot train: update the firmware")
        return m

    def _state(self, m):
        # the model's training state (stats()) and applied = steps - stream_base
        st = m.stats()
        st["applied"] = st["steps"] - st["stream_base"]
        return st

    def do_train_begin(self, p):
        (sid,) = struct.unpack_from("<I", p, 0)
        m = self._trainable()
        st = self._state(m)
        if st["stream_id"] != sid:
            self.stream = None
            raise Refused("E_STREAM", "the loaded model %s belongs to stream 0x%08x, not 0x%08x"
                          % (self.active, st["stream_id"], sid))  # fmt: skip
        self.stream = sid
        return self._json(st)

    def do_train(self, p):
        pos, n, size = struct.unpack_from("<IHH", p, 0)
        if n == 0 or len(p) != 8 + n * (2 + size):
            raise Refused("E_PROTO", "TRAIN of %d bytes: expected 8 + n * (2 + L) = %d for n %d, L %d"
                          % (len(p), 8 + n * (2 + size), n, size))  # fmt: skip
        m = self.model
        if m is None or self.stream is None:
            raise Refused("E_STREAM", "no stream begun on the loaded model: TRAIN_BEGIN first")
        st = m.stats()
        base = st["stream_base"]
        applied = st["steps"] - base
        us = 0
        if pos > applied:
            status = TRAIN_GAP  # a frame before this one was lost: nothing applied
        elif pos + n <= applied:
            status = TRAIN_OLD  # every sample applied before (a resend or a duplicate)
        else:
            status = TRAIN_APPLIED
            skip = applied - pos
            k = n - skip
            labels = bytearray(k)
            at = 8 + 2 * skip
            bad = -1
            for i in range(k):
                v = p[at + 2 * i] | p[at + 2 * i + 1] << 8
                if v > 255:  # beyond a u8 label: no model has that many classes here
                    bad = i
                    k = i
                    break
                labels[i] = v
            xs = p[8 + 2 * n + skip * size : 8 + 2 * n + (skip + k) * size]
            t = time.ticks_us()
            try:
                if k:
                    m.train_batch(xs, memoryview(labels)[:k])
                if bad >= 0:
                    raise ValueError("rbnn: E_LABEL: label %d: expected 0..%d"
                                     % (p[at + 2 * bad] | p[at + 2 * bad + 1] << 8, m.n_classes - 1))  # fmt: skip
            except ValueError as e:
                done = m.stats()["steps"] - base
                self.stats["trained"] += done - applied
                e = _engine_refusal(e, "E_INPUT")
                raise Refused(e.args[0], "sample %d of the stream: %s" % (done, e.args[1])) from None
            us = time.ticks_diff(time.ticks_us(), t)
            st = m.stats()
        done = st["steps"] - base
        self.stats["trained"] += done - applied
        return struct.pack("<IIIIB", done, st["steps"], st["hits"], us, status)

    def do_checkpoint(self, p):
        name = self._name(p)
        m = self._trainable()
        crc_field = self._reseal(m)
        rbnn_store.write_file(name, self.buf)  # NAME.new, then renamed over NAME
        self.active = name
        self.store.set_default(name)
        self.stats["checkpoints"] += 1
        st = m.stats()
        return self._json({"name": name, "bytes": len(self.buf), "crc": crc_field,
                           "applied": st["steps"] - st["stream_base"]})  # fmt: skip

    def _reseal(self, m):
        # the file's CRC field over the buffer as training left it
        if hasattr(m, "reseal"):
            return m.reseal() & 0xFFFFFFFF
        buf = self.buf
        n = len(buf) - 4
        c = crc(memoryview(buf)[:n])
        struct.pack_into("<I", buf, n, c)
        return c

    def _block_op(self, op):
        m = self._trainable()
        try:
            getattr(m, op)()
        except ValueError as e:
            raise _engine_refusal(e, "E_FULL") from None
        return self._json(self._state(m))

    def do_grow(self, p):
        return self._block_op("grow")

    def do_freeze(self, p):
        return self._block_op("freeze")

    def do_pull(self, p):
        off, want = struct.unpack_from("<IH", p, 0)
        self._loaded()
        buf = self.buf
        if off == 0:
            self._reseal(self.model)
        if off > len(buf):
            raise Refused("E_PROTO", "PULL at offset %d of a %d-byte model" % (off, len(buf)))
        k = min(want, self.max_payload - 4, len(buf) - off)
        out = bytearray(4 + k)
        struct.pack_into("<I", out, 0, off)
        out[4:] = memoryview(buf)[off : off + k]
        return out


    @staticmethod
    def _name(p):
        try:
            name = str(bytes(p), "utf-8")
        except UnicodeError:
            raise Refused("E_NAME", "model name is not UTF-8") from None
        rbnn_store.check_name(name)
        return name

    def hello(self):
        r = _engine()
        impl = sys.implementation
        return {
            "protocol": PROTOCOL,
            "max_payload": self.max_payload,
            "window": _window(),
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
        # (model, its buffer): rbnn.load of the file's bytes, read here into the one
        # bytearray the model lives in (training changes it in place; CHECKPOINT and
        # PULL read it), its ValueError turned into the file's code and naming the path
        # as rbnn.load(path) does
        r = self._rbnn()
        buf = r.read_file(path)
        try:
            return r.load(buf), buf
        except ValueError as e:
            msg = str(e)
            if msg[:6] == "rbnn: ":
                msg = msg[6:]
            raise _engine_refusal(ValueError("rbnn: %s: %s" % (path, msg)), "E_HEADER") from None

    def _swap(self, path, name):
        # load `path` as the active model, freeing the old one first (RAM for one
        # model only); on failure reload the old one from its file
        old = self.active
        self.model = None
        self.buf = None
        self.active = None
        self.stream = None  # a new model: TRAIN_BEGIN again before TRAIN
        gc.collect()
        try:
            m, buf = self._open(path)
        except Exception:
            if old is not None and self.store.exists(old):
                try:
                    self.model, self.buf = self._open(old)
                    self.active = old
                except Exception:
                    pass
            raise
        self.model = m
        self.buf = buf
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

    def _loaded(self):
        # the loaded model; without one, the default model (the last one loaded, saved
        # or checkpointed: after a reboot, the stream's last checkpoint)
        if self.model is None:
            name = self.store.default()
            if name is None or not self.store.exists(name):
                raise Refused("E_NOMODEL", "no model loaded and no default model stored")
            self._swap(name, name)
        return self.model

    def infer(self, p):
        flags = p[0]
        (n,) = struct.unpack_from("<H", p, 2)
        if n == 0 or (len(p) - 4) % n:
            raise Refused("E_PROTO", "INFER: %d sample bytes do not split into %d samples" % (len(p) - 4, n))
        m = self._loaded()
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
            raise _engine_refusal(e, "E_INPUT") from None
        us = time.ticks_diff(time.ticks_us(), t)
        struct.pack_into("<HHI", out, 0, n, k, us)
        self.stats["inferences"] += n
        return out


# The requests: type -> (name, handler, least payload bytes, mode). A new request type
# is a handler method and a line here.
HANDLERS = {
    HELLO: ("HELLO", Server.do_hello, 0, MODE_FRESH),
    INFO: ("INFO", Server.do_info, 0, 0),
    STATS: ("STATS", Server.do_stats, 0, 0),
    RESET: ("RESET", Server.do_reset, 0, 0),
    LEAVE: ("LEAVE", Server.do_leave, 0, 0),
    UP_BEGIN: ("UP_BEGIN", Server.do_up_begin, 8, 0),
    UP_DATA: ("UP_DATA", Server.do_up_data, 4, 0),
    SAVE: ("SAVE", Server.do_save, 2, MODE_SLOW),
    LOAD: ("LOAD", Server.do_load, 0, MODE_SLOW),
    INFER: ("INFER", Server.do_infer, 4, MODE_SLOW),
    # applied by position (docs/PROTOCOL.md, TRAIN): a repeat is answered afresh
    TRAIN_BEGIN: ("TRAIN_BEGIN", Server.do_train_begin, 4, MODE_FRESH),
    TRAIN: ("TRAIN", Server.do_train, 8, MODE_FRESH),
    CHECKPOINT: ("CHECKPOINT", Server.do_checkpoint, 1, MODE_SLOW),
    GROW: ("GROW", Server.do_grow, 0, 0),
    FREEZE: ("FREEZE", Server.do_freeze, 0, 0),
    PULL: ("PULL", Server.do_pull, 6, 0),
}

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
