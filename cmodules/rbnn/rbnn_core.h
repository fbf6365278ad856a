/*
 * rbnn core: portable C99 inference and training for .rbnn models (docs/FORMAT.md,
 * docs/TRAINING.md).
 *
 * No MicroPython headers, no malloc, no globals that change: the caller owns every
 * buffer. A model is validated once (rbnn_model_init) and then used in place, so the
 * file's bytes may sit in memory-mapped flash. The numpy twin (host/rbnn/twin.py)
 * defines the results; this code must match it bit for bit.
 */
#ifndef RBNN_CORE_H
#define RBNN_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Format constants, error codes and check ids: generated from the host's single source
 * (host/rbnn/format/constants.py and checks.py). */
#include "rbnn_spec.h"

/* A validated model: pointers into the caller's buffer plus the parsed shape
 * (docs/FORMAT.md, versions 1 to 3). */
typedef struct {
    const uint8_t *buf;          /* the file, 4-byte aligned, used in place */
    uint32_t file_bytes;
    uint16_t n_inputs;
    uint8_t n_layers;            /* weight layers per block, 1..8 */
    uint8_t n_blocks;            /* blocks in use (version 2: 0..max_blocks) */
    uint8_t n_planes;
    uint8_t plane_mask;
    uint8_t k_planes;            /* popcount(plane_mask) */
    uint8_t input_mode;
    uint16_t sizes[RBNN_MAX_LAYERS]; /* outputs of each layer; sizes[n_layers-1] = classes */
    uint32_t plane_words;        /* 32-bit words per arena plane */
    uint32_t arena_offset;
    uint32_t params_offset;
    uint32_t blocks_offset;
    uint32_t block_params_bytes;
    uint8_t version;             /* 1, 2 or 3 */
    uint8_t max_blocks;          /* slots of the block table (version 1: n_blocks) */
    uint8_t score_q;             /* version 2: the shared score exponent */
    uint8_t live;                /* index of the live block, or 0xFF */
    uint32_t train_offset;       /* version 2: the training section (0 in version 1) */
    uint32_t budget;             /* version 2: every block's score bound (docs/FORMAT.md) */
    /* Version 3 (docs/FORMAT.md, Version 3): the input map (0 without conv layers) and
     * each layer's kind (RBNN_DENSE, RBNN_CONV), kernel, pad and pool. */
    uint16_t in_h, in_w, in_c;
    uint8_t kinds[RBNN_MAX_LAYERS];
    uint8_t kernels[RBNN_MAX_LAYERS];
    uint8_t pads[RBNN_MAX_LAYERS];
    uint8_t pools[RBNN_MAX_LAYERS];
    uint32_t layer_in[RBNN_MAX_LAYERS]; /* in[l]: bits of one row segment (N of Semantics) */
    uint32_t act_words;          /* words of one ping-pong buffer: the widest hidden output */
    uint32_t patch_words;        /* words of the conv patch buffer (0 without conv layers) */
    /* On a validation error: the byte offset of the field at fault, the check that
     * failed (RBNN_CHK_*) and the integers its message is made of (rbnn_error_text). */
    uint32_t err_offset;
    uint16_t err_check;
    uint16_t err_i, err_j, err_k; /* indices: block, slot, layer, row, ... */
    uint32_t err_want, err_found;
} rbnn_model_t;

/* Validate `buf` (len bytes) and fill `m`. Returns RBNN_OK or a negative code; on error
 * m->err_offset names the offending byte. Never reads outside [buf, buf+len). */
int rbnn_model_init(rbnn_model_t *m, const void *buf, size_t len);

/* Words of the packed input: k_planes * ceil(n_inputs / 32). */
uint32_t rbnn_input_words(const rbnn_model_t *m);

/* Words of the activation scratch: two ping-pong buffers for the widest hidden output
 * (a conv layer's: its output map's bits, after the pool), then one conv patch (the
 * widest conv layer's k*k*C bits, times the kept planes for layer 0); 0 when the model
 * has no hidden layer. */
