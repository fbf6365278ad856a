/*
 * rbnn core: portable C99 inference for .rbnn models (docs/FORMAT.md, version 1).
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
 * (docs/FORMAT.md, versions 1 and 2). */
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
    uint8_t version;             /* 1 or 2 */
    uint8_t max_blocks;          /* slots of the block table (version 1: n_blocks) */
    uint8_t score_q;             /* version 2: the shared score exponent */
    uint8_t live;                /* index of the live block, or 0xFF */
    uint32_t train_offset;       /* version 2: the training section (0 in version 1) */
    uint32_t budget;             /* version 2: every block's score bound (docs/FORMAT.md) */
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

/* Words of the activation scratch: two ping-pong buffers for the widest hidden layer
 * (0 when the model has no hidden layer). */
uint32_t rbnn_scratch_words(const rbnn_model_t *m);

/* Number of classes (length of the scores array). */
uint32_t rbnn_n_classes(const rbnn_model_t *m);

/* Bytes of RAM one inference needs: input + scratch + scores (eBNN order). */
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
