/*
 * rbnn core: validation and inference of .rbnn models (docs/FORMAT.md, version 1).
 *
 * Portable C99 for hosts and microcontrollers alike: no malloc, no libc, no writable
 * globals, no 64-bit arithmetic and no division (a Cortex-M0+ has neither in hardware).
 * The checks run in the order of docs/FORMAT.md (Errors) and report the same code and
 * byte offset as the Python reader (host/rbnn/pack.py); the inference computes exactly
 * what the numpy twin (host/rbnn/twin.py) computes.
 */
#define RBNN_SPEC_TABLES /* this file holds the code names and check texts */
#include "rbnn_core.h"
#include "rbnn_internal.h"
#include "rbnn_kernel.h"

/* Weight rows, thresholds and scales are read in place as 32-bit words. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rbnn_core reads the file's little-endian words in place: little-endian targets only"
#endif
#endif

#define HEADER_BYTES RBNN_HEADER_BYTES
#define BLOCK_ENTRY_BYTES RBNN_BLOCK_ENTRY_BYTES
#define I32_MAX 0x7FFFFFFFu

/* ---- small helpers --------------------------------------------------------------- */

static uint32_t rd16(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
           | ((uint32_t)p[3] << 24);
}

/* The first four bytes as one number, first byte highest (how a magic reads in hex). */
static uint32_t rd32be(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t popcount8(uint32_t v) {
    uint32_t c = 0;
    while (v) {
        c += v & 1u;
        v >>= 1;
    }
    return c;
}

/* Overflow-checked arithmetic: 0 on overflow, else 1 with the result in *r. */
static int add_ok(uint32_t a, uint32_t b, uint32_t *r) {
    *r = a + b;
    return *r >= a;
}

/* 32x32 multiply from 16-bit halves: no 64-bit helper, no division. */
static int mul_ok(uint32_t a, uint32_t b, uint32_t *r) {
    uint32_t ah = a >> 16, al = a & 0xFFFFu, bh = b >> 16, bl = b & 0xFFFFu;
    uint32_t cross;
    if (ah != 0u && bh != 0u) {
        return 0;
    }
    cross = ah * bl + al * bh; /* one of the two terms is 0 */
    if (cross > 0xFFFFu) {
        return 0;
    }
    return add_ok(cross << 16, al * bl, r);
}

/* n / d (d > 0) by shift and subtract: a Cortex-M0+ has no divide instruction. */
static uint32_t div_u32(uint32_t n, uint32_t d) {
    uint32_t q = 0, r = 0;
    int i;
    for (i = 31; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= 1u << i;
        }
    }
    return q;
}

static uint32_t abs32(int32_t v) {
    return v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
}

/* Record a failed check (RBNN_CHK_*) with the integers of its message; returns the
 * check's code. i, j, k are indices, want and found values (host/rbnn/format/checks.py). */
static int fail_at(rbnn_model_t *m, uint32_t check, uint32_t offset, uint32_t i, uint32_t j,
    uint32_t k, uint32_t want, uint32_t found) {
    m->err_offset = offset;
    m->err_check = (uint16_t)check;
    m->err_i = (uint16_t)i;
    m->err_j = (uint16_t)j;
    m->err_k = (uint16_t)k;
    m->err_want = want;
    m->err_found = found;
    return rbnn_check_code[check];
}

/* The common case: a check whose message needs only the value found (and maybe want). */
static int fail(rbnn_model_t *m, uint32_t check, uint32_t offset, uint32_t want, uint32_t found) {
    return fail_at(m, check, offset, 0, 0, 0, want, found);
}

/* ---- CRC-32 (ISO-HDLC) ------------------------------------------------------------
 * Four bytes per step from eight 16-entry tables (512 bytes of flash): t[k][v] is the
 * CRC effect of nibble value v at nibble k of the running CRC after 32 steps. The eight
 * loads are independent, so the loop runs several times faster than nibble-at-a-time
 * while the tables stay small. t[6] and t[7] alone do one byte (head and tail). */

static const uint32_t crc_tab[8][16] = {
        {0x00000000u, 0xB8BC6765u, 0xAA09C88Bu, 0x12B5AFEEu, 0x8F629757u, 0x37DEF032u, 0x256B5FDCu, 0x9DD738B9u,
         0xC5B428EFu, 0x7D084F8Au, 0x6FBDE064u, 0xD7018701u, 0x4AD6BFB8u, 0xF26AD8DDu, 0xE0DF7733u, 0x58631056u},
        {0x00000000u, 0x5019579Fu, 0xA032AF3Eu, 0xF02BF8A1u, 0x9B14583Du, 0xCB0D0FA2u, 0x3B26F703u, 0x6B3FA09Cu,
         0xED59B63Bu, 0xBD40E1A4u, 0x4D6B1905u, 0x1D724E9Au, 0x764DEE06u, 0x2654B999u, 0xD67F4138u, 0x866616A7u},
        {0x00000000u, 0x01C26A37u, 0x0384D46Eu, 0x0246BE59u, 0x0709A8DCu, 0x06CBC2EBu, 0x048D7CB2u, 0x054F1685u,
         0x0E1351B8u, 0x0FD13B8Fu, 0x0D9785D6u, 0x0C55EFE1u, 0x091AF964u, 0x08D89353u, 0x0A9E2D0Au, 0x0B5C473Du},
        {0x00000000u, 0x1C26A370u, 0x384D46E0u, 0x246BE590u, 0x709A8DC0u, 0x6CBC2EB0u, 0x48D7CB20u, 0x54F16850u,
         0xE1351B80u, 0xFD13B8F0u, 0xD9785D60u, 0xC55EFE10u, 0x91AF9640u, 0x8D893530u, 0xA9E2D0A0u, 0xB5C473D0u},
        {0x00000000u, 0x191B3141u, 0x32366282u, 0x2B2D53C3u, 0x646CC504u, 0x7D77F445u, 0x565AA786u, 0x4F4196C7u,
         0xC8D98A08u, 0xD1C2BB49u, 0xFAEFE88Au, 0xE3F4D9CBu, 0xACB54F0Cu, 0xB5AE7E4Du, 0x9E832D8Eu, 0x87981CCFu},
        {0x00000000u, 0x4AC21251u, 0x958424A2u, 0xDF4636F3u, 0xF0794F05u, 0xBABB5D54u, 0x65FD6BA7u, 0x2F3F79F6u,
         0x3B83984Bu, 0x71418A1Au, 0xAE07BCE9u, 0xE4C5AEB8u, 0xCBFAD74Eu, 0x8138C51Fu, 0x5E7EF3ECu, 0x14BCE1BDu},
        {0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu, 0xE963A535u, 0x9E6495A3u,
         0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u, 0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u},
        {0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
         0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu},
};

uint32_t rbnn_crc32(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    for (; len > 0u && ((uintptr_t)p & 3u) != 0u; len--) {
        uint32_t b = (crc ^ *p++) & 0xFFu;
        crc = (crc >> 8) ^ crc_tab[6][b & 15u] ^ crc_tab[7][b >> 4];
    }
    for (; len >= 4u; len -= 4u, p += 4) {
        uint32_t c = crc ^ *(const uint32_t *)(const void *)p; /* aligned; little-endian */
        crc = crc_tab[0][c & 15u] ^ crc_tab[1][(c >> 4) & 15u] ^ crc_tab[2][(c >> 8) & 15u]
              ^ crc_tab[3][(c >> 12) & 15u] ^ crc_tab[4][(c >> 16) & 15u]
              ^ crc_tab[5][(c >> 20) & 15u] ^ crc_tab[6][(c >> 24) & 15u] ^ crc_tab[7][c >> 28];
    }
    for (; len > 0u; len--) {
        uint32_t b = (crc ^ *p++) & 0xFFu;
        crc = (crc >> 8) ^ crc_tab[6][b & 15u] ^ crc_tab[7][b >> 4];
    }
    return ~crc;
}

/* ---- validation ------------------------------------------------------------------ */

/* The block whose table entry lists plane p first (for the message of a duplicate). */
static uint32_t owner_of(const rbnn_model_t *m, const uint8_t *b, uint32_t p) {
    uint32_t blk, i;
    for (blk = 0; blk < m->n_blocks; blk++) {
        const uint8_t *e = b + m->blocks_offset + BLOCK_ENTRY_BYTES * blk;
        for (i = 0; i < e[1] && i < RBNN_MAX_BITS; i++) {
            if (e[4 + i] == p) {
                return blk;
            }
        }
    }
    return 0;
}

