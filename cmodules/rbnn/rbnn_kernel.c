/*
 * XOR-popcount kernels: sum of popcount(a[i] ^ b[i]) over a row of 32-bit words.
 * One version per kind of target (rbnn_kernel.h); tests/test_kernel.py checks the
 * host versions and tests/test_m0plus.py the ARMv6-M one against numpy, and
 * bench/m0plus.py counts the cycles of each.
 */
#include "rbnn_kernel.h"

#if defined(__ARM_ARCH_6M__) && defined(__GNUC__) && !defined(RBNN_KERNEL_PORTABLE)
/* ---------------------------------------------------------------------------------
 * ARMv6-M: Thumb-1 by hand. GCC at -O2 spills in the popcount loops because only
 * r0-r7 take part in most Thumb-1 instructions, so each kernel is one naked function
 * that keeps every value in a register.
 *
 * Carry-save (Harley-Seal) accumulation: the words of a row go through a bit-sliced
 * adder, "ones" (O) and "twos" (T) bit vectors, four words a group; each group emits
 * one "fours" vector, SWAR-popcounted into the bytes of an accumulator (<= 8 a byte
 * per group, so rows up to 31 groups, 124 words, run in one pass; longer rows are
 * split). A carry-save adder CSA(a, b, c) -> (a = carry, b = sum) is five 2-operand
 * instructions: b ^= a; a ^= c; a &= ~b; a ^= c; b ^= c. The n % 4 leading words seed
 * O and T (one word: O = x; two more: a CSA). A row's count is
 * 4 * (sum of the accumulator's bytes) + popcount(O) + 2 * popcount(T), summed in
 * 16-bit lanes and gathered with one multiply.
 *
 * Cycles per group of 4 words (Cortex-M0+ table, host/rbnn/m0sim.py): loads and XOR
 * 17, three CSAs 15, popcount of the fours 13 (16 with the masks loaded from the
 * literal pool), accumulate 1, loop 3: 49 (52), about 12.3 (13) a word.
 * ------------------------------------------------------------------------------- */
const char rbnn_kernel_name[] = "armv6m-hs4";

#define RBNN_ASM_ARG __attribute__((unused)) /* read by the asm from r0-r3 and [sp] */
#define RBNN_MAX_PASS 124u                   /* words of a row in one pass (31 groups) */

/* CSA(a, b, c): a = majority(a, b, c), b = a ^ b ^ c; c is kept. */
#define CSA(a, b, c) \
    "eors " b ", " a "\n" "eors " a ", " c "\n" "bics " a ", " b "\n" \
    "eors " a ", " c "\n" "eors " b ", " c "\n"

/* Row prologue shared by both kernels (r0 = row, r1 = x, r5 = n): O (r2) and T (r3)
 * from the n % 4 leading words. */
#define SEED_O_T \
    "lsrs r5, r5, #1\n"        /* C = bit 0 of n */ \
    "movs r2, #0\n"            /* O (MOVS #imm keeps C) */ \
    "movs r3, #0\n"            /* T */ \
    "bcc 1f\n" \
    "ldm r0!, {r2}\n" \
    "ldm r1!, {r6}\n" \
    "eors r2, r6\n" \
    "1:\n" \
    "lsrs r5, r5, #1\n"        /* C = bit 1 of n */ \
    "bcc 2f\n" \
    "ldm r0!, {r6, r7}\n" \
    "ldm r1!, {r3, r4}\n" \
    "eors r6, r3\n" \
    "eors r7, r4\n" \
    CSA("r6", "r2", "r7") \
    "movs r3, r6\n" \
    "2:\n"

/* Loads, XOR and the three CSAs of one group: leaves the fours vector in r4. */
#define GROUP_CSAS \
    "ldm r0!, {r4, r5}\n" \
    "ldm r1!, {r6, r7}\n" \
    "eors r4, r6\n" \
    "eors r5, r7\n" \
    CSA("r4", "r2", "r5")      /* r4 = twos A */ \
    "ldm r0!, {r5, r6}\n" \
    "ldm r1!, {r7}\n" \
    "eors r5, r7\n" \
    "ldm r1!, {r7}\n" \
    "eors r6, r7\n" \
    CSA("r5", "r2", "r6")      /* r5 = twos B */ \
    CSA("r4", "r3", "r5")      /* r4 = fours */

/* One row of at most one pass, no high registers (nothing to save): the masks come
 * from the literal pool. */
