/*
 * The inner loop of every binary layer, in its own file so each target gets the
 * version written for it (Cortex-M0+ has no popcount instruction and only 8 cheap
 * registers; a host has hardware popcount).
 *
 * Which version a build gets (rbnn_kernel_name says it):
 *   "armv6m-hs4"  ARMv6-M (Cortex-M0/M0+, RP2040) with GCC: hand-scheduled Thumb-1
 *                 inline asm, carry-save (Harley-Seal) accumulation over groups of 4
 *                 words (no .S file: the C file is all a build needs);
 *   "avx2"        x86-64 compiled with AVX2 (the host core: -march=native): 256-bit XOR
 *                 and a nibble-table byte popcount (vpshufb);
 *   "popcnt64"    other targets with a popcount instruction the compiler knows of (x86
 *                 with -mpopcnt, AArch64, RISC-V Zbb): 64-bit popcounts;
 *   "swar"        anything else, or when RBNN_KERNEL_PORTABLE is defined: portable
 *                 C99 SWAR popcount.
 * All give identical results.
 */
#ifndef RBNN_KERNEL_H
#define RBNN_KERNEL_H

#include <stdint.h>

/* sum over i < n of popcount(a[i] XOR b[i]) */
uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n);

/* out[r] = rbnn_xorpop(w + r * n, x, n) for r < rows: `rows` weight rows stored one
 * after another (n words each, as in a layer of the .rbnn arena) against one input.
 * One call per group of rows saves the per-call set-up of the M0+ kernel (14 to 26
 * cycles a row, plus the caller's per-call work); a core calls it for up to 32 rows at
 * a time (one output word of a hidden layer). */
void rbnn_xorpop_rows(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t rows,
    uint32_t *out);

/* Name of the compiled version ("armv6m-hs4", "avx2", "popcnt64" or "swar"). */
extern const char rbnn_kernel_name[];

#endif /* RBNN_KERNEL_H */