/* Block table: state, n_bits, reserved, plane indices (each plane owned at most once). */
static int check_blocks(rbnn_model_t *m, const uint8_t *b) {
    uint32_t owned[8]; /* one bit per plane index 0..255 */
    uint32_t i, blk;
    for (i = 0; i < 8u; i++) {
        owned[i] = 0;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        uint32_t off = m->blocks_offset + BLOCK_ENTRY_BYTES * blk;
        uint32_t state = b[off], n_bits = b[off + 1];
        if (state > RBNN_LIVE) {
            return fail_at(m, RBNN_CHK_BLOCK_STATE, off, blk, 0, 0, 0, state);
        }
        if (state == RBNN_LIVE && m->version >= 2u && blk + 1u != m->n_blocks) {
            return fail_at(m, RBNN_CHK_BLOCK_LIVE_LAST, off, blk, 0, 0, 0, state);
        }
        if (state == RBNN_LIVE) {
            m->live = (uint8_t)blk;
        }
        if (state == RBNN_FROZEN && n_bits != 1u) {
            return fail_at(m, RBNN_CHK_BLOCK_BITS_FROZEN, off + 1, blk, 0, 0, 0, n_bits);
        }
        if (n_bits < 1u || n_bits > RBNN_MAX_BITS) {
            return fail_at(m, RBNN_CHK_BLOCK_BITS, off + 1, blk, 0, 0, 0, n_bits);
        }
        if (rd16(b + off + 2) != 0u) {
            return fail_at(m, RBNN_CHK_BLOCK_RESERVED, off + 2, blk, 0, 0, 0, rd16(b + off + 2));
        }
        for (i = 0; i < RBNN_MAX_BITS; i++) {
            uint32_t at = off + 4 + i, p = b[at];
            if (i >= n_bits) {
                if (p != RBNN_UNUSED_PLANE) {
                    return fail_at(m, RBNN_CHK_BLOCK_UNUSED, at, blk, i, 0, 0, p);
                }
                continue;
            }
            if (p >= m->n_planes) {
                return fail_at(m, RBNN_CHK_BLOCK_PLANE, at, blk, i, 0, m->n_planes, p);
            }
            if (owned[p >> 5] >> (p & 31u) & 1u) {
                return fail_at(m, RBNN_CHK_BLOCK_OWNED, at, blk, i, 0, owner_of(m, b, p), p);
            }
            owned[p >> 5] |= 1u << (p & 31u);
        }
    }
    for (blk = m->n_blocks; blk < m->max_blocks; blk++) { /* empty slots: 0xFF */
        uint32_t off = m->blocks_offset + BLOCK_ENTRY_BYTES * blk;
        for (i = 0; i < BLOCK_ENTRY_BYTES; i++) {
            if (b[off + i] != RBNN_UNUSED_PLANE) {
                return fail_at(m, RBNN_CHK_BLOCK_EMPTY, off + i, blk, i, 0, 0, b[off + i]);
            }
        }
    }
    return RBNN_OK;
}

/* Segments of one row of layer l: the kept planes for layer 0 in input mode 1, else 1. */
static uint32_t segments(const rbnn_model_t *m, uint32_t l) {
    return l == 0u && m->input_mode == RBNN_INPUT_PER_PLANE ? m->k_planes : 1u;
}

/* Padding bits of every weight row (layer by layer, then plane by plane, row by row and
 * segment by segment, as the Python reader scans them) and of every flip vector. */
static int check_padding(rbnn_model_t *m, const uint8_t *b) {
    const uint32_t *arena = (const uint32_t *)(const void *)(b + m->arena_offset);
    uint32_t layer, p, r, g, blk, layer_off = 0;
    for (layer = 0; layer < m->n_layers; layer++) {
        uint32_t n_in = m->layer_in[layer], n_out = m->sizes[layer], w = words_of(n_in);
        uint32_t bad = ~pad_mask(n_in), nseg = segments(m, layer);
        if (bad != 0u) {
            for (p = 0; p < m->n_planes; p++) {
                const uint32_t *row = arena + p * m->plane_words + layer_off;
                for (r = 0; r < n_out; r++) {
                    for (g = 0; g < nseg; g++, row += w) {
                        if (row[w - 1] & bad) {
                            uint32_t word = (uint32_t)(row + w - 1 - arena);
                            return fail_at(m, RBNN_CHK_WEIGHT_PADDING, m->arena_offset + 4u * word,
                                p, layer, r, 0, row[w - 1] & bad);
                        }
                    }
                }
            }
        }
        layer_off += n_out * nseg * w;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        uint32_t at = m->params_offset + blk * m->block_params_bytes;
        for (layer = 0; layer + 1u < m->n_layers; layer++) {
            uint32_t s = m->sizes[layer], w = words_of(s);
            uint32_t last = at + 4u * s + 4u * (w - 1u);
            if (rd32(b + last) & ~pad_mask(s)) {
                return fail_at(m, RBNN_CHK_FLIP_PADDING, last, blk, layer, 0, 0, rd32(b + last));
            }
            at += 4u * s + 4u * w;
        }
    }
    return RBNN_OK;
}

/* Largest possible |s| of layer l (docs/FORMAT.md, Semantics): in[l], times the plane
 * weights for layer 0. Fits 32 bits: in[0] <= 15 * 15 * 65535 for a conv layer 0, and
 * the plane weights sum to at most 255. */
uint32_t rbnn_layer_smax(const rbnn_model_t *m, uint32_t l) {
    uint32_t n, low = 0, sum = 0;
    if (l > 0u) {
        return m->layer_in[l];
    }
    while (!(m->plane_mask >> low & 1u)) {
        low++;
    }
    for (n = low; n < 8u; n++) {
        if (m->plane_mask >> n & 1u) {
            sum += 1u << (n - low);
        }
    }
    return m->layer_in[0] * sum;
}

static uint32_t output_smax(const rbnn_model_t *m) {
    return rbnn_layer_smax(m, m->n_layers - 1u);
}

/* Version 2: empty parameter slots are 0, a live block's flips are 0. */
static int check_slots(rbnn_model_t *m, const uint8_t *b) {
    uint32_t slot, i, layer;
    for (slot = m->n_blocks; slot < m->max_blocks; slot++) {
        uint32_t at = m->params_offset + slot * m->block_params_bytes;
        for (i = 0; i < m->block_params_bytes; i++) {
            if (b[at + i] != 0u) {
                return fail_at(m, RBNN_CHK_PARAMS_EMPTY, at + i, slot, 0, 0, i, b[at + i]);
            }
        }
    }
    if (m->live != 0xFFu) {
        uint32_t at = m->params_offset + m->live * m->block_params_bytes;
        uint32_t n_cls = m->sizes[m->n_layers - 1u], half = (m->budget + 1u) >> 1;
        uint32_t top = div_u32(half, output_smax(m));
        for (layer = 0; layer + 1u < m->n_layers; layer++) {
            uint32_t s = m->sizes[layer];
            at += 4u * s;
            for (i = 0; i < words_of(s); i++, at += 4u) {
                if (rd32(b + at) != 0u) {
                    return fail_at(m, RBNN_CHK_LIVE_FLIPS, at, m->live, layer, 0, 0, rd32(b + at));
                }
            }
        }
        /* its output within half of the budget, as the step keeps it (docs/TRAINING.md) */
        for (i = 0; i < n_cls; i++) {
            if (abs32((int32_t)rd32(b + at + 4u * i)) > top) {
                return fail_at(m, RBNN_CHK_LIVE_SCALE, at + 4u * i, m->live, i, 0, top, rd32(b + at + 4u * i));
            }
        }
        for (i = 0; i < n_cls; i++) {
            uint32_t o = at + 4u * (n_cls + i);
            if (abs32((int32_t)rd32(b + o)) > half - 1u) {
                return fail_at(m, RBNN_CHK_LIVE_OFFSET, o, m->live, i, 0, half - 1u, rd32(b + o));
            }
        }
    }
    return RBNN_OK;
}

/* The largest scale_shift with 2^shift * smax <= half, or -1 (as u32) when none. */
static uint32_t max_scale_shift(const rbnn_model_t *m) {
    uint32_t smax = output_smax(m), half = (m->budget + 1u) >> 1, sh = 0, v;
    if (smax > half) {
        return 0xFFFFFFFFu;
    }
    while (sh < 31u && mul_ok(1u << (sh + 1u), smax, &v) && v <= half) {
        sh++;
    }
    return sh;
}

