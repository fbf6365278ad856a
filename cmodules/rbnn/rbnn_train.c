/*
 * rbnn training: the integer step of docs/TRAINING.md (rule 1), in place in a version 2
 * file. The numpy twin (host/rbnn/learn/step.py) defines every result; this code must
 * leave the same bytes after any sequence of steps, new blocks and freezes.
 *
 * The style of rbnn_core.c: C99, no malloc, no libc, no writable globals, no 64-bit
 * arithmetic and no division (a Cortex-M0+ has neither), caller-owned buffers. Every
 * sum that the twin computes in int32 numpy arrays (which wrap) is computed here in
 * uint32 and converted back without overflow (to_i32), so that a file with extreme
 * values gives the twin's bytes and never undefined behaviour; in a file the step
 * itself made, none of them wraps (docs/TRAINING.md, the bounds of half the budget).
 */
#include "rbnn_core.h"
#include "rbnn_internal.h"

/* Byte offsets of the training state's fields (docs/FORMAT.md, Training state); equal
 * to rbnn.format.trainstate.OFFSETS (tests/test_ctrain.py). */
enum {
    T_SEED = 4,
    T_STEPS = 8,
    T_BLOCK_STEPS = 12,
    T_HITS = 16,
    T_ACTIVE = 20,
    T_GROW_EVERY = 24,
    T_MARGIN = 36,
    T_BITS = 40,
    T_GROW_LEFT = 41,
    T_SCALE_SHIFT = 42,
    T_DECAY = 43,
    T_INIT_BITS = 44,
    T_LOSS = 45,
    T_OFF_SHIFT = 46,
    T_LR = 48,
    T_THR_SHIFT = 56,
    T_GATE = 64
};

/* The constants of the rule (host/rbnn/learn/step.py and prng.py; tests/test_ctrain.py
 * holds them equal). */
#define RBNN_PROB_BITS 16u          /* precision of a row's update probability */
#define RBNN_MAX_DECAY 15u          /* the decay adds at most 15 to a layer's shift */
#define RBNN_NEW_BLOCK_KEY 0xFFFFFFFFu /* block B draws under key(seed, this - B) */
#define RBNN_PHI 0x9E3779B9u        /* Weyl increment between the indices of one key */
/* Column counters of the backward pass: a count is at most the sum of |p| over the
 * layer's rows, below 2^17 (65535 rows of +-1, or 2 * 65534 at the output, loss 1). */
#define COUNT_BITS 17u
#define NO_LIVE 0xFFu

/* ---- small helpers --------------------------------------------------------------- */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
           | ((uint32_t)p[3] << 24);
}

