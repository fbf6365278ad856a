# rbnn_py: the pure-MicroPython engine of rbnn (docs/DEVICE_API.md).
#
# Parses and validates a .rbnn file of version 1 or 2 exactly as
# host/rbnn/format/pack.py does (docs/FORMAT.md: same checks, same order, same words in
# every error) and runs inference with integer arithmetic only, bit-identical to the
# numpy twin (host/rbnn/engines/twin.py).
#
# Hot loops come in two versions, chosen once at import:
#   "viper"  - @micropython.viper code on 32-bit words (ptr32, uint); compiled from a
#              string at import so that this file also loads, as source or .mpy, on
#              ports without a native emitter;
#   "python" - plain code on bytes with a 256-entry popcount table, so every value
#              stays a small int on 32-bit ports (31-bit small ints: a 32-bit word
#              would be a heap-allocated bignum).
# use("python") forces the plain code (tests, or to compare speeds).
#
# Memory: the model's bytes are used in place (never copied, except once when the
# viper engine is handed a buffer that is not 4-byte aligned); each Model allocates its
# scratch once (packed input, two ping-pong activation buffers, scores, per-layer plans),
# so predict() and scores() allocate nothing per call (viper engine; the plain engine
# only when a score leaves the small-int range of a 32-bit port).

import struct
from array import array

try:
    import micropython
except ImportError:  # CPython: only the plain engine
    micropython = None

try:
    import binascii

    _crc_builtin = binascii.crc32
except (ImportError, AttributeError):
    _crc_builtin = None

# The format's constants (host/rbnn/format/constants.py and trainstate.py;
# tests/test_constants.py checks that these copies are equal).
MAGIC = b"RBNN"
READ_VERSIONS = (1, 2, 3)
_VERSIONS = "1..3"  # READ_VERSIONS as the error message writes it
HEADER_BYTES = 32  # version 1; the fields of version 1 start every header
HEADER_BYTES_V2 = 64
TRAIN_BYTES = 96  # the training section of version 2
TRAIN_RULE = 1  # the only training rule (trainstate.RULE)
BLOCK_ENTRY_BYTES = 20
MAX_SCORE_Q = 30
MAX_LAYERS = 8
MAX_BLOCKS = 64
MAX_PLANES = 255
MAX_BITS = 16
MAX_INPUTS = 65535
MAX_SIZE = 65535
UNUSED_PLANE = 0xFF
FROZEN = 0
LIVE = 1
I32_MAX = 2147483647
U32_MAX = 4294967295

# cfg array of one layer (same layout for both engines):
# 0 weight word offset, 1 words per row, 2 n_in, 3 n_out, 4 input planes (K or 1),
# 5 params word offset, 6 is output layer, 7.. shift of each input plane.
_CFG_SHIFTS = 7

# --- CRC-32 ----------------------------------------------------------------------------
# Table-driven fallback for ports without binascii.crc32. The 32-bit CRC register is
# kept as two 16-bit halves so nothing becomes a bignum on a 32-bit port.
_crc_lo = None
_crc_hi = None


def _crc_tables():
    global _crc_lo, _crc_hi
    lo = array("H", bytes(512))
    hi = array("H", bytes(512))
    for n in range(256):
        cl, ch = n, 0
        for _ in range(8):
            bit = cl & 1
            cl = (cl >> 1) | ((ch & 1) << 15)
            ch >>= 1
            if bit:  # reflected polynomial 0xEDB88320
                cl ^= 0x8320
                ch ^= 0xEDB8
        lo[n] = cl
        hi[n] = ch
    _crc_lo, _crc_hi = lo, hi


def crc32_table(buf, n):
    """CRC-32 (ISO-HDLC, zlib.crc32) of the first n bytes of buf, without binascii."""
    if _crc_lo is None:
        _crc_tables()
    lo_t, hi_t = _crc_lo, _crc_hi
    lo, hi = 0xFFFF, 0xFFFF
    for i in range(n):
        t = (lo ^ buf[i]) & 0xFF
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ lo_t[t]
        hi = (hi >> 8) ^ hi_t[t]
    return ((hi ^ 0xFFFF) << 16) | (lo ^ 0xFFFF)


def crc32(buf, n):
    """CRC-32 of the first n bytes of buf: binascii.crc32 when the port has it."""
    if _crc_builtin is not None and not _force_table_crc:
        return _crc_builtin(memoryview(buf)[:n]) & U32_MAX
    return crc32_table(buf, n)


_force_table_crc = False


def use_table_crc(flag=True):
    """Compute CRCs with the table fallback even where binascii.crc32 exists (tests)."""
    global _force_table_crc
    _force_table_crc = bool(flag)


# --- plain engine -----------------------------------------------------------------------
_POP = bytes([bin(i).count("1") for i in range(256)])


def _i32(b, o):
    # Signed little-endian i32 at byte o; a small int whenever |value| < 2**30.
    return (((b[o + 3] ^ 0x80) - 0x80) << 24) | (b[o + 2] << 16) | (b[o + 1] << 8) | b[o]