/* Version 2: the training section, field by field in docs/FORMAT.md's order. */
static int check_train(rbnn_model_t *m, const uint8_t *b) {
    const uint8_t *t = b + m->train_offset;
    uint32_t at = m->train_offset, steps = rd32(t + 8), v, i, ms;
    static const uint8_t le_steps[3][2] = {
        {16, RBNN_CHK_TRAIN_HITS}, {20, RBNN_CHK_TRAIN_ACTIVE}, {32, RBNN_CHK_TRAIN_STREAM_BASE}};
    static const uint8_t small[3][3] = {
        {43, RBNN_CHK_TRAIN_DECAY, 31}, {44, RBNN_CHK_TRAIN_INIT_BITS, 15}, {45, RBNN_CHK_TRAIN_LOSS, 1}};
    if (rd32(t) != 1u) {
        return fail(m, RBNN_CHK_TRAIN_RULE, at, 0, rd32(t));
    }
    if (rd32(t + 12) > steps) {
        return fail(m, RBNN_CHK_TRAIN_BLOCK_STEPS, at + 12, steps, rd32(t + 12));
    }
    if (m->live == 0xFFu && rd32(t + 12) != 0u) {
        return fail(m, RBNN_CHK_TRAIN_NO_LIVE, at + 12, 0, rd32(t + 12));
    }
    for (i = 0; i < 3u; i++) {
        if (rd32(t + le_steps[i][0]) > steps) {
            return fail(m, le_steps[i][1], at + le_steps[i][0], steps, rd32(t + le_steps[i][0]));
        }
    }
    v = rd32(t + 36);
    if (v < 1u || v > m->budget) {
        return fail(m, RBNN_CHK_TRAIN_MARGIN, at + 36, m->budget, v);
    }
    if (t[40] < 1u || t[40] > RBNN_MAX_BITS) {
        return fail(m, RBNN_CHK_TRAIN_BITS, at + 40, 0, t[40]);
    }
    if (t[41] > (uint32_t)(m->max_blocks - m->n_blocks)) {
        return fail(m, RBNN_CHK_TRAIN_GROW_LEFT, at + 41, (uint32_t)(m->max_blocks - m->n_blocks), t[41]);
    }
    ms = max_scale_shift(m);
    if (ms == 0xFFFFFFFFu || t[42] > ms) {
        return fail(m, RBNN_CHK_TRAIN_SCALE_SHIFT, at + 42, ms, t[42]);
    }
    for (i = 0; i < 3u; i++) {
        if (t[small[i][0]] > small[i][2]) {
            return fail(m, small[i][1], at + small[i][0], 0, t[small[i][0]]);
        }
    }
    if ((int8_t)t[46] < -1 || (int8_t)t[46] > 23) {
        return fail(m, RBNN_CHK_TRAIN_OFF_SHIFT, at + 46, 0, (uint32_t)(int32_t)(int8_t)t[46]);
    }
    if (t[47] != 0u) {
        return fail_at(m, RBNN_CHK_TRAIN_RESERVED, at + 47, 47, 0, 0, 0, t[47]);
    }
    for (i = 0; i < RBNN_MAX_LAYERS; i++) {
        if (i < m->n_layers && t[48 + i] > 31u) {
            return fail_at(m, RBNN_CHK_TRAIN_LR, at + 48 + i, i, 0, 0, 0, t[48 + i]);
        }
        if (i >= m->n_layers && t[48 + i] != 0u) {
            return fail_at(m, RBNN_CHK_TRAIN_LR_UNUSED, at + 48 + i, i, 0, 0, 0, t[48 + i]);
        }
    }
    for (i = 0; i < RBNN_MAX_LAYERS; i++) {
        int32_t ts = (int8_t)t[56 + i];
        if (i + 1u < m->n_layers && (ts < -1 || ts > 24)) {
            return fail_at(m, RBNN_CHK_TRAIN_THR, at + 56 + i, i, 0, 0, 0, (uint32_t)ts);
        }
        if (i + 1u >= m->n_layers && ts != 0) {
            return fail_at(m, RBNN_CHK_TRAIN_THR_UNUSED, at + 56 + i, i, 0, 0, 0, (uint32_t)ts);
        }
    }
    for (i = 0; i + 1u < RBNN_MAX_LAYERS; i++) {
        v = rd32(t + 64 + 4u * i);
        if (i + 1u < m->n_layers && v > rbnn_layer_smax(m, i)) {
            return fail_at(m, RBNN_CHK_TRAIN_GATE, at + 64 + 4u * i, i, 0, 0, rbnn_layer_smax(m, i), v);
        }
        if (i + 1u >= m->n_layers && v != 0u) {
            return fail_at(m, RBNN_CHK_TRAIN_GATE_UNUSED, at + 64 + 4u * i, i, 0, 0, 0, v);
        }
    }
    if (rd32(t + 92) != 0u) {
        return fail_at(m, RBNN_CHK_TRAIN_RESERVED, at + 92, 92, 0, 0, 0, rd32(t + 92));
    }
    return RBNN_OK;
}

/* Version 2: every block's max over classes of |scale| * smax + |offset| <= budget.
 * Version 1: the sum over blocks of it <= 2^31 - 1. */
static int check_range(rbnn_model_t *m, const uint8_t *b) {
    uint32_t smax = output_smax(m), total = 0, blk, k;
    uint32_t n_cls = m->sizes[m->n_layers - 1u];
    uint32_t hidden_bytes = m->block_params_bytes - 8u * n_cls;
    for (blk = 0; blk < m->n_blocks; blk++) {
        uint32_t at = m->params_offset + blk * m->block_params_bytes + hidden_bytes;
        const uint8_t *scale = b + at;
        const uint8_t *offset = scale + 4u * n_cls;
        uint32_t worst = 0;
        for (k = 0; k < n_cls; k++) {
            uint32_t v;
            if (!mul_ok(abs32((int32_t)rd32(scale + 4u * k)), smax, &v)
                || !add_ok(v, abs32((int32_t)rd32(offset + 4u * k)), &v) || v > I32_MAX
                || (m->version >= 2u && v > m->budget)) {
                return m->version >= 2u ? fail_at(m, RBNN_CHK_RANGE_BLOCK, at, blk, 0, 0, m->budget, 0)
                                        : fail_at(m, RBNN_CHK_RANGE, at, blk, 0, 0, 0, 0);
            }
            if (v > worst) {
                worst = v;
            }
        }
        if (!add_ok(total, worst, &total) || total > I32_MAX) {
            return fail_at(m, RBNN_CHK_RANGE, at, blk, 0, 0, 0, 0);
        }
    }
    return RBNN_OK;
}

/* Version 3: after the live block's checks, a model that may not train (docs/FORMAT.md,
 * Training a version 3 model): grow_left 0, then no live block. */
static int check_untrainable(rbnn_model_t *m, const uint8_t *b) {
    uint32_t gl = b[m->train_offset + 41u];
    if (gl != 0u) {
        return fail(m, RBNN_CHK_V3_GROW_LEFT, m->train_offset + 41u, 0, gl);
    }
    if (m->live != 0xFFu) {
        return fail_at(m, RBNN_CHK_V3_LIVE, m->blocks_offset + BLOCK_ENTRY_BYTES * m->live,
            m->live, 0, 0, 0, RBNN_LIVE);
    }
    return RBNN_OK;
}

/* Version 3 layer table (8 bytes a layer; the sizes are checked before), layer by layer
 * in table order: kind, kernel, pad, pool, reserved. */
static int check_layer_fields(rbnn_model_t *m, const uint8_t *b, uint32_t hb) {
    uint32_t i;
    for (i = 0; i < m->n_layers; i++) {
        const uint8_t *e = b + hb + RBNN_LAYER_ENTRY_BYTES_V3 * i;
        uint32_t at = hb + RBNN_LAYER_ENTRY_BYTES_V3 * i, kind = e[2], k = e[3], pad = e[4];
        uint32_t pool = e[5], conv = kind == RBNN_CONV;
        if (kind != RBNN_DENSE && kind != RBNN_CONV) {
            return fail_at(m, RBNN_CHK_LAYER_KIND, at + 2u, i, 0, 0, 0, kind);
        }
        if (conv ? (k & 1u) == 0u || k > RBNN_MAX_KERNEL : k != 0u) {
            return fail_at(m, conv ? RBNN_CHK_CONV_KERNEL : RBNN_CHK_DENSE_KERNEL, at + 3u, i, 0, 0, 0, k);
        }
        if (pad > (conv ? k >> 1 : 0u)) {
            return fail_at(m, conv ? RBNN_CHK_CONV_PAD : RBNN_CHK_DENSE_PAD, at + 4u, i, 0, 0, k >> 1, pad);
        }
        if (conv ? pool != RBNN_POOL_NONE && pool != RBNN_POOL_2X2 : pool != 0u) {
            return fail_at(m, conv ? RBNN_CHK_CONV_POOL : RBNN_CHK_DENSE_POOL, at + 5u, i, 0, 0, 0, pool);
        }
        if (rd16(e + 6) != 0u) {
            return fail_at(m, RBNN_CHK_LAYER_RESERVED, at + 6u, i, 0, 0, 0, rd16(e + 6));
        }
        m->kinds[i] = (uint8_t)kind;
        m->kernels[i] = (uint8_t)k;
        m->pads[i] = (uint8_t)pad;
        m->pools[i] = (uint8_t)pool;
    }
    return RBNN_OK;
}

/* Version 3: the order of kinds, the input shape, then the maps chaining layer by layer. */
static int check_shapes(rbnn_model_t *m, const uint8_t *b, uint32_t hb) {
    static const uint8_t in_unused[3] = {RBNN_CHK_IN_H_UNUSED, RBNN_CHK_IN_W_UNUSED, RBNN_CHK_IN_C_UNUSED};
    static const uint8_t in_used[3] = {RBNN_CHK_IN_H, RBNN_CHK_IN_W, RBNN_CHK_IN_C};
    uint32_t i, seen_dense = 0, has_conv = 0, h, w, c, prod = 0;
    for (i = 0; i < m->n_layers; i++) {
        uint32_t at = hb + RBNN_LAYER_ENTRY_BYTES_V3 * i + 2u;
        if (m->kinds[i] == RBNN_CONV && seen_dense) {
            return fail_at(m, RBNN_CHK_CONV_AFTER_DENSE, at, i, 0, 0, 0, RBNN_CONV);
        }
        seen_dense |= m->kinds[i] == RBNN_DENSE;
        has_conv |= m->kinds[i] == RBNN_CONV;
    }
    if (m->kinds[m->n_layers - 1u] != RBNN_DENSE) {
        i = m->n_layers - 1u;
        return fail_at(m, RBNN_CHK_OUTPUT_DENSE, hb + RBNN_LAYER_ENTRY_BYTES_V3 * i + 2u, i, 0, 0, 0,
            m->kinds[i]);
    }
    for (i = 0; i < 3u; i++) { /* in_h, in_w, in_c */
        uint32_t v = rd16(b + 40u + 2u * i);
        if (!has_conv && v != 0u) {
            return fail(m, in_unused[i], 40u + 2u * i, 0, v);
        }
        if (has_conv && v == 0u) {
            return fail(m, in_used[i], 40u + 2u * i, 0, v);
        }
    }
    h = rd16(b + 40);
    w = rd16(b + 42);
    c = rd16(b + 44);
    if (has_conv && (!mul_ok(h, w, &prod) || !mul_ok(prod, c, &prod) || prod != m->n_inputs)) {
        return fail_at(m, RBNN_CHK_IN_SHAPE, 40, h, w, c, m->n_inputs, 0);
    }
    m->in_h = (uint16_t)h;
    m->in_w = (uint16_t)w;
    m->in_c = (uint16_t)c;
    for (i = 0; i < m->n_layers && m->kinds[i] == RBNN_CONV; i++) {
        uint32_t at = hb + RBNN_LAYER_ENTRY_BYTES_V3 * i, k = m->kernels[i], p2 = 2u * m->pads[i];
        uint32_t lim = (h < w ? h : w) + p2;
        if (k > lim) {
            return fail_at(m, RBNN_CHK_CONV_FIT, at + 3u, i, h, w, lim, k);
        }
        h = h + p2 - k + 1u;
        w = w + p2 - k + 1u;
        if (m->pools[i] == RBNN_POOL_2X2) {
            if ((h | w) & 1u) {
                return fail_at(m, RBNN_CHK_POOL_ODD, at + 5u, i, h, w, 0, RBNN_POOL_2X2);
            }
            h >>= 1;
            w >>= 1;
        }
        c = m->sizes[i];
    }
    return RBNN_OK;
}

