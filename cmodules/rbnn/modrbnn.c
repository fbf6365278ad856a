/*
 * _rbnn: the MicroPython binding of the rbnn C core (docs/DEVICE_API.md).
 *
 * A thin layer: argument checks, GC-heap allocations and error text. All model
 * semantics live in rbnn_core.c, which firmware/rbnn.py wraps as the "c" engine.
 * Memory comes from the GC heap only (m_new); nothing is allocated per inference.
 */
#include <string.h>

#include "py/obj.h"
#include "py/objstr.h"
#include "py/runtime.h"

#include "rbnn_core.h"

/* The package version, RBNN_VERSION, comes from rbnn_spec.h (generated from the host's
 * single source; firmware/rbnn.py carries it too, and a test checks they agree). */

/* MicroPython before 1.25 spells it NORETURN. */
#ifndef MP_NORETURN
#define MP_NORETURN NORETURN
#endif

typedef struct _rbnn_model_obj_t {
    mp_obj_base_t base;
    /* The object whose buffer holds the file (kept alive, never copied), or
     * MP_OBJ_NULL when the file had to be copied to an aligned GC block. */
    mp_obj_t buf_obj;
    const uint8_t *buf;        /* the file's bytes, 4-byte aligned */
    size_t buf_len;
    uint32_t *in_bits;         /* packed input, then activation scratch, then scores */
    uint32_t *scratch;
    int32_t *scores;
    uint32_t in_words;
    uint32_t n_classes;
    /* Training (docs/DEVICE_API.md, Training): the step's scratch, allocated from the
     * GC heap at the first step (rbnn_train_scratch_bytes), NULL until then; and whether
     * the buffer the model came from may be written (a bytes object may not). */
    uint32_t *train_scratch;
    bool writable;
    rbnn_model_t m;
} rbnn_model_obj_t;

/* The core's one-line message (docs/FORMAT.md, Errors): the same words the fallback
 * (firmware/rbnn_py.py) uses for the same bad file. */
static MP_NORETURN void rbnn_raise(int code, const rbnn_model_t *m) {
    char text[160];
    rbnn_error_text(m, code, text, sizeof text);
    mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("rbnn: %s"), text);
}

static const mp_obj_type_t rbnn_model_type;

/* Model(buf): validate the file in `buf` and allocate the per-model scratch. */
static mp_obj_t rbnn_model_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
    const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    if (mp_obj_is_str(args[0])) {
        /* A str has the buffer protocol in MicroPython: refuse it, as the fallback does. */
        mp_raise_TypeError(MP_ERROR_TEXT("rbnn: Model() takes the file's bytes; use rbnn.load(path) for a path"));
    }
    mp_buffer_info_t bi;
    /* Asking for a writable buffer tells bytes (and memoryviews of it) from bytearray. */
    bool writable = mp_get_buffer(args[0], &bi, MP_BUFFER_RW);
    if (!writable) {
        mp_get_buffer_raise(args[0], &bi, MP_BUFFER_READ);
    }

    rbnn_model_obj_t *self = mp_obj_malloc(rbnn_model_obj_t, type);
    self->writable = writable;
    self->train_scratch = NULL;
    self->buf_obj = args[0];
    self->buf = bi.buf;
    self->buf_len = bi.len;
    if (((uintptr_t)bi.buf & 3) != 0) {
        /* The core reads words in place; an unaligned buffer (a memoryview slice,
         * say) is copied once into a word-aligned GC block. */
        uint32_t *copy = m_new(uint32_t, (bi.len + 3) / 4);
        memcpy(copy, bi.buf, bi.len);
        self->buf_obj = MP_OBJ_NULL;
        self->buf = (const uint8_t *)copy;
    }

    int r = rbnn_model_init(&self->m, self->buf, self->buf_len);
    if (r != RBNN_OK) {
        rbnn_raise(r, &self->m);
    }
    self->in_words = rbnn_input_words(&self->m);
    self->n_classes = rbnn_n_classes(&self->m);
    uint32_t scratch_words = rbnn_scratch_words(&self->m);
    /* One block for everything an inference writes: input, ping-pong, scores. */
    uint32_t *work = m_new(uint32_t, self->in_words + scratch_words + self->n_classes);
    self->in_bits = work;
    self->scratch = scratch_words ? work + self->in_words : NULL;
    self->scores = (int32_t *)(work + self->in_words + scratch_words);
    return MP_OBJ_FROM_PTR(self);
}