__attribute__((naked, noinline)) static uint32_t row_m0(const uint32_t *a RBNN_ASM_ARG,
    const uint32_t *b RBNN_ASM_ARG, uint32_t n RBNN_ASM_ARG) {
    __asm__ volatile(
        ".syntax unified\n"
        "push {r4-r7, lr}\n"
        "lsls r4, r2, #2\n"
        "adds r4, r1, r4\n"
        "mov lr, r4\n"             /* lr = end of b */
        "movs r4, #0\n"
        "mov r12, r4\n"            /* r12 = fours byte counts */
        "movs r5, r2\n"
        SEED_O_T
        "cmp r1, lr\n"
        "beq 4f\n"
        "3:\n"
        GROUP_CSAS
        "ldr r7, =0x55555555\n"
        "lsrs r5, r4, #1\n"
        "ands r5, r7\n"
        "subs r4, r4, r5\n"
        "ldr r7, =0x33333333\n"
        "lsrs r5, r4, #2\n"
        "ands r5, r7\n"
        "ands r4, r7\n"
        "adds r4, r4, r5\n"
        "lsrs r5, r4, #4\n"
        "adds r4, r4, r5\n"
        "ldr r7, =0x0F0F0F0F\n"
        "ands r4, r7\n"
        "add r12, r4\n"
        "cmp r1, lr\n"
        "bne 3b\n"
        "4:\n"                     /* bytes of popcount(O) + 2 popcount(T) */
        "ldr r7, =0x55555555\n"
        "lsrs r4, r2, #1\n"
        "ands r4, r7\n"
        "subs r2, r2, r4\n"
        "lsrs r4, r3, #1\n"
        "ands r4, r7\n"
        "subs r3, r3, r4\n"
        "ldr r7, =0x33333333\n"
        "lsrs r4, r2, #2\n"
        "ands r4, r7\n"
        "ands r2, r7\n"
        "adds r2, r2, r4\n"
        "lsrs r4, r3, #2\n"
        "ands r4, r7\n"
        "ands r3, r7\n"
        "adds r3, r3, r4\n"
        "adds r2, r2, r3\n"        /* nibbles <= 12 */
        "adds r2, r2, r3\n"
        "ldr r7, =0x0F0F0F0F\n"
        "lsrs r4, r2, #4\n"
        "ands r4, r7\n"
        "ands r2, r7\n"
        "adds r2, r2, r4\n"        /* bytes <= 24 */
        "ldr r7, =0x00FF00FF\n"    /* 16-bit lanes: 4 * fours + (O + 2T) <= 2032 */
        "mov r4, r12\n"
        "lsrs r5, r4, #8\n"
        "ands r4, r7\n"
        "ands r5, r7\n"
        "adds r4, r4, r5\n"
        "lsrs r5, r2, #8\n"
        "ands r2, r7\n"
        "ands r5, r7\n"
        "adds r2, r2, r5\n"
        "lsls r4, r4, #2\n"
        "adds r4, r4, r2\n"
        "ldr r7, =0x00010001\n"
        "muls r4, r7\n"
        "lsrs r0, r4, #16\n"
        "pop {r4-r7, pc}\n"
        ".ltorg\n");
}

/* Many rows of at most one pass: the masks live in r8-r10 (saved once per call), r11
 * holds the fours byte counts, r12 the 16-bit lane mask, lr the end of x. Frame: [sp]
 * x, [sp+4] n, [sp+8] next out, [sp+12] end of out, [sp+52] the out argument. */