/* in[l] of every layer, the widest hidden output (a ping-pong buffer) and the patch
 * (docs/FORMAT.md, Version 3: Maps, Row length, Memory). Shapes already checked: every
 * map has at most in_h * in_w positions, so its bits fit 32 bits. */
static void set_geometry(rbnn_model_t *m) {
    uint32_t l, h = m->in_h, w = m->in_w, c = m->in_c, bits = m->n_inputs;
    m->act_words = m->patch_words = 0;
    for (l = 0; l < m->n_layers; l++) {
        uint32_t out_bits = m->sizes[l];
        if (m->kinds[l] == RBNN_CONV) {
            uint32_t k = m->kernels[l], p2 = 2u * m->pads[l], pw;
            m->layer_in[l] = k * k * c;
            pw = (l == 0u ? m->k_planes : 1u) * words_of(m->layer_in[l]);
            m->patch_words = pw > m->patch_words ? pw : m->patch_words;
            h = h + p2 - k + 1u;
            w = w + p2 - k + 1u;
            if (m->pools[l] == RBNN_POOL_2X2) {
                h >>= 1;
                w >>= 1;
            }
            c = m->sizes[l];
            out_bits = h * w * c;
        } else {
            m->layer_in[l] = bits;
        }
        if (l + 1u < m->n_layers && words_of(out_bits) > m->act_words) {
            m->act_words = words_of(out_bits);
        }
        bits = out_bits;
    }
}

/* Header fields with a range, in check order (docs/FORMAT.md, Header). */
struct header_range {
    uint8_t offset, bytes, check;
    uint16_t lo, hi;
};
static const struct header_range header_ranges[] = {
    {12, 1, RBNN_CHK_WORD_BITS, RBNN_WORD_BITS, RBNN_WORD_BITS},
    {13, 1, RBNN_CHK_N_LAYERS, 1, RBNN_MAX_LAYERS},
    {14, 1, RBNN_CHK_N_BLOCKS, 1, RBNN_MAX_BLOCKS}, /* version 2: N_BLOCKS_V2, from 0 */
    {15, 1, RBNN_CHK_N_PLANES, 1, RBNN_MAX_PLANES},
    {16, 2, RBNN_CHK_N_INPUTS, 1, 65535},
    {18, 1, RBNN_CHK_INPUT_MODE, 0, 0},
    {19, 1, RBNN_CHK_PLANE_MASK, 1, 255},
};

int rbnn_model_init(rbnn_model_t *m, const void *buf, size_t len) {
    const uint8_t *b = (const uint8_t *)buf;
    uint32_t i, plane_words = 0, plane_bytes, arena_offset, params_offset, train_offset;
    uint32_t eb, blocks_offset, block_params = 0, file_bytes, t, hb, version, slots;
    int rc;

    if (m == NULL) {
        return RBNN_E_ARG;
    }
    /* Start from an empty model so a failed init never leaves a usable one. */
    m->buf = NULL;
    m->file_bytes = 0;
    m->n_inputs = 0;
    m->n_layers = m->n_blocks = m->n_planes = 0;
    m->plane_mask = m->k_planes = m->input_mode = 0;
    for (i = 0; i < RBNN_MAX_LAYERS; i++) {
        m->sizes[i] = 0;
    }
    m->plane_words = m->arena_offset = m->params_offset = 0;
    m->blocks_offset = m->block_params_bytes = 0;
    m->version = m->max_blocks = m->score_q = 0;
    m->live = 0xFFu;
    m->train_offset = m->budget = 0;
    m->in_h = m->in_w = m->in_c = 0;
    for (i = 0; i < RBNN_MAX_LAYERS; i++) {
        m->kinds[i] = m->kernels[i] = m->pads[i] = m->pools[i] = 0;
        m->layer_in[i] = 0;
    }
    m->act_words = m->patch_words = 0;
    m->err_offset = 0;
    m->err_check = m->err_i = m->err_j = m->err_k = 0;
    m->err_want = m->err_found = 0;
    if (b == NULL) {
        return RBNN_E_ARG;
    }
    if (((uintptr_t)b & 3u) != 0u) {
        return RBNN_E_ALIGN;
    }

    /* Header: the fields of every version, then version 2's. */
    if (len < HEADER_BYTES) {
        return fail(m, RBNN_CHK_TRUNC_HEADER, 0, 0, (uint32_t)len);
    }
    if (b[0] != RBNN_MAGIC[0] || b[1] != RBNN_MAGIC[1] || b[2] != RBNN_MAGIC[2]
        || b[3] != RBNN_MAGIC[3]) {
        return fail(m, RBNN_CHK_MAGIC, 0, 0, rd32be(b));
    }
    version = rd16(b + 4);
    if (version < RBNN_MIN_READ_VERSION || version > RBNN_MAX_READ_VERSION) {
        return fail(m, RBNN_CHK_VERSION, 4, 0, version);
    }
    if (rd16(b + 6) != 0u) {
        return fail(m, RBNN_CHK_FLAGS, 6, 0, rd16(b + 6));
    }
    for (i = 0; i < sizeof header_ranges / sizeof header_ranges[0]; i++) {
        const struct header_range *h = &header_ranges[i];
        uint32_t v = h->bytes == 2u ? rd16(b + h->offset) : b[h->offset];
        if (h->check == RBNN_CHK_N_BLOCKS && version >= 2u) {
            if (v > RBNN_MAX_BLOCKS) { /* version 2: 0 blocks is an empty arena */
                return fail(m, RBNN_CHK_N_BLOCKS_V2, h->offset, 0, v);
            }
        } else if (h->check == RBNN_CHK_INPUT_MODE && version >= RBNN_VERSION_V3) {
            if (v > RBNN_INPUT_PER_PLANE) { /* version 3: input mode 1 */
                return fail(m, RBNN_CHK_INPUT_MODE_V3, h->offset, 0, v);
            }
        } else if (v < h->lo || v > h->hi) {
            return fail(m, h->check, h->offset, 0, v);
        }
    }
    m->version = (uint8_t)version;
    m->n_layers = b[13];
    m->n_blocks = b[14];
    m->n_planes = b[15];
    m->n_inputs = (uint16_t)rd16(b + 16);
    m->input_mode = b[18];
    m->plane_mask = b[19];
    m->k_planes = (uint8_t)popcount8(m->plane_mask);
    hb = HEADER_BYTES;
    slots = m->n_blocks;
    if (version >= 2u) {
        uint32_t lo = m->n_blocks > 1u ? m->n_blocks : 1u;
        hb = RBNN_HEADER_BYTES_V2;
        if (len < hb) {
            return fail(m, RBNN_CHK_TRUNC_HEADER_V2, 0, 0, (uint32_t)len);
        }
        if (b[32] < lo || b[32] > RBNN_MAX_BLOCKS) {
            return fail(m, RBNN_CHK_MAX_BLOCKS, 32, lo, b[32]);
        }
        if (b[33] > RBNN_MAX_SCORE_Q) {
            return fail(m, RBNN_CHK_SCORE_Q, 33, 0, b[33]);
        }
        for (i = 34; i < hb; i++) { /* version 3: in_h, in_w, in_c at 40..45 */
            if ((i < 36u || i >= (version >= RBNN_VERSION_V3 ? 46u : 40u)) && b[i] != 0u) {
                return fail_at(m, RBNN_CHK_HEADER_RESERVED, i, i, 0, 0, 0, b[i]);
            }
        }
        slots = b[32];
        m->max_blocks = b[32];
        m->score_q = b[33];
        m->budget = div_u32(I32_MAX, slots);
    } else {
        m->max_blocks = m->n_blocks;
    }

    /* Layer table and its pad (version 3: 8 bytes a layer, then the shapes). */
    blocks_offset = version >= RBNN_VERSION_V3 ? hb + RBNN_LAYER_ENTRY_BYTES_V3 * m->n_layers
                                               : hb + 4u * ((m->n_layers + 1u) / 2u);
    if (len < blocks_offset) {
        return fail(m, RBNN_CHK_TRUNC_LAYERS, hb, blocks_offset, (uint32_t)len);
    }
    eb = version >= RBNN_VERSION_V3 ? RBNN_LAYER_ENTRY_BYTES_V3 : RBNN_LAYER_ENTRY_BYTES;
    for (i = 0; i < m->n_layers; i++) {
        uint32_t s = rd16(b + hb + eb * i);
        if (s == 0u) {
            return fail_at(m, RBNN_CHK_LAYER_SIZE, hb + eb * i, i, 0, 0, 0, 0);
        }
        m->sizes[i] = (uint16_t)s;
    }
    if (version < RBNN_VERSION_V3 && (m->n_layers & 1u) && rd16(b + hb + 2u * m->n_layers) != 0u) {
        /* one u16 of pad after an odd number of sizes */
        return fail(m, RBNN_CHK_LAYER_PAD, hb + 2u * m->n_layers, 0, rd16(b + hb + 2u * m->n_layers));
    }
    if (version >= RBNN_VERSION_V3) {
        rc = check_layer_fields(m, b, hb);
        if (rc == RBNN_OK) {
            rc = check_shapes(m, b, hb);
        }
        if (rc != RBNN_OK) {
            return rc;
        }
    }

    /* Computed layout: a conv row (k * k * C bits) or a dense row after one (a map) can
     * be long, so every product and sum is checked. block_params < 2^16 * 20: no
     * overflow there. */
    set_geometry(m);
    for (i = 0; i < m->n_layers; i++) {
        uint32_t s = m->sizes[i];
        if (!mul_ok(s * segments(m, i), words_of(m->layer_in[i]), &t)
            || !add_ok(plane_words, t, &plane_words)) {
            return fail(m, RBNN_CHK_SIZE_OVERFLOW, 8, 0, 0);
        }
        if (i + 1u < m->n_layers) {
            block_params += 4u * s + 4u * words_of(s);
        } else {
            block_params += 8u * s;
        }
    }
    arena_offset = blocks_offset + BLOCK_ENTRY_BYTES * slots;
    if (!mul_ok(plane_words, 4u, &plane_bytes) || !mul_ok(plane_bytes, m->n_planes, &t)
        || !add_ok(arena_offset, t, &params_offset)
        || !add_ok(params_offset, block_params * slots, &train_offset)
        || !add_ok(train_offset, version >= 2u ? RBNN_TRAIN_BYTES + 4u : 4u, &t)) {
        return fail(m, RBNN_CHK_SIZE_OVERFLOW, 8, 0, 0);
    }

    /* The buffer against the stored file_bytes, then every stored offset. */
    file_bytes = rd32(b + 8);
    if (len < file_bytes) {
        return fail(m, RBNN_CHK_TRUNC_FILE, 8, file_bytes, (uint32_t)len);
    }
    if (len > file_bytes) {
        return fail(m, RBNN_CHK_FILE_LONGER, 8, (uint32_t)len, file_bytes);
    }
    if (rd32(b + 20) != plane_bytes) {
        return fail(m, RBNN_CHK_PLANE_BYTES, 20, plane_bytes, rd32(b + 20));
    }
    if (rd32(b + 24) != arena_offset) {
        return fail(m, RBNN_CHK_ARENA_OFFSET, 24, arena_offset, rd32(b + 24));
    }
    if (rd32(b + 28) != params_offset) {
        return fail(m, RBNN_CHK_PARAMS_OFFSET, 28, params_offset, rd32(b + 28));
    }
    if (version >= 2u && rd32(b + 36) != train_offset) {
        return fail(m, RBNN_CHK_TRAIN_OFFSET, 36, train_offset, rd32(b + 36));
    }
    if (file_bytes != t) {
        return fail(m, RBNN_CHK_FILE_BYTES, 8, t, file_bytes);
    }
    t = rbnn_crc32(0, b, file_bytes - 4u);
    if (t != rd32(b + file_bytes - 4u)) {
        return fail(m, RBNN_CHK_CRC, file_bytes - 4u, t, rd32(b + file_bytes - 4u));
    }

    m->file_bytes = file_bytes;
    m->plane_words = plane_words;
    m->arena_offset = arena_offset;
    m->params_offset = params_offset;
    m->blocks_offset = blocks_offset;
    m->block_params_bytes = block_params;
    m->train_offset = version >= 2u ? train_offset : 0u;
    rc = check_blocks(m, b);
    if (rc == RBNN_OK) {
        rc = check_padding(m, b);
    }
    if (rc == RBNN_OK && version >= 2u) {
        rc = check_slots(m, b);
    }
    if (rc == RBNN_OK && version >= RBNN_VERSION_V3) {
        rc = check_untrainable(m, b);
    }
    if (rc == RBNN_OK && version >= 2u) {
        rc = check_train(m, b);
    }
    if (rc == RBNN_OK) {
        rc = check_range(m, b);
    }
    if (rc != RBNN_OK) {
        m->live = 0xFFu;
        return rc;
    }
    m->buf = b; /* only a fully valid model gets a buffer: rbnn_infer checks it */
    return RBNN_OK;
}

