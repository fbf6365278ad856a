/*
 * Test harness for the C core, built by tests/test_ccore.py with ASan and UBSan.
 * Every buffer handed to the core is malloc'ed at its exact length, so the sanitizer
 * reports any read past its end.
 *
 *   rbnn_harness infer MODEL INPUTS     INPUTS: packed uint32 inputs, n * input_words
 *   rbnn_harness infer8 MODEL FEATURES  FEATURES: uint8 features, n * n_inputs (C packs)
 *       print one line per sample: "class score0 score1 ..."
 *   rbnn_harness check BUFFERS          BUFFERS: records of u32 length + that many bytes
 *       print one line per buffer: "code err_offset [message]"
 *   rbnn_harness corrupt MODEL DELTAS   every single-byte change (byte ^ d for DELTAS
 *       values of d, "all" = 1..255) and every truncation must be rejected
 *   rbnn_harness train MODEL OPS OUT    OPS: u32 records [op, arg, payload]: 0 step
 *       (arg label, payload one packed input), 1 new block, 2 freeze, 3 batch (arg n,
 *       payload n labels then n packed inputs), 4 step with z_out NULL; print one line
 *       per op ("rc [z... | preds...]"), check that a refused op changed nothing, then
 *       reseal, check the file loads again and write it to OUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbnn_core.h"
#include "rbnn_kernel.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "harness: cannot read %s\n", path);
        exit(2);
    }
    buf = malloc(n ? (size_t)n : 1u);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "harness: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void load(rbnn_model_t *m, const unsigned char *buf, size_t len) {
    int rc = rbnn_model_init(m, buf, len);
    if (rc != RBNN_OK) {
        fprintf(stderr, "harness: model rejected: %d (%s) at %u\n", rc, rbnn_strerror(rc),
            (unsigned)m->err_offset);
        exit(1);
    }
}

/* Scores of every sample, through rbnn_infer and rbnn_infer_batch (must agree). */
static int run(const rbnn_model_t *m, const uint32_t *x, size_t n) {
    uint32_t in_w = rbnn_input_words(m), cls = rbnn_n_classes(m), sw = rbnn_scratch_words(m);
    uint32_t *scratch = sw ? malloc(4u * sw) : NULL; /* NULL when no hidden layer */
    int32_t *one = malloc(4u * cls), *all = malloc(4u * cls * (n ? n : 1u));
    int32_t *classes = malloc(sizeof(int32_t) * (n ? n : 1u));
    size_t i, k;
    int rc;
    if (n && rbnn_infer_batch(m, x, (uint32_t)n, scratch, all, classes) != RBNN_OK) {
        fprintf(stderr, "harness: batch inference failed\n");
        return 1;
    }
    for (i = 0; i < n; i++) {
        rc = rbnn_infer(m, x + i * in_w, scratch, one);
        if (rc < 0 || rc != classes[i] || memcmp(one, all + i * cls, 4u * cls) != 0) {
            fprintf(stderr, "harness: sample %u: rbnn_infer %d disagrees with batch\n",
                (unsigned)i, rc);
            return 1;
        }
        printf("%d", rc);
        for (k = 0; k < cls; k++) {
            printf(" %ld", (long)one[k]);
        }
        printf("\n");
    }
    free(scratch);
    free(one);
    free(all);
    free(classes);
    return 0;
}

static int cmd_infer(const char *model_path, const char *input_path, int raw) {
    size_t len, in_len, n, i;
    unsigned char *buf = read_file(model_path, &len), *in = read_file(input_path, &in_len);
    rbnn_model_t m;
    uint32_t *x;
    int rc;
    load(&m, buf, len);
    if (raw) {
        n = in_len / m.n_inputs;
        x = malloc(4u * rbnn_input_words(&m) * (n ? n : 1u));
        for (i = 0; i < n; i++) {
            if (rbnn_pack_u8(&m, in + i * m.n_inputs, x + i * rbnn_input_words(&m)) != RBNN_OK) {
                fprintf(stderr, "harness: pack failed\n");
                return 1;
            }
        }
        free(in);
    } else {
        n = in_len / (4u * rbnn_input_words(&m));
        x = (uint32_t *)(void *)in; /* malloc'ed: aligned */
    }
    rc = run(&m, x, n);
    free(x);
    free(buf);
    return rc;
}

