/*
 * XOR-popcount kernels in plain C, cross-built for the Cortex-M0+ beside the real one
 * (cmodules/rbnn/rbnn_kernel.c, hand-scheduled Thumb-1) so bench/m0plus.py can print
 * their cycles per word side by side. Same contract as rbnn_xorpop: the sum over
 * i < n of popcount(a[i] ^ b[i]).
 */
#include <stdint.h>

uint32_t xorpop_swar(const uint32_t *a, const uint32_t *b, uint32_t n);
uint32_t xorpop_table(const uint32_t *a, const uint32_t *b, uint32_t n);
uint32_t xorpop_hs4(const uint32_t *a, const uint32_t *b, uint32_t n);
uint32_t xorpop_hs8(const uint32_t *a, const uint32_t *b, uint32_t n);

/* SWAR popcount of one word; the M0+ multiplier is single-cycle (RP2040). */
static inline uint32_t pop32(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    return (v * 0x01010101u) >> 24;
}

/* One SWAR popcount per word. */
uint32_t xorpop_swar(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t acc = 0, i;
    for (i = 0; i < n; i++) {
        acc += pop32(a[i] ^ b[i]);
    }
    return acc;
}

/* popcount of every byte value, built at compile time. */
#define B2(n) n, n + 1, n + 1, n + 2
#define B4(n) B2(n), B2(n + 1), B2(n + 1), B2(n + 2)
#define B6(n) B4(n), B4(n + 1), B4(n + 1), B4(n + 2)
static const uint8_t pop8[256] = {B6(0), B6(1), B6(1), B6(2)};

/* Four lookups in a 256-entry table per word. */
uint32_t xorpop_table(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t acc = 0, i;
    for (i = 0; i < n; i++) {
        uint32_t v = a[i] ^ b[i];
        acc += pop8[v & 0xFFu] + pop8[(v >> 8) & 0xFFu] + pop8[(v >> 16) & 0xFFu] + pop8[v >> 24];
    }
    return acc;
}

/* Carry-save adder: (h, l) = the two bits of a + b + c, bitwise. */
#define CSA(h, l, a, b, c)            \
    do {                              \
        uint32_t u_ = (a) ^ (b);      \
        (h) = ((a) & (b)) | (u_ & (c)); \
        (l) = u_ ^ (c);               \
    } while (0)

/* Harley-Seal over groups of 4 words: one popcount per group. */
uint32_t xorpop_hs4(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t ones = 0, twos = 0, fours, twos_a, twos_b, total = 0, i = 0;
    for (; i + 4u <= n; i += 4u) {
        CSA(twos_a, ones, ones, a[i] ^ b[i], a[i + 1] ^ b[i + 1]);
        CSA(twos_b, ones, ones, a[i + 2] ^ b[i + 2], a[i + 3] ^ b[i + 3]);
        CSA(fours, twos, twos, twos_a, twos_b);
        total += pop32(fours);
    }
    total = 4u * total + 2u * pop32(twos) + pop32(ones);
    for (; i < n; i++) {
        total += pop32(a[i] ^ b[i]);
    }
    return total;
}

/* Harley-Seal over groups of 8 words: one popcount per group. */
uint32_t xorpop_hs8(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t ones = 0, twos = 0, fours = 0, eights, twos_a, twos_b, fours_a, fours_b;
    uint32_t total = 0, i = 0;
    for (; i + 8u <= n; i += 8u) {
        CSA(twos_a, ones, ones, a[i] ^ b[i], a[i + 1] ^ b[i + 1]);
        CSA(twos_b, ones, ones, a[i + 2] ^ b[i + 2], a[i + 3] ^ b[i + 3]);
        CSA(fours_a, twos, twos, twos_a, twos_b);
        CSA(twos_a, ones, ones, a[i + 4] ^ b[i + 4], a[i + 5] ^ b[i + 5]);
        CSA(twos_b, ones, ones, a[i + 6] ^ b[i + 6], a[i + 7] ^ b[i + 7]);
        CSA(fours_b, twos, twos, twos_a, twos_b);
        CSA(eights, fours, fours, fours_a, fours_b);
        total += pop32(eights);
    }
    total = 8u * total + 4u * pop32(fours) + 2u * pop32(twos) + pop32(ones);
    for (; i < n; i++) {
        total += pop32(a[i] ^ b[i]);
    }
    return total;
}