/* ---- sizes ----------------------------------------------------------------------- */

uint32_t rbnn_input_words(const rbnn_model_t *m) {
    return (uint32_t)m->k_planes * words_of(m->n_inputs);
}

uint32_t rbnn_scratch_words(const rbnn_model_t *m) {
    return 2u * m->act_words + m->patch_words;
}

uint32_t rbnn_n_classes(const rbnn_model_t *m) {
    return m->n_layers ? m->sizes[m->n_layers - 1u] : 0u;
}

uint32_t rbnn_ram_bytes(const rbnn_model_t *m) {
    return 4u * (rbnn_input_words(m) + rbnn_scratch_words(m) + rbnn_n_classes(m));
}

/* ---- inference ------------------------------------------------------------------- */

int rbnn_pack_u8(const rbnn_model_t *m, const uint8_t *features, uint32_t *in_bits) {
    uint32_t n_words, k = 0;
    int plane;
    if (m == NULL || m->buf == NULL || features == NULL || in_bits == NULL) {
        return RBNN_E_ARG;
    }
    n_words = words_of(m->n_inputs);
    for (plane = 7; plane >= 0; plane--) { /* highest kept plane first */
        uint32_t w, i = 0;
        if (!(m->plane_mask >> plane & 1u)) {
            continue;
        }
        for (w = 0; w < n_words; w++) {
            uint32_t v = 0, bit;
            for (bit = 0; bit < 32u && i < m->n_inputs; bit++, i++) {
                v |= (uint32_t)((features[i] >> plane) & 1u) << bit;
            }
            in_bits[k * n_words + w] = v;
        }
        k++;
    }
    return RBNN_OK;
}

#define GROUP RBNN_GROUP

/* Sums s of `cnt` consecutive neurons (rows w, nw words each) into s[0..cnt). The first
 * layer sums the kept input planes with weights 2^(n - low) (n_k planes of nw words in
 * `in`); with a single plane, as in every other layer, the weight is 1. */
void rbnn_group_sums(const uint32_t *w, const uint32_t *in, uint32_t nw, uint32_t cnt,
    int32_t n, const int32_t *weight, uint32_t n_k, int32_t *s) {
    uint32_t pc[GROUP], r, k;
    rbnn_xorpop_rows(w, in, nw, cnt, pc);
    if (n_k == 1u) {
        for (r = 0; r < cnt; r++) {
            s[r] = n - 2 * (int32_t)pc[r];
        }
        return;
    }
    for (r = 0; r < cnt; r++) {
        s[r] = weight[0] * (n - 2 * (int32_t)pc[r]);
    }
    for (k = 1; k < n_k; k++) {
        rbnn_xorpop_rows(w, in + k * nw, nw, cnt, pc);
        for (r = 0; r < cnt; r++) {
            s[r] += weight[k] * (n - 2 * (int32_t)pc[r]);
        }
    }
}

/* 2^(n - low) of each kept plane, highest plane first (packed-input order). */
void rbnn_plane_weights(const rbnn_model_t *m, int32_t weight[8]) {
    uint32_t low = 0, j, k = 0;
    while (!(m->plane_mask >> low & 1u)) {
        low++;
    }
    for (j = 8u; j-- > 0u;) {
        if (m->plane_mask >> j & 1u) {
            weight[k++] = (int32_t)(1u << (j - low));
        }
    }
}

/* One layer of a block as the sums see it: rows of `seg` segments of nw words (in[l]
 * = n_in bits each) against an input of n_k planes of nw words weighted by weight[]. */
typedef struct {
    const uint32_t *w;      /* the layer's first row in the sign plane */
    const int32_t *weight;  /* plane weights (layer 0), else {1} */
    uint32_t n_in, nw, n_k, seg, n_out;
} layer_t;

/* Input mode 1's first layer: row r has one segment per plane. */
static void seg_sums(const layer_t *L, const uint32_t *w, const uint32_t *in, uint32_t cnt,
    int32_t *s) {
    uint32_t r, k;
    for (r = 0; r < cnt; r++, w += L->n_k * L->nw) {
        int32_t v = 0;
        for (k = 0; k < L->n_k; k++) {
            v += L->weight[k]
                 * ((int32_t)L->n_in - 2 * (int32_t)rbnn_xorpop(w + k * L->nw, in + k * L->nw, L->nw));
        }
        s[r] = v;
    }
}

/* Sums of `cnt` (<= GROUP) rows from w against `in`. */
static void layer_sums(const layer_t *L, const uint32_t *w, const uint32_t *in, uint32_t cnt,
    int32_t *s) {
    if (L->seg == 1u) {
        rbnn_group_sums(w, in, L->nw, cnt, (int32_t)L->n_in, L->weight, L->n_k, s);
    } else {
        seg_sums(L, w, in, cnt, s);
    }
}

/* n bits of src from bit sb ORed into dst from bit db (those bits of dst are 0), a word at
 * a time; word i of dst is dst[i * st] (st 1, or RBNN_TILE into interleaved patches).
 * Whole words when both sides are word-aligned (C a multiple of 32). */
