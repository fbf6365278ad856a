# rbnn_pyconv: version 3 in the pure-MicroPython engine (docs/FORMAT.md, Version 3): the
# checks of its layer table and input shape, and the conv layers. rbnn_py imports it at
# the first version 3 file, so that a board that only runs dense models keeps its heap
# (the viper kernel is compiled at the first model with a conv layer).
#
# One call runs one conv layer in eBNN order: for each output position, the patch of
# each input plane is gathered from the (y, x, c) bit map (a padded position stays 0,
# that is -1), then for each output channel the XOR-popcount sum and its bit at
# (y, x, j). A pooled position ORs the bits of its four positions, which is the bit of
# one compare of their max (flip 0) or min (flip 1) (docs/FORMAT.md, Pool) with each
# patch gathered once; a channel whose bit is 1 already skips its remaining positions
# (about half the popcounts of a pooled layer). No unpooled map, no integer row.
#
# cfg (rbnn_py.Model._layer_cfgs): 0 weight word offset, 1 words per row segment, 2 N
# (k*k*C), 3 output channels, 4 input planes (K or 1), 5 params word offset, 6 = 3 (a
# conv layer), 7 segment step in words (input mode 1), 8..16 H, W, C, kernel, pad, pool
# (0/1), words of one input plane (layer 0), H1, W1 (before the pool); 17.. the shift of
# each input plane. pat: the patch scratch (4 * K * words(N) bytes).

import struct

from rbnn_py import _POP, CONV, DENSE, MAX_DIM, MAX_KERNEL, POOL_2X2, _fail, _i32

try:
    import micropython
except ImportError:  # CPython: only the plain engine
    micropython = None