__attribute__((naked, noinline)) static void rows_m0(const uint32_t *w RBNN_ASM_ARG,
    const uint32_t *x RBNN_ASM_ARG, uint32_t n RBNN_ASM_ARG, uint32_t rows RBNN_ASM_ARG,
    uint32_t *out RBNN_ASM_ARG) {
    __asm__ volatile(
        ".syntax unified\n"
        "push {r4-r7, lr}\n"
        "mov r4, r8\n"
        "mov r5, r9\n"
        "mov r6, r10\n"
        "mov r7, r11\n"
        "push {r4-r7}\n"
        "sub sp, #16\n"
        "cmp r3, #0\n"
        "beq 9f\n"
        "ldr r4, [sp, #52]\n"
        "str r4, [sp, #8]\n"
        "lsls r3, r3, #2\n"
        "adds r4, r4, r3\n"
        "str r4, [sp, #12]\n"
        "str r1, [sp, #0]\n"
        "str r2, [sp, #4]\n"
        "lsls r4, r2, #2\n"
        "adds r4, r1, r4\n"
        "mov lr, r4\n"
        "ldr r4, =0x55555555\n"
        "mov r8, r4\n"
        "ldr r4, =0x33333333\n"
        "mov r9, r4\n"
        "ldr r4, =0x0F0F0F0F\n"
        "mov r10, r4\n"
        "ldr r4, =0x00FF00FF\n"
        "mov r12, r4\n"
        "5:\n"                     /* one row: r0 = its first word */
        "ldr r1, [sp, #0]\n"
        "ldr r5, [sp, #4]\n"
        "movs r4, #0\n"
        "mov r11, r4\n"
        SEED_O_T
        "cmp r1, lr\n"
        "beq 4f\n"
        "3:\n"
        GROUP_CSAS
        "mov r7, r8\n"
        "lsrs r5, r4, #1\n"
        "ands r5, r7\n"
        "subs r4, r4, r5\n"
        "mov r7, r9\n"
        "lsrs r5, r4, #2\n"
        "ands r5, r7\n"
        "ands r4, r7\n"
        "adds r4, r4, r5\n"
        "lsrs r5, r4, #4\n"
        "adds r4, r4, r5\n"
        "mov r7, r10\n"
        "ands r4, r7\n"
        "add r11, r4\n"
        "cmp r1, lr\n"
        "bne 3b\n"
        "4:\n"
        "mov r7, r8\n"
        "lsrs r4, r2, #1\n"
        "ands r4, r7\n"
        "subs r2, r2, r4\n"
        "lsrs r4, r3, #1\n"
        "ands r4, r7\n"
        "subs r3, r3, r4\n"
        "mov r7, r9\n"
        "lsrs r4, r2, #2\n"
        "ands r4, r7\n"
        "ands r2, r7\n"
        "adds r2, r2, r4\n"
        "lsrs r4, r3, #2\n"
        "ands r4, r7\n"
        "ands r3, r7\n"
        "adds r3, r3, r4\n"
        "adds r2, r2, r3\n"
        "adds r2, r2, r3\n"
        "mov r7, r10\n"
        "lsrs r4, r2, #4\n"
        "ands r4, r7\n"
        "ands r2, r7\n"
        "adds r2, r2, r4\n"
        "mov r7, r12\n"
        "mov r4, r11\n"
        "lsrs r5, r4, #8\n"
        "ands r4, r7\n"
        "ands r5, r7\n"
        "adds r4, r4, r5\n"
        "lsrs r5, r2, #8\n"
        "ands r2, r7\n"
        "ands r5, r7\n"
        "adds r2, r2, r5\n"
        "lsls r4, r4, #2\n"
        "adds r4, r4, r2\n"
        "ldr r7, =0x00010001\n"
        "muls r4, r7\n"
        "lsrs r2, r4, #16\n"
        "ldr r4, [sp, #8]\n"       /* *out++ = count */
        "stm r4!, {r2}\n"
        "str r4, [sp, #8]\n"
        "ldr r5, [sp, #12]\n"
        "cmp r4, r5\n"
        "bne 5b\n"
        "9:\n"
        "add sp, #16\n"
        "pop {r4-r7}\n"
        "mov r8, r4\n"
        "mov r9, r5\n"
        "mov r10, r6\n"
        "mov r11, r7\n"
        "pop {r4-r7, pc}\n"
        ".ltorg\n");
}

/* Rows longer than one pass run in passes. (C, not asm, decides: no symbol is
 * referenced from inside the asm, which link-time optimisation could not see.) */
__attribute__((noinline)) static uint32_t xorpop_long(const uint32_t *a, const uint32_t *b,
    uint32_t n) {
    uint32_t total = 0;
    for (; n > RBNN_MAX_PASS; a += RBNN_MAX_PASS, b += RBNN_MAX_PASS, n -= RBNN_MAX_PASS) {
        total += row_m0(a, b, RBNN_MAX_PASS);
    }
    return total + row_m0(a, b, n);
}

uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n) {
    /* About 10 cycles a call over the asm (Thumb-1 GCC calls rather than tail-calls);
     * the core goes through rbnn_xorpop_rows. */
    return n <= RBNN_MAX_PASS ? row_m0(a, b, n) : xorpop_long(a, b, n);
}

void rbnn_xorpop_rows(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t rows,
    uint32_t *out) {
    uint32_t r;
    if (n <= RBNN_MAX_PASS) {
        rows_m0(w, x, n, rows, out);
        return;
    }
    for (r = 0; r < rows; r++, w += n) {
        out[r] = rbnn_xorpop(w, x, n);
    }
}

