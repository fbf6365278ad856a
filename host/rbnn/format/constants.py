"""The constants of docs/FORMAT.md, written once.

The C core gets them from ``cmodules/rbnn/rbnn_spec.h``, generated from this module and
:mod:`rbnn.format.checks` (``python -m rbnn.format.checks``); the MicroPython fallback
and the firmware keep their own copies (they cannot import the host), and
``tests/test_constants.py`` fails when any copy differs from what is written here.
"""

from __future__ import annotations

MAGIC = b"RBNN"
FORMAT_VERSION = 3  # the newest version this package writes (version 2 for what version 2 expresses)
READ_VERSIONS = (1, 2, 3)  # the versions its readers accept
WORD_BITS = 32
HEADER_BYTES = 32  # version 1; the fields of version 1 start every header
HEADER_BYTES_V2 = 64
TRAIN_BYTES = 96  # the training section of version 2
BLOCK_ENTRY_BYTES = 20
MAX_SCORE_Q = 30
MAX_LAYERS = 8
MAX_BLOCKS = 64
MAX_PLANES = 255
MAX_BITS = 16  # planes one block may own
MAX_INPUTS = 65535
MAX_SIZE = 65535  # outputs of one layer
UNUSED_PLANE = 0xFF  # block-table entry of a plane slot the block does not use
MAX_DIM = 65535  # in_h, in_w, in_c (u16)

# Version 3 (docs/FORMAT.md, Version 3): layer kinds, pooling, input modes
VERSION_V3 = 3  # the first version with conv layers and input mode 1
LAYER_ENTRY_BYTES = 2  # versions 1 and 2: u16 size
LAYER_ENTRY_BYTES_V3 = 8  # size, kind, kernel, pad, pool, reserved
DENSE = 0
CONV = 1
POOL_NONE = 0
POOL_2X2 = 2
MAX_KERNEL = 15
INPUT_SHARED = 0  # input mode 0: one first-layer row shared by every kept plane
INPUT_PER_PLANE = 1  # input mode 1: one row segment per kept plane

# Block states
FROZEN = 0
LIVE = 1

I32_MAX = 2**31 - 1
U32_MAX = 2**32 - 1

# Error codes: (number, name, the C core's rbnn_strerror text). docs/FORMAT.md, Errors.
ERRORS = (
    (-1, "E_TRUNCATED", "truncated"),
    (-2, "E_MAGIC", "bad magic"),
    (-3, "E_VERSION", "unsupported version"),
    (-4, "E_FLAGS", "unknown flag or nonzero reserved field"),
    (-5, "E_HEADER", "header field out of range"),
    (-6, "E_SIZE", "size mismatch or overflow"),
    (-7, "E_LAYOUT", "stored offset differs from computed layout"),
    (-8, "E_CRC", "crc32 mismatch"),
    (-9, "E_BLOCK", "bad block entry"),
    (-10, "E_PADDING", "padding bit set"),
    (-11, "E_RANGE", "scores could overflow int32"),
    (-12, "E_ALIGN", "buffer not 4-byte aligned"),
    (-13, "E_INPUT", "bad packed input"),
    (-14, "E_ARG", "bad argument"),
    (-15, "E_TRAIN", "bad training state"),
    (-16, "E_FULL", "no room to train: no live block and none may open"),
    (-17, "E_LABEL", "label out of range"),
)
CODES = {num: name for num, name, _ in ERRORS}  # -1 -> "E_TRUNCATED"
NAMES = {name: num for num, name, _ in ERRORS}  # "E_TRUNCATED" -> -1
TEXTS = {num: text for num, _, text in ERRORS}
