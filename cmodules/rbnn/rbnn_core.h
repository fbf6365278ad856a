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

#define RBNN_FORMAT_VERSION 1
#define RBNN_MAX_LAYERS 8
#define RBNN_MAX_BLOCKS 64
#define RBNN_MAX_BITS 16

/* Error codes: same numbers and names as docs/FORMAT.md and host/rbnn/errors.py. */
enum {
    RBNN_OK = 0,
    RBNN_E_TRUNCATED = -1,
    RBNN_E_MAGIC = -2,
    RBNN_E_VERSION = -3,
    RBNN_E_FLAGS = -4,
    RBNN_E_HEADER = -5,
    RBNN_E_SIZE = -6,
    RBNN_E_LAYOUT = -7,
    RBNN_E_CRC = -8,
    RBNN_E_BLOCK = -9,
    RBNN_E_PADDING = -10,
    RBNN_E_RANGE = -11,
    RBNN_E_ALIGN = -12,
    RBNN_E_INPUT = -13,
    RBNN_E_ARG = -14,
};

/* A validated model: pointers into the caller's buffer plus the parsed shape. */
typedef struct {
    const uint8_t *buf;          /* the file, 4-byte aligned, used in place */
    uint32_t file_bytes;
    uint16_t n_inputs;
    uint8_t n_layers;            /* weight layers per block, 1..8 */
    uint8_t n_blocks;
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
    uint32_t err_offset;         /* on error: byte offset of the field at fault */
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

/* CRC-32 (ISO-HDLC, as zlib.crc32), chainable: crc = rbnn_crc32(crc, p, n), start 0. */
uint32_t rbnn_crc32(uint32_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* RBNN_CORE_H */