/* A bytearray that was resized since load no longer holds the model where the core
 * looks for it: refuse rather than read freed memory. */
static void rbnn_check_buffer(rbnn_model_obj_t *self) {
    if (self->buf_obj == MP_OBJ_NULL) {
        return;
    }
    mp_buffer_info_t bi;
    mp_get_buffer_raise(self->buf_obj, &bi, MP_BUFFER_READ);
    if (bi.buf != (const void *)self->buf || bi.len != self->buf_len) {
        mp_raise_ValueError(MP_ERROR_TEXT("rbnn: the model's buffer was resized or moved after load"));
    }
}

/* The packed-input plane whose padding bits are set (the core only says E_INPUT). */
static unsigned rbnn_bad_plane(const rbnn_model_obj_t *self) {
    uint32_t w = (self->m.n_inputs + 31) / 32;
    uint32_t used = self->m.n_inputs % 32;
    uint32_t pad = used ? ~((UINT32_C(1) << used) - 1) : 0;
    for (uint32_t k = 0; k < self->m.k_planes; k++) {
        if (self->in_bits[k * w + w - 1] & pad) {
            return k;
        }
    }
    return 0;
}

/* Bring a sample (raw features or packed bits, `len` bytes at p) into self->in_bits;
 * any other length is a ValueError naming both accepted ones. */
static void rbnn_load_input(rbnn_model_obj_t *self, const uint8_t *p, size_t len) {
    size_t raw_len = self->m.n_inputs;
    size_t packed_len = 4 * (size_t)self->in_words;
    if (len == raw_len) {
        /* Raw wins a tie of lengths (docs/DEVICE_API.md, Inputs). */
        int r = rbnn_pack_u8(&self->m, p, self->in_bits);
        if (r < 0) {
            rbnn_raise(r, NULL);
        }
    } else if (len == packed_len) {
        /* Copied, not used in place: x need not be word-aligned. */
        memcpy(self->in_bits, p, packed_len);
    } else {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: input has %u bytes; expected %u raw features or %u bytes of packed bits"),
            (unsigned)len, (unsigned)raw_len, (unsigned)packed_len);
    }
}

/* The E_INPUT text of predict (the core only says E_INPUT); `at` names the sample of
 * a batch ("sample 3: "), or is "". */
static MP_NORETURN void rbnn_raise_input(rbnn_model_obj_t *self, const char *at) {
    mp_raise_msg_varg(&mp_type_ValueError,
        MP_ERROR_TEXT("rbnn: E_INPUT: %spacked input plane %u has padding bits set (n_inputs %u)"),
        at, rbnn_bad_plane(self), (unsigned)self->m.n_inputs);
}

/* Fill self->scores from x (raw features or packed bits); returns the class. */
static int rbnn_run(rbnn_model_obj_t *self, mp_obj_t x_in) {
    rbnn_check_buffer(self);
    mp_buffer_info_t bi;
    mp_get_buffer_raise(x_in, &bi, MP_BUFFER_READ);
    rbnn_load_input(self, bi.buf, bi.len);
    int r = rbnn_infer(&self->m, self->in_bits, self->scratch, self->scores);
    if (r == RBNN_E_INPUT) {
        rbnn_raise_input(self, "");
    }
    if (r < 0) {
        rbnn_raise(r, NULL);
    }
    return r;
}

/* predict(x) -> int */
static mp_obj_t rbnn_model_predict(mp_obj_t self_in, mp_obj_t x_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return MP_OBJ_NEW_SMALL_INT(rbnn_run(self, x_in));
}
static MP_DEFINE_CONST_FUN_OBJ_2(rbnn_model_predict_obj, rbnn_model_predict);