static int cmd_check(const char *path) {
    size_t len, at = 0;
    unsigned char *all = read_file(path, &len);
    while (at + 4u <= len) {
        uint32_t n = (uint32_t)all[at] | (uint32_t)all[at + 1] << 8 | (uint32_t)all[at + 2] << 16
                     | (uint32_t)all[at + 3] << 24;
        unsigned char *buf;
        rbnn_model_t m;
        int rc;
        at += 4u;
        if (n > len - at) {
            fprintf(stderr, "harness: bad record\n");
            return 2;
        }
        buf = malloc(n ? n : 1u);
        memcpy(buf, all + at, n);
        rc = rbnn_model_init(&m, buf, n);
        if (rc == RBNN_OK) {
            printf("%d %u\n", rc, (unsigned)m.err_offset);
        } else { /* the message too, rendered under the sanitizers (a short buffer first) */
            char small[8], text[256];
            rbnn_error_text(&m, rc, small, sizeof small);
            rbnn_error_text(&m, rc, text, sizeof text);
            printf("%d %u %s\n", rc, (unsigned)m.err_offset, text);
        }
        free(buf);
        at += n;
    }
    free(all);
    return 0;
}

static int cmd_corrupt(const char *path, const char *deltas) {
    size_t len, off, cut, tried = 0;
    unsigned char *buf = read_file(path, &len), *t;
    unsigned char ds[255];
    static const unsigned char spread[] = {0x01, 0x80, 0xFF, 0x10, 0x04, 0x55, 0x02, 0x40,
        0x20, 0xAA, 0x08, 0x7F};
    unsigned nd = 0, i, rotate = 0;
    long hist[15] = {0};
    rbnn_model_t m;
    int rc;
    if (strcmp(deltas, "all") == 0) {
        for (i = 1; i < 256; i++) {
            ds[nd++] = (unsigned char)i;
        }
    } else { /* N deltas per offset, rotating through a set so that neighbouring
                offsets flip different bits (every bit position is hit across the file) */
        unsigned want = (unsigned)atoi(deltas);
        rotate = 1;
        for (i = 0; i < want && i < 255; i++) {
            ds[nd++] = i < sizeof spread ? spread[i] : (unsigned char)(1 + (i * 97u) % 255u);
        }
    }
    load(&m, buf, len);
    for (off = 0; off < len; off++) {
        unsigned char orig = buf[off];
        for (i = 0; i < nd; i++) {
            unsigned char d = rotate && nd < sizeof spread ? spread[(off + i) % sizeof spread] : ds[i];
            buf[off] = orig ^ d;
            rc = rbnn_model_init(&m, buf, len);
            if (rc >= 0 || rc < -14) {
                fprintf(stderr, "harness: byte %u ^ 0x%02x accepted (%d)\n", (unsigned)off, d, rc);
                return 1;
            }
            hist[-rc]++;
            tried++;
        }
        buf[off] = orig;
    }
    for (cut = 0; cut < len; cut++) {
        t = malloc(cut ? cut : 1u);
        memcpy(t, buf, cut);
        rc = rbnn_model_init(&m, t, cut);
        free(t);
        if (rc >= 0 || rc < -14) {
            fprintf(stderr, "harness: truncation to %u bytes accepted (%d)\n", (unsigned)cut, rc);
            return 1;
        }
        hist[-rc]++;
    }
    for (cut = 1; cut <= 8; cut++) { /* trailing bytes after the CRC */
        t = calloc(len + cut, 1);
        memcpy(t, buf, len);
        rc = rbnn_model_init(&m, t, len + cut);
        free(t);
        if (rc != RBNN_E_SIZE) {
            fprintf(stderr, "harness: %u extra bytes gave %d, not E_SIZE\n", (unsigned)cut, rc);
            return 1;
        }
    }
    load(&m, buf, len); /* restored: valid again */
    printf("corruptions %lu truncations %lu rejected", (unsigned long)tried, (unsigned long)len);
    for (i = 1; i < 15; i++) {
        printf(" %d:%ld", -(int)i, hist[i]);
    }
    printf("\n");
    free(buf);
    return 0;
}

/* One u32 of the ops file at word i (bounds-checked). */
static uint32_t op_word(const unsigned char *ops, size_t len, size_t i) {
    if (4u * i + 4u > len) {
        fprintf(stderr, "harness: ops file cut at word %u\n", (unsigned)i);
        exit(2);
    }
    ops += 4u * i;
    return (uint32_t)ops[0] | (uint32_t)ops[1] << 8 | (uint32_t)ops[2] << 16 | (uint32_t)ops[3] << 24;
}

/* n words of the ops file from word i into a malloc'ed buffer of exactly that size. */
static uint32_t *op_words(const unsigned char *ops, size_t len, size_t i, size_t n) {
    uint32_t *out = malloc(4u * (n ? n : 1u));
    size_t k;
    for (k = 0; k < n; k++) {
        out[k] = op_word(ops, len, i + k);
    }
    return out;
}

