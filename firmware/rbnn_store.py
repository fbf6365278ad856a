# rbnn model store on the device filesystem (docs/PROTOCOL.md, The model store).
#
# Resumable uploads live in a temp file that outlives a reset; a save renames the
# verified upload to NAME.new and then to NAME, so the stored NAME is always the old
# file or the new one, complete. Runs on MicroPython (and CPython, for tools).

import os
import sys

try:
    from binascii import crc32
except ImportError:  # a port built without binascii.crc32
    crc32 = None

UPLOAD = ".rbnn_upload"
META = ".rbnn_upload.meta"
ACTIVE = ".rbnn_active"
SUFFIX = ".rbnn"
NEW = ".new"
TMP = ".tmp"
MAX_NAME = 32
_CHUNK = 1024

_getenv = getattr(os, "getenv", None)
# Fault-injection points for the virtual device's tests (unix port only; see PROTOCOL.md).
_KILL_AT = _getenv("RBNN_KILL_AT") if _getenv else None
_EMULATE_FAT = bool(_getenv and _getenv("RBNN_FS_EMULATE") == "fat")


class StoreError(Exception):
    """A refused store operation: args are (code, message)."""


def _point(name):
    # Stand still at a kill point until the virtual device's supervisor kills us.
    if _KILL_AT == name:
        import time

        sys.stderr.write("KILLPOINT %s\n" % name)
        while True:
            time.sleep(1)


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t.append(c)
    return t


_TABLE = None


def crc(data, value=0):
    """CRC-32 (ISO-HDLC) of ``data`` continuing from ``value``."""
    if crc32 is not None:
        return crc32(data, value) & 0xFFFFFFFF
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc_table()
    c = value ^ 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _sync():
    s = getattr(os, "sync", None)
    if s:
        s()


def check_name(name):
    """Raise StoreError E_NAME unless ``name`` is a valid model name."""
    ok = 0 < len(name) <= MAX_NAME and name.endswith(SUFFIX) and name[0] != "."
    if ok:
        for ch in name:
            if not (ch.isalpha() or ch.isdigit() or ch in "_-.") or ord(ch) > 127:
                ok = False
                break
    if not ok:
        raise StoreError(
            "E_NAME",
            "bad model name %r: 1..%d of A-Z a-z 0-9 _ - ., ending in .rbnn, not starting with ."
            % (name, MAX_NAME),
        )


def _replace(src, dst):
    # rename that replaces dst; on FAT MicroPython removes dst first (not atomic), which
    # the start-up recovery of NAME.new completes.
    if _EMULATE_FAT and _size(dst) >= 0:
        os.remove(dst)
        _point("save:removed")
    os.rename(src, dst)


def _install(src, path, where):
    # A complete file `src` becomes `path`: renamed to path.new first, then over path. A
    # NAME.new exists only complete (docs/PROTOCOL.md, The model store): the start-up
    # recovery renames it over NAME, so a partial file must never carry that name; from
    # there it is never removed (on FAT, _replace removes path first). `where` names the
    # kill point between the two renames ("<where>:staged").
    _remove(path + NEW)
    os.rename(src, path + NEW)
    _sync()
    _point(where + ":staged")
    _replace(path + NEW, path)
    _sync()


def write_file(path, data):
    """Write ``data`` (a bytes-like) to ``path`` atomically: ``path.tmp`` first, synced,
    renamed to ``path.new`` only once complete, then renamed over ``path`` (the start-up
    recovery finishes a ``NAME.rbnn.new`` whose rename a power loss cut short, and
    removes a partial ``NAME.rbnn.tmp``), so ``path`` is the old file or the new one.
    Used by ``Model.save`` of every engine and by the server's CHECKPOINT. OSError
    (ENOSPC, EIO) leaves ``path`` as it was."""
    tmp = path + TMP
    mv = memoryview(data)
    try:
        with open(tmp, "wb") as f:
            done = 0
            while done < len(mv):
                n = f.write(mv[done : done + _CHUNK])
                if not n:
                    raise OSError(28)  # ENOSPC: a full file system can write nothing
                done += n
        _sync()
    except BaseException:
        _remove(tmp)  # a partial temp file; path untouched
        raise
    _point("write_file:written")
    _install(tmp, path, "write_file")