/* scores(x, out) -> int: fills the caller's array('i') and returns the class. */
static mp_obj_t rbnn_model_scores(mp_obj_t self_in, mp_obj_t x_in, mp_obj_t out_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t out;
    if (!mp_get_buffer(out_in, &out, MP_BUFFER_WRITE) || out.typecode != 'i') {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: out must be an array('i') of at least %u items"),
            (unsigned)self->n_classes);
    }
    if (out.len / sizeof(int32_t) < self->n_classes) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: out has %u items, needs at least %u (n_classes)"),
            (unsigned)(out.len / sizeof(int32_t)), (unsigned)self->n_classes);
    }
    /* Checked before inference so a bad `out` leaves nothing half done. */
    int cls = rbnn_run(self, x_in);
    memcpy(out.buf, self->scores, self->n_classes * sizeof(int32_t));
    return MP_OBJ_NEW_SMALL_INT(cls);
}
static MP_DEFINE_CONST_FUN_OBJ_3(rbnn_model_scores_obj, rbnn_model_scores);

static void dict_set(mp_obj_t d, qstr key, mp_obj_t value) {
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(key), value);
}

/* info() -> dict, keys as docs/DEVICE_API.md */
static mp_obj_t rbnn_model_info(mp_obj_t self_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const rbnn_model_t *m = &self->m;
    mp_obj_t layers = mp_obj_new_list(0, NULL);
    mp_obj_list_append(layers, MP_OBJ_NEW_SMALL_INT(m->n_inputs));
    /* 1-bit weights of one block, padding excluded: in[l] (a conv row: k*k*C) per row
     * segment (input mode 1: K segments in layer 0) and output. */
    uint32_t weights = 0;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        mp_obj_list_append(layers, MP_OBJ_NEW_SMALL_INT(m->sizes[l]));
        uint32_t segments = (l == 0 && m->input_mode == RBNN_INPUT_PER_PLANE) ? m->k_planes : 1;
        weights += m->layer_in[l] * segments * m->sizes[l];
    }
    mp_obj_t d = mp_obj_new_dict(13);
    dict_set(d, MP_QSTR_engine, MP_OBJ_NEW_QSTR(MP_QSTR_c));
    dict_set(d, MP_QSTR_inputs, MP_OBJ_NEW_SMALL_INT(m->n_inputs));
    dict_set(d, MP_QSTR_plane_mask, MP_OBJ_NEW_SMALL_INT(m->plane_mask));
    dict_set(d, MP_QSTR_layers, layers);
    dict_set(d, MP_QSTR_blocks, MP_OBJ_NEW_SMALL_INT(m->n_blocks));
    dict_set(d, MP_QSTR_planes, MP_OBJ_NEW_SMALL_INT(m->n_planes));
    dict_set(d, MP_QSTR_weight_bits, mp_obj_new_int_from_uint((mp_uint_t)weights * m->n_blocks));
    dict_set(d, MP_QSTR_file_bytes, mp_obj_new_int_from_uint(m->file_bytes));
    dict_set(d, MP_QSTR_ram, mp_obj_new_int_from_uint(rbnn_ram_bytes(m)));
    dict_set(d, MP_QSTR_input_bytes, mp_obj_new_int_from_uint(4 * self->in_words));
    dict_set(d, MP_QSTR_max_blocks, MP_OBJ_NEW_SMALL_INT(m->max_blocks));
    dict_set(d, MP_QSTR_live, m->live == 0xFFu ? mp_const_none : MP_OBJ_NEW_SMALL_INT(m->live));
    /* The step's scratch, as the first step allocates it; versions 1 and 3 cannot train: 0. */
    dict_set(d, MP_QSTR_train_ram,
        mp_obj_new_int_from_uint(m->version == 2 ? rbnn_train_scratch_bytes(m) : 0));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_info_obj, rbnn_model_info);

/* ---- training (docs/DEVICE_API.md, Training): the core's step on the model's buffer --
 * Every refusal raises before the core changes anything, or is the core's own refusal,
 * which changes nothing either; the texts are the twin's (rbnn.learn.step). */