static int cmd_train(const char *model_path, const char *ops_path, const char *out_path) {
    size_t len, ops_len, at = 0, k;
    unsigned char *buf = read_file(model_path, &len), *ops = read_file(ops_path, &ops_len);
    unsigned char *before = malloc(len);
    rbnn_model_t m, m0;
    uint32_t in_w, cls, sb;
    void *scratch;
    FILE *f;
    load(&m, buf, len);
    in_w = rbnn_input_words(&m);
    cls = rbnn_n_classes(&m);
    sb = rbnn_train_scratch_bytes(&m);
    scratch = malloc(sb); /* exactly the bytes asked for: a step that uses more is an ASan report */
    while (4u * at < ops_len) {
        uint32_t op = op_word(ops, ops_len, at), arg = op_word(ops, ops_len, at + 1);
        int rc;
        at += 2;
        memcpy(before, buf, len);
        m0 = m;
        if (op == 0u || op == 4u) {
            uint32_t *x = op_words(ops, ops_len, at, in_w);
            int32_t *z = op == 0u ? malloc(4u * cls) : NULL;
            at += in_w;
            rc = rbnn_train_step(&m, buf, x, arg, scratch, z);
            printf("%d", rc);
            for (k = 0; z != NULL && rc >= 0 && k < cls; k++) {
                printf(" %ld", (long)z[k]);
            }
            free(x);
            free(z);
        } else if (op == 1u) {
            printf("%d", rc = rbnn_new_block(&m, buf));
        } else if (op == 2u) {
            printf("%d", rc = rbnn_freeze(&m, buf));
        } else if (op == 3u) {
            uint32_t *labels = op_words(ops, ops_len, at, arg);
            uint32_t *x = op_words(ops, ops_len, at + arg, (size_t)arg * in_w);
            int32_t *preds = malloc(4u * (arg ? arg : 1u));
            at += arg + (size_t)arg * in_w;
            for (k = 0; k < arg; k++) {
                preds[k] = 99; /* untouched after a refused sample */
            }
            rc = rbnn_train_batch(&m, buf, x, labels, arg, scratch, preds);
            printf("%d", rc);
            for (k = 0; k < arg; k++) {
                printf(" %ld", (long)preds[k]);
            }
            free(labels);
            free(x);
            free(preds);
            rc = 0; /* the steps before a refused one stay taken */
        } else {
            fprintf(stderr, "harness: unknown op %u\n", (unsigned)op);
            return 2;
        }
        printf("\n");
        if (rc < 0 && (memcmp(before, buf, len) != 0 || memcmp(&m0, &m, sizeof m) != 0)) {
            fprintf(stderr, "harness: op %u refused with %d but changed the model\n", (unsigned)op, rc);
            return 1;
        }
    }
    rbnn_reseal(&m, buf);
    memcpy(before, buf, len); /* a fresh copy must load: every check of the reader passes */
    {
        rbnn_model_t again;
        int rc = rbnn_model_init(&again, before, len);
        if (rc != RBNN_OK) {
            char text[256];
            rbnn_error_text(&again, rc, text, sizeof text);
            fprintf(stderr, "harness: the trained file is refused: %s\n", text);
            return 1;
        }
    }
    f = fopen(out_path, "wb");
    if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "harness: cannot write %s\n", out_path);
        return 2;
    }
    free(scratch);
    free(before);
    free(ops);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
#ifdef RBNN_KERNEL_SELECT
    /* tests/test_batchtile.py runs every kernel of a -march=native build under the
     * sanitizers: RBNN_KERNEL names one (rbnn_kernel.h). */
    if (getenv("RBNN_KERNEL") != NULL && rbnn_kernel_select(getenv("RBNN_KERNEL")) != 0) {
        fprintf(stderr, "harness: kernel %s not available\n", getenv("RBNN_KERNEL"));
        return 1;
    }
#endif
    if (argc == 4 && strcmp(argv[1], "infer") == 0) {
        return cmd_infer(argv[2], argv[3], 0);
    }
    if (argc == 4 && strcmp(argv[1], "infer8") == 0) {
        return cmd_infer(argv[2], argv[3], 1);
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        return cmd_check(argv[2]);
    }
    if (argc == 4 && strcmp(argv[1], "corrupt") == 0) {
        return cmd_corrupt(argv[2], argv[3]);
    }
    if (argc == 5 && strcmp(argv[1], "train") == 0) {
        return cmd_train(argv[2], argv[3], argv[4]);
    }
    fprintf(stderr, "usage: rbnn_harness infer|infer8 MODEL INPUTS | check BUFFERS | "
                    "corrupt MODEL all|N | train MODEL OPS OUT\n");
    return 2;
}