#else
/* ---------------------------------------------------------------------------------
 * Every other target: one scalar version (popcnt64 or swar below). On x86-64 with GCC or
 * clang (not RBNN_KERNEL_PORTABLE) it is the baseline of a run-time choice: the AVX2 and
 * AVX-512 VPOPCNTDQ kernels further down are compiled with target attributes (no build
 * flag), and cpuid picks the fastest the CPU runs, once; the MicroPython unix port gets
 * them although it builds for plain x86-64.
 * ------------------------------------------------------------------------------- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RBNN_KERNEL_PORTABLE)
#define RBNN_X86 1
#define RBNN_BASE(name) base_##name /* the scalar kernel, one choice of several */
#define RBNN_BASE_LINK static
#else
#define RBNN_X86 0
#define RBNN_BASE(name) name
#define RBNN_BASE_LINK
#endif
#if !defined(RBNN_KERNEL_PORTABLE) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__POPCNT__) || defined(__aarch64__) || defined(__riscv_zbb))
/* A popcount instruction: two words per popcount, four independent sums so the
 * loads and popcounts overlap. memcpy keeps the 64-bit reads free of aliasing and
 * alignment assumptions (rows are only 4-byte aligned); compilers turn it into one
 * load. */
#include <string.h>

#define RBNN_BASE_NAME "popcnt64"

static inline uint64_t ld64(const uint32_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t pop_word(uint32_t v) {
    return (uint32_t)__builtin_popcount(v);
}

static inline uint32_t xorpop_one(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint32_t i = 0;
    for (; i + 8u <= n; i += 8u) {
        s0 += (uint64_t)__builtin_popcountll(ld64(a + i) ^ ld64(b + i));
        s1 += (uint64_t)__builtin_popcountll(ld64(a + i + 2) ^ ld64(b + i + 2));
        s2 += (uint64_t)__builtin_popcountll(ld64(a + i + 4) ^ ld64(b + i + 4));
        s3 += (uint64_t)__builtin_popcountll(ld64(a + i + 6) ^ ld64(b + i + 6));
    }
    for (; i + 2u <= n; i += 2u) {
        s0 += (uint64_t)__builtin_popcountll(ld64(a + i) ^ ld64(b + i));
    }
    if (i < n) {
        s1 += (uint64_t)__builtin_popcount(a[i] ^ b[i]);
    }
    return (uint32_t)(s0 + s1 + s2 + s3);
}

#else
/* Portable C99 (no popcount instruction: rv32imac, x86-64 without -mpopcnt): carry-save
 * (Harley-Seal) accumulation over groups of 8 words, as the ARMv6-M kernel does with 4.
 * Seven carry-save adders turn 8 XORed words into one "eights" vector (the ones, twos
 * and fours run on), and only that vector is SWAR-popcounted, into byte lanes: about 9
 * operations a word instead of 20 for a full popcount of each. No multiply: byte sums
 * are gathered with shifts, cheaper where a multiply is slow. */
#define RBNN_BASE_NAME "swar"

/* Per-byte popcounts of v (each <= 8). */
static inline uint32_t pop_bytes(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return (v + (v >> 4)) & 0x0F0F0F0Fu;
}

/* Sum of the four bytes of v. */
static inline uint32_t sum_bytes(uint32_t v) {
    v = (v & 0x00FF00FFu) + ((v >> 8) & 0x00FF00FFu);
    return (v + (v >> 16)) & 0xFFFFu;
}

static inline uint32_t pop32(uint32_t v) {
    return sum_bytes(pop_bytes(v));
}

#define pop_word pop32

/* Carry-save adder: hi = majority(a, b, c), lo = a ^ b ^ c. */
#define RBNN_CSA(hi, lo, a, b, c) \
    do { \
        uint32_t u_ = (a) ^ (b), c_ = (c); \
        hi = ((a) & (b)) | (u_ & c_); \
        lo = u_ ^ c_; \
    } while (0)

/* Inlined into the row loop even where the compiler would not (its registers are saved
 * once a call, not once a row: rows of 2 words are common). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline uint32_t xorpop_one(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t total = 0, bytes = 0, i = 0;
    if (n >= 8u) {
        uint32_t ones = 0, twos = 0, fours = 0;
        while (n - i >= 8u) {
            uint32_t eights = 0, g;
            for (g = 0; g < 31u && n - i >= 8u; g++, i += 8u) { /* <= 8 * 31 a byte */
                uint32_t t2a, t2b, f4a, f4b, e8;
                RBNN_CSA(t2a, ones, ones, a[i] ^ b[i], a[i + 1] ^ b[i + 1]);
                RBNN_CSA(t2b, ones, ones, a[i + 2] ^ b[i + 2], a[i + 3] ^ b[i + 3]);
                RBNN_CSA(f4a, twos, twos, t2a, t2b);
                RBNN_CSA(t2a, ones, ones, a[i + 4] ^ b[i + 4], a[i + 5] ^ b[i + 5]);
                RBNN_CSA(t2b, ones, ones, a[i + 6] ^ b[i + 6], a[i + 7] ^ b[i + 7]);
                RBNN_CSA(f4b, twos, twos, t2a, t2b);
                RBNN_CSA(e8, fours, fours, f4a, f4b);
                eights += pop_bytes(e8);
            }
            total += 8u * sum_bytes(eights);
        }
        bytes = 4u * pop_bytes(fours) + 2u * pop_bytes(twos) + pop_bytes(ones); /* <= 56 */
    }
    for (; i < n; i++) { /* at most 7 words: <= 56 more a byte */
        bytes += pop_bytes(a[i] ^ b[i]);
    }
    return total + sum_bytes(bytes);
}
#undef RBNN_CSA
#endif