uint32_t rbnn_scratch_words(const rbnn_model_t *m);

/* Number of classes (length of the scores array). */
uint32_t rbnn_n_classes(const rbnn_model_t *m);

/* Bytes of RAM one inference needs: input + scratch + scores (eBNN order;
 * docs/FORMAT.md, Memory). */
uint32_t rbnn_ram_bytes(const rbnn_model_t *m);

/* Bit-slice n_inputs 8-bit features into the packed input (rbnn_input_words words,
 * padding bits 0). */
int rbnn_pack_u8(const rbnn_model_t *m, const uint8_t *features, uint32_t *in_bits);

/* Run one inference. in_bits: rbnn_input_words words (padding bits must be 0, else
 * RBNN_E_INPUT). scratch: rbnn_scratch_words words (may be NULL when that is 0).
 * scores: rbnn_n_classes int32 out. Returns the class (>= 0, ties to the lowest index)
 * or a negative error code. Neurons are computed 32 at a time (one output word), so the
 * call also takes about 0.5 kB of stack on a Cortex-M0+ (-fstack-usage). */
int rbnn_infer(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t *scratch,
    int32_t *scores);

/* Run n inferences back to back (one call for a whole batch from a host binding).
 * in_bits: n packed inputs of rbnn_input_words words each; scores: n rows of
 * rbnn_n_classes int32; classes: n class indices, or NULL. Returns RBNN_OK, or the
 * error of the first bad input (RBNN_E_INPUT), leaving the samples after it unrun. */
int rbnn_infer_batch(const rbnn_model_t *m, const uint32_t *in_bits, uint32_t n,
    uint32_t *scratch, int32_t *scores, int32_t *classes);

/* 64-bit hosts (RBNN_TILED, RBNN_TILE > 1 in rbnn_kernel.h): rbnn_infer_batch runs RBNN_TILE (16) samples at
 * a time through each weight row, their inputs and activations interleaved in a fixed
 * 32 kB stack buffer (identical results; the caller's scratch is not used for them, so
 * rbnn_scratch_words is unchanged). The last tile may be partial; a single sample left,
 * or a model whose tile needs more than the buffer (16 * (rbnn_input_words +
 * rbnn_scratch_words) > 8192 words), runs one at a time. rbnn_set_batch_tile(t) caps the
 * samples a tile at t (1: one at a time, as on a device; clamped to 1..RBNN_TILE) for
 * every later call and returns the previous cap: for tests and bench/host.py. Not
 * thread-safe. */
/* Tiles on 64-bit hosts only: their 32 kB of stack is no place for a microcontroller's
 * (the C module never runs batches). -DRBNN_NO_TILE turns them off on a host too. */
#if (defined(__x86_64__) || defined(__aarch64__) || defined(_M_X64) || defined(_M_ARM64)) && !defined(RBNN_NO_TILE)
#define RBNN_TILED 1
uint32_t rbnn_set_batch_tile(uint32_t t);
#else
#define RBNN_TILED 0
#endif

/* ---- training (rbnn_train.c): the integer step of docs/TRAINING.md, rule 1 ----------
 * Version 2 models only (RBNN_E_VERSION otherwise). `buf` is the buffer `m` was
 * validated on (m->buf; RBNN_E_ARG otherwise): it must be writable, and the core changes
 * the live block's planes and parameters, the block table, the header's n_blocks and the
 * training state in place, inside the file's bytes, and keeps `m` in step (n_blocks,
 * live). Frozen planes are only read. The CRC is stale after any of these calls until
 * rbnn_reseal. An error changes nothing. */

