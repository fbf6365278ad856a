/* Portable first version of the XOR-popcount kernel (SWAR popcount). */
#include "rbnn_kernel.h"

static inline uint32_t pop32(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    return (v * 0x01010101u) >> 24;
}

uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n) {
    uint32_t acc = 0;
    for (uint32_t i = 0; i < n; i++) {
        acc += pop32(a[i] ^ b[i]);
    }
    return acc;
}