static void copy_bits(uint32_t *dst, uint32_t st, uint32_t db, const uint32_t *src, uint32_t sb,
    uint32_t n) {
    if (((sb | db) & 31u) == 0u) {
        uint32_t *d = dst + (db >> 5) * st;
        const uint32_t *p = src + (sb >> 5);
        for (; n >= 32u; n -= 32u, d += st) {
            *d = *p++;
        }
        if (n != 0u) {
            *d |= *p & ((1u << n) - 1u);
        }
        return;
    }
    while (n > 0u) {
        uint32_t so = sb & 31u, dof = db & 31u, take = n < 32u ? n : 32u;
        uint32_t v = src[sb >> 5] >> so;
        if (so != 0u && so + take > 32u) {
            v |= src[(sb >> 5) + 1u] << (32u - so);
        }
        if (take < 32u) {
            v &= (1u << take) - 1u;
        }
        dst[(db >> 5) * st] |= v << dof;
        if (dof != 0u && dof + take > 32u) {
            dst[((db >> 5) + 1u) * st] |= v >> (32u - dof);
        }
        sb += take;
        db += take;
        n -= take;
    }
}

/* A conv layer's input map and kernel. */
typedef struct {
    uint32_t h, w, c, k, p;
} conv_t;

/* The patch of conv position (y, x) from map a (docs/FORMAT.md, Semantics of the new
 * layers) into a zeroed patch (word i at patch[i * st]): per kernel row, one run of
 * (columns inside the map) * C bits copied from the (y, x, c) bit vector; padded
 * positions stay 0. */
static void gather(const conv_t *cv, const uint32_t *a, uint32_t y, uint32_t x, uint32_t *patch,
    uint32_t st) {
    uint32_t ky, k = cv->k, p = cv->p;
    uint32_t kx0 = x < p ? p - x : 0u, kx1 = x + k - p > cv->w ? cv->w + p - x : k;
    for (ky = 0; ky < k; ky++) {
        uint32_t yy = y + ky; /* map row yy - p */
        if (yy < p || yy - p >= cv->h) {
            continue;
        }
        copy_bits(patch, st, (ky * k + kx0) * cv->c, a, ((yy - p) * cv->w + x + kx0 - p) * cv->c,
            (kx1 - kx0) * cv->c);
    }
}

/* Channels whose pooled sums are kept at once: a stack row of ints, so that each patch
 * is gathered once for up to this many output channels. */
#if RBNN_TILED
#define CONV_CHUNK 256u
#else
#define CONV_CHUNK 64u
#endif

/* A hidden conv layer in eBNN order: per output position (after the pool), the patch of
 * each of its 1 or 4 conv positions against every output channel, the max of the sums
 * (min where the channel's flip is set), one compare; the output map's bits go to out
 * (zeroed first). `in` holds n_k planes of in_words words; patch, n_k * nw words. */
static void conv_layer(const layer_t *L, const conv_t *cv, uint32_t pool, const uint32_t *in,
    uint32_t in_words, const int32_t *thr, const uint32_t *flip, uint32_t *out, uint32_t *patch) {
    uint32_t div = pool == RBNN_POOL_2X2 ? 2u : 1u, nq = div * div;
    uint32_t ho = (cv->h + 2u * cv->p - cv->k + 1u) / div, wo = (cv->w + 2u * cv->p - cv->k + 1u) / div;
    uint32_t row = L->seg * L->nw, n_out = L->n_out, oy, ox, j0, q, g, r, kk;
    int32_t best[CONV_CHUNK], s[GROUP];
    for (r = 0; r < words_of(ho * wo * n_out); r++) {
        out[r] = 0;
    }
    for (oy = 0; oy < ho; oy++) {
        for (ox = 0; ox < wo; ox++) {
            uint32_t bit = (oy * wo + ox) * n_out;
            for (j0 = 0; j0 < n_out; j0 += CONV_CHUNK) {
                uint32_t chunk = n_out - j0 < CONV_CHUNK ? n_out - j0 : CONV_CHUNK;
                for (q = 0; q < nq; q++) {
                    if (nq > 1u || j0 == 0u) { /* without a pool the patch stays */
                        for (kk = 0; kk < L->n_k * L->nw; kk++) {
                            patch[kk] = 0;
                        }
                        for (kk = 0; kk < L->n_k; kk++) {
                            gather(cv, in + kk * in_words, oy * div + (q >> 1), ox * div + (q & 1u),
                                patch + kk * L->nw, 1u);
                        }
                    }
                    for (g = 0; g < chunk; g += GROUP) {
                        uint32_t cnt = chunk - g < GROUP ? chunk - g : GROUP;
                        layer_sums(L, L->w + (j0 + g) * row, patch, cnt, s);
                        for (r = 0; r < cnt; r++) {
                            uint32_t j = j0 + g + r, fl = flip[j >> 5] >> (j & 31u) & 1u;
                            if (q == 0u || (fl ? s[r] < best[g + r] : s[r] > best[g + r])) {
                                best[g + r] = s[r];
                            }
                        }
                    }
                }
                for (g = 0; g < chunk; g += 32u) {
                    uint32_t cnt = chunk - g < 32u ? chunk - g : 32u, word = 0;
                    for (r = 0; r < cnt; r++) {
                        uint32_t j = j0 + g + r, fl = flip[j >> 5] >> (j & 31u) & 1u;
                        word |= ((uint32_t)(best[g + r] >= thr[j]) ^ fl) << r;
                    }
                    copy_bits(out, 1u, bit + j0 + g, &word, 0, cnt);
                }
            }
        }
    }
}

#if RBNN_TILE > 1
/* Hosts: conv positions RBNN_TILE at a time. The patches of RBNN_TILE consecutive conv
 * positions (pooled outputs in raster order, each with its 1 or 4 conv positions) are
 * interleaved word by word (rbnn_xorpop_lanes), so each weight word is loaded once for
 * all of them and no popcount needs a horizontal sum; the same integers as conv_layer.
 * A layer whose interleaved patches do not fit CONV_TILE_WORDS runs conv_layer. */
#define CONV_TILE_WORDS 4096u

static void conv_layer_tiled(const layer_t *L, const conv_t *cv, uint32_t pool, const uint32_t *in,
    uint32_t in_words, const int32_t *thr, const uint32_t *flip, uint32_t *out) {
    uint32_t xt[CONV_TILE_WORDS], pc[GROUP * RBNN_TILE], words[RBNN_TILE];
    int32_t s[GROUP * RBNN_TILE]; /* s[r * RBNN_TILE + lane], as pc */
    uint32_t div = pool == RBNN_POOL_2X2 ? 2u : 1u, nq = div * div, no = RBNN_TILE / nq;
    uint32_t ho = (cv->h + 2u * cv->p - cv->k + 1u) / div, wo = (cv->w + 2u * cv->p - cv->k + 1u) / div;
    uint32_t row = L->seg * L->nw, n_out = L->n_out, nw = L->nw, n_k = L->n_k, n_o = ho * wo;
    uint32_t o0, t, i, kk, j, r, q;
    int32_t n = (int32_t)L->n_in;
    for (i = 0; i < words_of(n_o * n_out); i++) {
        out[i] = 0;
    }
    /* lane q * no + o: conv position q of pooled output o0 + o (the four of one output
     * are no lanes apart, so the pool is a max over whole rows of lanes) */
    for (o0 = 0; o0 < n_o; o0 += no) {
        uint32_t nt = n_o - o0 < no ? n_o - o0 : no;
        for (i = 0; i < n_k * nw * RBNN_TILE; i++) { /* idle lanes stay 0 */
            xt[i] = 0;
        }
        for (t = 0; t < nt; t++) {
            uint32_t oy = (o0 + t) / wo, ox = (o0 + t) - oy * wo;
            for (q = 0; q < nq; q++) {
                for (kk = 0; kk < n_k; kk++) {
                    gather(cv, in + kk * in_words, oy * div + (q >> 1), ox * div + (q & 1u),
                        xt + kk * nw * RBNN_TILE + q * no + t, RBNN_TILE);
                }
            }
        }
        for (j = 0; j < n_out; j += GROUP) {
            uint32_t cnt = n_out - j < GROUP ? n_out - j : GROUP;
            for (kk = 0; kk < n_k; kk++) {
                const uint32_t *xk = xt + kk * nw * RBNN_TILE;
                int32_t wk = L->weight[kk];
                if (L->seg == 1u) {
                    rbnn_xorpop_lanes(L->w + j * row, xk, nw, cnt, pc);
                } else { /* input mode 1: row r's segment kk */
                    for (r = 0; r < cnt; r++) {
                        rbnn_xorpop_lanes(L->w + (j + r) * row + kk * nw, xk, nw, 1, pc + r * RBNN_TILE);
                    }
                }
                if (kk == 0u) {
                    for (i = 0; i < cnt * RBNN_TILE; i++) {
                        s[i] = wk * (n - 2 * (int32_t)pc[i]);
                    }
                } else {
                    for (i = 0; i < cnt * RBNN_TILE; i++) {
                        s[i] += wk * (n - 2 * (int32_t)pc[i]);
                    }
                }
            }
            for (t = 0; t < RBNN_TILE; t++) {
                words[t] = 0;
            }
            if (nq == 1u) {
                for (r = 0; r < cnt; r++) {
                    const int32_t *sr = s + r * RBNN_TILE;
                    uint32_t fl = flip[(j + r) >> 5] >> ((j + r) & 31u) & 1u;
                    int32_t th = thr[j + r];
                    for (t = 0; t < RBNN_TILE; t++) {
                        words[t] |= ((uint32_t)(sr[t] >= th) ^ fl) << r;
                    }
                }
            } else {
                for (r = 0; r < cnt; r++) {
                    const int32_t *sr = s + r * RBNN_TILE;
                    uint32_t fl = 0u - (flip[(j + r) >> 5] >> ((j + r) & 31u) & 1u);
                    int32_t th = thr[j + r], hi[4], lo[4];
                    for (t = 0; t < 4u; t++) { /* branch-free, so that it vectorises */
                        int32_t a = sr[t] > sr[t + 4u] ? sr[t] : sr[t + 4u];
                        int32_t b = sr[t + 8u] > sr[t + 12u] ? sr[t + 8u] : sr[t + 12u];
                        int32_t c = sr[t] < sr[t + 4u] ? sr[t] : sr[t + 4u];
                        int32_t d = sr[t + 8u] < sr[t + 12u] ? sr[t + 8u] : sr[t + 12u];
                        hi[t] = a > b ? a : b;
                        lo[t] = c < d ? c : d;
                    }
                    for (t = 0; t < 4u; t++) {
                        /* max >= t without a flip; with one, (min >= t) XOR 1 */
                        uint32_t bit = ((uint32_t)(hi[t] >= th) & ~fl) | ((uint32_t)(lo[t] < th) & fl);
                        words[t] |= bit << r;
                    }
                }
            }
            for (t = 0; t < nt; t++) {
                copy_bits(out, 1u, (o0 + t) * n_out + j, &words[t], 0, cnt);
            }
        }
    }
}
#endif

