"""Every check a reader makes on a .rbnn file, with the words of its error, written once.

A failed check is reported by every engine as one line (docs/FORMAT.md, Errors)::

    E_<CODE> at offset <N>: <field>: expected <expected>, found <found>

``field``, ``expected`` and ``found`` are templates over five integers a reader knows at
that point: ``i``, ``j``, ``k`` (indices: block, slot, layer, row, ...), ``want`` and
``found`` (values). A placeholder is ``{name}`` (unsigned decimal), ``{name:d}`` (signed
decimal), ``{name:x}`` (``0x%08x``) or ``{name:x4}`` (``0x%04x``). The Python reader
renders them with :func:`render`; the C core carries the check's id and the five
integers and renders the same text with ``rbnn_error_text`` from the table that
``python -m rbnn.format.checks`` writes into ``cmodules/rbnn/rbnn_spec.h``; the
MicroPython fallback spells each message out, and ``tests/test_constants.py`` and the
error-corpus tests hold all of them to the same text.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from .. import __version__
from . import constants as K


@dataclass(frozen=True)
class Check:
    name: str  # id: RBNN_CHK_<name> in C
    code: str  # error code name, E_...
    field: str
    expected: str
    found: str


_V = "..".join(str(v) for v in (K.READ_VERSIONS[0], K.READ_VERSIONS[-1])) if len(K.READ_VERSIONS) > 1 else str(K.READ_VERSIONS[0])

# In the order docs/FORMAT.md lists the checks.
CHECKS = (
    Check("TRUNC_HEADER", "E_TRUNCATED", "header", f">= {K.HEADER_BYTES} bytes", "{found} bytes"),
    Check("MAGIC", "E_MAGIC", "magic", "0x" + K.MAGIC.hex(), "{found:x}"),
    Check("VERSION", "E_VERSION", "version", _V, "{found}"),
    Check("FLAGS", "E_FLAGS", "flags", "0", "{found:x4}"),
    Check("WORD_BITS", "E_HEADER", "word_bits", str(K.WORD_BITS), "{found}"),
    Check("N_LAYERS", "E_HEADER", "n_layers", f"1..{K.MAX_LAYERS}", "{found}"),
    Check("N_BLOCKS", "E_HEADER", "n_blocks", f"1..{K.MAX_BLOCKS}", "{found}"),
    Check("N_BLOCKS_V2", "E_HEADER", "n_blocks", f"0..{K.MAX_BLOCKS}", "{found}"),
    Check("N_PLANES", "E_HEADER", "n_planes", f"1..{K.MAX_PLANES}", "{found}"),
    Check("N_INPUTS", "E_HEADER", "n_inputs", f"1..{K.MAX_INPUTS}", "{found}"),
    Check("INPUT_MODE", "E_HEADER", "input_mode", "0", "{found}"),
    Check("INPUT_MODE_V3", "E_HEADER", "input_mode", f"{K.INPUT_SHARED}..{K.INPUT_PER_PLANE}", "{found}"),
    Check("PLANE_MASK", "E_HEADER", "plane_mask", "not 0", "{found}"),
    Check("TRUNC_HEADER_V2", "E_TRUNCATED", "header", f">= {K.HEADER_BYTES_V2} bytes (version 2)", "{found} bytes"),
    Check("MAX_BLOCKS", "E_HEADER", "max_blocks", f"{{want}}..{K.MAX_BLOCKS} (n_blocks..)", "{found}"),
    Check("SCORE_Q", "E_HEADER", "score_q", f"0..{K.MAX_SCORE_Q}", "{found}"),
    Check("HEADER_RESERVED", "E_FLAGS", "reserved header byte {i}", "0", "{found}"),
    Check("TRUNC_LAYERS", "E_TRUNCATED", "layer table", ">= {want} bytes", "{found} bytes"),
    Check("LAYER_SIZE", "E_HEADER", "size[{i}]", f"1..{K.MAX_SIZE}", "{found}"),
    Check("LAYER_PAD", "E_FLAGS", "layer table pad", "0", "{found:x4}"),
    # version 3: each layer's fields in table order, layer by layer
    Check("LAYER_KIND", "E_HEADER", "layer[{i}].kind", f"{K.DENSE} (dense) or {K.CONV} (conv)", "{found}"),
    Check("CONV_KERNEL", "E_HEADER", "layer[{i}].kernel", f"odd, 1..{K.MAX_KERNEL} (conv)", "{found}"),
    Check("DENSE_KERNEL", "E_HEADER", "layer[{i}].kernel", "0 (dense)", "{found}"),
    Check("CONV_PAD", "E_HEADER", "layer[{i}].pad", "0..{want} (kernel / 2)", "{found}"),
    Check("DENSE_PAD", "E_HEADER", "layer[{i}].pad", "0 (dense)", "{found}"),
    Check("CONV_POOL", "E_HEADER", "layer[{i}].pool", f"{K.POOL_NONE} or {K.POOL_2X2} (conv)", "{found}"),
    Check("DENSE_POOL", "E_HEADER", "layer[{i}].pool", "0 (dense)", "{found}"),
    Check("LAYER_RESERVED", "E_FLAGS", "layer[{i}].reserved", "0", "{found}"),
    # version 3: the order of kinds, the input shape, the shapes chaining
    Check("CONV_AFTER_DENSE", "E_HEADER", "layer[{i}].kind", f"{K.DENSE} (no conv layer after a dense layer)",
          "{found}"),  # fmt: skip
    Check("OUTPUT_DENSE", "E_HEADER", "layer[{i}].kind", f"{K.DENSE} (the output layer is dense)", "{found}"),
    Check("IN_H_UNUSED", "E_HEADER", "in_h", "0 (no conv layer)", "{found}"),
    Check("IN_W_UNUSED", "E_HEADER", "in_w", "0 (no conv layer)", "{found}"),
    Check("IN_C_UNUSED", "E_HEADER", "in_c", "0 (no conv layer)", "{found}"),
    Check("IN_H", "E_HEADER", "in_h", f"1..{K.MAX_DIM} (a conv layer)", "{found}"),
    Check("IN_W", "E_HEADER", "in_w", f"1..{K.MAX_DIM} (a conv layer)", "{found}"),
    Check("IN_C", "E_HEADER", "in_c", f"1..{K.MAX_DIM} (a conv layer)", "{found}"),
    Check("IN_SHAPE", "E_HEADER", "in_h x in_w x in_c", "{want} (n_inputs)", "{i}x{j}x{k}"),
    Check("CONV_FIT", "E_HEADER", "layer[{i}].kernel", "<= {want} (the {j}x{k} input map with its pad)",
          "{found}"),  # fmt: skip
    Check("POOL_ODD", "E_HEADER", "layer[{i}].pool", "0 (the {j}x{k} conv output is not even)", "{found}"),
    Check("SIZE_OVERFLOW", "E_SIZE", "computed file size", f"<= {K.U32_MAX} bytes", "more"),
    Check("TRUNC_FILE", "E_TRUNCATED", "file_bytes", "{want} bytes", "{found} bytes"),
    Check("FILE_LONGER", "E_SIZE", "file_bytes", "{want} (the buffer's length)", "{found}"),
    Check("PLANE_BYTES", "E_LAYOUT", "plane_bytes", "{want}", "{found}"),
    Check("ARENA_OFFSET", "E_LAYOUT", "arena_offset", "{want}", "{found}"),
    Check("PARAMS_OFFSET", "E_LAYOUT", "params_offset", "{want}", "{found}"),
    Check("TRAIN_OFFSET", "E_LAYOUT", "train_offset", "{want}", "{found}"),
    Check("FILE_BYTES", "E_LAYOUT", "file_bytes", "{want}", "{found}"),
    Check("CRC", "E_CRC", "crc32", "{want:x}", "{found:x}"),
    Check("BLOCK_STATE", "E_BLOCK", "block[{i}].state", f"{K.FROZEN} or {K.LIVE}", "{found}"),
    Check("BLOCK_LIVE_LAST", "E_BLOCK", "block[{i}].state", f"{K.FROZEN} (only the last block may be live)", "{found}"),
    Check("BLOCK_BITS_FROZEN", "E_BLOCK", "block[{i}].n_bits", "1 (frozen)", "{found}"),
    Check("BLOCK_BITS", "E_BLOCK", "block[{i}].n_bits", f"1..{K.MAX_BITS}", "{found}"),
    Check("BLOCK_RESERVED", "E_BLOCK", "block[{i}].reserved", "0", "{found}"),
    Check("BLOCK_UNUSED", "E_BLOCK", "block[{i}].planes[{j}] (unused)", str(K.UNUSED_PLANE), "{found}"),
    Check("BLOCK_PLANE", "E_BLOCK", "block[{i}].planes[{j}]", "< {want}", "{found}"),
    Check("BLOCK_OWNED", "E_BLOCK", "block[{i}].planes[{j}]", "a plane not owned by block {want}", "{found}"),
    Check("BLOCK_EMPTY", "E_BLOCK", "block slot[{i}] (empty) byte {j}", str(K.UNUSED_PLANE), "{found}"),
    Check("WEIGHT_PADDING", "E_PADDING", "plane {i} layer {j} row {k} padding", "0", "{found:x}"),
    Check("FLIP_PADDING", "E_PADDING", "block[{i}] layer {j} flip padding", "0", "{found:x}"),
    Check("PARAMS_EMPTY", "E_FLAGS", "parameter slot[{i}] (empty) byte {want}", "0", "{found}"),
    Check("LIVE_FLIPS", "E_TRAIN", "block[{i}] layer {j} flips (a live block)", "0", "{found:x}"),
    Check("LIVE_SCALE", "E_TRAIN", "block[{i}] scale[{j}] (a live block)", "|scale| <= {want} (half / smax)", "{found:d}"),
    Check("LIVE_OFFSET", "E_TRAIN", "block[{i}] offset[{j}] (a live block)", "|offset| <= {want} (half - 1)", "{found:d}"),
    Check("V3_GROW_LEFT", "E_TRAIN", "train.grow_left", "0 (a version 3 model is not trained)", "{found}"),
    Check("V3_LIVE", "E_TRAIN", "block[{i}].state", f"{K.FROZEN} (a version 3 model has no live block)", "{found}"),
    Check("TRAIN_RULE", "E_TRAIN", "train.rule", "1", "{found}"),
    Check("TRAIN_BLOCK_STEPS", "E_TRAIN", "train.block_steps", "<= steps ({want})", "{found}"),
    Check("TRAIN_NO_LIVE", "E_TRAIN", "train.block_steps", "0 (no live block)", "{found}"),
    Check("TRAIN_HITS", "E_TRAIN", "train.hits", "<= steps ({want})", "{found}"),
    Check("TRAIN_ACTIVE", "E_TRAIN", "train.active", "<= steps ({want})", "{found}"),
    Check("TRAIN_STREAM_BASE", "E_TRAIN", "train.stream_base", "<= steps ({want})", "{found}"),
    Check("TRAIN_MARGIN", "E_TRAIN", "train.margin", "1..{want} (the block budget)", "{found}"),
    Check("TRAIN_BITS", "E_TRAIN", "train.bits", f"1..{K.MAX_BITS}", "{found}"),
    Check("TRAIN_GROW_LEFT", "E_TRAIN", "train.grow_left", "0..{want} (empty slots)", "{found}"),
    Check("TRAIN_SCALE_SHIFT", "E_TRAIN", "train.scale_shift", "0..{want:d} (2^scale_shift * smax <= half)",
          "{found}"),  # fmt: skip
    Check("TRAIN_DECAY", "E_TRAIN", "train.decay", "0..31", "{found}"),
    Check("TRAIN_INIT_BITS", "E_TRAIN", "train.init_bits", "0..15", "{found}"),
    Check("TRAIN_LOSS", "E_TRAIN", "train.loss", "0 or 1", "{found}"),
    Check("TRAIN_OFF_SHIFT", "E_TRAIN", "train.off_shift", "-1..23", "{found:d}"),
    Check("TRAIN_RESERVED", "E_FLAGS", "train reserved byte {i}", "0", "{found}"),
    Check("TRAIN_LR", "E_TRAIN", "train.lr[{i}]", "0..31", "{found}"),
    Check("TRAIN_LR_UNUSED", "E_TRAIN", "train.lr[{i}]", "0 (no layer {i})", "{found}"),
    Check("TRAIN_THR", "E_TRAIN", "train.thr_shift[{i}]", "-1..24", "{found:d}"),
    Check("TRAIN_THR_UNUSED", "E_TRAIN", "train.thr_shift[{i}]", "0 (no hidden layer {i})", "{found:d}"),
    Check("TRAIN_GATE", "E_TRAIN", "train.gate[{i}]", "0..{want} (smax of layer {i})", "{found}"),
    Check("TRAIN_GATE_UNUSED", "E_TRAIN", "train.gate[{i}]", "0 (no hidden layer {i})", "{found}"),
    Check("RANGE", "E_RANGE", "block[{i}] output scale/offset", f"score bound <= {K.I32_MAX}",
          f"> {K.I32_MAX}"),  # fmt: skip
    Check("RANGE_BLOCK", "E_RANGE", "block[{i}] output scale/offset", "score bound <= {want} (the block budget)",
          "more"),  # fmt: skip
)
BY_NAME = {c.name: c for c in CHECKS}
ID = {c.name: n for n, c in enumerate(CHECKS, start=1)}  # 0: no check (run-time errors)

_PLACE = re.compile(r"\{(i|j|k|want|found)(?::(d|x|x4))?\}")


def render(template: str, i: int = 0, j: int = 0, k: int = 0, want: int = 0, found: int = 0) -> str:
    """Fill a template's placeholders (see the module docstring) as the C core does."""
    vals = {"i": i, "j": j, "k": k, "want": want, "found": found}

    def one(m: re.Match) -> str:
        v = vals[m.group(1)] & K.U32_MAX
        spec = m.group(2)
        if spec == "d":
            return str(v - (1 << 32) if v >> 31 else v)
        if spec == "x":
            return f"0x{v:08x}"
        if spec == "x4":
            return f"0x{v & 0xFFFF:04x}"
        return str(v)

    return _PLACE.sub(one, template)


