# rbnn_pytrain: the training step of the pure-MicroPython engine (docs/TRAINING.md,
# rule 1), behind rbnn_py.Model's train, train_batch, grow, freeze and stats.
#
# A separate module, imported at a model's first training call, so that a board that
# only infers keeps its heap. Every result is bit-identical to the numpy twin
# (host/rbnn/learn/step.py); the structure follows the C core (cmodules/rbnn/
# rbnn_train.c): the step from the output layer down with two signal rows, the
# counters bit-sliced, 32 (viper) or 8 (plain code) weights per operation.
#
# Hot loops come in the two versions of rbnn_py ("viper": @micropython.viper on
# 32-bit words, compiled from strings at the first viper model's first training call;
# "python": plain code on bytes), chosen by the model's engine. Viper ints are machine words (32 or 64 bits): every value the
# twin computes in wrapping int32/uint32 is masked to 32 bits here, so both word sizes
# give the twin's bytes.
#
# Memory: the Trainer allocates its scratch once (hidden and gate bits, two signal
# rows, one cfg array per kernel call); a step allocates nothing on the viper engine
# (the plain engine only for values beyond the small ints of a 32-bit port), except
# when a block opens or freezes (new plans).

from array import array

import rbnn_py
from rbnn_py import (
    _CFG_SHIFTS,
    _ZERO,
    BLOCK_ENTRY_BYTES,
    FROZEN,
    I32_MAX,
    LIVE,
    MAX_BITS,
    U32_MAX,
    UNUSED_PLANE,
    _i32,
    _pad_mask,
    _sample,
    _smax,
    _u32,
    _words,
)

try:
    import micropython
except ImportError:  # CPython: only the plain engine
    micropython = None

# Byte offsets of the training state's fields (rbnn.format.trainstate.OFFSETS).
_T_SEED = 4
_T_STEPS = 8
_T_BLOCK_STEPS = 12
_T_HITS = 16
_T_ACTIVE = 20
_T_GROW_EVERY = 24
_T_STREAM_ID = 28
_T_STREAM_BASE = 32
_T_MARGIN = 36
_T_BITS = 40
_T_GROW_LEFT = 41
_T_SCALE_SHIFT = 42
_T_DECAY = 43
_T_INIT_BITS = 44
_T_LOSS = 45
_T_OFF_SHIFT = 46
_T_LR = 48
_T_THR_SHIFT = 56
_T_GATE = 64
# The constants of the rule (rbnn.learn.step and prng; tests/test_fallback_train.py
# holds them equal). The kernels write them as literals (16, 15, 0xFFFFFFFF, PHI from
# halves in viper), which viper needs.
PROB_BITS = 16
MAX_DECAY = 15
NEW_BLOCK_KEY = 0xFFFFFFFF
_SEQ = (list, tuple)  # not buffers (built once: a tuple built per call would allocate)


# --- plain code ----------------------------------------------------------------------
# The model's words are read and written byte by byte (the bit-sliced counters work
# on bytes as on words), so that nothing but the generator and the training state's
# counters leaves the small-int range of a 32-bit port. i32 values live in array('i');
# the offsets in each cfg are words of the model (or of the array).
PHI = 0x9E3779B9  # Weyl increment between the indices of one key (rbnn.learn.prng)