def geometry(buf, hb, n_inputs, sizes, segs):
    """Version 3 (pack._check_layers_v3, _check_shapes_v3): each layer's fields, the order
    of kinds, the input shape, the maps chaining. Returns per layer (kind, kernel, pad,
    pool, H, W, C, H1, W1, in[l], segments, output bits); segs: layer 0's segments."""
    L = len(sizes)
    ent = []
    for i in range(L):
        at = hb + 8 * i
        kind, k, pad, pool = buf[at + 2], buf[at + 3], buf[at + 4], buf[at + 5]
        f = "layer[%d]." % i
        if kind > CONV:
            _fail("E_HEADER", f + "kind", at + 2, "0 (dense) or 1 (conv)", kind)
        conv = kind == CONV
        if conv and not (k & 1 and k <= MAX_KERNEL):
            _fail("E_HEADER", f + "kernel", at + 3, "odd, 1..%d (conv)" % MAX_KERNEL, k)
        if not conv and k:
            _fail("E_HEADER", f + "kernel", at + 3, "0 (dense)", k)
        if conv and pad > k // 2:
            _fail("E_HEADER", f + "pad", at + 4, "0..%d (kernel / 2)" % (k // 2), pad)
        if not conv and pad:
            _fail("E_HEADER", f + "pad", at + 4, "0 (dense)", pad)
        if conv and pool and pool != POOL_2X2:
            _fail("E_HEADER", f + "pool", at + 5, "0 or 2 (conv)", pool)
        if not conv and pool:
            _fail("E_HEADER", f + "pool", at + 5, "0 (dense)", pool)
        r = buf[at + 6] | buf[at + 7] << 8
        if r:
            _fail("E_FLAGS", f + "reserved", at + 6, 0, r)
        ent.append((kind, k, pad, pool))
    for i in range(1, L):
        if ent[i][0] == CONV and ent[i - 1][0] == DENSE:
            _fail("E_HEADER", "layer[%d].kind" % i, hb + 8 * i + 2, "0 (no conv layer after a dense layer)", CONV)
    if ent[-1][0] != DENSE:
        _fail("E_HEADER", "layer[%d].kind" % (L - 1), hb + 8 * L - 6, "0 (the output layer is dense)", ent[-1][0])
    shape = struct.unpack_from("<HHH", buf, 40)
    conv = ent[0][0] == CONV
    for n in range(3):
        v = shape[n]
        if bool(v) != conv:  # all 0 without conv layers; else each >= 1
            _fail("E_HEADER", ("in_h", "in_w", "in_c")[n], 40 + 2 * n,
                  "1..%d (a conv layer)" % MAX_DIM if conv else "0 (no conv layer)", v)
    H, W, C = shape
    # H * W * C == n_inputs, without a product beyond a 32-bit port's small ints
    if conv and (n_inputs % H or n_inputs // H % W or n_inputs // H // W != C):
        _fail("E_HEADER", "in_h x in_w x in_c", 40, "%d (n_inputs)" % n_inputs, "%dx%dx%d" % shape)
    geo = []
    bits = n_inputs
    for i in range(L):
        kind, k, pad, pool = ent[i]
        sg = segs if i == 0 else 1
        if kind == DENSE:
            geo.append((DENSE, 0, 0, 0, 0, 0, 0, 0, 0, bits, sg, sizes[i]))
            bits = sizes[i]
            continue
        at = hb + 8 * i
        h1 = H + 2 * pad - k + 1
        w1 = W + 2 * pad - k + 1
        if h1 < 1 or w1 < 1:
            _fail("E_HEADER", "layer[%d].kernel" % i, at + 3,
                  "<= %d (the %dx%d input map with its pad)" % (min(H, W) + 2 * pad, H, W), k)
        if pool and (h1 & 1 or w1 & 1):
            _fail("E_HEADER", "layer[%d].pool" % i, at + 5, "0 (the %dx%d conv output is not even)" % (h1, w1), pool)
        d = 2 if pool else 1
        geo.append((CONV, k, pad, pool, H, W, C, h1, w1, k * k * C, sg, (h1 // d) * (w1 // d) * sizes[i]))
        H, W, C = h1 // d, w1 // d, sizes[i]
        bits = H * W * C
    return geo


def _conv_py(buf, a, y, cfg, pat):
    """One conv layer (cfg: as this module's header says) on bytes: a the input map (or
    the packed input), y the output map, pat the patch scratch; as _conv_v, 8 bits at a
    time."""
    pop = _POP
    nb = 4 * cfg[1]
    n = cfg[2]
    co = cfg[3]
    nk = cfg[4]
    pb = 4 * cfg[5]
    ws = 4 * cfg[7]
    rb = nb + (nk - 1) * ws
    hh = cfg[8]  # one by one: a 6-tuple assignment would allocate a tuple per call
    ww = cfg[9]
    cc = cfg[10]
    k = cfg[11]
    pd = cfg[12]
    pool = cfg[13]
    ist = cfg[14] << 5
    ho = cfg[15] >> pool
    wo = cfg[16] >> pool
    kc = k * cc
    for i in range(4 * ((ho * wo * co + 31) >> 5)):
        y[i] = 0
    ob = 0
    for oy in range(ho):
        for ox in range(wo):
            for sub in range(1 << (pool + pool)):
                yy = (oy << pool) + (sub >> 1)
                x0 = (ox << pool) + (sub & 1) - pd
                lo = x0 if x0 > 0 else 0
                hi = x0 + k if x0 + k < ww else ww
                for i in range(nk * nb):
                    pat[i] = 0
                for q in range(nk):
                    for ky in range(k):
                        iy = yy + ky - pd
                        if iy < 0 or iy >= hh or lo >= hi:
                            continue  # a padded row: bits 0 (-1)
                        s = (iy * ww + lo) * cc + q * ist
                        d = ky * kc + (lo - x0) * cc + q * 8 * nb
                        c = (hi - lo) * cc
                        while c > 0:
                            sh = s & 7
                            v = a[s >> 3] >> sh
                            t = 8 - (d & 7)
                            if t > c:
                                t = c
                            if sh + t > 8:
                                v |= a[(s >> 3) + 1] << (8 - sh)
                            pat[d >> 3] |= (v & ((1 << t) - 1)) << (d & 7)
                            s += t
                            d += t
                            c -= t
                wb = 4 * cfg[0]
                for j in range(co):
                    o = ob + j
                    if sub and (y[o >> 3] >> (o & 7)) & 1:
                        wb += rb  # the pooled bit is 1 already: the OR is decided
                        continue
                    acc = 0
                    for q in range(nk):
                        wk = wb + q * ws
                        e = q * nb - wk
                        pc = 0
                        for i in range(wk, wk + nb):
                            pc += pop[buf[i] ^ pat[i + e]]
                        acc += (n - 2 * pc) << cfg[17 + q]
                    wb += rb
                    f = (buf[pb + 4 * co + (j >> 3)] >> (j & 7)) & 1
                    if acc >= _i32(buf, pb + 4 * j):
                        f ^= 1
                    if f:
                        y[o >> 3] |= 1 << (o & 7)
            ob += co


_VIPER_SRC = """
@micropython.viper
def _conv_v(buf: ptr32, a: ptr32, y: ptr32, cfg: ptr32, pat: ptr32):
    # One conv layer in eBNN order (cfg: the module's header): per output position, the
    # patch of each input plane gathered from the (y, x, c) bit map a (a padded position
    # stays 0, that is -1), then per output channel the XOR-popcount sum and its bit.
    # A pooled position ORs the bits of its four positions: the same bit as one compare
    # of their max (flip 0) or min (flip 1), with the patch gathered once per position.
    prm = ptr32(uint(buf) + (uint(cfg[5]) << 2))
    w0 = uint(buf) + (uint(cfg[0]) << 2)
    nw = cfg[1]
    n = cfg[2]
    co = cfg[3]
    nk = cfg[4]
    ws = uint(cfg[7]) << 2
    rb = (uint(nw) << 2) + uint(nk - 1) * ws
    hh = cfg[8]
    ww = cfg[9]
    cc = cfg[10]
    k = cfg[11]
    pd = cfg[12]
    pool = cfg[13]
    ist = cfg[14] << 5
    ho = cfg[15] >> pool
    wo = cfg[16] >> pool
    kc = k * cc
    m2 = uint(0x33333333)
    m1 = m2 ^ (m2 << 1)
    m4 = uint(0x0F0F0F0F)
    m32 = (uint(1) << 16 << 16) - 1
    sgn = int(1) << 31
    for i in range((ho * wo * co + 31) >> 5):
        y[i] = 0
    ob = 0
    for oy in range(ho):
        for ox in range(wo):
            for sub in range(1 << (pool + pool)):
                yy = (oy << pool) + (sub >> 1)
                x0 = (ox << pool) + (sub & 1) - pd
                lo = x0
                if lo < 0:
                    lo = 0
                hi = x0 + k
                if hi > ww:
                    hi = ww
                for i in range(nk * nw):
                    pat[i] = 0
                for q in range(nk):
                    for ky in range(k):
                        iy = yy + ky - pd
                        if iy < 0 or iy >= hh or lo >= hi:
                            continue
                        s = (iy * ww + lo) * cc + q * ist
                        d = ky * kc + (lo - x0) * cc + ((q * nw) << 5)
                        c = (hi - lo) * cc
                        while c > 0:
                            sh = s & 31
                            v = uint(a[s >> 5]) >> uint(sh)
                            t = 32 - (d & 31)
                            if t > c:
                                t = c
                            if sh + t > 32:
                                v |= uint(a[(s >> 5) + 1]) << uint(32 - sh)
                            if t < 32:
                                v &= (uint(1) << uint(t)) - 1
                            pat[d >> 5] = uint(pat[d >> 5]) | (v << uint(d & 31))
                            s += t
                            d += t
                            c -= t
                row = w0
                for j in range(co):
                    o = ob + j
                    if sub != 0:
                        if (uint(y[o >> 5]) >> uint(o & 31)) & 1:
                            row += rb  # the pooled bit is 1 already: the OR is decided
                            continue
                    acc = 0
                    for q in range(nk):
                        wp = ptr32(row + uint(q) * ws)
                        pp = ptr32(uint(pat) + (uint(q * nw) << 2))
                        pc = 0
                        for i in range(nw):
                            u = uint(wp[i]) ^ uint(pp[i])
                            u = u - ((u >> 1) & m1)
                            u = (u & m2) + ((u >> 2) & m2)
                            u = (u + (u >> 4)) & m4
                            pc += int(((u * uint(0x01010101)) & m32) >> 24)
                        acc += (n - 2 * pc) << cfg[17 + q]
                    row += rb
                    f = (uint(prm[co + (j >> 5)]) >> uint(j & 31)) & 1
                    if acc >= (int(prm[j]) ^ sgn) - sgn:
                        f ^= 1
                    if f:
                        y[o >> 5] = uint(y[o >> 5]) | (uint(1) << uint(o & 31))
            ob += co
"""


def kernel(engine):
    """The conv kernel of an rbnn_py engine ("viper" or "python"). The plain kernel reads
    the same buffers, so a port whose viper cannot compile this one (a limit of its native
    emitter) runs conv layers in plain code, with the same results."""
    if engine == "viper":
        global _v, _VIPER_SRC
        if _v is None:
            g = {"micropython": micropython}
            try:
                exec(_VIPER_SRC, g)
                _v = g["_conv_v"]
            except Exception:  # SyntaxError / ViperTypeError / NotImplementedError / MemoryError
                _v = _conv_py
            _VIPER_SRC = None  # the source text is not needed once compiled
        return _v
    return _conv_py


_v = None