def message(name: str, **vals: int) -> tuple[str, str, str, str]:
    """(code, field, expected, found) of check ``name`` with its integers."""
    c = BY_NAME[name]
    return c.code, render(c.field, **vals), render(c.expected, **vals), render(c.found, **vals)


def text(code: str, offset: int, field: str, expected: str, found: str) -> str:
    """The one-line form every engine reports (without a file name)."""
    return f"{code} at offset {offset}: {field}: expected {expected}, found {found}"


# --- the C header -------------------------------------------------------------------------
def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_header() -> str:
    """The text of cmodules/rbnn/rbnn_spec.h."""
    out = [
        "/* Generated by `python -m rbnn.format.checks > cmodules/rbnn/rbnn_spec.h` from",
        " * host/rbnn/format/constants.py and checks.py: do not edit here.",
        " * tests/test_constants.py fails when this file is not what they generate. */",
        "#ifndef RBNN_SPEC_H",
        "#define RBNN_SPEC_H",
        "",
        f'#define RBNN_VERSION "{__version__}"',
        f"#define RBNN_FORMAT_VERSION {K.FORMAT_VERSION}",
        f"#define RBNN_MIN_READ_VERSION {min(K.READ_VERSIONS)}",
        f"#define RBNN_MAX_READ_VERSION {max(K.READ_VERSIONS)}",
        f"#define RBNN_MAGIC {_c_str(K.MAGIC.decode())}",
        f"#define RBNN_WORD_BITS {K.WORD_BITS}u",
        f"#define RBNN_HEADER_BYTES {K.HEADER_BYTES}u",
        f"#define RBNN_HEADER_BYTES_V2 {K.HEADER_BYTES_V2}u",
        f"#define RBNN_TRAIN_BYTES {K.TRAIN_BYTES}u",
        f"#define RBNN_MAX_SCORE_Q {K.MAX_SCORE_Q}u",
        f"#define RBNN_BLOCK_ENTRY_BYTES {K.BLOCK_ENTRY_BYTES}u",
        f"#define RBNN_MAX_LAYERS {K.MAX_LAYERS}",
        f"#define RBNN_MAX_BLOCKS {K.MAX_BLOCKS}",
        f"#define RBNN_MAX_PLANES {K.MAX_PLANES}",
        f"#define RBNN_MAX_BITS {K.MAX_BITS}",
        f"#define RBNN_UNUSED_PLANE 0x{K.UNUSED_PLANE:02X}u",
        f"#define RBNN_FROZEN {K.FROZEN}u",
        f"#define RBNN_LIVE {K.LIVE}u",
        "/* Version 3 (docs/FORMAT.md): layer kinds, pooling, input modes, the input shape. */",
        f"#define RBNN_VERSION_V3 {K.VERSION_V3}",
        f"#define RBNN_LAYER_ENTRY_BYTES {K.LAYER_ENTRY_BYTES}u",
        f"#define RBNN_LAYER_ENTRY_BYTES_V3 {K.LAYER_ENTRY_BYTES_V3}u",
        f"#define RBNN_DENSE {K.DENSE}u",
        f"#define RBNN_CONV {K.CONV}u",
        f"#define RBNN_POOL_NONE {K.POOL_NONE}u",
        f"#define RBNN_POOL_2X2 {K.POOL_2X2}u",
        f"#define RBNN_MAX_KERNEL {K.MAX_KERNEL}u",
        f"#define RBNN_INPUT_SHARED {K.INPUT_SHARED}u",
        f"#define RBNN_INPUT_PER_PLANE {K.INPUT_PER_PLANE}u",
        f"#define RBNN_MAX_DIM {K.MAX_DIM}u",
        "",
        "/* Error codes (docs/FORMAT.md, Errors). */",
        "enum {",
        "    RBNN_OK = 0,",
        *[f"    RBNN_{name} = {num}," for num, name, _ in K.ERRORS],
        "};",
        f"#define RBNN_N_CODES {len(K.ERRORS) + 1}",
        "",
        "/* The checks a reader makes, in docs/FORMAT.md order (host/rbnn/format/checks.py). */",
        "enum {",
        "    RBNN_CHK_NONE = 0,",
        *[f"    RBNN_CHK_{c.name} = {ID[c.name]}," for c in CHECKS],
        "};",
        f"#define RBNN_N_CHECKS {len(CHECKS) + 1}",
        "",
        "#ifdef RBNN_SPEC_TABLES /* defined by the one file that holds the tables */",
        "/* Code names and rbnn_strerror texts, index = -code. */",
        "static const char *const rbnn_code_names[RBNN_N_CODES] = {",
        '    "OK",',
        *[f"    {_c_str(name)}," for _, name, _ in K.ERRORS],
        "};",
        "static const char *const rbnn_code_texts[RBNN_N_CODES] = {",
        '    "ok",',
        *[f"    {_c_str(txt)}," for _, _, txt in K.ERRORS],
        "};",
        "/* The error code each check reports. */",
        "static const signed char rbnn_check_code[RBNN_N_CHECKS] = {",
        "    0,",
        *[f"    RBNN_{c.code}, /* {c.name} */" for c in CHECKS],
        "};",
        "#ifndef RBNN_NO_ERROR_TEXT",
        "/* field, expected, found: templates over i, j, k, want, found (checks.py). */",
        "static const char *const rbnn_check_text[RBNN_N_CHECKS][3] = {",
        '    {"", "", ""},',
        *[f"    {{{_c_str(c.field)}, {_c_str(c.expected)}, {_c_str(c.found)}}}," for c in CHECKS],
        "};",
        "#endif",
        "#endif /* RBNN_SPEC_TABLES */",
        "",
        "#endif /* RBNN_SPEC_H */",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(c_header())