RBNN_BASE_LINK uint32_t RBNN_BASE(rbnn_xorpop)(const uint32_t *a, const uint32_t *b, uint32_t n) {
    return xorpop_one(a, b, n);
}

RBNN_BASE_LINK void RBNN_BASE(rbnn_xorpop_rows)(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t rows,
    uint32_t *out) {
    uint32_t r;
    for (r = 0; r < rows; r++, w += n) {
        out[r] = xorpop_one(w, x, n); /* inlined: no call per row */
    }
}

#if RBNN_TILE > 1
RBNN_BASE_LINK void RBNN_BASE(rbnn_xorpop_lanes)(const uint32_t *w, const uint32_t *xt, uint32_t n, uint32_t rows,
    uint32_t *out) {
    uint32_t r, i, t;
    for (r = 0; r < rows; r++, w += n, out += RBNN_TILE) {
        uint32_t acc[RBNN_TILE] = {0};
        for (i = 0; i < n; i++) {
            for (t = 0; t < RBNN_TILE; t++) {
                acc[t] += pop_word(w[i] ^ xt[i * RBNN_TILE + t]);
            }
        }
        for (t = 0; t < RBNN_TILE; t++) {
            out[t] = acc[t];
        }
    }
}
#endif

#if !RBNN_X86
const char rbnn_kernel_name[] = RBNN_BASE_NAME;
#else
/* ---------------------------------------------------------------------------------
 * x86-64: AVX2 and AVX-512 VPOPCNTDQ by run-time choice.
 *
 * AVX2: 256-bit XOR, popcount of each byte by a 16-entry nibble table (vpshufb), byte
 * counts summed with vpsadbw once per row (or every 31 steps, before a byte could
 * overflow). The n % 8 words left over go through 64-bit popcounts. About twice the
 * speed of scalar popcnt on 256- and 784-input rows.
 * ------------------------------------------------------------------------------- */
#include <immintrin.h>
#include <string.h>

#if defined(__AVX2__)
const char rbnn_kernel_name[] = "avx2"; /* the host core (-march=native) */
#else
const char rbnn_kernel_name[] = "x86-dispatch"; /* the unix port: plain x86-64 */
#endif

#define RBNN_AVX2 __attribute__((target("avx2,popcnt")))

static inline uint64_t ld64x(const uint32_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v); /* rows are only 4-byte aligned */
    return v;
}

RBNN_AVX2 static inline __m256i pop_bytes256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

RBNN_AVX2 static inline uint32_t xorpop_avx2(const uint32_t *a, const uint32_t *b, uint32_t n) {
    __m256i sums = _mm256_setzero_si256();
    __m128i t;
    uint64_t rest = 0;
    uint32_t i = 0, full = n & ~7u;
    while (i < full) {
        uint32_t stop = full - i > 31u * 8u ? i + 31u * 8u : full;
        __m256i bytes = _mm256_setzero_si256();
        for (; i < stop; i += 8u) {
            __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
                _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));
            bytes = _mm256_add_epi8(bytes, pop_bytes256(v));
        }
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(bytes, _mm256_setzero_si256()));
    }
    for (; i + 2u <= n; i += 2u) {
        rest += (uint64_t)__builtin_popcountll(ld64x(a + i) ^ ld64x(b + i));
    }
    if (i < n) {
        rest += (uint64_t)__builtin_popcount(a[i] ^ b[i]);
    }
    t = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    t = _mm_add_epi64(t, _mm_unpackhi_epi64(t, t));
    return (uint32_t)((uint64_t)_mm_cvtsi128_si64(t) + rest);
}

RBNN_AVX2 static uint32_t one_avx2(const uint32_t *a, const uint32_t *b, uint32_t n) {
    return xorpop_avx2(a, b, n);
}

/* Scalar popcounts of a row shorter than a vector (hidden layers of 64 units: 2 words). */
RBNN_AVX2 static inline uint32_t xorpop_short(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint64_t s = 0;
    uint32_t i = 0;
    for (; i + 2u <= n; i += 2u) {
        s += (uint64_t)__builtin_popcountll(ld64x(a + i) ^ ld64x(b + i));
    }
    if (i < n) {
        s += (uint64_t)__builtin_popcount(a[i] ^ b[i]);
    }
    return (uint32_t)s;
}