/* Offsets in the training section and the block table (docs/FORMAT.md). */
enum {
    TS_STEPS = 8, TS_BLOCK_STEPS = 12, TS_HITS = 16, TS_ACTIVE = 20, TS_GROW_EVERY = 24,
    TS_STREAM_ID = 28, TS_STREAM_BASE = 32, TS_BITS = 40, TS_GROW_LEFT = 41,
};

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const uint8_t *rbnn_train_state(const rbnn_model_obj_t *self) {
    return self->buf + self->m.train_offset;
}

/* Planes no block owns (the block table's n_bits of every block in use). */
static uint32_t rbnn_free_planes(const rbnn_model_obj_t *self) {
    uint32_t n = self->m.n_planes;
    for (uint32_t b = 0; b < self->m.n_blocks; b++) {
        n -= self->buf[self->m.blocks_offset + RBNN_BLOCK_ENTRY_BYTES * b + 1];
    }
    return n;
}

/* A version 2 model whose buffer is still where it was loaded. */
static void rbnn_check_version(rbnn_model_obj_t *self) {
    rbnn_check_buffer(self);
    if (self->m.version < 2) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: E_VERSION: a version %u file has no training state; write it as version 2 to train it"),
            (unsigned)self->m.version);
    }
}

/* ... which may also be written. */
static void rbnn_check_trainable(rbnn_model_obj_t *self) {
    rbnn_check_version(self);
    if (!self->writable) {
        mp_raise_ValueError(MP_ERROR_TEXT("rbnn: the model's buffer is read-only: load it from a path or a bytearray to train"));
    }
    if (self->m.version >= RBNN_VERSION_V3) { /* docs/FORMAT.md, Training a version 3 model */
        /* the twin's words (rbnn.learn.step.UNTRAINABLE) */
        mp_raise_ValueError(MP_ERROR_TEXT("rbnn: E_FULL: a model with conv layers or input mode 1 (format version 3) "
            "is not trained by the integer step: it has no live block and may not open one (docs/FORMAT.md, "
            "Training a version 3 model)"));
    }
}

/* ... and has the step's scratch: allocated once, at the first step. */
static void rbnn_check_steppable(rbnn_model_obj_t *self) {
    rbnn_check_trainable(self);
    if (self->train_scratch == NULL) {
        uint32_t bytes = rbnn_train_scratch_bytes(&self->m);
        self->train_scratch = m_new(uint32_t, bytes ? (bytes + 3) / 4 : 1);
    }
}

/* The text of a refused step (the twin's words); `sample` >= 0 names it in a batch. */
static MP_NORETURN void rbnn_raise_step(rbnn_model_obj_t *self, int code, mp_obj_t label,
    mp_int_t sample) {
    vstr_t at;
    vstr_init(&at, 16);
    if (sample >= 0) {
        vstr_printf(&at, "sample %u: ", (unsigned)sample);
    }
    const char *where = vstr_null_terminated_str(&at);
    if (code == RBNN_E_LABEL) {
        vstr_t v;
        mp_print_t print;
        vstr_init_print(&v, 16, &print);
        mp_obj_print_helper(&print, label, PRINT_REPR);
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("rbnn: E_LABEL: %slabel %s: expected 0..%u"),
            where, vstr_null_terminated_str(&v), (unsigned)(self->n_classes - 1));
    }
    if (code == RBNN_E_INPUT) {
        rbnn_raise_input(self, where);
    }
    if (code == RBNN_E_FULL) {
        const uint8_t *ts = rbnn_train_state(self);
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: E_FULL: %sno live block, and none may open (grow_left %u, %u free planes, bits %u, %u empty slots)"),
            where, (unsigned)ts[TS_GROW_LEFT], (unsigned)rbnn_free_planes(self), (unsigned)ts[TS_BITS],
            (unsigned)(self->m.max_blocks - self->m.n_blocks));
    }
    rbnn_raise(code, NULL);
}

/* A label as the core takes it: out of range (negative, too big, a big int) is
 * UINT32_MAX, which the core refuses (E_LABEL) before anything changes. */
static uint32_t rbnn_label(const rbnn_model_obj_t *self, mp_obj_t label) {
    if (!mp_obj_is_small_int(label) && mp_obj_is_int(label)) {
        return UINT32_MAX; /* a big int: no class */
    }
    mp_int_t v = mp_obj_get_int(label); /* TypeError for a non-int */
    return v < 0 || (mp_uint_t)v >= self->n_classes ? UINT32_MAX : (uint32_t)v;
}