class Store:
    """Models and the upload in progress, in the current directory."""

    def __init__(self):
        self.bytes = -1  # announced size of the upload in progress; -1: none
        self.want_crc = 0
        self.have = 0
        self.crc = 0  # running CRC-32 of the bytes held
        self.f = None
        self.recover()
        self._read_meta()

    # --- start-up ---------------------------------------------------------------
    def recover(self):
        """Finish saves cut short after their upload was verified (NAME.new -> NAME)."""
        for name in os.listdir():
            if name.endswith(SUFFIX + NEW) and not name.startswith("."):
                _replace(name, name[: -len(NEW)])
                _sync()
            elif name.endswith(SUFFIX + TMP) and not name.startswith("."):
                _remove(name)  # a write_file cut short before it was complete

    def _read_meta(self):
        try:
            with open(META) as f:
                s = f.read()
            import json

            m = json.loads(s)
            size, want = int(m["bytes"]), int(m["crc"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        have = _size(UPLOAD)
        if have < 0 or have > size:
            return
        self.bytes, self.want_crc, self.have = size, want, have
        self.crc = self._file_crc(UPLOAD)

    @staticmethod
    def _file_crc(path):
        c = 0
        buf = bytearray(_CHUNK)
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    return c
                c = crc(memoryview(buf)[:n], c)

    # --- queries ----------------------------------------------------------------
    def models(self):
        """Stored models: list of {"name", "bytes", "file_crc"}; file_crc is the CRC-32
        field in the file's last 4 bytes (docs/FORMAT.md), None if shorter than 4."""
        out = []
        for name in sorted(os.listdir()):
            if name.endswith(SUFFIX) and not name.startswith("."):
                size = _size(name)
                tail = None
                if size >= 4:
                    with open(name, "rb") as f:
                        f.seek(size - 4)
                        b = f.read(4)
                    tail = b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
                out.append({"name": name, "bytes": size, "file_crc": tail})
        return out

    def upload_state(self):
        if self.bytes < 0:
            return None
        return {"bytes": self.bytes, "crc": self.want_crc, "have": self.have}

    @staticmethod
    def fs_free():
        try:
            s = os.statvfs(".")
            return s[0] * s[3]
        except (OSError, AttributeError):
            return None

    def exists(self, name):
        return _size(name) >= 0

    # --- upload -----------------------------------------------------------------
    def _close(self):
        if self.f is not None:
            f, self.f = self.f, None
            try:
                f.close()
            except OSError:  # a failing file system: the file is given up anyway
                pass

    def begin(self, size, want_crc):
        """Start or resume the upload of ``size`` bytes with CRC-32 ``want_crc``."""
        if size == self.bytes and want_crc == self.want_crc:
            return self.have
        self.discard()
        free = self.fs_free()
        if free is not None and size > free:
            raise StoreError("E_NOSPACE", "%d bytes do not fit, %d free" % (size, free))
        with open(META, "w") as f:
            f.write('{"bytes": %d, "crc": %d}' % (size, want_crc))
        with open(UPLOAD, "wb"):
            pass
        _sync()
        self.bytes, self.want_crc, self.have, self.crc = size, want_crc, 0, 0
        return 0

    def write(self, offset, data):
        """Append ``data`` if it starts at ``have``; returns the new ``have``."""
        if self.bytes < 0:
            raise StoreError("E_UPLOAD", "no upload in progress: UP_BEGIN first")
        if offset != self.have:
            return self.have
        if offset + len(data) > self.bytes:
            raise StoreError(
                "E_UPLOAD", "data up to byte %d beyond the announced %d" % (offset + len(data), self.bytes)
            )
        try:
            if self.f is None:
                self.f = open(UPLOAD, "ab")
            self.f.write(data)
            self.f.flush()  # a reset after the reply keeps this chunk
        except OSError:
            self.discard()  # part of the chunk may be in the file: start over
            raise
        self.have += len(data)
        self.crc = crc(data, self.crc)
        return self.have

    def discard(self):
        """Forget the upload in progress."""
        self._close()
        _remove(UPLOAD)
        _remove(META)
        self.bytes, self.want_crc, self.have, self.crc = -1, 0, 0, 0

    def verified_upload(self):
        """Path of the complete upload after checking its length and CRC-32."""
        if self.bytes < 0:
            raise StoreError("E_UPLOAD", "no upload in progress")
        if self.have != self.bytes:
            raise StoreError("E_UPLOAD", "upload incomplete: %d of %d bytes" % (self.have, self.bytes))
        self._close()
        if self.crc != self.want_crc:
            self.discard()
            raise StoreError(
                "E_UPLOAD",
                "upload crc32 0x%08x, announced 0x%08x; discarded" % (self.crc, self.want_crc),
            )
        return UPLOAD

    def commit(self, name):
        """Atomically replace ``name`` by the verified upload."""
        check_name(name)
        self.verified_upload()
        _point("save:verified")
        _install(UPLOAD, name, "save")
        _point("save:replaced")
        self.discard()

    # --- the default model --------------------------------------------------------
    @staticmethod
    def default():
        try:
            with open(ACTIVE) as f:
                return f.read().strip() or None
        except OSError:
            return None

    @staticmethod
    def set_default(name):
        if Store.default() == name:
            return
        with open(ACTIVE + ".tmp", "w") as f:
            f.write(name)
        _replace(ACTIVE + ".tmp", ACTIVE)