/* Bytes of the caller-owned scratch of one training step (4-byte aligned; RBNN_E_ALIGN
 * otherwise), 0 for a model that failed to load. It holds, in 32-bit words: the hidden
 * bits of every hidden layer of the live block and their gate bits (sum over hidden
 * layers of 2 * words(size)), and two signal buffers of max(sizes) int32 each: the
 * summed scores z (frozen blocks, then the live block), turned into the output signal g
 * in place, and the signal of each layer and the one below it in turn during the
 * backward pass; the forward's group sums use the second one. The frozen blocks' forward
 * borrows the bit buffers. 784-64-64-10: 544 bytes. Stack: about 0.5 kB more on a
 * Cortex-M0+ (the kernel's group of 32 counts, 17 column counters of the backward). */
uint32_t rbnn_train_scratch_bytes(const rbnn_model_t *m);

/* One training step on the packed input in_bits (rbnn_input_words words) with `label`,
 * the growth schedule included: when no block is live, the step opens one if grow_left
 * allows (and decrements it); after the update it freezes the live block when
 * block_steps reaches grow_every. Returns the class predicted before the update (>= 0,
 * ties to the lowest index) or RBNN_E_ARG / RBNN_E_ALIGN / RBNN_E_VERSION, then
 * RBNN_E_LABEL (label >= n_classes), RBNN_E_INPUT (padding bits set), RBNN_E_FULL (no
 * live block and none may open), checked in that order. z_out (n_classes int32, or
 * NULL) receives the summed scores before the update. */
int rbnn_train_step(rbnn_model_t *m, void *buf, const uint32_t *in_bits, uint32_t label,
    void *scratch, int32_t *z_out);

/* n steps back to back (in_bits: n packed inputs; labels: n labels). preds (n int32, or
 * NULL) receives each step's return value: the class, and for the sample that stopped
 * the batch its error code (the samples after it are left untouched and unrun). Returns
 * RBNN_OK or that error; the steps before it stay taken. */
int rbnn_train_batch(rbnn_model_t *m, void *buf, const uint32_t *in_bits,
    const uint32_t *labels, uint32_t n, void *scratch, int32_t *preds);

/* Open a live block (docs/TRAINING.md, Opening a block; grow_left is not changed):
 * returns its index, or RBNN_E_FULL when a block is live or there is no room (fewer free
 * planes than `bits`, no empty slot). */
int rbnn_new_block(rbnn_model_t *m, void *buf);

/* Freeze the live block (its sign plane, thresholds, scale and offsets kept, its other
 * planes released and zeroed): RBNN_OK, or RBNN_E_FULL without a live block. */
int rbnn_freeze(rbnn_model_t *m, void *buf);

/* Recompute the CRC of a file changed in place (nothing when buf is not m->buf). */
void rbnn_reseal(const rbnn_model_t *m, void *buf);

/* Short English name of an error code ("bad CRC", ...). */
const char *rbnn_strerror(int code);

/* The code's name as docs/FORMAT.md spells it ("E_CRC", ...; "E_UNKNOWN" otherwise). */
const char *rbnn_code_name(int code);

/* The one-line message of the error `code` that rbnn_model_init returned for `m`:
 * "E_CRC at offset 66856: crc32: expected 0x1234abcd, found 0x00000000" (docs/FORMAT.md,
 * Errors), the words every engine uses. Codes without a check (E_ALIGN, E_ARG, run-time
 * errors) give "E_ARG: bad argument". Writes at most `size` bytes including the
 * terminating 0 into `buf` (truncating) and returns the length of the whole message.
 * Built with RBNN_NO_ERROR_TEXT (to save about 1.5 kB of flash), the field, expected
 * and found parts are left out: "E_CRC at offset 66856: check 22". */
uint32_t rbnn_error_text(const rbnn_model_t *m, int code, char *buf, uint32_t size);

/* CRC-32 (ISO-HDLC, as zlib.crc32), chainable: crc = rbnn_crc32(crc, p, n), start 0. */
uint32_t rbnn_crc32(uint32_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* RBNN_CORE_H */