/* train(x, label) -> the class predicted before the update */
static mp_obj_t rbnn_model_train(mp_obj_t self_in, mp_obj_t x_in, mp_obj_t label_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    rbnn_check_steppable(self);
    mp_buffer_info_t bi;
    mp_get_buffer_raise(x_in, &bi, MP_BUFFER_READ);
    uint32_t label = rbnn_label(self, label_in);
    rbnn_load_input(self, bi.buf, bi.len);
    int r = rbnn_train_step(&self->m, (void *)self->buf, self->in_bits, label, self->train_scratch, NULL);
    if (r < 0) {
        rbnn_raise_step(self, r, label_in, -1);
    }
    return MP_OBJ_NEW_SMALL_INT(r);
}
static MP_DEFINE_CONST_FUN_OBJ_3(rbnn_model_train_obj, rbnn_model_train);

/* train_batch(xs, labels, preds=None) -> right predictions. n = len(labels) u8 labels,
 * xs n samples of len(xs) // n bytes each; preds (optional) receives each class. Every
 * argument is checked before the first step; a refused sample stops the batch with the
 * samples before it applied. Allocates nothing after the first step. */
static mp_obj_t rbnn_model_train_batch(size_t n_args, const mp_obj_t *args) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    rbnn_check_steppable(self);
    mp_buffer_info_t xs, ys, ps;
    mp_get_buffer_raise(args[1], &xs, MP_BUFFER_READ);
    mp_get_buffer_raise(args[2], &ys, MP_BUFFER_READ);
    size_t n = ys.len;
    size_t raw_len = self->m.n_inputs, packed_len = 4 * (size_t)self->in_words;
    size_t per = n ? xs.len / n : 0;
    if (n ? per * n != xs.len || (per != raw_len && per != packed_len) : xs.len != 0) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: xs has %u bytes for %u labels; expected %u raw features or %u bytes of packed bits per sample"),
            (unsigned)xs.len, (unsigned)n, (unsigned)raw_len, (unsigned)packed_len);
    }
    uint8_t *preds = NULL;
    if (n_args > 3 && args[3] != mp_const_none) {
        mp_get_buffer_raise(args[3], &ps, MP_BUFFER_WRITE);
        if (ps.len < n) {
            mp_raise_msg_varg(&mp_type_ValueError,
                MP_ERROR_TEXT("rbnn: preds has %u bytes, needs at least %u (one per label)"),
                (unsigned)ps.len, (unsigned)n);
        }
        preds = ps.buf;
    }
    const uint8_t *x = xs.buf, *y = ys.buf;
    mp_uint_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        rbnn_load_input(self, x + i * per, per); /* per is valid: cannot raise */
        int r = rbnn_train_step(&self->m, (void *)self->buf, self->in_bits, y[i], self->train_scratch, NULL);
        if (r < 0) {
            rbnn_raise_step(self, r, MP_OBJ_NEW_SMALL_INT(y[i]), (mp_int_t)i);
        }
        if (preds != NULL) {
            preds[i] = (uint8_t)r;
        }
        hits += (uint32_t)r == y[i];
    }
    return mp_obj_new_int_from_uint(hits);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(rbnn_model_train_batch_obj, 3, 4, rbnn_model_train_batch);

/* grow() -> index of the block opened in free planes (grow_left is not changed) */
static mp_obj_t rbnn_model_grow(mp_obj_t self_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    rbnn_check_trainable(self);
    int r = rbnn_new_block(&self->m, (void *)self->buf);
    if (r == RBNN_E_FULL) {
        if (self->m.live != 0xFFu) {
            mp_raise_ValueError(MP_ERROR_TEXT("rbnn: E_FULL: a live block exists; freeze it before opening another"));
        }
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: E_FULL: no room for a %u-bit block: %u free planes, %u empty block slots"),
            (unsigned)rbnn_train_state(self)[TS_BITS], (unsigned)rbnn_free_planes(self),
            (unsigned)(self->m.max_blocks - self->m.n_blocks));
    }
    if (r < 0) {
        rbnn_raise(r, NULL);
    }
    return MP_OBJ_NEW_SMALL_INT(r);
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_grow_obj, rbnn_model_grow);

