# ruff: noqa: E741  (l is the layer index, as in docs/TRAINING.md)
"""The training step written a second time, literally from docs/TRAINING.md: plain Python
integers, one word and one unit at a time, every value kept to 32 bits as C or viper
would keep it (an assertion fails where an int32 would have wrapped). Slow; the tests use
it to check that the numpy twin (rbnn.learn.step) and the written spec agree bit for bit.
Developer-only (written in the research behind issue 7, adapted to the file's training
state)."""
from __future__ import annotations

M32 = 0xFFFFFFFF


def lowbias32(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def key_of(seed: int, counter: int) -> int:
    return lowbias32((seed ^ lowbias32(counter)) & M32)


def rnd(key: int, index: int) -> int:
    return lowbias32((key + index * 0x9E3779B9) & M32)


def i32(v: int) -> int:
    """Two's complement wrap (C int32 arithmetic); asserts the value never needed wrapping."""
    w = ((v + 2**31) & M32) - 2**31
    assert w == v, f"int32 overflow: {v}"
    return v


def popcount(x: int) -> int:
    return bin(x & M32).count("1")


def words(n: int) -> int:
    return (n + 31) // 32


def last_mask(n: int) -> int:
    r = n % 32
    return M32 if r == 0 else (1 << r) - 1


class Engine:
    """Works on the word lists of a model: arena[plane][word], thresholds, offsets..."""

    def __init__(self, model):
        self.m = model
        self.tr = model.state()
        self.hp = self.tr
        kept = [n for n in range(7, -1, -1) if model.plane_mask >> n & 1]
        self.shifts = [n - kept[-1] for n in kept]
        self.ins = [model.n_inputs] + list(model.sizes[:-1])
        self.offs = model.layer_word_offsets()

    # arena access: word w of row j of layer l in plane p
    def word(self, p, l, j, w):
        return int(self.m.arena[p, self.offs[l] + j * words(self.ins[l]) + w])

    def set_word(self, p, l, j, w, v):
        self.m.arena[p, self.offs[l] + j * words(self.ins[l]) + w] = v & M32

    def step(self, xbits, label: int, frozen) -> int:
        m, hp, tr = self.m, self.hp, self.tr
        blk = [b for b in m.blocks if b.state == 1][0]
        P = blk.planes
        L = m.n_layers
        C = m.n_classes
        # 1. forward
        s_all, h_all, gate_all = [], [], []
        a = None
        for l in range(L):
            n_in = self.ins[l]
            s = []
            for j in range(m.sizes[l]):
                if l == 0:
                    acc = 0
                    for k, sh in enumerate(self.shifts):
                        pc = sum(popcount(self.word(P[0], 0, j, w) ^ int(xbits[k][w])) for w in range(words(n_in)))
                        acc += (n_in - 2 * pc) << sh
                else:
                    pc = sum(popcount(self.word(P[0], l, j, w) ^ a[w]) for w in range(words(n_in)))
                    acc = n_in - 2 * pc
                s.append(i32(acc))
            s_all.append(s)
            if l < L - 1:
                t = [int(v) for v in blk.thresholds[l]]
                hb = [1 if s[j] >= t[j] else 0 for j in range(len(s))]
                gate_all.append([1 if abs(i32(s[j] - t[j])) <= hp.gate[l] else 0 for j in range(len(s))])
                a = [0] * words(len(s))
                for j, bit in enumerate(hb):
                    a[j // 32] |= bit << (j % 32)
                h_all.append(a)
        z = [i32(int(frozen[k]) + int(blk.scale[k]) * s_all[-1][k] + int(blk.offset[k])) for k in range(C)]
        pred = max(range(C), key=lambda k: (z[k], -k))
        key = key_of(tr.seed, tr.steps)
        n = tr.block_steps
        tr.steps = (tr.steps + 1) & M32
        tr.block_steps = (tr.block_steps + 1) & M32
        tr.hits += pred == label
        # 2. hinge
        def violates(k):
            return z[k] >= z[label] or ((z[label] - z[k]) & M32) < hp.margin

        g = [0] * C
        if hp.loss == 0:  # top violator
            top = -1
            for k in range(C):
                if k != label and (top < 0 or z[k] > z[top]):
                    top = k
            if not violates(top):
                return pred
            g[top] = -1
            g[label] = 1
        else:  # every violator
            nv = 0
            for k in range(C):
                if k != label and violates(k):
                    g[k] = -1
                    nv += 1
            if nv == 0:
                return pred
            g[label] = nv
        tr.active += 1
        # 3. backward
        e = [None] * L
        e[L - 1] = g
        for l in range(L - 1, 0, -1):
            e_below = []
            for i in range(self.ins[l]):
                acc = 0
                for j in range(m.sizes[l]):
                    if e[l][j] == 0:
                        continue
                    p = e[l][j] if l == L - 1 else (1 if e[l][j] > 0 else -1)
                    bit = self.word(P[0], l, j, i // 32) >> (i % 32) & 1
                    acc += p if bit else -p
                e_below.append(i32(acc) if gate_all[l - 1][i] else 0)
            e[l - 1] = e_below
        # 4. updates
        base = 0
        b = len(P)
        for l in range(L):
            kshift = hp.lr[l] + min(15, n >> hp.decay)
            n_in = self.ins[l]
            W = words(n_in)
            for j in range(m.sizes[l]):
                ej = e[l][j]
                if ej == 0:
                    continue
                mag = abs(ej) if (l == L - 1 or l == 0) else 1
                num = (65536 if mag >= (1 << kshift) else mag << (16 - kshift)) if kshift <= 16 else mag >> (kshift - 16)
                r = rnd(key, base + j)
                if (r >> 16) >= num:
                    continue
                for w in range(W):
                    valid = last_mask(n_in) if w == W - 1 else M32
                    x = int(xbits[0][w]) if l == 0 else h_all[l - 1][w]
                    pos = x
                    neg = 0 if l == 0 else (~x & valid)
                    inc, dec = (pos, neg) if ej > 0 else (neg, pos)
                    # ripple increment from the least significant plane P[b-1]
                    c = inc
                    for q in range(b - 1, -1, -1):
                        if not c:
                            break
                        old = self.word(P[q], l, j, w)
                        self.set_word(P[q], l, j, w, old ^ c)
                        c &= old
                    if c:
                        for q in range(b):
                            self.set_word(P[q], l, j, w, self.word(P[q], l, j, w) | c)
                    c = dec
                    for q in range(b - 1, -1, -1):
                        if not c:
                            break
                        old = self.word(P[q], l, j, w)
                        self.set_word(P[q], l, j, w, old ^ c)
                        c &= ~old & M32
                    if c:
                        for q in range(b):
                            self.set_word(P[q], l, j, w, self.word(P[q], l, j, w) & ~c & M32)
                if l < L - 1 and hp.thr_shift[l] >= 0:
                    smax = n_in * sum(1 << s for s in self.shifts) if l == 0 else n_in
                    t = int(blk.thresholds[l][j]) + (-(1 << hp.thr_shift[l]) if ej > 0 else (1 << hp.thr_shift[l]))
                    blk.thresholds[l][j] = max(-(smax + 1), min(smax + 1, t))
            base += m.sizes[l]
        # 5. offsets
        if hp.off_shift >= 0:
            for k in range(C):
                v = int(blk.offset[k]) + g[k] * (1 << hp.off_shift)
                blk.offset[k] = max(-(m.half - 1), min(m.half - 1, v))
        return pred


def new_block(m) -> None:
    """Open a live block as docs/TRAINING.md says (literal form)."""
    import numpy as np

    from rbnn.format.model import Block

    hp = m.state()
    bits = hp.bits
    used = {p for blk in m.blocks for p in blk.planes}
    free = [p for p in range(m.n_planes) if p not in used]
    planes = free[:bits]
    idx = len(m.blocks)
    key = key_of(hp.seed, (0xFFFFFFFF - idx) & M32)
    pw = m.plane_words
    ib = min(hp.init_bits, bits - 1)
    ins = [m.n_inputs] + list(m.sizes[:-1])
    offs = m.layer_word_offsets()
    for w in range(pw):
        sign = rnd(key, w)
        m.arena[planes[0], w] = sign
        for i in range(1, bits):
            m.arena[planes[i], w] = rnd(key, i * pw + w) if i >= bits - ib else (~sign & M32)
    for l, n_in in enumerate(ins):
        W = words(n_in)
        for j in range(m.sizes[l]):
            for p in planes:
                m.arena[p, offs[l] + j * W + W - 1] &= last_mask(n_in)
    nh = m.n_layers - 1
    m.blocks.append(Block(1, list(planes), [np.zeros(s, np.int32) for s in m.sizes[:nh]],
                          [np.zeros(s, bool) for s in m.sizes[:nh]],
                          np.full(m.n_classes, 1 << hp.scale_shift, np.int32), np.zeros(m.n_classes, np.int32)))
    hp.block_steps = 0
    hp.grow_left = min(hp.grow_left, m.capacity - len(m.blocks))


def freeze(m) -> None:
    blk = [b for b in m.blocks if b.state == 1][0]
    for p in blk.planes[1:]:
        m.arena[p, :] = 0
    blk.planes = blk.planes[:1]
    blk.state = 0
    m.state().block_steps = 0


def train(m, xbits, label: int, frozen_of) -> int:
    """docs/TRAINING.md's whole step, schedule included: frozen_of(m) gives the frozen
    blocks' scores for this sample."""
    st = m.state()
    if not any(b.state == 1 for b in m.blocks):
        st.grow_left -= 1
        new_block(m)
    pred = Engine(m).step(xbits, label, frozen_of(m))
    if st.grow_every and st.block_steps == st.grow_every:
        freeze(m)
    return pred