/* Four rows against one input, each input vector loaded once for all four, their byte
 * counts summed with vpsadbw and the four totals gathered in one vector; rows of 8 to
 * 31 * 8 words (784 inputs: 25), the n % 8 words left over as scalars. */
RBNN_AVX2 static void rows4_avx2(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t *out) {
    __m256i b0 = _mm256_setzero_si256(), b1 = b0, b2 = b0, b3 = b0, t01, t23, u;
    uint32_t i, full = n & ~7u, r;
    uint64_t tot[4];
    for (i = 0; i < full; i += 8u) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x + i));
#define RBNN_ROW4(bk, k) \
        bk = _mm256_add_epi8(bk, pop_bytes256(_mm256_xor_si256(xv, \
            _mm256_loadu_si256((const __m256i *)(const void *)(w + (k) * n + i)))))
        RBNN_ROW4(b0, 0u);
        RBNN_ROW4(b1, 1u);
        RBNN_ROW4(b2, 2u);
        RBNN_ROW4(b3, 3u);
#undef RBNN_ROW4
    }
    b0 = _mm256_sad_epu8(b0, _mm256_setzero_si256());
    b1 = _mm256_sad_epu8(b1, _mm256_setzero_si256());
    b2 = _mm256_sad_epu8(b2, _mm256_setzero_si256());
    b3 = _mm256_sad_epu8(b3, _mm256_setzero_si256());
    t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(b0, b1), _mm256_unpackhi_epi64(b0, b1));
    t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(b2, b3), _mm256_unpackhi_epi64(b2, b3));
    u = _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20),
        _mm256_permute2x128_si256(t01, t23, 0x31)); /* rows 0, 1, 2, 3 */
    _mm256_storeu_si256((__m256i *)(void *)tot, u);
    for (r = 0; r < 4u; r++) {
        out[r] = (uint32_t)tot[r] + xorpop_short(w + r * n + full, x + full, n - full);
    }
}

RBNN_AVX2 static void rows_avx2(const uint32_t *w, const uint32_t *x, uint32_t n,
    uint32_t rows, uint32_t *out) {
    uint32_t r = 0;
    if (n < 8u) {
        for (; r < rows; r++, w += n) {
            out[r] = xorpop_short(w, x, n);
        }
        return;
    }
    if (n <= 31u * 8u) { /* no byte counter overflows */
        for (; r + 4u <= rows; r += 4u, w += 4u * n) {
            rows4_avx2(w, x, n, out + r);
        }
    }
    for (; r < rows; r++, w += n) {
        out[r] = xorpop_avx2(w, x, n);
    }
}

#if RBNN_TILE > 1
/* 16 interleaved samples (rbnn_kernel.h): the weight word broadcast, XOR with two
 * vectors of 8 samples, nibble-table popcounts summed as bytes (at most 31 words, 248 a
 * byte), folded into 32-bit lanes with two multiply-adds. */
RBNN_AVX2 static void lanes_avx2(const uint32_t *w, const uint32_t *xt, uint32_t n,
    uint32_t rows, uint32_t *out) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    uint32_t r, i;
    for (r = 0; r < rows; r++, w += n, out += 16) {
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        for (i = 0; i < n;) {
            uint32_t stop = n - i > 31u ? i + 31u : n;
            __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
            for (; i < stop; i++) {
                __m256i wv = _mm256_set1_epi32((int)w[i]);
                const uint32_t *p = xt + 16u * i;
                c0 = _mm256_add_epi8(c0, pop_bytes256(_mm256_xor_si256(wv,
                    _mm256_loadu_si256((const __m256i *)(const void *)p))));
                c1 = _mm256_add_epi8(c1, pop_bytes256(_mm256_xor_si256(wv,
                    _mm256_loadu_si256((const __m256i *)(const void *)(p + 8)))));
            }
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(c0, ones8), ones16));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(c1, ones8), ones16));
        }
        _mm256_storeu_si256((__m256i *)(void *)out, a0);
        _mm256_storeu_si256((__m256i *)(void *)(out + 8), a1);
    }
}

#endif

/* AVX-512 VPOPCNTDQ: 512-bit XOR and a popcount of each 64-bit lane (vpopcntq); the
 * n % 16 words left over come in through one masked load (masked-off words are neither
 * read nor counted). */
#define RBNN_512 __attribute__((target("avx512f,avx512vpopcntdq,avx2,popcnt")))