/* freeze(): the live block keeps its sign plane, its other planes are released */
static mp_obj_t rbnn_model_freeze(mp_obj_t self_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    rbnn_check_trainable(self);
    int r = rbnn_freeze(&self->m, (void *)self->buf);
    if (r == RBNN_E_FULL) {
        mp_raise_ValueError(MP_ERROR_TEXT("rbnn: E_FULL: no live block to freeze"));
    }
    if (r < 0) {
        rbnn_raise(r, NULL);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_freeze_obj, rbnn_model_freeze);

/* stats() -> dict, keys as docs/DEVICE_API.md (Training) */
static mp_obj_t rbnn_model_stats(mp_obj_t self_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    rbnn_check_version(self);
    const uint8_t *ts = rbnn_train_state(self);
    const rbnn_model_t *m = &self->m;
    mp_obj_t d = mp_obj_new_dict(13);
    dict_set(d, MP_QSTR_steps, mp_obj_new_int_from_uint(rd32(ts + TS_STEPS)));
    dict_set(d, MP_QSTR_hits, mp_obj_new_int_from_uint(rd32(ts + TS_HITS)));
    dict_set(d, MP_QSTR_active, mp_obj_new_int_from_uint(rd32(ts + TS_ACTIVE)));
    dict_set(d, MP_QSTR_block_steps, mp_obj_new_int_from_uint(rd32(ts + TS_BLOCK_STEPS)));
    dict_set(d, MP_QSTR_live, m->live == 0xFFu ? mp_const_none : MP_OBJ_NEW_SMALL_INT(m->live));
    dict_set(d, MP_QSTR_blocks, MP_OBJ_NEW_SMALL_INT(m->n_blocks));
    dict_set(d, MP_QSTR_max_blocks, MP_OBJ_NEW_SMALL_INT(m->max_blocks));
    dict_set(d, MP_QSTR_free_planes, MP_OBJ_NEW_SMALL_INT(rbnn_free_planes(self)));
    dict_set(d, MP_QSTR_bits, MP_OBJ_NEW_SMALL_INT(ts[TS_BITS]));
    dict_set(d, MP_QSTR_grow_left, MP_OBJ_NEW_SMALL_INT(ts[TS_GROW_LEFT]));
    dict_set(d, MP_QSTR_grow_every, mp_obj_new_int_from_uint(rd32(ts + TS_GROW_EVERY)));
    dict_set(d, MP_QSTR_stream_id, mp_obj_new_int_from_uint(rd32(ts + TS_STREAM_ID)));
    dict_set(d, MP_QSTR_stream_base, mp_obj_new_int_from_uint(rd32(ts + TS_STREAM_BASE)));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_stats_obj, rbnn_model_stats);

/* The file's CRC, written into the buffer first when it may be written (a read-only
 * buffer cannot have been trained: its CRC is the one checked at load). */
static uint32_t rbnn_do_reseal(rbnn_model_obj_t *self) {
    rbnn_check_buffer(self);
    if (self->writable) {
        rbnn_reseal(&self->m, (void *)self->buf);
    }
    return rd32(self->buf + self->m.file_bytes - 4);
}

/* reseal() -> int: the CRC, written into the buffer */
static mp_obj_t rbnn_model_reseal(mp_obj_t self_in) {
    return mp_obj_new_int_from_uint(rbnn_do_reseal(MP_OBJ_TO_PTR(self_in)));
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_reseal_obj, rbnn_model_reseal);

/* save(path): reseal, then rbnn_store.write_file(path, buffer) (path.new, sync, rename:
 * one atomic writer for every engine, in Python) */
static mp_obj_t rbnn_model_save(mp_obj_t self_in, mp_obj_t path_in) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    rbnn_do_reseal(self);
    mp_obj_t store = mp_import_name(MP_QSTR_rbnn_store, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
    mp_obj_t write_file = mp_load_attr(store, MP_QSTR_write_file);
    /* The caller's object, or (a copied unaligned buffer) a bytearray over the copy. */
    mp_obj_t data = self->buf_obj != MP_OBJ_NULL ? self->buf_obj
        : mp_obj_new_bytearray_by_ref(self->buf_len, (void *)self->buf);
    mp_call_function_2(write_file, path_in, data);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(rbnn_model_save_obj, rbnn_model_save);

/* Read-only attributes; everything else is looked up in locals_dict. */
static void rbnn_model_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    if (dest[0] != MP_OBJ_NULL) {
        return; /* store/delete: not supported */
    }
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (attr == MP_QSTR_n_inputs) {
        dest[0] = MP_OBJ_NEW_SMALL_INT(self->m.n_inputs);
    } else if (attr == MP_QSTR_n_classes) {
        dest[0] = MP_OBJ_NEW_SMALL_INT(self->n_classes);
    } else if (attr == MP_QSTR_input_bytes) {
        dest[0] = mp_obj_new_int_from_uint(4 * self->in_words);
    } else if (attr == MP_QSTR_engine) {
        dest[0] = MP_OBJ_NEW_QSTR(MP_QSTR_c);
    } else {
        dest[1] = MP_OBJ_SENTINEL;
    }
}

static void rbnn_model_print(const mp_print_t *print, mp_obj_t self_in, mp_print_kind_t kind) {
    rbnn_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_printf(print, "<rbnn.Model %u inputs, %u layers, %u classes, engine c>",
        (unsigned)self->m.n_inputs, (unsigned)self->m.n_layers, (unsigned)self->n_classes);
}

static const mp_rom_map_elem_t rbnn_model_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_predict), MP_ROM_PTR(&rbnn_model_predict_obj) },
    { MP_ROM_QSTR(MP_QSTR_scores), MP_ROM_PTR(&rbnn_model_scores_obj) },
    { MP_ROM_QSTR(MP_QSTR_info), MP_ROM_PTR(&rbnn_model_info_obj) },
    { MP_ROM_QSTR(MP_QSTR_train), MP_ROM_PTR(&rbnn_model_train_obj) },
    { MP_ROM_QSTR(MP_QSTR_train_batch), MP_ROM_PTR(&rbnn_model_train_batch_obj) },
    { MP_ROM_QSTR(MP_QSTR_grow), MP_ROM_PTR(&rbnn_model_grow_obj) },
    { MP_ROM_QSTR(MP_QSTR_freeze), MP_ROM_PTR(&rbnn_model_freeze_obj) },
    { MP_ROM_QSTR(MP_QSTR_stats), MP_ROM_PTR(&rbnn_model_stats_obj) },
    { MP_ROM_QSTR(MP_QSTR_reseal), MP_ROM_PTR(&rbnn_model_reseal_obj) },
    { MP_ROM_QSTR(MP_QSTR_save), MP_ROM_PTR(&rbnn_model_save_obj) },
};
static MP_DEFINE_CONST_DICT(rbnn_model_locals_dict, rbnn_model_locals_dict_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    rbnn_model_type,
    MP_QSTR_Model,
    MP_TYPE_FLAG_NONE,
    make_new, rbnn_model_make_new,
    print, rbnn_model_print,
    attr, rbnn_model_attr,
    locals_dict, &rbnn_model_locals_dict
    );

static MP_DEFINE_STR_OBJ(rbnn_version_obj, RBNN_VERSION);

static const mp_rom_map_elem_t rbnn_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__rbnn) },
    { MP_ROM_QSTR(MP_QSTR___version__), MP_ROM_PTR(&rbnn_version_obj) },
    { MP_ROM_QSTR(MP_QSTR_engine), MP_ROM_QSTR(MP_QSTR_c) },
    { MP_ROM_QSTR(MP_QSTR_Model), MP_ROM_PTR(&rbnn_model_type) },
};
static MP_DEFINE_CONST_DICT(rbnn_module_globals, rbnn_module_globals_table);

const mp_obj_module_t rbnn_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&rbnn_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__rbnn, rbnn_user_cmodule);