/* Scores of one block added to `scores`, in eBNN order: hidden sums are thresholded into
 * bits as soon as a group of 32 is known (never a full-precision feature map); layers
 * ping-pong between the two halves of `scratch`, conv layers gather their patches into
 * the words after them. */
static void run_block(const rbnn_model_t *m, uint32_t blk, const uint32_t *x,
    uint32_t *scratch, int32_t *scores) {
    static const int32_t one = 1;
    const uint8_t *b = m->buf;
    uint32_t sign = b[m->blocks_offset + BLOCK_ENTRY_BYTES * blk + 4u];
    const uint32_t *w = (const uint32_t *)(const void *)(b + m->arena_offset)
                        + sign * m->plane_words;
    const uint8_t *params = b + m->params_offset + blk * m->block_params_bytes;
    uint32_t *patch = scratch + 2u * m->act_words;
    conv_t cv;
    uint32_t layer, j, r;
    int32_t weight[8], s[GROUP];
    const uint32_t *in = x;

    rbnn_plane_weights(m, weight);
    cv.h = m->in_h;
    cv.w = m->in_w;
    cv.c = m->in_c;

    for (layer = 0; layer < m->n_layers; layer++) {
        layer_t L;
        uint32_t n_out = m->sizes[layer], row;
        L.w = w;
        L.weight = layer == 0u ? weight : &one;
        L.n_in = m->layer_in[layer];
        L.nw = words_of(L.n_in);
        L.n_k = layer == 0u ? m->k_planes : 1u;
        L.seg = segments(m, layer);
        L.n_out = n_out;
        row = L.seg * L.nw;
        if (layer + 1u < m->n_layers) {
            const int32_t *thr = (const int32_t *)(const void *)params;
            const uint32_t *flip = (const uint32_t *)(const void *)(params + 4u * n_out);
            uint32_t *out = scratch + ((layer & 1u) ? m->act_words : 0u);
            if (m->kinds[layer] == RBNN_CONV) {
                uint32_t div = m->pools[layer] == RBNN_POOL_2X2 ? 2u : 1u;
                cv.k = m->kernels[layer];
                cv.p = m->pads[layer];
#if RBNN_TILE > 1
                if (RBNN_TILE * L.n_k * L.nw <= CONV_TILE_WORDS) {
                    conv_layer_tiled(&L, &cv, m->pools[layer], in, words_of(m->n_inputs), thr, flip, out);
                } else
#endif
                {
                    conv_layer(&L, &cv, m->pools[layer], in, words_of(m->n_inputs), thr, flip, out, patch);
                }
                cv.h = (cv.h + 2u * cv.p - cv.k + 1u) / div;
                cv.w = (cv.w + 2u * cv.p - cv.k + 1u) / div;
                cv.c = n_out;
            } else {
                for (j = 0; j < n_out; j += GROUP) {
                    uint32_t cnt = n_out - j < GROUP ? n_out - j : GROUP, word = 0;
                    layer_sums(&L, w + j * row, in, cnt, s);
                    for (r = 0; r < cnt; r++) {
                        word |= (uint32_t)(s[r] >= thr[j + r]) << r;
                    }
                    out[j >> 5] = word ^ flip[j >> 5]; /* flip padding is 0: padding stays 0 */
                }
            }
            params += 4u * n_out + 4u * words_of(n_out);
            in = out;
        } else {
            const int32_t *scale = (const int32_t *)(const void *)params;
            const int32_t *offset = scale + n_out;
            for (j = 0; j < n_out; j += GROUP) {
                uint32_t cnt = n_out - j < GROUP ? n_out - j : GROUP;
                layer_sums(&L, w + j * row, in, cnt, s);
                for (r = 0; r < cnt; r++) {
                    /* E_RANGE at load guarantees neither step leaves int32. */
                    scores[j + r] += scale[j + r] * s[r] + offset[j + r];
                }
            }
        }
        w += n_out * row;
    }
}

static int check_args(const rbnn_model_t *m, const uint32_t *in_bits, const uint32_t *scratch,
    const int32_t *scores) {
    if (m == NULL || m->buf == NULL || in_bits == NULL || scores == NULL) {
        return RBNN_E_ARG;
    }
    if (scratch == NULL && rbnn_scratch_words(m) != 0u) {
        return RBNN_E_ARG;
    }
    return RBNN_OK;
}

void rbnn_block_scores(const rbnn_model_t *m, uint32_t blk, const uint32_t *x,
    uint32_t *scratch, int32_t *scores) {
    run_block(m, blk, x, scratch, scores);
}

/* Padding bits of each plane's last word must be 0 (they would add to popcounts). */
int rbnn_check_input(const rbnn_model_t *m, const uint32_t *in_bits) {
    uint32_t nw = words_of(m->n_inputs), bad = ~pad_mask(m->n_inputs), k;
    if (bad != 0u) {
        for (k = 0; k < m->k_planes; k++) {
            if (in_bits[k * nw + nw - 1u] & bad) {
                return RBNN_E_INPUT;
            }
        }
    }
    return RBNN_OK;
}

static int infer_one(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t *scratch,
    int32_t *scores) {
    uint32_t n_cls = rbnn_n_classes(m), j, blk, best = 0;
    int rc = rbnn_check_input(m, in_bits);
    if (rc != RBNN_OK) {
        return rc;
    }
    for (j = 0; j < n_cls; j++) {
        scores[j] = 0;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        run_block(m, blk, in_bits, scratch, scores);
    }
    for (j = 1; j < n_cls; j++) {
        if (scores[j] > scores[best]) { /* strict: ties keep the lowest index */
            best = j;
        }
    }
    return (int)best;
}

int rbnn_infer(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t *scratch,
    int32_t *scores) {
    int rc = check_args(m, in_bits, scratch, scores);
    return rc != RBNN_OK ? rc : infer_one(m, in_bits, scratch, scores);
}

#if RBNN_TILE > 1
/* ---- batches: RBNN_TILE samples per weight row (hosts) -----------------------------
 * run_block's arithmetic for a tile of samples whose inputs and activations are
 * interleaved word by word (rbnn_xorpop_lanes): each weight word is loaded once for the
 * whole tile. Every sum, threshold and score is the same integer operation as in
 * run_block, so the results are identical. Lanes past the tile's samples hold zeros (and
 * what follows from them) and are never stored. */

/* Words of a tile's interleaved input and activations, on the stack: rbnn_scratch_words
 * stays what the device needs. A model whose tile does not fit runs one at a time. */
#define TILE_WORDS 8192u

static uint32_t batch_tile = RBNN_TILE;

uint32_t rbnn_set_batch_tile(uint32_t t) {
    uint32_t old = batch_tile;
    batch_tile = t == 0u ? 1u : t > RBNN_TILE ? RBNN_TILE : t;
    return old;
}

/* Sums s[t][r] of `cnt` neurons for every lane: xt holds n_k planes of nw interleaved
 * words. */
static void tile_sums(const uint32_t *w, const uint32_t *xt, uint32_t nw, uint32_t cnt,
    int32_t n, const int32_t *weight, uint32_t n_k, int32_t s[RBNN_TILE][GROUP]) {
    uint32_t pc[GROUP * RBNN_TILE], r, k, t;
    for (k = 0; k < n_k; k++) {
        rbnn_xorpop_lanes(w, xt + k * nw * RBNN_TILE, nw, cnt, pc);
        for (r = 0; r < cnt; r++) {
            for (t = 0; t < RBNN_TILE; t++) {
                int32_t v = weight[k] * (n - 2 * (int32_t)pc[r * RBNN_TILE + t]);
                s[t][r] = k == 0u ? v : s[t][r] + v;
            }
        }
    }
}

/* Block blk's scores added to scores (nx rows of n_cls); `buf` starts with the tile's
 * interleaved input, then two interleaved activation buffers. */