RBNN_512 static inline uint32_t xorpop_512(const uint32_t *a, const uint32_t *b, uint32_t n) {
    __m512i s = _mm512_setzero_si512();
    uint32_t i = 0;
    for (; i + 16u <= n; i += 16u) {
        s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(
            _mm512_loadu_si512((const void *)(a + i)), _mm512_loadu_si512((const void *)(b + i)))));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(
            _mm512_maskz_loadu_epi32(k, (const void *)(a + i)),
            _mm512_maskz_loadu_epi32(k, (const void *)(b + i)))));
    }
    return (uint32_t)_mm512_reduce_add_epi64(s);
}

RBNN_512 static uint32_t one_512(const uint32_t *a, const uint32_t *b, uint32_t n) {
    return xorpop_512(a, b, n);
}

RBNN_512 static void rows_512(const uint32_t *w, const uint32_t *x, uint32_t n,
    uint32_t rows, uint32_t *out) {
    uint32_t r;
    if (n < 8u) { /* short rows (2 words: 64 inputs): scalar, no reduction to pay */
        for (r = 0; r < rows; r++, w += n) {
            out[r] = xorpop_short(w, x, n);
        }
        return;
    }
    for (r = 0; r < rows; r++, w += n) {
        out[r] = xorpop_512(w, x, n);
    }
}

#if RBNN_TILE > 1
/* 16 interleaved samples: one vpopcntd per weight word. */
RBNN_512 static void lanes_512(const uint32_t *w, const uint32_t *xt, uint32_t n,
    uint32_t rows, uint32_t *out) {
    uint32_t r, i;
    for (r = 0; r < rows; r++, w += n, out += 16) {
        __m512i a = _mm512_setzero_si512();
        for (i = 0; i < n; i++) {
            a = _mm512_add_epi32(a, _mm512_popcnt_epi32(_mm512_xor_si512(
                _mm512_set1_epi32((int)w[i]), _mm512_loadu_si512((const void *)(xt + 16u * i)))));
        }
        _mm512_storeu_si512((void *)out, a);
    }
}

#endif

/* Counter moves of training, 8 words a vector: per lane the ripple of move_any in
 * rbnn_train.c (a lane whose carry has died carries 0: its later XORs change nothing);
 * the walk down the planes stops once no lane carries. The AVX-512 kernel uses it too:
 * a 16-word version with masked loads and stores for the row's tail timed no faster
 * (AMD Zen 4, the 784-64-64-10 step). */
RBNN_AVX2 static uint32_t move_avx2(uint32_t *const *pl, uint32_t nb, uint32_t at,
    const uint32_t *x, uint32_t nw, uint32_t down) {
    const __m256i dv = _mm256_set1_epi32((int)down);
    uint32_t w, p;
    /* Rows of 24 to 31 words (784 inputs: 25): their three vectors walk the planes
     * together, independent chains side by side, until none carries. */
    if (nw >= 24u && nw < 32u) {
        __m256i c0 = _mm256_loadu_si256((const __m256i *)(const void *)x);
        __m256i c1 = _mm256_loadu_si256((const __m256i *)(const void *)(x + 8));
        __m256i c2 = _mm256_loadu_si256((const __m256i *)(const void *)(x + 16));
        __m256i m0 = _mm256_and_si256(c0, dv), m1 = _mm256_and_si256(c1, dv);
        __m256i m2 = _mm256_and_si256(c2, dv), any = _mm256_or_si256(_mm256_or_si256(c0, c1), c2);
        if (_mm256_testz_si256(any, any)) {
            return 24u;
        }
        p = nb;
        while (p-- > 0u) {
            __m256i *q = (__m256i *)(void *)(pl[p] + at);
            __m256i o0 = _mm256_loadu_si256(q), o1 = _mm256_loadu_si256(q + 1);
            __m256i o2 = _mm256_loadu_si256(q + 2);
            _mm256_storeu_si256(q, _mm256_xor_si256(o0, c0));
            _mm256_storeu_si256(q + 1, _mm256_xor_si256(o1, c1));
            _mm256_storeu_si256(q + 2, _mm256_xor_si256(o2, c2));
            c0 = _mm256_and_si256(c0, _mm256_xor_si256(o0, m0));
            c1 = _mm256_and_si256(c1, _mm256_xor_si256(o1, m1));
            c2 = _mm256_and_si256(c2, _mm256_xor_si256(o2, m2));
            any = _mm256_or_si256(_mm256_or_si256(c0, c1), c2);
            if (_mm256_testz_si256(any, any)) {
                return 24u;
            }
        }
        for (p = 0; p < nb; p++) { /* carried out of the sign plane: wrapped; flip back */
            __m256i *q = (__m256i *)(void *)(pl[p] + at);
            _mm256_storeu_si256(q, _mm256_xor_si256(_mm256_loadu_si256(q), c0));
            _mm256_storeu_si256(q + 1, _mm256_xor_si256(_mm256_loadu_si256(q + 1), c1));
            _mm256_storeu_si256(q + 2, _mm256_xor_si256(_mm256_loadu_si256(q + 2), c2));
        }
        return 24u;
    }
    for (w = 0; w + 8u <= nw; w += 8u) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(const void *)(x + w)), m;
        if (_mm256_testz_si256(c, c)) {
            continue;
        }
        m = _mm256_and_si256(c, dv);
        p = nb;
        while (p-- > 0u) {
            __m256i *q = (__m256i *)(void *)(pl[p] + at + w);
            __m256i old = _mm256_loadu_si256(q);
            _mm256_storeu_si256(q, _mm256_xor_si256(old, c));
            c = _mm256_and_si256(c, _mm256_xor_si256(old, m));
            if (_mm256_testz_si256(c, c)) {
                break;
            }
        }
        if (p == 0xFFFFFFFFu) { /* carried out of the sign plane: wrapped; flip back */
            for (p = 0; p < nb; p++) {
                __m256i *q = (__m256i *)(void *)(pl[p] + at + w);
                _mm256_storeu_si256(q, _mm256_xor_si256(_mm256_loadu_si256(q), c));
            }
        }
    }
    return w;
}

