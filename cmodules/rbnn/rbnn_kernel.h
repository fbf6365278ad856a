/*
 * The inner loop of every binary layer, in its own file so each target gets the
 * version written for it (Cortex-M0+ has no popcount instruction and only 8 cheap
 * registers; a host has hardware popcount).
 *
 * Which version a build gets (rbnn_kernel_name says it):
 *   "armv6m-hs4"  ARMv6-M (Cortex-M0/M0+, RP2040) with GCC: hand-scheduled Thumb-1
 *                 inline asm, carry-save (Harley-Seal) accumulation over groups of 4
 *                 words (no .S file: the C file is all a build needs);
 *   "avx2"        x86-64 compiled with AVX2 (the host core: -march=native);
 *   "x86-dispatch" other x86-64 builds (the MicroPython unix port);
 *                 both carry three kernels and pick one at run time (cpuid): AVX-512
 *                 VPOPCNTDQ (vpopcntq/vpopcntd), AVX2 (256-bit XOR and a nibble-table
 *                 byte popcount, vpshufb), or the scalar one below that the flags give;
 *   "popcnt64"    other targets with a popcount instruction the compiler knows of (x86
 *                 with -mpopcnt, AArch64, RISC-V Zbb): 64-bit popcounts;
 *   "swar"        anything else, or when RBNN_KERNEL_PORTABLE is defined: portable
 *                 C99 SWAR popcount.
 * All give identical results.
 */
#ifndef RBNN_KERNEL_H
#define RBNN_KERNEL_H

#include <stdint.h>

#include "rbnn_core.h" /* RBNN_TILED */

/* sum over i < n of popcount(a[i] XOR b[i]) */
uint32_t rbnn_xorpop(const uint32_t *a, const uint32_t *b, uint32_t n);

/* out[r] = rbnn_xorpop(w + r * n, x, n) for r < rows: `rows` weight rows stored one
 * after another (n words each, as in a layer of the .rbnn arena) against one input.
 * One call per group of rows saves the per-call set-up of the M0+ kernel (14 to 26
 * cycles a row, plus the caller's per-call work); a core calls it for up to 32 rows at
 * a time (one output word of a hidden layer). */
void rbnn_xorpop_rows(const uint32_t *w, const uint32_t *x, uint32_t n, uint32_t rows,
    uint32_t *out);

/* Name of the compiled version ("armv6m-hs4", "avx2", "x86-dispatch", "popcnt64" or
 * "swar"). */
extern const char rbnn_kernel_name[];

/* Samples a batch inference runs together (rbnn_infer_batch): RBNN_TILE samples'
 * inputs are interleaved word by word (xt[i * RBNN_TILE + t] = word i of sample t), so
 * each weight word is loaded once, broadcast, and XOR-popcounted against all of them in
 * one vector (no horizontal sums). 1 except on 64-bit hosts (RBNN_TILED): a
 * microcontroller has no vectors and little stack, and its code stays as small as
 * before; rbnn_xorpop_lanes exists only where RBNN_TILE > 1. */
#if !RBNN_TILED
#define RBNN_TILE 1u
#else
#define RBNN_TILE 16u
/* out[r * RBNN_TILE + t] = sum over i < n of popcount(w[r * n + i] ^ xt[i * RBNN_TILE + t])
 * for r < rows and every t < RBNN_TILE. */
void rbnn_xorpop_lanes(const uint32_t *w, const uint32_t *xt, uint32_t n, uint32_t rows,
    uint32_t *out);
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(RBNN_KERNEL_PORTABLE) && !defined(__ARM_ARCH_6M__)
/* x86-64 builds carry the AVX2 and AVX-512 VPOPCNTDQ kernels (compiled with target
 * attributes, so no build flag is needed) beside the scalar one the flags give
 * ("popcnt64" with -mpopcnt or -march=native, else "swar"), and use the fastest the CPU
 * has (cpuid, checked once, on first use). rbnn_kernel_select("auto" | "avx512vpopcntdq"
 * | "avx2" | "popcnt64" | "swar") picks one for every later call (tests and bench/host.py
 * compare them); returns 0, or -1 when the name is unknown, not this build's scalar one,
 * or the CPU lacks it (nothing changes). Not thread-safe: call it before any inference
 * runs. rbnn_kernel_active() names the one in use. */
#define RBNN_KERNEL_SELECT 1
int rbnn_kernel_select(const char *name);
const char *rbnn_kernel_active(void);

/* The training step's counter moves of a layer-0 row (rbnn_train.c, move_even/move_any),
 * as vectors when the active kernel is a vector one: words [0, r) of the row (pl[p] + at)
 * in each of the nb planes (pl[0] the sign plane) move +1 on the bits of x (-1 where down
 * is all ones), saturating. Returns r: a multiple of 8, at most nw, with the
 * vector kernels (AVX2, 8 words a vector), 0 with a scalar kernel; the caller
 * moves words r..nw-1 one at a time, with the same result. */
uint32_t rbnn_move_words(uint32_t *const *pl, uint32_t nb, uint32_t at, const uint32_t *x,
    uint32_t nw, uint32_t down);
#endif

#endif /* RBNN_KERNEL_H */