static void run_block_tile(const rbnn_model_t *m, uint32_t blk, uint32_t nx, uint32_t *buf,
    int32_t *scores) {
    static const int32_t one = 1;
    const uint8_t *b = m->buf;
    uint32_t sign = b[m->blocks_offset + BLOCK_ENTRY_BYTES * blk + 4u];
    const uint32_t *w = (const uint32_t *)(const void *)(b + m->arena_offset)
                        + sign * m->plane_words;
    const uint8_t *params = b + m->params_offset + blk * m->block_params_bytes;
    uint32_t half = RBNN_TILE * (rbnn_scratch_words(m) / 2u);
    uint32_t *act = buf + RBNN_TILE * rbnn_input_words(m);
    uint32_t n_cls = rbnn_n_classes(m), n_in = m->n_inputs, layer, j, r, t;
    int32_t weight[8], s[RBNN_TILE][GROUP];
    const uint32_t *in = buf;

    rbnn_plane_weights(m, weight);

    for (layer = 0; layer < m->n_layers; layer++) {
        uint32_t n_out = m->sizes[layer], nw = words_of(n_in);
        const int32_t *wt = layer == 0u ? weight : &one;
        uint32_t n_k = layer == 0u ? m->k_planes : 1u;
        int32_t n = (int32_t)n_in;
        if (layer + 1u < m->n_layers) {
            const int32_t *thr = (const int32_t *)(const void *)params;
            const uint32_t *flip = (const uint32_t *)(const void *)(params + 4u * n_out);
            uint32_t *out = act + ((layer & 1u) ? half : 0u);
            for (j = 0; j < n_out; j += GROUP) {
                uint32_t cnt = n_out - j < GROUP ? n_out - j : GROUP;
                tile_sums(w, in, nw, cnt, n, wt, n_k, s);
                w += cnt * nw;
                for (t = 0; t < RBNN_TILE; t++) {
                    uint32_t word = 0;
                    for (r = 0; r < cnt; r++) {
                        word |= (uint32_t)(s[t][r] >= thr[j + r]) << r;
                    }
                    out[(j >> 5) * RBNN_TILE + t] = word ^ flip[j >> 5];
                }
            }
            params += 4u * n_out + 4u * words_of(n_out);
            in = out;
        } else {
            const int32_t *scale = (const int32_t *)(const void *)params;
            const int32_t *offset = scale + n_out;
            for (j = 0; j < n_out; j += GROUP) {
                uint32_t cnt = n_out - j < GROUP ? n_out - j : GROUP;
                tile_sums(w, in, nw, cnt, n, wt, n_k, s);
                w += cnt * nw;
                for (t = 0; t < nx; t++) {
                    for (r = 0; r < cnt; r++) {
                        scores[t * n_cls + j + r] += scale[j + r] * s[t][r] + offset[j + r];
                    }
                }
            }
        }
        n_in = n_out;
    }
}

/* Samples a tile for this model: batch_tile, or 1 when its buffers do not fit. */
static uint32_t tile_for(const rbnn_model_t *m) {
    uint32_t need;
    if (m->version >= RBNN_VERSION_V3) {
        return 1u; /* conv layers and input mode 1 run one sample at a time */
    }
    need = RBNN_TILE * (rbnn_input_words(m) + rbnn_scratch_words(m));
    return need <= TILE_WORDS ? batch_tile : 1u;
}

/* nx <= RBNN_TILE samples, all inputs already checked: scores and classes. */
static void infer_tile(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t nx,
    int32_t *scores, int32_t *classes) {
    uint32_t buf[TILE_WORDS];
    uint32_t n_cls = rbnn_n_classes(m), in_words = rbnn_input_words(m), i, j, t, blk;
    for (i = 0; i < in_words; i++) { /* interleave: word i of sample t at i * TILE + t */
        for (t = 0; t < RBNN_TILE; t++) {
            buf[i * RBNN_TILE + t] = t < nx ? in_bits[t * in_words + i] : 0u;
        }
    }
    for (j = 0; j < nx * n_cls; j++) {
        scores[j] = 0;
    }
    for (blk = 0; blk < m->n_blocks; blk++) {
        run_block_tile(m, blk, nx, buf, scores);
    }
    if (classes != NULL) {
        for (t = 0; t < nx; t++) {
            const int32_t *sc = scores + t * n_cls;
            uint32_t best = 0;
            for (j = 1; j < n_cls; j++) {
                if (sc[j] > sc[best]) { /* strict: ties keep the lowest index */
                    best = j;
                }
            }
            classes[t] = (int32_t)best;
        }
    }
}
#endif

int rbnn_infer_batch(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t n,
    uint32_t *scratch, int32_t *scores, int32_t *classes) {
    uint32_t i = 0, in_words, n_cls;
    int rc = check_args(m, in_bits, scratch, scores);
    if (rc != RBNN_OK) {
        return rc;
    }
    in_words = rbnn_input_words(m);
    n_cls = rbnn_n_classes(m);
#if RBNN_TILE > 1
    {
        uint32_t cap = tile_for(m), nx, t;
        /* full tiles, then a partial one; a single sample left runs one at a time */
        while (cap > 1u && (nx = n - i < cap ? n - i : cap) > 1u) {
            for (t = 0; t < nx; t++) {
                if (rbnn_check_input(m, in_bits + (i + t) * in_words) != RBNN_OK) {
                    break;
                }
            }
            if (t < nx) {
                break; /* a bad input in this tile: the one-at-a-time loop stops at it */
            }
            infer_tile(m, in_bits + i * in_words, nx, scores + i * n_cls,
                classes != NULL ? classes + i : NULL);
            i += nx;
        }
    }
#endif
    for (; i < n; i++) {
        rc = infer_one(m, in_bits + i * in_words, scratch, scores + i * n_cls);
        if (rc < 0) {
            return rc;
        }
        if (classes != NULL) {
            classes[i] = rc;
        }
    }
    return RBNN_OK;
}

const char *rbnn_strerror(int code) {
    return code <= 0 && code > -RBNN_N_CODES ? rbnn_code_texts[-code] : "unknown error";
}

const char *rbnn_code_name(int code) {
    return code <= 0 && code > -RBNN_N_CODES ? rbnn_code_names[-code] : "E_UNKNOWN";
}

/* ---- error messages -------------------------------------------------------------- */

/* Appends to a bounded buffer; counts what would have been written. */
typedef struct {
    char *buf;
    uint32_t size, len;
} text_t;

static void put_char(text_t *t, char c) {
    if (t->len + 1u < t->size) {
        t->buf[t->len] = c;
    }
    t->len++;
}

static void put_str(text_t *t, const char *s) {
    while (*s) {
        put_char(t, *s++);
    }
}

/* Unsigned decimal without division (a Cortex-M0+ has none): subtract powers of ten. */
static void put_dec(text_t *t, uint32_t v) {
    static const uint32_t pow10[10] = {1000000000u, 100000000u, 10000000u, 1000000u,
        100000u, 10000u, 1000u, 100u, 10u, 1u};
    uint32_t i, started = 0;
    for (i = 0; i < 10u; i++) {
        uint32_t d = 0;
        while (v >= pow10[i]) {
            v -= pow10[i];
            d++;
        }
        if (d || started || i == 9u) {
            put_char(t, (char)('0' + d));
            started = 1;
        }
    }
}

#ifndef RBNN_NO_ERROR_TEXT
static void put_hex(text_t *t, uint32_t v, uint32_t digits) {
    static const char hex[] = "0123456789abcdef";
    put_str(t, "0x");
    while (digits-- > 0u) {
        put_char(t, hex[(v >> (4u * digits)) & 15u]);
    }
}

/* Fill a template of host/rbnn/format/checks.py: {i} {j} {k} {want} {found}, each
 * optionally :d (signed), :x (0x%08x) or :x4 (0x%04x). */
static void put_template(text_t *t, const char *s, const rbnn_model_t *m) {
    while (*s) {
        const char *e;
        uint32_t v;
        if (*s != '{') {
            put_char(t, *s++);
            continue;
        }
        e = s + 1;
        if (*e == 'i' || *e == 'j' || *e == 'k') {
            v = *e == 'i' ? m->err_i : *e == 'j' ? m->err_j : m->err_k;
            e++;
        } else if (*e == 'w') { /* want */
            v = m->err_want;
            e += 4;
        } else { /* found */
            v = m->err_found;
            e += 5;
        }
        if (*e == ':') {
            if (e[1] == 'd') {
                if (v >> 31) {
                    put_char(t, '-');
                    v = 0u - v;
                }
                put_dec(t, v);
            } else {
                put_hex(t, v, e[2] == '4' ? 4u : 8u);
            }
            while (*e != '}') {
                e++;
            }
        } else {
            put_dec(t, v);
        }
        s = e + 1; /* past the closing brace */
    }
}
#endif

uint32_t rbnn_error_text(const rbnn_model_t *m, int code, char *buf, uint32_t size) {
    text_t t;
    t.buf = buf;
    t.size = buf == NULL ? 0u : size;
    t.len = 0;
    put_str(&t, rbnn_code_name(code));
    if (m == NULL || m->err_check == RBNN_CHK_NONE || m->err_check >= RBNN_N_CHECKS
        || rbnn_check_code[m->err_check] != code) {
        put_str(&t, ": ");
        put_str(&t, rbnn_strerror(code));
    } else {
        put_str(&t, " at offset ");
        put_dec(&t, m->err_offset);
#ifdef RBNN_NO_ERROR_TEXT
        put_str(&t, ": check ");
        put_dec(&t, m->err_check);
#else
        put_str(&t, ": ");
        put_template(&t, rbnn_check_text[m->err_check][0], m);
        put_str(&t, ": expected ");
        put_template(&t, rbnn_check_text[m->err_check][1], m);
        put_str(&t, ", found ");
        put_template(&t, rbnn_check_text[m->err_check][2], m);
#endif
    }
    if (t.size > 0u) {
        t.buf[t.len < t.size ? t.len : t.size - 1u] = '\0';
    }
    return t.len;
}