static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The int32 with the bits of u (two's complement), without implementation-defined
 * conversion. */
static int32_t to_i32(uint32_t u) {
    return (u >> 31) ? -(int32_t)(~u) - 1 : (int32_t)u;
}

static int32_t clamp(int32_t v, int32_t lim) {
    return v < -lim ? -lim : v > lim ? lim : v;
}

/* Wellons' lowbias32 and the counter-based generator of docs/TRAINING.md: two 32-bit
 * multiplies (one cycle each on the RP2040's Cortex-M0+). */
static uint32_t lowbias32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static uint32_t key_of(uint32_t seed, uint32_t counter) {
    return lowbias32(seed ^ lowbias32(counter));
}

static uint32_t rand_at(uint32_t k, uint32_t index) {
    return lowbias32(k + index * RBNN_PHI);
}

static uint32_t *arena_of(const rbnn_model_t *m, uint8_t *b) {
    return (uint32_t *)(void *)(b + m->arena_offset);
}

static uint8_t *entry_of(const rbnn_model_t *m, uint8_t *b, uint32_t blk) {
    return b + m->blocks_offset + RBNN_BLOCK_ENTRY_BYTES * blk;
}

static uint8_t *params_of(const rbnn_model_t *m, uint8_t *b, uint32_t blk) {
    return b + m->params_offset + blk * m->block_params_bytes;
}

/* Where layer l starts: its word offset inside a plane, its first unit's index (the
 * generator's row index base[l]), the byte offset of its parameters in a slot and the
 * word offset of its bits in the scratch's hidden-bit buffer. */
typedef struct {
    uint32_t word, unit, param, hidden;
} layer_at_t;

static layer_at_t layer_at(const rbnn_model_t *m, uint32_t l) {
    layer_at_t a = {0, 0, 0, 0};
    uint32_t t, n_in = m->n_inputs;
    for (t = 0; t < l; t++) {
        uint32_t s = m->sizes[t];
        a.word += s * words_of(n_in);
        a.unit += s;
        a.param += 4u * s + 4u * words_of(s);
        a.hidden += words_of(s);
        n_in = s;
    }
    return a;
}

static uint32_t layer_inputs(const rbnn_model_t *m, uint32_t l) {
    return l == 0u ? m->n_inputs : m->sizes[l - 1u];
}

/* Words of all hidden layers' bit vectors, and the widest layer. */
static uint32_t hidden_words(const rbnn_model_t *m) {
    return layer_at(m, m->n_layers - 1u).hidden;
}

static uint32_t widest(const rbnn_model_t *m) {
    uint32_t l, w = 0;
    for (l = 0; l < m->n_layers; l++) {
        if (m->sizes[l] > w) {
            w = m->sizes[l];
        }
    }
    return w;
}

uint32_t rbnn_train_scratch_bytes(const rbnn_model_t *m) {
    if (m == NULL || m->buf == NULL) {
        return 0;
    }
    return 4u * (2u * hidden_words(m) + 2u * widest(m));
}

/* ---- blocks ---------------------------------------------------------------------- */

/* The planes no block owns, as a bit set over 0..255; returns how many. */
static uint32_t free_planes(const rbnn_model_t *m, uint8_t *b, uint32_t owned[8]) {
    uint32_t i, blk, n_free = m->n_planes;
    for (i = 0; i < 8u; i++) {
        owned[i] = 0;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        const uint8_t *e = entry_of(m, b, blk);
        for (i = 0; i < e[1]; i++) {
            owned[e[4 + i] >> 5] |= 1u << (e[4 + i] & 31u);
            n_free--;
        }
    }
    return n_free;
}

/* A version 3 model may not open a block (docs/FORMAT.md, Training a version 3 model). */
static int can_open(const rbnn_model_t *m, uint8_t *b) {
    uint32_t owned[8];
    return m->version < RBNN_VERSION_V3 && m->live == NO_LIVE && m->n_blocks < m->max_blocks
           && free_planes(m, b, owned) >= b[m->train_offset + T_BITS];
}

/* Open block B = n_blocks on the `bits` lowest free planes (docs/TRAINING.md, Opening a
 * block); the caller checked can_open. */
static uint32_t open_block(rbnn_model_t *m, uint8_t *b) {
    uint8_t *ts = b + m->train_offset;
    uint32_t nb = ts[T_BITS], init = ts[T_INIT_BITS], blk = m->n_blocks;
    uint32_t pw = m->plane_words, k = key_of(rd32(ts + T_SEED), RBNN_NEW_BLOCK_KEY - blk);
    uint32_t *arena = arena_of(m, b), *sign = NULL;
    uint8_t *e = entry_of(m, b, blk), *par = params_of(m, b, blk);
    uint32_t owned[8], p, i = 0, w, l, r;
    if (init > nb - 1u) {
        init = nb - 1u;
    }
    free_planes(m, b, owned);
    e[0] = RBNN_LIVE;
    e[1] = (uint8_t)nb;
    e[2] = e[3] = 0;
    for (p = 0; p < RBNN_MAX_BITS; p++) {
        e[4 + p] = RBNN_UNUSED_PLANE;
    }
    for (p = 0; i < nb && p < m->n_planes; p++) { /* ascending: the lowest free one signs */
        uint32_t *plane = arena + p * pw;
        if (owned[p >> 5] >> (p & 31u) & 1u) {
            continue;
        }
        e[4 + i] = (uint8_t)p;
        if (i == 0u) {
            sign = plane;
            for (w = 0; w < pw; w++) {
                sign[w] = rand_at(k, w);
            }
        } else if (i >= nb - init) { /* the lowest init_bits planes: random magnitudes */
            for (w = 0; w < pw; w++) {
                plane[w] = rand_at(k, i * pw + w);
            }
        } else { /* every counter starts within 2^init_bits steps of its sign change */
            for (w = 0; w < pw; w++) {
                plane[w] = ~sign[w];
            }
        }
        i++;
    }
    for (i = 0; i < nb; i++) { /* padding bits 0 in every row of every plane */
        uint32_t *row = arena + e[4 + i] * pw, n_in = m->n_inputs;
        for (l = 0; l < m->n_layers; l++) {
            uint32_t nw = words_of(n_in), last = pad_mask(n_in);
            for (r = 0; r < m->sizes[l]; r++, row += nw) {
                row[nw - 1u] &= last;
            }
            n_in = m->sizes[l];
        }
    }
    for (l = 0; l + 1u < m->n_layers; l++) { /* thresholds 0, flips 0 */
        uint32_t s = m->sizes[l];
        for (i = 0; i < 4u * s + 4u * words_of(s); i++) {
            *par++ = 0;
        }
    }
    for (i = 0; i < m->sizes[m->n_layers - 1u]; i++, par += 4) {
        wr32(par, 1u << ts[T_SCALE_SHIFT]);
        wr32(par + 4u * m->sizes[m->n_layers - 1u], 0);
    }
    b[14] = (uint8_t)(blk + 1u); /* header: n_blocks */
    wr32(ts + T_BLOCK_STEPS, 0);
    if (ts[T_GROW_LEFT] > m->max_blocks - (blk + 1u)) { /* a slot fewer to grow into */
        ts[T_GROW_LEFT] = (uint8_t)(m->max_blocks - (blk + 1u));
    }
    m->n_blocks = (uint8_t)(blk + 1u);
    m->live = (uint8_t)blk;
    return blk;
}

/* Freeze the live block: sign plane and parameters kept, other planes zeroed and freed. */
static void freeze_live(rbnn_model_t *m, uint8_t *b) {
    uint8_t *e = entry_of(m, b, m->live);
    uint32_t *arena = arena_of(m, b);
    uint32_t i, w;
    for (i = 1; i < e[1]; i++) {
        uint32_t *plane = arena + e[4 + i] * m->plane_words;
        for (w = 0; w < m->plane_words; w++) {
            plane[w] = 0;
        }
        e[4 + i] = RBNN_UNUSED_PLANE;
    }
    e[0] = RBNN_FROZEN;
    e[1] = 1;
    wr32(b + m->train_offset + T_BLOCK_STEPS, 0);
    m->live = NO_LIVE;
}

/* ---- forward ----------------------------------------------------------------------- */

/* The live block on its sign plane: hidden bits h = s >= t and gate bits |s - t| <= gate
 * of every hidden layer into hb and gb (group sums in s), its scores added to z. */
static void live_forward(const rbnn_model_t *m, uint8_t *b, const uint32_t *x, uint32_t *hb,
    uint32_t *gb, int32_t *s, int32_t *z) {
    static const int32_t one = 1;
    const uint8_t *ts = b + m->train_offset;
    const uint8_t *par = params_of(m, b, m->live);
    const uint32_t *w = arena_of(m, b) + entry_of(m, b, m->live)[4] * m->plane_words;
    const uint32_t *in = x;
    uint32_t n_in = m->n_inputs, layer, j, r;
    int32_t weight[8];
    rbnn_plane_weights(m, weight);
    for (layer = 0; layer < m->n_layers; layer++) {
        uint32_t n_out = m->sizes[layer], nw = words_of(n_in);
        const int32_t *wt = layer == 0u ? weight : &one;
        uint32_t n_k = layer == 0u ? m->k_planes : 1u;
        if (layer + 1u < m->n_layers) {
            const int32_t *thr = (const int32_t *)(const void *)par;
            uint32_t gate = rd32(ts + T_GATE + 4u * layer);
            for (j = 0; j < n_out; j += RBNN_GROUP) {
                uint32_t cnt = n_out - j < RBNN_GROUP ? n_out - j : RBNN_GROUP, h = 0, g = 0;
                rbnn_group_sums(w, in, nw, cnt, (int32_t)n_in, wt, n_k, s);
                w += cnt * nw;
                for (r = 0; r < cnt; r++) {
                    /* |s - t| as the twin's int32 numpy: wrapped, and |-2^31| = -2^31 */
                    uint32_t d = (uint32_t)s[r] - (uint32_t)thr[j + r];
                    if (d >> 31) {
                        d = 0u - d;
                    }
                    h |= (uint32_t)(s[r] >= thr[j + r]) << r;
                    g |= (uint32_t)((d >> 31) | (d <= gate)) << r;
                }
                hb[j >> 5] = h;
                gb[j >> 5] = g;
            }
            par += 4u * n_out + 4u * words_of(n_out);
            in = hb;
            hb += words_of(n_out);
            gb += words_of(n_out);
        } else {
            const int32_t *scale = (const int32_t *)(const void *)par;
            const int32_t *offset = scale + n_out;
            for (j = 0; j < n_out; j += RBNN_GROUP) {
                uint32_t cnt = n_out - j < RBNN_GROUP ? n_out - j : RBNN_GROUP;
                rbnn_group_sums(w, in, nw, cnt, (int32_t)n_in, wt, n_k, s);
                w += cnt * nw;
                for (r = 0; r < cnt; r++) {
                    z[j + r] = to_i32((uint32_t)z[j + r] + (uint32_t)scale[j + r] * (uint32_t)s[r]
                                      + (uint32_t)offset[j + r]);
                }
            }
        }
        n_in = n_out;
    }
}

/* ---- hinge --------------------------------------------------------------------------- */

/* Step 3 on the summed scores z (C values), turned in place into the output signal g.
 * Returns the number of violators (0: no update; z is then spent). */
static uint32_t hinge(const uint8_t *ts, int32_t *z, uint32_t y, uint32_t n_cls) {
    uint32_t margin = rd32(ts + T_MARGIN), n_viol = 0, top = 0, c;
    int32_t zy = z[y], best = 0;
    for (c = 0; c < n_cls; c++) {
        int viol = c != y && (z[c] >= zy || (uint32_t)zy - (uint32_t)z[c] < margin);
        /* the top violator as numpy's argmax of where(viol, z, INT32_MIN) */
        int32_t v = viol ? z[c] : -0x7FFFFFFF - 1;
        if (c == 0u || v > best) {
            best = v;
            top = c;
        }
        n_viol += (uint32_t)viol;
        z[c] = viol ? -1 : 0; /* loss 1: -1 for every violator */
    }
    if (n_viol == 0u) {
        return 0;
    }
    if (ts[T_LOSS] == 0u) {
        for (c = 0; c < n_cls; c++) {
            z[c] = 0;
        }
        z[top] = -1;
        z[y] = 1;
    } else {
        z[y] = (int32_t)n_viol;
    }
    return n_viol;
}

/* ---- backward and updates ---------------------------------------------------------- */

/* Step 4 for layer l >= 1: e_below[j] = a[j] where the gate of unit j of layer l-1 holds,
 * else 0, with a[j] = sum over rows i of p[i] * w[i][j] (p = e at the output layer, sign
 * of e below it; w = +-1 from the sign plane, before any update). Bit-sliced per word of
 * inputs: each row with p != 0 adds its word (inverted when p < 0) |p| times into
 * vertical counters, so a[j] = 2 * count[j] - sum |p|. */
static void signal_below(const rbnn_model_t *m, uint8_t *b, uint32_t l, const int32_t *e,
    int32_t *below, const uint32_t *gate) {
    uint32_t rows = m->sizes[l], n_in = m->sizes[l - 1u], nw = words_of(n_in);
    const uint32_t *w = arena_of(m, b) + entry_of(m, b, m->live)[4] * m->plane_words
                        + layer_at(m, l).word;
    uint32_t top = l + 1u == m->n_layers, total = 0, kbits = 0, i, c, r, t;
    uint32_t cnt[COUNT_BITS];
    for (i = 0; i < rows; i++) {
        if (e[i] != 0) {
            total += top ? (e[i] < 0 ? 0u - (uint32_t)e[i] : (uint32_t)e[i]) : 1u;
        }
    }
    while (kbits < COUNT_BITS && (total >> kbits) != 0u) {
        kbits++;
    }
    for (c = 0; c < nw; c++) {
        uint32_t n_r = n_in - 32u * c < 32u ? n_in - 32u * c : 32u, g = gate[c];
        for (t = 0; t < kbits; t++) {
            cnt[t] = 0;
        }
        for (i = 0; i < rows; i++) {
            int32_t p = e[i];
            uint32_t v, mag, t0;
            if (p == 0) {
                continue;
            }
            v = p < 0 ? ~w[i * nw + c] : w[i * nw + c];
            mag = !top ? 1u : p < 0 ? 0u - (uint32_t)p : (uint32_t)p;
            for (t0 = 0; mag != 0u; mag >>= 1, t0++) {
                uint32_t carry = v;
                if (!(mag & 1u)) {
                    continue;
                }
                for (t = t0; carry != 0u && t < kbits; t++) {
                    uint32_t old = cnt[t];
                    cnt[t] = old ^ carry;
                    carry &= old;
                }
            }
        }
        for (r = 0; r < n_r; r++) {
            uint32_t a = 0;
            if (!(g >> r & 1u)) {
                below[32u * c + r] = 0;
                continue;
            }
            for (t = 0; t < kbits; t++) {
                a |= (cnt[t] >> r & 1u) << t;
            }
            below[32u * c + r] = (int32_t)(2u * a) - (int32_t)total; /* |a| < 2^17 */
        }
    }
}

/* +1 on the bits of c of the counters at word `at` of the live block's nb planes (pl[0]
 * the sign plane, the most significant): bit-sliced, a ripple carry from the lowest
 * plane that stops once no bit carries, saturating at 2^nb - 1. */
static void count_up(uint32_t *const *pl, uint32_t nb, uint32_t at, uint32_t c) {
    uint32_t p = nb;
    while (p-- > 0u) {
        uint32_t old = pl[p][at];
        pl[p][at] = old ^ c;
        c &= old;
        if (c == 0u) {
            return;
        }
    }
    for (p = 0; p < nb; p++) { /* a carry out of the top: the counter was 2^nb - 1, it stays */
        pl[p][at] |= c;
    }
}

/* -1 on the bits of c, saturating at 0 (a borrow out of the top: the counter was 0). */
static void count_down(uint32_t *const *pl, uint32_t nb, uint32_t at, uint32_t c) {
    uint32_t p = nb;
    while (p-- > 0u) {
        uint32_t old = pl[p][at];
        pl[p][at] = old ^ c;
        c &= ~old;
        if (c == 0u) {
            return;
        }
    }
    for (p = 0; p < nb; p++) {
        pl[p][at] &= ~c;
    }
}

/* Step 5 for layer l: every row with e != 0 fires with probability num / 2^16 (one
 * random word per row) and then moves its counters by one towards sign(e) times its
 * input x (the highest kept input plane for l = 0, only its 1 bits moving; the hidden
 * bits below otherwise) and, in a hidden layer, its threshold against it. */
static void update_layer(const rbnn_model_t *m, uint8_t *b, uint32_t l, const int32_t *e,
    const uint32_t *x, uint32_t k, uint32_t n) {
    const uint8_t *ts = b + m->train_offset;
    const uint8_t *ent = entry_of(m, b, m->live);
    layer_at_t at = layer_at(m, l);
    uint32_t rows = m->sizes[l], n_in = layer_inputs(m, l), nw = words_of(n_in);
    uint32_t last = pad_mask(n_in), nb = ent[1], hidden = l + 1u < m->n_layers;
    uint32_t by_mag = l == 0u || !hidden, decay = n >> ts[T_DECAY], q, j, w, p;
    int32_t thr_shift = hidden ? (int8_t)ts[T_THR_SHIFT + l] : -1;
    int32_t lim = (int32_t)rbnn_layer_smax(m, l) + 1;
    int32_t *thr = (int32_t *)(void *)(params_of(m, b, m->live) + at.param);
    uint32_t *pl[RBNN_MAX_BITS];
    q = ts[T_LR + l] + (decay < RBNN_MAX_DECAY ? decay : RBNN_MAX_DECAY);
    for (p = 0; p < nb; p++) {
        pl[p] = arena_of(m, b) + ent[4 + p] * m->plane_words + at.word;
    }
    for (j = 0; j < rows; j++) {
        uint32_t mag, num, up;
        if (e[j] == 0) {
            continue;
        }
        mag = !by_mag ? 1u : e[j] < 0 ? 0u - (uint32_t)e[j] : (uint32_t)e[j];
        if (q <= RBNN_PROB_BITS) { /* min(mag << (16 - q), 2^16), never wrapping */
            num = mag >= (1u << q) ? 1u << RBNN_PROB_BITS : mag << (RBNN_PROB_BITS - q);
        } else {
            num = mag >> (q - RBNN_PROB_BITS);
        }
        if ((rand_at(k, at.unit + j) >> (32u - RBNN_PROB_BITS)) >= num) {
            continue;
        }
        up = e[j] > 0;
        for (w = 0; w < nw; w++) { /* +1 on inc, then -1 on dec (disjoint bits) */
            uint32_t xv = x[w], at_w = j * nw + w;
            uint32_t nx = l == 0u ? 0u : ~xv & (w + 1u == nw ? last : 0xFFFFFFFFu);
            uint32_t inc = up ? xv : nx, dec = up ? nx : xv; /* l = 0: only 1 bits move */
            if (inc != 0u) {
                count_up(pl, nb, at_w, inc);
            }
            if (dec != 0u) {
                count_down(pl, nb, at_w, dec);
            }
        }
        if (thr_shift >= 0) {
            uint32_t d = 1u << thr_shift;
            thr[j] = clamp(to_i32((uint32_t)thr[j] + (up ? 0u - d : d)), lim);
        }
    }
}

/* Step 6: offset[c] += g[c] * 2^off_shift, clamped to +-(half - 1). */
static void update_offsets(const rbnn_model_t *m, uint8_t *b, const int32_t *g) {
    int32_t sh = (int8_t)b[m->train_offset + T_OFF_SHIFT];
    uint32_t n_cls = m->sizes[m->n_layers - 1u], c;
    int32_t lim = (int32_t)(((m->budget + 1u) >> 1) - 1u);
    int32_t *offset = (int32_t *)(void *)(params_of(m, b, m->live) + m->block_params_bytes
                                          - 4u * n_cls);
    if (sh < 0) {
        return;
    }
    for (c = 0; c < n_cls; c++) {
        offset[c] = clamp(to_i32((uint32_t)offset[c] + ((uint32_t)g[c] << sh)), lim);
    }
}

/* Steps 4-6, layer by layer from the output down: the signal of the layer below is
 * computed from this layer's weights before this layer is updated, so two signal
 * buffers suffice (each layer's update touches only its own rows and thresholds, and
 * its random words depend only on (key, row), so the order is the twin's result). */
static void backward_update(const rbnn_model_t *m, uint8_t *b, const uint32_t *x,
    const uint32_t *hb, const uint32_t *gb, int32_t *cur, int32_t *below, uint32_t k,
    uint32_t n) {
    uint32_t l = m->n_layers;
    while (l-- > 0u) {
        const uint32_t *below_bits = l > 0u ? hb + layer_at(m, l - 1u).hidden : x;
        int32_t *t;
        if (l > 0u) {
            signal_below(m, b, l, cur, below, gb + layer_at(m, l - 1u).hidden);
        }
        update_layer(m, b, l, cur, below_bits, k, n);
        if (l + 1u == m->n_layers) {
            update_offsets(m, b, cur);
        }
        t = cur;
        cur = below;
        below = t;
    }
}

/* ---- the step ---------------------------------------------------------------------- */

static int check_model(const rbnn_model_t *m, const void *buf) {
    if (m == NULL || m->buf == NULL || buf == NULL || (const uint8_t *)buf != m->buf) {
        return RBNN_E_ARG;
    }
    return m->version >= 2u ? RBNN_OK : RBNN_E_VERSION;
}

static int check_scratch(const void *scratch) {
    if (scratch == NULL) {
        return RBNN_E_ARG;
    }
    return ((uintptr_t)scratch & 3u) != 0u ? RBNN_E_ALIGN : RBNN_OK;
}

static int step(rbnn_model_t *m, uint8_t *b, const uint32_t *x, uint32_t label,
    uint32_t *scratch, int32_t *z_out) {
    uint8_t *ts = b + m->train_offset;
    uint32_t n_cls = m->sizes[m->n_layers - 1u], h = hidden_words(m), c, blk, best = 0;
    uint32_t *hb = scratch, *gb = scratch + h, k, n, ge;
    int32_t *z = (int32_t *)(void *)(scratch + 2u * h), *other = z + widest(m);
    int rc;
    if (label >= n_cls) {
        return RBNN_E_LABEL;
    }
    rc = rbnn_check_input(m, x);
    if (rc != RBNN_OK) {
        return rc;
    }
    if (m->live == NO_LIVE) { /* 0. the schedule opens the next block */
        if (ts[T_GROW_LEFT] == 0u || !can_open(m, b)) {
            return RBNN_E_FULL;
        }
        ts[T_GROW_LEFT]--;
        open_block(m, b);
    }
    /* 1. forward: the frozen blocks as in inference (their scratch: the bit buffers,
     * filled by the live block only after), then the live block */
    for (c = 0; c < n_cls; c++) {
        z[c] = 0;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        if (blk != m->live) {
            rbnn_block_scores(m, blk, x, scratch, z);
        }
    }
    live_forward(m, b, x, hb, gb, other, z);
    for (c = 1; c < n_cls; c++) {
        if (z[c] > z[best]) {
            best = c;
        }
    }
    if (z_out != NULL) {
        for (c = 0; c < n_cls; c++) {
            z_out[c] = z[c];
        }
    }
    /* 2. counters */
    k = key_of(rd32(ts + T_SEED), rd32(ts + T_STEPS));
    n = rd32(ts + T_BLOCK_STEPS);
    wr32(ts + T_STEPS, rd32(ts + T_STEPS) + 1u);
    wr32(ts + T_BLOCK_STEPS, n + 1u);
    wr32(ts + T_HITS, rd32(ts + T_HITS) + (best == label ? 1u : 0u));
    /* 3.-6. hinge, backward, updates */
    if (hinge(ts, z, label, n_cls) != 0u) {
        wr32(ts + T_ACTIVE, rd32(ts + T_ACTIVE) + 1u);
        backward_update(m, b, x, hb, gb, z, other, k, n);
    }
    /* 7. the schedule freezes the live block */
    ge = rd32(ts + T_GROW_EVERY);
    if (ge != 0u && rd32(ts + T_BLOCK_STEPS) == ge) {
        freeze_live(m, b);
    }
    return (int)best;
}

int rbnn_train_step(rbnn_model_t *m, void *buf, const uint32_t *in_bits, uint32_t label,
    void *scratch, int32_t *z_out) {
    int rc = check_model(m, buf);
    if (rc == RBNN_OK) {
        rc = in_bits == NULL ? RBNN_E_ARG : check_scratch(scratch);
    }
    return rc != RBNN_OK ? rc
                         : step(m, (uint8_t *)buf, in_bits, label, (uint32_t *)scratch, z_out);
}

int rbnn_train_batch(rbnn_model_t *m, void *buf, const uint32_t *in_bits,
    const uint32_t *labels, uint32_t n, void *scratch, int32_t *preds) {
    uint32_t i, in_words;
    int rc = check_model(m, buf);
    if (rc == RBNN_OK) {
        rc = in_bits == NULL || labels == NULL ? RBNN_E_ARG : check_scratch(scratch);
    }
    if (rc != RBNN_OK) {
        return rc;
    }
    in_words = rbnn_input_words(m);
    for (i = 0; i < n; i++) {
        rc = step(m, (uint8_t *)buf, in_bits + i * in_words, labels[i], (uint32_t *)scratch, NULL);
        if (preds != NULL) {
            preds[i] = rc;
        }
        if (rc < 0) {
            return rc;
        }
    }
    return RBNN_OK;
}

int rbnn_new_block(rbnn_model_t *m, void *buf) {
    int rc = check_model(m, buf);
    if (rc != RBNN_OK) {
        return rc;
    }
    if (!can_open(m, (uint8_t *)buf)) {
        return RBNN_E_FULL;
    }
    return (int)open_block(m, (uint8_t *)buf);
}

int rbnn_freeze(rbnn_model_t *m, void *buf) {
    int rc = check_model(m, buf);
    if (rc != RBNN_OK) {
        return rc;
    }
    if (m->live == NO_LIVE) {
        return RBNN_E_FULL;
    }
    freeze_live(m, (uint8_t *)buf);
    return RBNN_OK;
}

void rbnn_reseal(const rbnn_model_t *m, void *buf) {
    if (m == NULL || m->buf == NULL || (const uint8_t *)buf != m->buf) {
        return;
    }
    wr32((uint8_t *)buf + m->file_bytes - 4u, rbnn_crc32(0, buf, m->file_bytes - 4u));
}