def _dense_py(buf, x, y, cfg):
    """One layer on bytes: buf the model, x the packed input bits, y the next
    activation bits (hidden layer) or the array('i') scores to add to (output layer).
    cfg[6] == 2: a hidden layer of the live block in a training step, which also
    writes its gate bits at word cfg[8 + K] of y (gate cfg[7 + K])."""
    pop = _POP
    nb = 4 * cfg[1]
    n_in = cfg[2]
    n_out = cfg[3]
    nk = cfg[4]
    pb = 4 * cfg[5]
    last = cfg[6]
    wb = 4 * cfg[0]
    acc = 0
    gacc = 0
    bit = 1
    yo = 0
    gate = cfg[_CFG_SHIFTS + nk] if last == 2 else 0
    gb = 4 * cfg[_CFG_SHIFTS + nk + 1] if last == 2 else 0
    for j in range(n_out):
        s = 0
        xb = 0
        for k in range(nk):
            d = xb - wb  # x index = weight index + d
            pc = 0
            for i in range(wb, wb + nb, 4):
                e = i + d
                pc += (pop[buf[i] ^ x[e]] + pop[buf[i + 1] ^ x[e + 1]]
                       + pop[buf[i + 2] ^ x[e + 2]] + pop[buf[i + 3] ^ x[e + 3]])
            s += (n_in - 2 * pc) << cfg[_CFG_SHIFTS + k]
            xb += nb
        wb += nb
        if last == 1:
            y[j] += _i32(buf, pb + 4 * j) * s + _i32(buf, pb + 4 * (n_out + j))
        else:
            t = _i32(buf, pb + 4 * j)
            fb = pb + 4 * n_out + (j >> 3)  # flip bit j: byte j // 8 of the flip vector
            if (s >= t) ^ ((buf[fb] >> (j & 7)) & 1):
                acc |= bit
            if last == 2:  # the live block: gate bit |s - t| <= gate (i32 as the twin's)
                d = (s - t) & 0xFFFFFFFF
                if d >> 31:
                    d = -d & 0xFFFFFFFF
                if (d >> 31) or d <= gate:
                    gacc |= bit
            bit <<= 1
            if bit == 256 or j == n_out - 1:
                y[yo] = acc
                if last == 2:
                    y[gb + yo] = gacc
                    gacc = 0
                yo += 1
                acc = 0
                bit = 1
    if last != 1:
        # Clear the rest of the last word: a wider layer may have used these bytes.
        for i in range(yo, 4 * ((n_out + 31) >> 5)):
            y[i] = 0
            if last == 2:
                y[gb + i] = 0


def _slice_py(x, xp, cfg):
    """Bit-slice raw 8-bit features x[cfg[3]:] into the packed input xp (bytes)."""
    n = cfg[0]
    nb = 4 * cfg[1]
    x0 = cfg[3]
    for k in range(cfg[2]):
        sh = cfg[4 + k]
        o = k * nb
        i = 0
        while i < n:
            acc = 0
            bit = 1
            top = i + 8
            if top > n:
                top = n
            while i < top:
                if (x[x0 + i] >> sh) & 1:
                    acc |= bit
                bit <<= 1
                i += 1
            xp[o] = acc
            o += 1


def _copy_py(x, xp, n, off):
    for i in range(n):
        xp[i] = x[off + i]


def _zero_py(y, n):
    for i in range(n):
        y[i] = 0


def _argmax_py(sc, n):
    best = 0
    bv = sc[0]
    for k in range(1, n):
        if sc[k] > bv:
            best = k
            bv = sc[k]
    return best


def _addr_py(buf):
    return 0


# --- viper engine ---------------------------------------------------------------------
# Notes for 32-bit ports: integer literals above 2**30 would be Python objects inside
# viper code, so 0x55555555 and 1 << 31 are built at run time from small ones; words are
# read as uint so shifts are logical; thresholds are sign-extended explicitly because a
# ptr32 load is zero-extended on 64-bit ports. Score sums wrap mod 2**32, which is exact
# because the file's E_RANGE check keeps every true score inside i32.
_VIPER_SRC = """
@micropython.viper
def _dense_v(buf: ptr32, x: ptr32, y: ptr32, cfg: ptr32):
    # Viper keeps only the first three locals (here the arguments buf, x, y) in
    # registers, so the inner loop walks buf and x through a row and uses y as the
    # end of the current chunk; everything else lives on the stack.
    out = y
    prm = ptr32(uint(buf) + (uint(cfg[5]) << 2))
    x0 = uint(x)
    nb = uint(cfg[1]) << 2
    n_in = cfg[2]
    n_out = cfg[3]
    nk = cfg[4]
    last = cfg[6]
    m2 = uint(0x33333333)
    m1 = m2 ^ (m2 << 1)
    m4 = uint(0x0F0F0F0F)
    m8 = uint(0x00FF00FF)
    sgn = int(1) << 31
    row = uint(buf) + (uint(cfg[0]) << 2)
    acc = uint(0)
    gacc = uint(0)
    m32 = (uint(1) << 16 << 16) - 1  # 2^32 - 1 on 32- and 64-bit ports alike
    gate = uint(0)
    goff = 0
    if last == 2:
        gate = uint(cfg[7 + nk])
        goff = cfg[8 + nk]
    for j in range(n_out):
        s = 0
        for k in range(nk):
            # popcount(w XOR x) over one row: per-byte counts summed over chunks of up
            # to 30 words (at most 240 per byte), two words merged per step
            buf = ptr32(row)
            x = ptr32(x0 + uint(k) * nb)
            end = row + nb
            pc = 0
            while uint(buf) < end:
                y = ptr32(uint(buf) + 120)
                if uint(y) > end:
                    y = ptr32(end)
                c = uint(0)
                while uint(buf) + 4 < uint(y):
                    a = uint(buf[0]) ^ uint(x[0])
                    b = uint(buf[1]) ^ uint(x[1])
                    a = a - ((a >> 1) & m1)
                    b = b - ((b >> 1) & m1)
                    a = (a & m2) + ((a >> 2) & m2) + (b & m2) + ((b >> 2) & m2)
                    c += (a & m4) + ((a >> 4) & m4)
                    buf = ptr32(uint(buf) + 8)
                    x = ptr32(uint(x) + 8)
                if uint(buf) < uint(y):
                    a = uint(buf[0]) ^ uint(x[0])
                    a = a - ((a >> 1) & m1)
                    a = (a & m2) + ((a >> 2) & m2)
                    c += (a + (a >> 4)) & m4
                    buf = ptr32(uint(buf) + 4)
                    x = ptr32(uint(x) + 4)
                c = (c & m8) + ((c >> 8) & m8)
                pc += int((c + (c >> 16)) & 0xFFFF)
            s += (n_in - 2 * pc) << cfg[7 + k]
        row += nb
        if last == 1:
            out[j] = int(out[j]) + int(prm[j]) * s + int(prm[n_out + j])
        else:
            t = (int(prm[j]) ^ sgn) - sgn
            f = (uint(prm[n_out + (j >> 5)]) >> uint(j & 31)) & 1
            if s >= t:
                f ^= 1
            acc |= f << uint(j & 31)
            if last == 2:
                # the live block in a training step: gate bit |s - t| <= gate, in i32
                # as the twin computes it (wrapped; |-2^31| = -2^31 passes)
                d = uint(s - t) & m32
                if d >> 31:
                    d = uint(0 - d) & m32
                if (d >> 31) or d <= gate:
                    gacc |= uint(1) << uint(j & 31)
            if (j & 31) == 31 or j == n_out - 1:
                out[j >> 5] = acc
                acc = uint(0)
                if last == 2:
                    out[goff + (j >> 5)] = gacc
                    gacc = uint(0)

@micropython.viper
def _slice_v(x: ptr8, xp: ptr32, cfg: ptr32):
    n = cfg[0]
    nw = cfg[1]
    x = ptr8(uint(x) + uint(cfg[3]))
    for k in range(cfg[2]):
        sh = cfg[4 + k]
        o = k * nw
        for w in range(nw):
            i0 = w << 5
            cnt = n - i0
            if cnt > 32:
                cnt = 32
            acc = uint(0)
            for b in range(cnt):
                acc |= uint((x[i0 + b] >> sh) & 1) << uint(b)
            xp[o + w] = acc

@micropython.viper
def _copy_v(x: ptr8, xp: ptr8, n: int, off: int):
    for i in range(n):
        xp[i] = x[off + i]

@micropython.viper
def _zero_v(y: ptr32, n: int):
    for i in range(n):
        y[i] = 0

@micropython.viper
def _argmax_v(sc: ptr32, n: int) -> int:
    sgn = int(1) << 31
    best = 0
    bv = (int(sc[0]) ^ sgn) - sgn
    for k in range(1, n):
        v = (int(sc[k]) ^ sgn) - sgn
        if v > bv:
            best = k
            bv = v
    return best

@micropython.viper
def _addr_v(buf: ptr8) -> int:
    return int(buf)
"""


