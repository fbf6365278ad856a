/*
 * The inner loop of every binary layer, in its own file so each target gets the
 * version written for it (Cortex-M0+ has no popcount instruction and only 8 cheap
 * registers; a host has hardware popcount).
 */
#ifndef RBNN_KERNEL_H
#define RBNN_KERNEL_H

#include <stdint.h>

/* sum over i < n of popcount(a[i] XOR b[i]) */
uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n);

#endif /* RBNN_KERNEL_H */
