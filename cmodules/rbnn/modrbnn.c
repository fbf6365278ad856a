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
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_READ);

    rbnn_model_obj_t *self = mp_obj_malloc(rbnn_model_obj_t, type);
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

/* Fill self->scores from x (raw features or packed bits); returns the class. */
static int rbnn_run(rbnn_model_obj_t *self, mp_obj_t x_in) {
    rbnn_check_buffer(self);
    mp_buffer_info_t bi;
    mp_get_buffer_raise(x_in, &bi, MP_BUFFER_READ);
    size_t raw_len = self->m.n_inputs;
    size_t packed_len = 4 * (size_t)self->in_words;
    int r;
    if (bi.len == raw_len) {
        /* Raw wins a tie of lengths (docs/DEVICE_API.md, Inputs). */
        r = rbnn_pack_u8(&self->m, bi.buf, self->in_bits);
        if (r < 0) {
            rbnn_raise(r, NULL);
        }
    } else if (bi.len == packed_len) {
        /* Copied, not used in place: x need not be word-aligned. */
        memcpy(self->in_bits, bi.buf, packed_len);
    } else {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: input has %u bytes; expected %u raw features or %u bytes of packed bits"),
            (unsigned)bi.len, (unsigned)raw_len, (unsigned)packed_len);
    }
    r = rbnn_infer(&self->m, self->in_bits, self->scratch, self->scores);
    if (r == RBNN_E_INPUT) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("rbnn: E_INPUT: packed input plane %u has padding bits set (n_inputs %u)"),
            rbnn_bad_plane(self), (unsigned)self->m.n_inputs);
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
    /* 1-bit weights of one block, padding excluded. */
    uint32_t n_in = m->n_inputs;
    uint32_t weights = 0;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        mp_obj_list_append(layers, MP_OBJ_NEW_SMALL_INT(m->sizes[l]));
        weights += n_in * m->sizes[l];
        n_in = m->sizes[l];
    }
    mp_obj_t d = mp_obj_new_dict(12);
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
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_1(rbnn_model_info_obj, rbnn_model_info);

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