_PY = {
    "dense": _dense_py,
    "slice": _slice_py,
    "copy": _copy_py,
    "zero": _zero_py,
    "argmax": _argmax_py,
    "addr": _addr_py,
}
_KERNELS = {"python": _PY}


def _compile_viper():
    if micropython is None:
        return None
    g = {"micropython": micropython}
    try:
        exec(_VIPER_SRC, g)  # noqa: F821 (defined above; deleted below once compiled)
    except Exception:  # SyntaxError / ViperTypeError / NotImplementedError: no viper here
        return None
    k = {
        "dense": g["_dense_v"],
        "slice": g["_slice_v"],
        "copy": g["_copy_v"],
        "zero": g["_zero_v"],
        "argmax": g["_argmax_v"],
        "addr": g["_addr_v"],
    }
    # A port may compile viper yet get it wrong; check a word against a known popcount.
    # 1 row of 1 word at word 1, scale 1 at word 4, offset 0: s = 32 - 2 * popcount(
    # 0xF000000E) = 18.
    buf = array("I", [0, 0xF0000001, 0, 0, 1, 0])
    x = array("I", [15])
    y = array("i", [7])
    cfg = array("i", [1, 1, 32, 1, 1, 4, 1, 0])
    try:
        k["dense"](buf, x, y, cfg)
    except Exception:
        return None
    if y[0] != 7 + 18:
        return None
    return k


_v = _compile_viper()
del _VIPER_SRC  # drop the module's reference to the source text once compiled
if _v is not None:
    _KERNELS["viper"] = _v
    engine = "viper"
else:
    engine = "python"
engines = tuple(_KERNELS)


def use(name):
    """Choose the engine for models created from now on: "viper" or "python"."""
    global engine
    if name not in _KERNELS:
        raise ValueError("rbnn: engine %r not available here (have %s)" % (name, ", ".join(_KERNELS)))
    engine = name


# --- file format ------------------------------------------------------------------------
# Each check below is one of host/rbnn/format/checks.py, in its order, with its words
# spelled out (the error-corpus tests hold every message to the host's).
_FF = b"\xff" * BLOCK_ENTRY_BYTES  # an empty block-table slot
_ZERO = bytes(128)  # empty parameter slots, compared 128 bytes at a time
_TRAIN = "<10I6BbB"  # the training section up to lr: rule .. off_shift, reserved byte 47


def _words(n):
    return (n + 31) >> 5


def _pad_mask(n):
    r = n & 31
    return U32_MAX if r == 0 else (1 << r) - 1


def _fail(code, field, offset, expected, found):
    raise ValueError("rbnn: %s at offset %d: %s: expected %s, found %s" % (code, offset, field, expected, found))


def _u32(buf, o):
    return struct.unpack_from("<I", buf, o)[0]


def _first_not(mv, at, n, pat):
    """Offset of the first byte of mv[at:at+n] that is not pat[0] (pat: _FF or _ZERO),
    or -1. Compares len(pat)-byte views, so a large region is neither copied nor walked
    byte by byte in Python (about 10x faster than a byte loop)."""
    end = at + n
    p = len(pat)
    while at < end:
        k = end - at
        if k > p:
            k = p
        if mv[at : at + k] != pat[:k]:
            v = pat[0]
            while mv[at] == v:
                at += 1
            return at
        at += k
    return -1