def _rd32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _wr32(b, o, v):
    # v may be negative: its two's complement bytes
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def _mul32(x, c):
    # (x * c) mod 2^32 with intermediates below 2^48 (small ints on a 64-bit port)
    return ((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c & 0xFFFFFFFF


def _lowbias(x):
    # Wellons' lowbias32 (docs/TRAINING.md, The random numbers)
    x ^= x >> 16
    x = _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _wrap(v):
    # the i32 with the low 32 bits of v
    return ((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


def _count_py(buf, e, cfg):
    """Step 2. cfg: train word offset, hit (0/1), decay, kc. Writes key(steps) to
    e[kc] and min(15, block_steps >> decay) to e[kc + 1]; counts the step. Returns 1
    when the schedule freezes the block after this step (block_steps == grow_every)."""
    t = 4 * cfg[0]
    steps = _rd32(buf, t + 8)
    n = _rd32(buf, t + 12)
    k = _lowbias(_rd32(buf, t + 4) ^ _lowbias(steps))
    kc = cfg[3]
    e[kc] = k - 0x100000000 if k >> 31 else k
    d = n >> cfg[2]
    e[kc + 1] = 15 if d > 15 else d
    n = (n + 1) & 0xFFFFFFFF
    _wr32(buf, t + 8, (steps + 1) & 0xFFFFFFFF)
    _wr32(buf, t + 12, n)
    _wr32(buf, t + 16, (_rd32(buf, t + 16) + cfg[1]) & 0xFFFFFFFF)
    ge = _rd32(buf, t + 24)
    return 1 if ge and n == ge else 0


def _hinge_py(buf, e, cfg):
    """Step 3 on the scores e[0:C], turned into the output signal g in place.
    cfg: C, label, train word offset, loss. Returns the number of violators (0: no
    update); counts an active step."""
    n = cfg[0]
    y = cfg[1]
    t = 4 * cfg[2]
    margin = _rd32(buf, t + 36)
    zy = e[y]
    nv = 0
    top = 0
    best = 0
    for c in range(n):
        zc = e[c]
        viol = c != y and (zc >= zy or (zy - zc) & 0xFFFFFFFF < margin)
        v = zc if viol else -0x80000000  # the top violator as numpy's argmax
        if c == 0 or v > best:
            best = v
            top = c
        if viol:
            nv += 1
            e[c] = -1
        else:
            e[c] = 0
    if nv:
        if cfg[3] == 0:
            for c in range(n):
                e[c] = 0
            e[top] = -1
            e[y] = 1
        else:
            e[y] = nv
        _wr32(buf, t + 20, (_rd32(buf, t + 20) + 1) & 0xFFFFFFFF)
    return nv


def _signal_py(buf, e, bits, cfg):
    """Step 4 for one layer l >= 1: e[below + j] = sum over rows i of p[i] * w[i][j]
    where the gate of unit j below holds, else 0 (p = e[cur + i], its sign below the
    output layer; w = +-1 from the sign plane). cfg: rows, n_in, words per row, weight
    word offset, top (1: output layer), cur, below, gate word offset in bits."""
    rows = cfg[0]
    n_in = cfg[1]
    nb = 4 * cfg[2]
    rb = 4 * cfg[3]
    top = cfg[4]
    cur = cfg[5]
    bel = cfg[6]
    gb = 4 * cfg[7]
    for j in range(bel, bel + n_in):
        e[j] = 0
    total = 0
    for i in range(rows):
        p = e[cur + i]
        if p:
            if not top:
                p = 1 if p > 0 else -1
            total += p
            j = bel
            for o in range(rb, rb + nb):  # count p at every 1 bit; a = 2 * count - total
                v = buf[o]
                jj = j
                while v:
                    if v & 1:
                        e[jj] += p
                    v >>= 1
                    jj += 1
                j += 8
        rb += nb
    for j in range(n_in):
        if (bits[gb + (j >> 3)] >> (j & 7)) & 1:
            e[bel + j] = 2 * e[bel + j] - total
        else:
            e[bel + j] = 0


def _update_py(buf, x, e, cfg):
    """Step 5 for one layer: each row j with e[cur + j] != 0 fires with probability
    num / 2^16 and moves its counters by one towards sign(e) times its input x (layer
    0: only the 1 bits of the highest input plane), saturating, and its threshold.
    cfg: rows, words per row, valid bits of the last word, first (layer 0), by
    magnitude, q, unit base, cur, threshold word offset, thr_shift (-1: none), clamp,
    kc (the step's key at e[kc]), nb, then the word offset of the layer in each plane
    (the sign plane first)."""
    rows = cfg[0]
    nbytes = 4 * cfg[1]
    last = cfg[2] & 0xFFFFFFFF
    first = cfg[3]
    bymag = cfg[4]
    q = cfg[5]
    base = cfg[6]
    cur = cfg[7]
    tsh = cfg[9]
    lim = cfg[10]
    k = e[cfg[11]] & 0xFFFFFFFF
    nb = cfg[12]
    for j in range(rows):
        ej = e[cur + j]
        if not ej:
            continue
        mag = (ej if ej > 0 else -ej) if bymag else 1
        if q <= 16:  # min(mag << (16 - q), 2^16), never wrapping
            num = 65536 if mag >= (1 << q) else mag << (16 - q)
        else:
            num = mag >> (q - 16)
        if (_lowbias((k + (base + j) * PHI) & 0xFFFFFFFF) >> 16) >= num:
            continue
        up = ej > 0
        ro = j * nbytes
        for b in range(nbytes):
            xv = x[b]
            if first:
                nx = 0
            else:
                nx = xv ^ 0xFF
                if b >= nbytes - 4:
                    nx &= (last >> (8 * (b - nbytes + 4))) & 0xFF
            if up:
                inc = xv
                dec = nx
            else:
                inc = nx
                dec = xv
            a = ro + b
            if inc:  # +1, a ripple carry from the lowest plane; saturate at 2^nb - 1
                c = inc
                p = nb - 1
                while p >= 0:
                    o = 4 * cfg[13 + p] + a
                    old = buf[o]
                    buf[o] = old ^ c
                    c &= old
                    if not c:
                        break
                    p -= 1
                if c:
                    for p in range(nb):
                        buf[4 * cfg[13 + p] + a] |= c
            if dec:  # -1, a ripple borrow; saturate at 0
                c = dec
                p = nb - 1
                while p >= 0:
                    o = 4 * cfg[13 + p] + a
                    old = buf[o]
                    buf[o] = old ^ c
                    c &= old ^ 0xFF
                    if not c:
                        break
                    p -= 1
                if c:
                    for p in range(nb):
                        buf[4 * cfg[13 + p] + a] &= c ^ 0xFF
        if tsh >= 0:
            o = 4 * (cfg[8] + j)
            t = _i32(buf, o)
            t = _wrap(t - (1 << tsh) if up else t + (1 << tsh))
            if t < -lim:
                t = -lim
            elif t > lim:
                t = lim
            _wr32(buf, o, t)


def _offsets_py(buf, e, cfg):
    """Step 6: offset[c] += g[c] << off_shift, clamped. cfg: C, off_shift, clamp,
    offset word offset (g at e[0:C])."""
    sh = cfg[1]
    lim = cfg[2]
    for c in range(cfg[0]):
        o = 4 * (cfg[3] + c)
        v = _wrap(_i32(buf, o) + (e[c] << sh))
        if v < -lim:
            v = -lim
        elif v > lim:
            v = lim
        _wr32(buf, o, v)


def _fill_py(buf, cfg):
    """One plane of a new block. cfg: plane word offset, plane words, mode (0: random
    words rand(k, base + w); 1: the complement of the plane at src), src, base, train
    word offset, block index (k = key(0xFFFFFFFF - block))."""
    dst = 4 * cfg[0]
    if cfg[2]:
        src = 4 * cfg[3]
        for i in range(4 * cfg[1]):
            buf[dst + i] = buf[src + i] ^ 0xFF
        return
    k = _lowbias(_rd32(buf, 4 * cfg[5] + 4) ^ _lowbias(0xFFFFFFFF - cfg[6]))
    base = cfg[4]
    for w in range(cfg[1]):
        _wr32(buf, dst + 4 * w, _lowbias((k + (base + w) * PHI) & 0xFFFFFFFF))


# --- the step ---------------------------------------------------------------------------
_KERNELS = {"python": {"count": _count_py, "hinge": _hinge_py, "signal": _signal_py, "update": _update_py,
                       "offsets": _offsets_py, "fill": _fill_py}}  # fmt: skip


# --- viper ------------------------------------------------------------------------------
# The same kernels on 32-bit words. Literals above 2^30 would be Python objects in viper
# code on a 32-bit port, so the generator's constants are built from halves; m32 is
# 2^32 - 1 on both word sizes, and every sum the twin wraps is masked with it (a 64-bit
# port's viper ints do not wrap at 32 bits); i32 loads are sign-extended explicitly
# (a ptr32 load is zero-extended on 64-bit ports). Each kernel takes at most 4 arguments.
_VIPER_SRC = (  # one function per string: each compiles in its own, smaller parse
    """
@micropython.viper
def _count_v(buf: ptr32, e: ptr32, cfg: ptr32) -> int:
    m32 = (uint(1) << 16 << 16) - 1
    c1 = (uint(0x7FEB) << 16) | uint(0x352D)
    c2 = (uint(0x846C) << 16) | uint(0xA68B)
    tw = cfg[0]
    steps = uint(buf[tw + 2])
    x = steps
    x ^= x >> 16
    x = (x * c1) & m32
    x ^= x >> 15
    x = (x * c2) & m32
    x ^= x >> 16
    x ^= uint(buf[tw + 1])
    x ^= x >> 16
    x = (x * c1) & m32
    x ^= x >> 15
    x = (x * c2) & m32
    x ^= x >> 16
    kc = cfg[3]
    e[kc] = x
    n = uint(buf[tw + 3])
    d = n >> uint(cfg[2])
    if d > uint(15):
        d = uint(15)
    e[kc + 1] = d
    n = (n + 1) & m32
    buf[tw + 2] = steps + 1
    buf[tw + 3] = n
    buf[tw + 4] = uint(buf[tw + 4]) + uint(cfg[1])
    ge = uint(buf[tw + 6])
    if ge != uint(0) and n == ge:
        return 1
    return 0
""",
    """
@micropython.viper
def _hinge_v(buf: ptr32, e: ptr32, cfg: ptr32) -> int:
    m32 = (uint(1) << 16 << 16) - 1
    sgn = int(1) << 31
    n = cfg[0]
    y = cfg[1]
    tw = cfg[2]
    margin = uint(buf[tw + 9])
    zy = (int(e[y]) ^ sgn) - sgn
    nv = 0
    top = 0
    best = 0
    for c in range(n):
        zc = (int(e[c]) ^ sgn) - sgn
        viol = 0
        if c != y:
            if zc >= zy or (uint(zy - zc) & m32) < margin:
                viol = 1
        v = 0 - sgn
        if viol:
            v = zc
        if c == 0 or v > best:
            best = v
            top = c
        if viol:
            nv += 1
            e[c] = -1
        else:
            e[c] = 0
    if nv:
        if cfg[3] == 0:
            for c in range(n):
                e[c] = 0
            e[top] = -1
            e[y] = 1
        else:
            e[y] = nv
        buf[tw + 5] = uint(buf[tw + 5]) + 1
    return nv
""",
    """
@micropython.viper
def _signal_v(buf: ptr32, e: ptr32, bits: ptr32, cfg: ptr32):
    sgn = int(1) << 31
    rows = cfg[0]
    n_in = cfg[1]
    nw = cfg[2]
    row = cfg[3]
    top = cfg[4]
    cur = cfg[5]
    bel = cfg[6]
    goff = cfg[7]
    for j in range(bel, bel + n_in):
        e[j] = 0
    total = 0
    for i in range(rows):
        p = (int(e[cur + i]) ^ sgn) - sgn
        if p != 0:
            if top == 0:
                if p > 0:
                    p = 1
                else:
                    p = -1
            total += p
            j0 = bel
            for c in range(row, row + nw):  # count p at every 1 bit; a = 2 * count - total
                w = uint(buf[c])
                j = j0
                while w != uint(0):
                    if w & 1:
                        e[j] = int(e[j]) + p
                    w >>= 1
                    j += 1
                j0 += 32
        row += nw
    for j in range(n_in):
        if (uint(bits[goff + (j >> 5)]) >> uint(j & 31)) & 1:
            e[bel + j] = 2 * ((int(e[bel + j]) ^ sgn) - sgn) - total
        else:
            e[bel + j] = 0
""",
    """
@micropython.viper
def _update_v(buf: ptr32, x: ptr32, e: ptr32, cfg: ptr32):
    m32 = (uint(1) << 16 << 16) - 1
    sgn = int(1) << 31
    c1 = (uint(0x7FEB) << 16) | uint(0x352D)
    c2 = (uint(0x846C) << 16) | uint(0xA68B)
    phi = (uint(0x9E37) << 16) | uint(0x79B9)
    rows = cfg[0]
    nw = cfg[1]
    last = uint(cfg[2]) & m32
    first = cfg[3]
    bymag = cfg[4]
    q = cfg[5]
    base = cfg[6]
    cur = cfg[7]
    toff = cfg[8]
    tsh = (cfg[9] ^ sgn) - sgn  # -1: no threshold update
    lim = cfg[10]
    k = uint(e[cfg[11]])
    nb = cfg[12]
    for j in range(rows):
        ej = (int(e[cur + j]) ^ sgn) - sgn
        if ej == 0:
            continue
        mag = uint(1)
        if bymag:
            if ej > 0:
                mag = uint(ej)
            else:
                mag = uint(0 - ej)
        if q <= 16:  # min(mag << (16 - q), 2^16), never wrapping
            if mag >= (uint(1) << uint(q)):
                num = uint(1) << 16
            else:
                num = mag << uint(16 - q)
        else:
            num = mag >> uint(q - 16)
        r = (k + uint(base + j) * phi) & m32
        r ^= r >> 16
        r = (r * c1) & m32
        r ^= r >> 15
        r = (r * c2) & m32
        r ^= r >> 16
        if (r >> 16) >= num:
            continue
        up = ej > 0
        at = j * nw
        for w in range(nw):
            xv = uint(x[w])
            nx = uint(0)
            if first == 0:
                nx = xv ^ m32
                if w == nw - 1:
                    nx &= last
            if up:
                c = xv
                dec = nx
            else:
                c = nx
                dec = xv
            if c != uint(0):  # +1, a ripple carry from the lowest plane; saturate at 2^nb - 1
                p = nb
                while p > 0:
                    p -= 1
                    a = cfg[13 + p] + at
                    old = uint(buf[a])
                    buf[a] = old ^ c
                    c &= old
                    if c == uint(0):
                        break
                if c != uint(0):
                    for p in range(nb):
                        a = cfg[13 + p] + at
                        buf[a] = uint(buf[a]) | c
            c = dec
            if c != uint(0):  # -1, a ripple borrow; saturate at 0
                p = nb
                while p > 0:
                    p -= 1
                    a = cfg[13 + p] + at
                    old = uint(buf[a])
                    buf[a] = old ^ c
                    c &= old ^ m32
                    if c == uint(0):
                        break
                if c != uint(0):
                    for p in range(nb):
                        a = cfg[13 + p] + at
                        buf[a] = uint(buf[a]) & (c ^ m32)
            at += 1
        if tsh >= 0:
            t = (int(buf[toff + j]) ^ sgn) - sgn
            if up:
                t -= int(1) << tsh
            else:
                t += int(1) << tsh
            t = (int(uint(t) & m32) ^ sgn) - sgn
            if t < 0 - lim:
                t = 0 - lim
            elif t > lim:
                t = lim
            buf[toff + j] = t
""",
    """
@micropython.viper
def _offsets_v(buf: ptr32, e: ptr32, cfg: ptr32):
    m32 = (uint(1) << 16 << 16) - 1
    sgn = int(1) << 31
    sh = uint(cfg[1])
    lim = cfg[2]
    off = cfg[3]
    for c in range(cfg[0]):
        v = (int((uint(buf[off + c]) + (uint(e[c]) << sh)) & m32) ^ sgn) - sgn
        if v < 0 - lim:
            v = 0 - lim
        elif v > lim:
            v = lim
        buf[off + c] = v
""",
    """
@micropython.viper
def _fill_v(buf: ptr32, cfg: ptr32):
    m32 = (uint(1) << 16 << 16) - 1
    c1 = (uint(0x7FEB) << 16) | uint(0x352D)
    c2 = (uint(0x846C) << 16) | uint(0xA68B)
    phi = (uint(0x9E37) << 16) | uint(0x79B9)
    dst = cfg[0]
    pw = cfg[1]
    if cfg[2]:
        src = cfg[3]
        for w in range(pw):
            buf[dst + w] = uint(buf[src + w]) ^ m32
        return
    x = (m32 - uint(cfg[6])) & m32
    x ^= x >> 16
    x = (x * c1) & m32
    x ^= x >> 15
    x = (x * c2) & m32
    x ^= x >> 16
    x ^= uint(buf[cfg[5] + 1])
    x ^= x >> 16
    x = (x * c1) & m32
    x ^= x >> 15
    x = (x * c2) & m32
    k = x ^ (x >> 16)
    base = uint(cfg[4])
    for w in range(pw):
        r = (k + (base + uint(w)) * phi) & m32
        r ^= r >> 16
        r = (r * c1) & m32
        r ^= r >> 15
        r = (r * c2) & m32
        buf[dst + w] = r ^ (r >> 16)
""",
)


def _kernels(engine):
    """The kernels of an engine; viper's compiled at the first viper model's first training
    call (a plain-engine model never pays for it)."""
    global _VIPER_SRC
    if engine == "viper" and "viper" not in _KERNELS:
        import gc

        g = {"micropython": micropython}
        for src in _VIPER_SRC:
            gc.collect()  # the compiler's parse tree needs room next to the model's bytes
            try:
                exec(src, g)
            except MemoryError:
                raise MemoryError("rbnn: no heap left to compile the training step's viper code "
                                  "(RBNN_ENGINE=python trains with less)") from None  # fmt: skip
        _KERNELS["viper"] = {name: g["_%s_v" % name] for name in ("count", "hinge", "signal", "update", "offsets",
                                                                  "fill")}  # fmt: skip
        _VIPER_SRC = None  # drop the source text once compiled
    return _KERNELS[engine]


class Trainer:
    """The training step on a rbnn_py.Model's buffer (made by Model._trainer, which
    refuses read-only buffers and version 1 files first)."""

    def __init__(self, m):
        self.m = m
        k = _kernels(m.engine)
        self._countf = k["count"]
        self._hingef = k["hinge"]
        self._signalf = k["signal"]
        self._updatef = k["update"]
        self._offsetsf = k["offsets"]
        self._fillf = k["fill"]
        info = m._info
        sizes = info["sizes"]
        # Scratch: the hidden bits and then the gate bits of every hidden layer
        # (bytearray), two signal rows as wide as the widest layer and then the step's
        # key and decay shift (array('i')).
        hoff = [0]
        for s in sizes[:-1]:
            hoff.append(hoff[-1] + _words(s))
        self._hoff = hoff
        self._hw = hoff[-1]
        self._bits = bytearray(8 * self._hw + 4)
        self._hv = [memoryview(self._bits)[4 * o :] for o in hoff[:-1]]
        wd = max(sizes)
        self._wd = wd
        self._kc = 2 * wd
        self._e = array("i", [0] * (2 * wd + 2))
        t = info["train_offset"]
        self._ccfg = array("i", [t >> 2, 0, 0, self._kc])
        self._hcfg = array("i", [m.n_classes, 0, t >> 2, 0])
        self.plans()

    def plans(self):
        """The step's plan and cfgs for the blocks as they are now: the frozen blocks
        as in inference, then the live block, whose hidden bits (and gate bits) stay in
        self._bits for the backward pass."""
        m = self.m
        info = m._info
        sizes = info["sizes"]
        inputs = info["inputs"]
        L = len(sizes)
        live = info["live"]
        tplan = [entry for i, entry in enumerate(m._plan) if i // L != live]
        self._gates = []
        self._ucfg = []
        self._scfg = [None]
        self._ocfg = None
        self._tplan = tplan
        if live is None:
            return
        src = m._x
        cfgs = m._layer_cfgs(live, self._hw)
        for layer, cfg in enumerate(cfgs):
            dst = None if layer == L - 1 else self._hv[layer]
            tplan.append((cfg, src, dst))
            if dst is not None:
                self._gates.append((cfg, _CFG_SHIFTS + cfg[4], info["train_offset"] + _T_GATE + 4 * layer))
            src = dst
        buf = m._buf
        entry = info["blocks_offset"] + BLOCK_ENTRY_BYTES * live
        planes = [buf[entry + 4 + i] for i in range(buf[entry + 1])]
        aw = info["arena_offset"] >> 2
        pw = info["plane_bytes"] >> 2
        unit = 0
        for layer in range(L):
            hidden = layer < L - 1
            cfg = cfgs[layer]
            nw = cfg[1]
            pm = _pad_mask(inputs[layer])
            # rows, words, valid bits of the last word, layer 0, by magnitude, q, unit
            # base, cur, thresholds, thr_shift, clamp, kc, nb, the planes (sign first)
            u = [sizes[layer], nw, pm - 0x100000000 if pm >> 31 else pm, 1 if layer == 0 else 0,
                 0 if 0 < layer < L - 1 else 1, 0, unit, 0, cfg[5], -1, _smax(info, layer) + 1 if hidden else 0,
                 self._kc, len(planes)]  # fmt: skip
            self._ucfg.append(array("i", u + [aw + p * pw + info["layer_off"][layer] for p in planes]))
            if layer:  # rows, n_in, words, weights, top, cur, below, gate bits
                self._scfg.append(array("i", [sizes[layer], inputs[layer], nw, cfg[0], 0 if hidden else 1, 0, 0,
                                              self._hw + self._hoff[layer - 1]]))  # fmt: skip
            unit += sizes[layer]
        half = (I32_MAX // info["max_blocks"] + 1) // 2
        self._ocfg = array("i", [sizes[-1], 0, half - 1, cfgs[-1][5] + sizes[-1]])

    # --- blocks ------------------------------------------------------------------------
    def _owned(self):
        buf = self.m._buf
        info = self.m._info
        own = bytearray(info["n_planes"])
        e = info["blocks_offset"]
        for _ in range(info["n_blocks"]):
            for i in range(buf[e + 1]):
                own[buf[e + 4 + i]] = 1
            e += BLOCK_ENTRY_BYTES
        return own

    def _room(self):
        """(free planes, bits, empty slots)."""
        info = self.m._info
        return (info["n_planes"] - sum(self._owned()), self.m._buf[info["train_offset"] + _T_BITS],
                info["max_blocks"] - info["n_blocks"])  # fmt: skip

    def _can_open(self):
        free, bits, slots = self._room()
        return self.m._info["live"] is None and free >= bits and slots > 0

    def _open(self):
        """Open block B = n_blocks on the `bits` lowest free planes (docs/TRAINING.md,
        Opening a block); the caller checked _can_open."""
        m = self.m
        buf = m._buf
        info = m._info
        t = info["train_offset"]
        nb = buf[t + _T_BITS]
        init = buf[t + _T_INIT_BITS]
        if init > nb - 1:
            init = nb - 1
        own = self._owned()
        planes = [p for p in range(info["n_planes"]) if not own[p]][:nb]
        blk = info["n_blocks"]
        aw = info["arena_offset"] >> 2
        pw = info["plane_bytes"] >> 2
        # plane word offset, words, mode, the sign plane, index base, train, block
        cfg = array("i", [0, pw, 0, aw + planes[0] * pw, 0, t >> 2, blk])
        for i, p in enumerate(planes):
            cfg[0] = aw + p * pw
            cfg[2] = 0 if i == 0 or i >= nb - init else 1  # random (magnitudes), or ~sign
            cfg[4] = i * pw
            self._fillf(buf, cfg)
        for layer, n_in in enumerate(info["inputs"]):  # row padding 0 in every plane
            nw = _words(n_in)
            pm = _pad_mask(n_in)
            if pm != U32_MAX:
                for p in planes:
                    o = info["arena_offset"] + p * info["plane_bytes"] + 4 * (info["layer_off"][layer] + nw - 1)
                    for _ in range(info["sizes"][layer]):
                        for i in range(4):
                            buf[o + i] &= (pm >> (8 * i)) & 0xFF
                        o += 4 * nw
        e = info["blocks_offset"] + BLOCK_ENTRY_BYTES * blk
        buf[e] = LIVE
        buf[e + 1] = nb
        buf[e + 2] = 0
        buf[e + 3] = 0
        for i in range(MAX_BITS):
            buf[e + 4 + i] = planes[i] if i < nb else UNUSED_PLANE
        par = info["params_offset"] + blk * info["block_params_bytes"]
        for s in info["sizes"][:-1]:  # thresholds 0, flips 0
            for i in range(4 * s + 4 * _words(s)):
                buf[par + i] = 0
            par += 4 * s + 4 * _words(s)
        C = m.n_classes
        for c in range(C):  # scale 2^scale_shift, offset 0
            _wr32(buf, par + 4 * c, 1 << buf[t + _T_SCALE_SHIFT])
            _wr32(buf, par + 4 * (C + c), 0)
        buf[14] = blk + 1  # header: n_blocks
        _wr32(buf, t + _T_BLOCK_STEPS, 0)
        if buf[t + _T_GROW_LEFT] > info["max_blocks"] - blk - 1:  # a slot fewer to grow into
            buf[t + _T_GROW_LEFT] = info["max_blocks"] - blk - 1
        info["n_blocks"] = blk + 1
        info["live"] = blk
        info["sign_planes"] = bytes(info["sign_planes"]) + bytes([planes[0]])
        m._plans()  # and self.plans()
        return blk

    def _freeze(self):
        """Freeze the live block: sign plane and parameters kept, other planes zeroed."""
        m = self.m
        buf = m._buf
        info = m._info
        e = info["blocks_offset"] + BLOCK_ENTRY_BYTES * info["live"]
        mv = memoryview(buf)
        pb = info["plane_bytes"]
        z = len(_ZERO)
        for i in range(1, buf[e + 1]):
            a = info["arena_offset"] + buf[e + 4 + i] * pb
            end = a + pb
            while a < end:
                n = end - a if end - a < z else z
                mv[a : a + n] = _ZERO if n == z else _ZERO[:n]
                a += n
            buf[e + 4 + i] = UNUSED_PLANE
        buf[e] = FROZEN
        buf[e + 1] = 1
        _wr32(buf, info["train_offset"] + _T_BLOCK_STEPS, 0)
        info["live"] = None
        m._plans()

    def _full(self, at):
        free, bits, slots = self._room()
        g = self.m._buf[self.m._info["train_offset"] + _T_GROW_LEFT]
        return ValueError("rbnn: E_FULL: %sno live block, and none may open (grow_left %d, %d free planes, bits %d, "
                          "%d empty slots)" % (_sample(at), g, free, bits, slots))  # fmt: skip

    # --- the step ------------------------------------------------------------------------
    def _step(self, label, at):
        """One step on the packed input in the model's scratch, label checked
        (docs/TRAINING.md, steps 0-7); returns the class predicted before the update."""
        m = self.m
        buf = m._buf
        info = m._info
        t = info["train_offset"]
        C = m.n_classes
        if info["live"] is None:  # 0. the schedule opens the next block
            if buf[t + _T_GROW_LEFT] == 0 or not self._can_open():
                raise self._full(at)
            buf[t + _T_GROW_LEFT] -= 1
            self._open()
        e = self._e
        for cfg, i, o in self._gates:  # the gates, from the file (< 2^24)
            cfg[i] = _i32(buf, o)
        m._zerof(e, C)  # 1. forward: the frozen blocks, then the live one
        dense = m._dense
        for cfg, src, dst in self._tplan:
            dense(buf, src, e if dst is None else dst, cfg)
        pred = m._argmaxf(e, C)
        cc = self._ccfg  # 2. counters
        cc[1] = 1 if pred == label else 0
        cc[2] = buf[t + _T_DECAY]
        due = self._countf(buf, e, cc)
        hc = self._hcfg  # 3. hinge
        hc[1] = label
        hc[3] = buf[t + _T_LOSS]
        if self._hingef(buf, e, hc):
            self._backward(buf, e, t)  # 4.-6.
        if due:  # 7. the schedule freezes the block
            self._freeze()
        return pred

    def _backward(self, buf, e, t):
        """Steps 4-6 from the output layer down: the signal of the layer below from this
        layer's weights before its update, so two signal rows suffice."""
        L = len(self._ucfg)
        dq = e[self._kc + 1]
        cur = 0
        bel = self._wd
        for layer in range(L - 1, -1, -1):
            if layer:
                sc = self._scfg[layer]
                sc[5] = cur
                sc[6] = bel
                self._signalf(buf, e, self._bits, sc)
            uc = self._ucfg[layer]
            uc[5] = buf[t + _T_LR + layer] + dq
            uc[7] = cur
            if layer < L - 1:
                uc[9] = (buf[t + _T_THR_SHIFT + layer] ^ 0x80) - 0x80
            self._updatef(buf, self.m._x if layer == 0 else self._hv[layer - 1], e, uc)
            if layer == L - 1:
                sh = (buf[t + _T_OFF_SHIFT] ^ 0x80) - 0x80
                if sh >= 0:
                    self._ocfg[1] = sh
                    self._offsetsf(buf, e, self._ocfg)
            cur, bel = bel, cur

    # --- the engine interface ------------------------------------------------------------
    def train(self, x, label):
        C = self.m.n_classes
        if not isinstance(label, int):  # (a float would stop the step half way); the C module's words
            raise TypeError("can't convert %s to int" % type(label).__name__)
        if not 0 <= label < C:  # before the input: the C core's order
            raise ValueError("rbnn: E_LABEL: label %d: expected 0..%d" % (label, C - 1))
        self.m._load_input(x, 0, len(x), -1)
        return self._step(label, -1)

    def train_batch(self, xs, labels, preds):
        m = self.m
        # labels and preds are buffers (u8 each), as the C module takes them
        if isinstance(labels, _SEQ) or (preds is not None and (isinstance(preds, _SEQ) or
                                                               not rbnn_py._writable(preds))):
            raise TypeError("object with buffer protocol required")
        n = len(labels)
        if preds is not None and len(preds) < n:
            raise ValueError("rbnn: preds has %d bytes, needs at least %d (one per label)" % (len(preds), n))
        if n == 0:
            return 0
        size = len(xs) // n
        if size * n != len(xs) or (size != m.n_inputs and size != m._input_bytes):
            raise ValueError("rbnn: xs has %d bytes for %d labels; expected %d raw features or %d bytes of packed "
                             "bits per sample" % (len(xs), n, m.n_inputs, m._input_bytes))  # fmt: skip
        hits = 0
        off = 0
        C = m.n_classes
        for i in range(n):
            y = labels[i]
            if not 0 <= y < C:
                raise ValueError("rbnn: E_LABEL: sample %d: label %d: expected 0..%d" % (i, y, C - 1))
            m._load_input(xs, off, size, i)
            p = self._step(y, i)
            if preds is not None:
                preds[i] = p
            if p == y:
                hits += 1
            off += size
        return hits

    def grow(self):
        if self.m._info["live"] is not None:
            raise ValueError("rbnn: E_FULL: a live block exists; freeze it before opening another")
        if not self._can_open():
            free, bits, slots = self._room()
            raise ValueError("rbnn: E_FULL: no room for a %d-bit block: %d free planes, %d empty block slots"
                             % (bits, free, slots))  # fmt: skip
        return self._open()

    def freeze(self):
        if self.m._info["live"] is None:
            raise ValueError("rbnn: E_FULL: no live block to freeze")
        self._freeze()

    def stats(self):
        buf = self.m._buf
        info = self.m._info
        t = info["train_offset"]
        free, bits, _ = self._room()
        return {
            "steps": _u32(buf, t + _T_STEPS),
            "hits": _u32(buf, t + _T_HITS),
            "active": _u32(buf, t + _T_ACTIVE),
            "block_steps": _u32(buf, t + _T_BLOCK_STEPS),
            "live": info["live"],
            "blocks": info["n_blocks"],
            "max_blocks": info["max_blocks"],
            "free_planes": free,
            "bits": bits,
            "grow_left": buf[t + _T_GROW_LEFT],
            "grow_every": _u32(buf, t + _T_GROW_EVERY),
            "stream_id": _u32(buf, t + _T_STREAM_ID),
            "stream_base": _u32(buf, t + _T_STREAM_BASE),
        }
