/*
 * What rbnn_core.c shares with rbnn_train.c: not part of the API (rbnn_core.h is).
 * The training step runs the frozen blocks exactly as inference does and the live block
 * with the same group sums, so both files use one implementation of each.
 */
#ifndef RBNN_INTERNAL_H
#define RBNN_INTERNAL_H

#include "rbnn_core.h"

/* Neurons are computed 32 at a time (one output word of a hidden layer): the kernel
 * takes a run of rows in one call, which saves its per-call set-up on the M0+. */
#define RBNN_GROUP 32u

/* Words of an n-bit vector. */
static inline uint32_t words_of(uint32_t n_bits) {
    return (n_bits + 31u) >> 5;
}

/* Valid bits of the last word of an n-bit vector. */
static inline uint32_t pad_mask(uint32_t n_bits) {
    uint32_t r = n_bits & 31u;
    return r ? ((1u << r) - 1u) : 0xFFFFFFFFu;
}

/* Largest possible |s| of layer l (docs/FORMAT.md, Semantics); < 2^24. */
uint32_t rbnn_layer_smax(const rbnn_model_t *m, uint32_t l);

/* The first layer's weight 2^(n - low) of each kept input plane, in packed-input order
 * (highest plane first): k_planes entries of weight[8]. */
void rbnn_plane_weights(const rbnn_model_t *m, int32_t weight[8]);

/* Sums s of `cnt` (<= RBNN_GROUP) consecutive neurons: rows w of nw words against the
 * input `in` (n_k planes of nw words, weighted by weight[]; one plane of weight 1 for
 * every layer but the first). */
void rbnn_group_sums(const uint32_t *w, const uint32_t *in, uint32_t nw, uint32_t cnt,
    int32_t n, const int32_t *weight, uint32_t n_k, int32_t *s);

/* Block blk's scores added to scores[] (inference of one block; scratch: 2 *
 * words(widest hidden layer) words). */
void rbnn_block_scores(const rbnn_model_t *m, uint32_t blk, const uint32_t *x,
    uint32_t *scratch, int32_t *scores);

/* RBNN_E_INPUT when a packed input has a padding bit set, else RBNN_OK. */
int rbnn_check_input(const rbnn_model_t *m, const uint32_t *in_bits);

#endif /* RBNN_INTERNAL_H */