def _head(buf, n):
    """Header, layer table, sizes and stored offsets (pack.check_head); returns the
    shape and layout as a dict."""
    if n < HEADER_BYTES:
        _fail("E_TRUNCATED", "header", 0, ">= %d bytes" % HEADER_BYTES, "%d bytes" % n)
    (magic, version, flags, file_bytes, word_bits, n_layers, n_blocks, n_planes, n_inputs,
     input_mode, plane_mask, plane_bytes, arena_offset, params_offset) = struct.unpack_from("<4sHHIBBBBHBBIII", buf, 0)
    if magic != MAGIC:
        _fail("E_MAGIC", "magic", 0, "0x52424e4e", "0x%08x" % struct.unpack(">I", magic)[0])
    if version not in READ_VERSIONS:
        _fail("E_VERSION", "version", 4, _VERSIONS, version)
    if flags != 0:
        _fail("E_FLAGS", "flags", 6, 0, "0x%04x" % flags)
    v2 = version >= 2
    for name, off, val, lo, hi, want in (
        ("word_bits", 12, word_bits, 32, 32, "32"),
        ("n_layers", 13, n_layers, 1, MAX_LAYERS, "1..%d" % MAX_LAYERS),
        ("n_blocks", 14, n_blocks, 0 if v2 else 1, MAX_BLOCKS, "%d..%d" % (0 if v2 else 1, MAX_BLOCKS)),
        ("n_planes", 15, n_planes, 1, MAX_PLANES, "1..%d" % MAX_PLANES),
        ("n_inputs", 16, n_inputs, 1, MAX_INPUTS, "1..%d" % MAX_INPUTS),
        ("input_mode", 18, input_mode, 0, 0, "0"),
        ("plane_mask", 19, plane_mask, 1, 0xFF, "not 0"),
    ):
        if not lo <= val <= hi:
            _fail("E_HEADER", name, off, want, val)
    hb = HEADER_BYTES
    slots, score_q, train_offset = n_blocks, 0, 0  # version 1: no empty slots, no training
    if v2:
        hb = HEADER_BYTES_V2
        if n < hb:
            _fail("E_TRUNCATED", "header", 0, ">= %d bytes (version 2)" % hb, "%d bytes" % n)
        slots, score_q, _, train_offset = struct.unpack_from("<BBHI", buf, HEADER_BYTES)
        lo = n_blocks if n_blocks else 1
        if not lo <= slots <= MAX_BLOCKS:
            _fail("E_HEADER", "max_blocks", 32, "%d..%d (n_blocks..)" % (lo, MAX_BLOCKS), slots)
        if score_q > MAX_SCORE_Q:
            _fail("E_HEADER", "score_q", 33, "0..%d" % MAX_SCORE_Q, score_q)
        for at in range(34, hb):
            if (at < 36 or at >= 40) and buf[at]:  # 36..39: train_offset
                _fail("E_FLAGS", "reserved header byte %d" % at, at, 0, buf[at])
    blocks_offset = hb + 4 * ((n_layers + 1) // 2)
    if n < blocks_offset:
        _fail("E_TRUNCATED", "layer table", hb, ">= %d bytes" % blocks_offset, "%d bytes" % n)
    sizes = list(struct.unpack_from("<%dH" % n_layers, buf, hb))
    for i in range(n_layers):
        if sizes[i] == 0:
            _fail("E_HEADER", "size[%d]" % i, hb + 2 * i, "1..%d" % MAX_SIZE, 0)
    pad_at = hb + 2 * n_layers
    if pad_at < blocks_offset and (buf[pad_at] or buf[pad_at + 1]):
        _fail("E_FLAGS", "layer table pad", pad_at, 0, "0x%04x" % (buf[pad_at] | buf[pad_at + 1] << 8))
    inputs = [n_inputs] + sizes[:-1]
    layer_off = [0]  # word offset of each layer inside a plane
    for i in range(n_layers):
        layer_off.append(layer_off[-1] + sizes[i] * _words(inputs[i]))
    lay_plane = 4 * layer_off[-1]
    lay_arena = blocks_offset + BLOCK_ENTRY_BYTES * slots
    lay_params = lay_arena + n_planes * lay_plane
    bpb = 8 * sizes[-1]
    for s in sizes[:-1]:
        bpb += 4 * s + 4 * _words(s)
    lay_train = lay_params + slots * bpb
    lay_file = lay_train + (TRAIN_BYTES if v2 else 0) + 4
    if lay_plane > U32_MAX or lay_file > U32_MAX:
        _fail("E_SIZE", "computed file size", 8, "<= %d bytes" % U32_MAX, "more")
    if n < file_bytes:
        _fail("E_TRUNCATED", "file_bytes", 8, "%d bytes" % file_bytes, "%d bytes" % n)
    if n > file_bytes:
        _fail("E_SIZE", "file_bytes", 8, "%d (the buffer's length)" % n, file_bytes)
    for name, off, stored, want in (
        ("plane_bytes", 20, plane_bytes, lay_plane),
        ("arena_offset", 24, arena_offset, lay_arena),
        ("params_offset", 28, params_offset, lay_params),
        ("train_offset", 36, train_offset, lay_train if v2 else 0),  # version 1: 0 == 0
        ("file_bytes", 8, file_bytes, lay_file),
    ):
        if stored != want:
            _fail("E_LAYOUT", name, off, want, stored)
    return {
        "version": version,
        "n_inputs": n_inputs,
        "plane_mask": plane_mask,
        "sizes": sizes,
        "inputs": inputs,
        "n_blocks": n_blocks,
        "max_blocks": slots,
        "score_q": score_q,
        "n_planes": n_planes,
        "plane_bytes": plane_bytes,
        "blocks_offset": blocks_offset,
        "arena_offset": arena_offset,
        "params_offset": params_offset,
        "train_offset": train_offset,
        "block_params_bytes": bpb,
        "layer_off": layer_off,
        "file_bytes": file_bytes,
    }


def _blocks(buf, mv, h):
    """The block table (blocks in use, then the empty slots); returns the sign plane of
    each block and the index of the first live block (-1: none)."""
    n_blocks = h["n_blocks"]
    n_planes = h["n_planes"]
    v2 = h["version"] >= 2
    owner = bytearray(b"\xff" * n_planes)  # owner[p]: the block owning plane p (0xFF: none)
    sign_planes = bytearray(n_blocks)
    live = -1
    off = h["blocks_offset"]
    for b in range(n_blocks):
        state = buf[off]
        n_bits = buf[off + 1]
        reserved = buf[off + 2] | (buf[off + 3] << 8)
        if state != FROZEN and state != LIVE:
            _fail("E_BLOCK", "block[%d].state" % b, off, "%d or %d" % (FROZEN, LIVE), state)
        if state == LIVE and v2 and b != n_blocks - 1:
            _fail("E_BLOCK", "block[%d].state" % b, off, "%d (only the last block may be live)" % FROZEN, state)
        if state == FROZEN and n_bits != 1:
            _fail("E_BLOCK", "block[%d].n_bits" % b, off + 1, "1 (frozen)", n_bits)
        if not 1 <= n_bits <= MAX_BITS:
            _fail("E_BLOCK", "block[%d].n_bits" % b, off + 1, "1..%d" % MAX_BITS, n_bits)
        if reserved:
            _fail("E_BLOCK", "block[%d].reserved" % b, off + 2, 0, reserved)
        for i in range(MAX_BITS):
            at = off + 4 + i
            p = buf[at]
            if i >= n_bits:
                if p != UNUSED_PLANE:
                    _fail("E_BLOCK", "block[%d].planes[%d] (unused)" % (b, i), at, UNUSED_PLANE, p)
                continue
            if p >= n_planes:
                _fail("E_BLOCK", "block[%d].planes[%d]" % (b, i), at, "< %d" % n_planes, p)
            if owner[p] != 0xFF:
                _fail("E_BLOCK", "block[%d].planes[%d]" % (b, i), at, "a plane not owned by block %d" % owner[p], p)
            owner[p] = b
        if state == LIVE and live < 0:
            live = b
        sign_planes[b] = buf[off + 4]
        off += BLOCK_ENTRY_BYTES
    for slot in range(n_blocks, h["max_blocks"]):
        at = _first_not(mv, off, BLOCK_ENTRY_BYTES, _FF)
        if at >= 0:
            _fail("E_BLOCK", "block slot[%d] (empty) byte %d" % (slot, at - off), at, UNUSED_PLANE, buf[at])
        off += BLOCK_ENTRY_BYTES
    return sign_planes, live


def _weight_padding(buf, h):
    """Padding bits of every weight row: layer by layer, each plane in order, row by row."""
    sizes = h["sizes"]
    for layer in range(len(sizes)):
        mask = _pad_mask(h["inputs"][layer])
        if mask == U32_MAX:
            continue
        bad = U32_MAX ^ mask
        w = _words(h["inputs"][layer])
        for p in range(h["n_planes"]):
            at = h["arena_offset"] + p * h["plane_bytes"] + 4 * (h["layer_off"][layer] + w - 1)
            for r in range(sizes[layer]):
                v = _u32(buf, at) & bad
                if v:
                    _fail("E_PADDING", "plane %d layer %d row %d padding" % (p, layer, r), at, 0, "0x%08x" % v)
                at += 4 * w


def _flips(buf, h, b, live):
    """Padding of block b's flip vectors, and (live) that they are all 0."""
    at = h["params_offset"] + b * h["block_params_bytes"]
    sizes = h["sizes"]
    for layer in range(len(sizes) - 1):
        s = sizes[layer]
        at += 4 * s
        nw = _words(s)
        if live:
            for w in range(nw):
                v = _u32(buf, at + 4 * w)
                if v:
                    _fail("E_TRAIN", "block[%d] layer %d flips (a live block)" % (b, layer), at + 4 * w, 0,
                          "0x%08x" % v)
        else:
            v = _u32(buf, at + 4 * (nw - 1))
            if v & (U32_MAX ^ _pad_mask(s)):
                _fail("E_PADDING", "block[%d] layer %d flip padding" % (b, layer), at + 4 * (nw - 1), 0, "0x%08x" % v)
        at += 4 * nw


def _live_output(buf, h, b, budget):
    """A live block's output stays within half of the budget (pack._check_live_flips)."""
    k = h["sizes"][-1]
    at = h["params_offset"] + (b + 1) * h["block_params_bytes"] - 8 * k
    half = (budget + 1) // 2
    top = half // _smax(h, len(h["sizes"]) - 1)
    for j in range(k):
        v = struct.unpack_from("<i", buf, at + 4 * j)[0]
        if abs(v) > top:
            _fail("E_TRAIN", "block[%d] scale[%d] (a live block)" % (b, j), at + 4 * j,
                  "|scale| <= %d (half / smax)" % top, v)
    for j in range(k):
        v = struct.unpack_from("<i", buf, at + 4 * (k + j))[0]
        if abs(v) > half - 1:
            _fail("E_TRAIN", "block[%d] offset[%d] (a live block)" % (b, j), at + 4 * (k + j),
                  "|offset| <= %d (half - 1)" % (half - 1), v)


def _smax(h, layer):
    """The largest |s| of a layer (docs/FORMAT.md, Semantics)."""
    if layer:
        return h["inputs"][layer]
    mask = h["plane_mask"]
    low = 0
    while not (mask >> low) & 1:
        low += 1
    return h["n_inputs"] * sum([1 << (q - low) for q in range(low, 8) if (mask >> q) & 1])


def _train(buf, h, live, budget):
    """The training section, field by field in table order (pack._read_train)."""
    base = h["train_offset"]
    (rule, _, steps, block_steps, hits, active, _, _, stream_base, margin, bits, grow_left, scale_shift,
     decay, init_bits, loss, off_shift, reserved) = struct.unpack_from(_TRAIN, buf, base)
    L = len(h["sizes"])
    if rule != TRAIN_RULE:
        _fail("E_TRAIN", "train.rule", base, TRAIN_RULE, rule)
    if block_steps > steps:
        _fail("E_TRAIN", "train.block_steps", base + 12, "<= steps (%d)" % steps, block_steps)
    if live < 0 and block_steps:
        _fail("E_TRAIN", "train.block_steps", base + 12, "0 (no live block)", block_steps)
    for name, off, v in (("hits", 16, hits), ("active", 20, active), ("stream_base", 32, stream_base)):
        if v > steps:
            _fail("E_TRAIN", "train." + name, base + off, "<= steps (%d)" % steps, v)
    if not 1 <= margin <= budget:
        _fail("E_TRAIN", "train.margin", base + 36, "1..%d (the block budget)" % budget, margin)
    if not 1 <= bits <= MAX_BITS:
        _fail("E_TRAIN", "train.bits", base + 40, "1..%d" % MAX_BITS, bits)
    empty = h["max_blocks"] - h["n_blocks"]
    if grow_left > empty:
        _fail("E_TRAIN", "train.grow_left", base + 41, "0..%d (empty slots)" % empty, grow_left)
    smax = _smax(h, L - 1)
    half = (budget + 1) // 2
    top = -1  # the largest scale_shift with 2^scale_shift * smax <= half
    while (smax << (top + 1)) <= half:
        top += 1
    if scale_shift > top:
        _fail("E_TRAIN", "train.scale_shift", base + 42, "0..%d (2^scale_shift * smax <= half)" % top, scale_shift)
    for name, off, v, hi in (("decay", 43, decay, 31), ("init_bits", 44, init_bits, 15)):
        if v > hi:
            _fail("E_TRAIN", "train." + name, base + off, "0..%d" % hi, v)
    if loss > 1:
        _fail("E_TRAIN", "train.loss", base + 45, "0 or 1", loss)
    if not -1 <= off_shift <= 23:
        _fail("E_TRAIN", "train.off_shift", base + 46, "-1..23", off_shift)
    if reserved:
        _fail("E_FLAGS", "train reserved byte 47", base + 47, 0, reserved)
    # lr: u8 per layer; thr_shift: i8 per hidden layer; unused entries 0
    for i in range(MAX_LAYERS):
        at = base + 48 + i
        v = buf[at]
        if i < L and v > 31:
            _fail("E_TRAIN", "train.lr[%d]" % i, at, "0..31", v)
        if i >= L and v:
            _fail("E_TRAIN", "train.lr[%d]" % i, at, "0 (no layer %d)" % i, v)
    for i in range(MAX_LAYERS):
        at = base + 56 + i
        v = (buf[at] ^ 0x80) - 0x80
        if i < L - 1 and not -1 <= v <= 24:
            _fail("E_TRAIN", "train.thr_shift[%d]" % i, at, "-1..24", v)
        if i >= L - 1 and v:
            _fail("E_TRAIN", "train.thr_shift[%d]" % i, at, "0 (no hidden layer %d)" % i, v)
    for i in range(MAX_LAYERS - 1):
        at = base + 64 + 4 * i
        v = _u32(buf, at)
        if i < L - 1 and v > _smax(h, i):
            _fail("E_TRAIN", "train.gate[%d]" % i, at, "0..%d (smax of layer %d)" % (_smax(h, i), i), v)
        if i >= L - 1 and v:
            _fail("E_TRAIN", "train.gate[%d]" % i, at, "0 (no hidden layer %d)" % i, v)
    v = _u32(buf, base + 92)
    if v:
        _fail("E_FLAGS", "train reserved byte 92", base + 92, 0, v)


def _range(buf, h, budget):
    """Scores fit i32: version 2, every block's bound within the block budget; version 1,
    the running sum of the bounds. Reported at the scale array of the first block past."""
    k = h["sizes"][-1]
    smax = _smax(h, len(h["sizes"]) - 1)
    bpb = h["block_params_bytes"]
    at = h["params_offset"] + bpb - 8 * k
    total = 0
    for b in range(h["n_blocks"]):
        worst = 0
        for c in range(k):
            v = abs(struct.unpack_from("<i", buf, at + 4 * c)[0]) * smax
            v += abs(struct.unpack_from("<i", buf, at + 4 * (k + c))[0])
            if v > worst:
                worst = v
        if h["version"] >= 2:
            if worst > budget:
                _fail("E_RANGE", "block[%d] output scale/offset" % b, at,
                      "score bound <= %d (the block budget)" % budget, "more")
        else:
            total += worst
            if total > I32_MAX:
                _fail("E_RANGE", "block[%d] output scale/offset" % b, at, "score bound <= %d" % I32_MAX,
                      "> %d" % I32_MAX)
        at += bpb


def _parse(buf):
    """Validate a model in the order of docs/FORMAT.md (Errors), as rbnn.format.pack.from_bytes.

    Returns a dict of the shape; raises ValueError("rbnn: E_... at offset N: ...")."""
    n = len(buf)
    h = _head(buf, n)
    crc_stored = _u32(buf, n - 4)
    crc = crc32(buf, n - 4)
    if crc != crc_stored:
        _fail("E_CRC", "crc32", n - 4, "0x%08x" % crc, "0x%08x" % crc_stored)
    mv = memoryview(buf)
    sign_planes, live = _blocks(buf, mv, h)
    _weight_padding(buf, h)
    for b in range(h["n_blocks"]):
        _flips(buf, h, b, False)
    budget = I32_MAX // h["max_blocks"]
    if h["version"] >= 2:
        bpb = h["block_params_bytes"]
        at0 = h["params_offset"] + h["n_blocks"] * bpb
        at = _first_not(mv, at0, (h["max_blocks"] - h["n_blocks"]) * bpb, _ZERO)
        if at >= 0:
            slot = (at - at0) // bpb
            _fail("E_FLAGS", "parameter slot[%d] (empty) byte %d" % (h["n_blocks"] + slot, at - at0 - slot * bpb),
                  at, 0, buf[at])
        if live >= 0:
            _flips(buf, h, live, True)
            _live_output(buf, h, live, budget)
        _train(buf, h, live, budget)
    _range(buf, h, budget)
    h["sign_planes"] = sign_planes
    h["live"] = live if live >= 0 else None
    return h


def _is_i32_array(a):
    # MicroPython arrays have no .typecode; the repr of an empty slice names it.
    return isinstance(a, array) and repr(a[:0]) == "array('i')"


# --- the model ------------------------------------------------------------------------
# Training errors, in the twin's words (rbnn.learn.step; docs/DEVICE_API.md, Training).
_RO = "rbnn: the model's buffer is read-only: load it from a path or a bytearray to train"
_V1 = "rbnn: E_VERSION: a version 1 file has no training state; write it as version 2 to train it"
_RESIZED = "rbnn: the model's buffer was resized or moved after load"


def _writable(buf):
    # bytes and memoryviews of bytes refuse item assignment (TypeError); writing a
    # byte's own value changes nothing
    if not len(buf):
        return True  # nothing to write (and not a model: the parse refuses it)
    try:
        buf[0] = buf[0]
    except TypeError:
        return False
    return True


class Model:
    """A validated .rbnn model (docs/DEVICE_API.md): predict, scores, info, and the
    training step of docs/TRAINING.md (train, train_batch, grow, freeze, stats, reseal,
    save) when the buffer is writable.

    Parameters
    ----------
    buf : bytes, bytearray or memoryview
        The whole file; kept and read in place (not copied), and changed in place by
        training.
    """

    def __init__(self, buf):
        if isinstance(buf, str):
            raise TypeError("rbnn: Model() takes the file's bytes; use rbnn.load(path) for a path")
        k = _KERNELS[engine]
        self.engine = engine
        self._ro = not _writable(buf)  # before any copy: bytes never train, on any engine
        if engine == "viper" and k["addr"](buf) & 3:
            buf = bytearray(buf)  # ptr32 loads need 4-byte alignment (Xtensa, Cortex-M0 fault)
        info = _parse(buf)
        self._buf = buf
        self._info = info
        self._dense = k["dense"]
        self._slicef = k["slice"]
        self._copyf = k["copy"]
        self._zerof = k["zero"]
        self._argmaxf = k["argmax"]
        n_in = info["n_inputs"]
        mask = info["plane_mask"]
        sizes = info["sizes"]
        self.n_inputs = n_in
        self.n_classes = sizes[-1]
        kept = [q for q in range(7, -1, -1) if (mask >> q) & 1]
        low = kept[-1]
        nk = len(kept)
        W = _words(n_in)
        self._nk = nk
        self._w = W
        self._shifts = [q - low for q in kept]
        self._input_bytes = 4 * nk * W
        # Packed-input padding: per kept plane, the byte index and forbidden bits of the
        # last word's bytes (only bytes that hold padding).
        pad = U32_MAX ^ _pad_mask(n_in)
        self._pad = [(4 * (W - 1) + i, (pad >> (8 * i)) & 0xFF) for i in range(4) if (pad >> (8 * i)) & 0xFF]
        self._slice_cfg = array("i", [n_in, W, nk, 0] + kept)  # [3]: offset of the sample in x
        # Scratch, allocated once (eBNN order: input, two ping-pong buffers, scores).
        self._x = bytearray(4 * nk * W)
        hidden = sizes[:-1]
        aw = _words(max(hidden)) if hidden else 0
        self._a = bytearray(4 * aw)
        self._b = bytearray(4 * aw)
        self._scores = array("i", [0] * self.n_classes)
        self._ram = 4 * nk * W + 8 * aw + 4 * self.n_classes
        # A training step's scratch (docs/TRAINING.md, Memory of one step; the C core's
        # rbnn_train_scratch_bytes): hidden and gate bits per hidden layer, two i32 rows
        # as wide as the widest layer. Version 1 cannot train: 0.
        hw = 0
        for s in hidden:
            hw += _words(s)
        self._train_ram = 4 * (2 * hw + 2 * max(sizes)) if info["version"] >= 2 else 0
        self._out_ok = None
        self._tr = None  # the Trainer (rbnn_pytrain), made at the first training call
        self._plans()

    def _layer_cfgs(self, b, live=0):
        """Block b's dense cfg of each layer. live (a training step's live block: the
        word offset of the gate bits from the hidden bits): hidden layers also write
        gate bits (cfg[6] == 2; the gate value cfg[7 + K] is set at each step)."""
        info = self._info
        sizes = info["sizes"]
        inputs = info["inputs"]
        pbase = info["arena_offset"] + info["sign_planes"][b] * info["plane_bytes"]
        par = info["params_offset"] + b * info["block_params_bytes"]
        out = []
        for layer in range(len(sizes)):
            last = layer == len(sizes) - 1
            first = layer == 0
            s = sizes[layer]
            cfg = [(pbase >> 2) + info["layer_off"][layer], _words(inputs[layer]), inputs[layer], s,
                   self._nk if first else 1, par >> 2, 1 if last else (2 if live else 0)]
            cfg += self._shifts if first else [0]
            if live and not last:
                cfg += [0, live]
            out.append(array("i", cfg))
            if not last:
                par += 4 * s + 4 * _words(s)
        return out

    def _plans(self):
        """The plans of inference and of the training step, for the blocks as they are
        now (again after a block opens or freezes)."""
        info = self._info
        L = len(info["sizes"])
        # One plan entry per (block, layer): cfg, input buffer, output buffer (None:
        # the scores array of the call).
        plan = []
        for b in range(info["n_blocks"]):
            src = self._x
            for layer, cfg in enumerate(self._layer_cfgs(b)):
                dst = None if layer == L - 1 else (self._a if layer % 2 == 0 else self._b)
                plan.append((cfg, src, dst))
                src = dst
        self._plan = plan
        if self._tr is not None:
            self._tr.plans()

    def _load_input(self, x, off, n, at):
        """Sample x[off:off + n] into the packed input; at: its index in a batch (-1: none)."""
        if n == self.n_inputs:  # raw features win when both lengths agree
            self._slice_cfg[3] = off
            self._slicef(x, self._x, self._slice_cfg)
            return
        if n != self._input_bytes:
            raise ValueError("rbnn: input has %d bytes; expected %d raw features or %d bytes of packed bits"
                             % (n, self.n_inputs, self._input_bytes))
        nb = 4 * self._w
        for k in range(self._nk):
            for i, bad in self._pad:
                if x[off + k * nb + i] & bad:
                    raise ValueError("rbnn: E_INPUT: %spacked input plane %d has padding bits set (n_inputs %d)"
                                     % (_sample(at), k, self.n_inputs))
        self._copyf(x, self._x, n, off)

    def _run(self, x, out):
        if len(self._buf) != self._info["file_bytes"]:
            # viper reads the buffer through raw pointers: never past a shrunk bytearray
            raise ValueError(_RESIZED)
        self._load_input(x, 0, len(x), -1)
        self._zerof(out, self.n_classes)
        buf = self._buf
        dense = self._dense
        for cfg, src, dst in self._plan:
            dense(buf, src, out if dst is None else dst, cfg)
        return self._argmaxf(out, self.n_classes)

    def predict(self, x):
        """The class of one sample (ties to the lowest index).

        x : raw features (n_inputs bytes) or packed input bits (info()["input_bytes"])."""
        return self._run(x, self._scores)

    def scores(self, x, out):
        """Fill out (array('i'), at least n_classes items) with the scores; return the class."""
        if out is not self._out_ok:
            if not _is_i32_array(out):
                raise ValueError("rbnn: out must be an array('i') of at least %d items" % self.n_classes)
            self._out_ok = out
        if len(out) < self.n_classes:
            raise ValueError("rbnn: out has %d items, needs at least %d (n_classes)" % (len(out), self.n_classes))
        return self._run(x, out)

    def info(self):
        """A dict describing the model (docs/DEVICE_API.md, info())."""
        i = self._info
        layers = [i["n_inputs"]] + i["sizes"]
        per_block = 0
        for a in range(len(i["sizes"])):
            per_block += layers[a] * layers[a + 1]
        return {
            "engine": self.engine,
            "inputs": i["n_inputs"],
            "plane_mask": i["plane_mask"],
            "layers": layers,
            "blocks": i["n_blocks"],
            "max_blocks": i["max_blocks"],
            "live": i["live"],
            "planes": i["n_planes"],
            "weight_bits": per_block * i["n_blocks"],
            "file_bytes": i["file_bytes"],
            "ram": self._ram,
            "input_bytes": self._input_bytes,
            "train_ram": self._train_ram,
        }

    # --- training (docs/TRAINING.md): rbnn_pytrain, imported at the first use ---------
    def _trainer(self, write=True):
        """The model's Trainer (rbnn_pytrain), after refusing what cannot train: a
        read-only buffer (write), a version 1 file, a resized buffer."""
        if write and self._ro:
            raise ValueError(_RO)
        if self._info["version"] < 2:
            raise ValueError(_V1)
        if len(self._buf) != self._info["file_bytes"]:
            raise ValueError(_RESIZED)
        t = self._tr
        if t is None:
            import rbnn_pytrain

            t = self._tr = rbnn_pytrain.Trainer(self)
        return t

    def train(self, x, label):
        """One training step on sample x (raw features or packed bits) with its label;
        returns the class predicted before the update."""
        return self._trainer().train(x, label)

    def train_batch(self, xs, labels, preds=None):
        """len(labels) steps over the samples of xs (one after another, equal lengths);
        preds (writable, at least n bytes) receives each prediction. Returns the number
        of right predictions. An error stops at the sample at fault, the samples before
        it applied."""
        return self._trainer().train_batch(xs, labels, preds)

    def grow(self):
        """Open a live block now (the training state's bits); returns its index."""
        return self._trainer().grow()

    def freeze(self):
        """Freeze the live block."""
        self._trainer().freeze()

    def stats(self):
        """The training state (docs/DEVICE_API.md, stats())."""
        return self._trainer(False).stats()

    def reseal(self):
        """Write the file's CRC-32 (of every byte before it) into its last 4 bytes; returns
        it. A read-only buffer never trained: its CRC is returned, nothing written."""
        n = self._info["file_bytes"]
        if len(self._buf) != n:
            raise ValueError(_RESIZED)
        c = crc32(self._buf, n - 4)
        if not self._ro:
            struct.pack_into("<I", self._buf, n - 4, c)
        return c

    def save(self, path):
        """Reseal the CRC and write the file atomically (rbnn_store.write_file: path.new,
        synced, renamed over path); a read-only model is written as it is."""
        self.reseal()
        import rbnn_store

        rbnn_store.write_file(path, self._buf)


def _sample(at):
    return "" if at < 0 else "sample %d: " % at