static uint32_t move_none(uint32_t *const *pl, uint32_t nb, uint32_t at, const uint32_t *x,
    uint32_t nw, uint32_t down) {
    (void)pl, (void)nb, (void)at, (void)x, (void)nw, (void)down;
    return 0; /* a scalar kernel: the caller moves every word */
}

/* ---- the choice: one table row per kernel, the fastest first ----------------------- */
typedef struct {
    const char *name;
    int (*usable)(void);
    uint32_t (*one)(const uint32_t *, const uint32_t *, uint32_t);
    void (*rows)(const uint32_t *, const uint32_t *, uint32_t, uint32_t, uint32_t *);
    uint32_t (*move)(uint32_t *const *, uint32_t, uint32_t, const uint32_t *, uint32_t, uint32_t);
#if RBNN_TILE > 1
    void (*lanes)(const uint32_t *, const uint32_t *, uint32_t, uint32_t, uint32_t *);
#define RBNN_LANES(f) , f
#else
#define RBNN_LANES(f)
#endif
} kernel_t;

static int cpu_512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
}

static int cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

static int cpu_any(void) {
    return 1; /* the baseline: built for whatever the compiler flags allow */
}

static const kernel_t kernels[] = {
    {"avx512vpopcntdq", cpu_512, one_512, rows_512, move_avx2 RBNN_LANES(lanes_512)},
    {"avx2", cpu_avx2, one_avx2, rows_avx2, move_avx2 RBNN_LANES(lanes_avx2)},
    {RBNN_BASE_NAME, cpu_any, base_rbnn_xorpop, base_rbnn_xorpop_rows, move_none RBNN_LANES(base_rbnn_xorpop_lanes)},
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static const kernel_t *active; /* NULL: not chosen yet (cpuid on first use) */

static const kernel_t *best(void) {
    uint32_t i = 0;
    while (!kernels[i].usable()) { /* the last is always usable */
        i++;
    }
    return &kernels[i];
}

static const kernel_t *kernel(void) {
    if (active == NULL) {
        active = best();
    }
    return active;
}

int rbnn_kernel_select(const char *name) {
    uint32_t i;
    if (strcmp(name, "auto") == 0) {
        active = best();
        return 0;
    }
    for (i = 0; i < N_KERNELS; i++) {
        if (strcmp(name, kernels[i].name) == 0 && kernels[i].usable()) {
            active = &kernels[i];
            return 0;
        }
    }
    return -1;
}

const char *rbnn_kernel_active(void) {
    return kernel()->name;
}

uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n) {
    return kernel()->one(a, b, n);
}

void rbnn_xorpop_rows(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t rows,
    uint32_t *out) {
    kernel()->rows(w, x, n, rows, out);
}

uint32_t rbnn_move_words(uint32_t *const *pl, uint32_t nb, uint32_t at, const uint32_t *x,
    uint32_t nw, uint32_t down) {
    return kernel()->move(pl, nb, at, x, nw, down);
}

#if RBNN_TILE > 1
void rbnn_xorpop_lanes(const uint32_t *w, const uint32_t *xt, uint32_t n, uint32_t rows,
    uint32_t *out) {
    kernel()->lanes(w, xt, n, rows, out);
}
#endif
#endif
#endif
