"""The Cortex-M0+ cycle counter (support.m0sim) and the ARMv6-M kernel and core run in it.

Counts are checked on hand-written sequences whose cost follows from the Cortex-M0+
TRM table (ARM DDI 0484C, Table 3-1), one comment per instruction; the kernel and the
cross-built core are checked bit for bit against numpy and the twin.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import FROZEN, Layer, pack_input
from rbnn.learn import step as S
from support import m0build
from support.m0sim import FLASH_BASE, M0Error, M0Plus
from support.randconv import random_conv_model, random_inputs
from support.randmodel import random_model, trainable_model

pytestmark = pytest.mark.skipif(
    shutil.which(m0build.CC) is None, reason="arm-none-eabi-gcc missing (`make deps-arm`)"
)

# name: (source, expected cycles as a function of the arguments)
SEQUENCES = """
    .syntax unified
    .cpu cortex-m0plus
    .thumb
    .text
    .macro FN name
    .global \\name
    .thumb_func
\\name:
    .endm

FN dp                   @ 7 cycles, 6 instructions
    movs r0, #1         @ 1
    adds r0, #2         @ 1
    lsls r0, r0, #1     @ 1
    eors r0, r1         @ 1
    muls r0, r1         @ 1 (single-cycle multiplier)
    bx lr               @ 2

FN loop                 @ r1 = n >= 1 iterations: 4n + 3
    movs r2, #0         @ 1
1:  adds r2, r2, r0     @ 1 each
    subs r1, #1         @ 1 each
    bne 1b              @ 2 taken, 1 the last time
    mov r0, r2          @ 1
    bx lr               @ 2

FN mem                  @ r0 = 16 bytes of SRAM: 19 cycles
    ldr r1, [r0]        @ 2
    str r1, [r0, #4]    @ 2
    ldrb r2, [r0, #1]   @ 2
    strh r2, [r0, #8]   @ 2
    ldm r0!, {r1-r3}    @ 1 + 3
    stm r0!, {r1, r2}   @ 1 + 2
    ldr r0, =0x12345678 @ 2 (literal)
    bx lr               @ 2

FN stack                @ 20 cycles
    push {r4-r7, lr}    @ 1 + 5
    sub sp, #8          @ 1
    str r0, [sp]        @ 2
    ldr r1, [sp]        @ 2
    add sp, #8          @ 1
    pop {r4-r7, pc}     @ 3 + 5

FN call                 @ 11 cycles
    push {lr}           @ 1 + 1
    bl leaf             @ 3
    pop {pc}            @ 3 + 1
FN leaf
    bx lr               @ 2

FN skip                 @ r0 == 0: 5 cycles, else 6
    cmp r0, #0          @ 1
    beq 1f              @ 2 taken, 1 not
    movs r0, #5         @ 1
    movs r0, #6         @ 1
1:  bx lr               @ 2

FN next                 @ B<cond> to the next instruction: taken (r0 == 0) 5, else 4
    cmp r0, #0          @ 1
    beq 1f              @ 2 taken, 1 not: both ways lead to 1
1:  bx lr               @ 2

FN jump                 @ 4 cycles
    b 1f                @ 2
    nop
1:  bx lr               @ 2

FN movpc                @ 5 cycles
    adr r1, 1f          @ 1
    mov pc, r1          @ 2
    nop
    .balign 4
1:  bx lr               @ 2

FN viablx               @ 12 cycles
    push {lr}           @ 2
    ldr r1, =leaf       @ 2
    blx r1              @ 2
    pop {pc}            @ 4 (+ leaf 2)

FN udiv                 @ not ARMv6-M
    .inst.w 0xfbb0f0f1  @ udiv r0, r0, r1
    bx lr

FN cbz                  @ not ARMv6-M
    .inst.n 0xb100      @ cbz r0, .+4
    bx lr

FN load                 @ r0 = address
    ldr r0, [r0]
    bx lr

FN store                @ r0 = address
    str r1, [r0]
    bx lr

FN spin
    b spin
    .ltorg
"""


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> M0Plus:
    d = tmp_path_factory.mktemp("m0seq")
    (d / "seq.S").write_text(SEQUENCES)
    return M0Plus(m0build.build([d / "seq.S"], d / "seq.elf"))


@pytest.mark.parametrize(
    "fn, args, cycles, insns",
    [
        ("dp", (0, 3), 7, 6),
        ("loop", (3, 1), 7, 6),
        ("loop", (3, 2), 11, 9),
        ("loop", (3, 10), 43, 33),
        ("stack", (), 20, 6),
        ("call", (), 11, 4),
        ("skip", (0,), 5, 3),
        ("skip", (1,), 6, 5),
        ("next", (0,), 5, 3),
        ("next", (1,), 4, 3),
        ("jump", (), 4, 2),
        ("movpc", (), 5, 3),
        ("viablx", (), 12, 5),
    ],
)
def test_cycle_table(seq, fn, args, cycles, insns):
    r = seq.call(fn, *args)
    assert (r.cycles, r.instructions) == (cycles, insns)


def test_profile_per_function(seq):
    assert seq.call("call").profile == {"call": 9, "leaf": 2}
    assert seq.call("skip", 0).profile == {"skip": 5}


def test_results_and_memory(seq):
    assert seq.call("dp", 0, 3).result == (6 ^ 3) * 3
    assert seq.call("loop", 7, 5).result == 35
    buf = seq.alloc(bytes(range(16)) + bytes(8))
    r = seq.call("mem", buf)
    assert (r.cycles, r.instructions, r.result) == (19, 8, 0x12345678)
    got = seq.read(buf, 12)
    assert got[4:8] == bytes(range(4)) and got[8:10] == b"\x01\x00"


def test_rejects_what_an_m0plus_cannot_run(seq):
    with pytest.raises(M0Error, match="not an ARMv6-M instruction"):
        seq.call("udiv", 6, 3)
    with pytest.raises(M0Error, match="CBZ"):
        seq.call("cbz", 0)
    buf = seq.alloc(8)
    with pytest.raises(M0Error, match="unaligned 4-byte load"):
        seq.call("load", buf + 2)
    with pytest.raises(M0Error, match="unmapped or read-only"):
        seq.call("load", 0x4000_0000)
    flash = seq.alloc(b"\0" * 8, region="flash")
    assert flash >= FLASH_BASE
    assert seq.call("load", flash).result == 0
    with pytest.raises(M0Error, match="unmapped or read-only"):
        seq.call("store", flash, 1)
    with pytest.raises(M0Error, match="did not return"):
        seq.call("spin", max_instructions=1000)
    # The machine is still usable after a fault.
    assert seq.call("loop", 3, 2).cycles == 11


# --- the kernel --------------------------------------------------------------------
@pytest.fixture(scope="module")
def m0(repo, tmp_path_factory) -> M0Plus:
    """The kernel and the core (inference and training) cross-built as `make bench` builds
    them (-O2)."""
    src = repo / "cmodules" / "rbnn"
    elf = m0build.build([src / "rbnn_core.c", src / "rbnn_kernel.c", src / "rbnn_train.c"],
                        tmp_path_factory.mktemp("m0core") / "core.elf", include_dirs=[src])  # fmt: skip
    return M0Plus(elf)


def test_kernel_is_the_armv6m_one(m0):
    name = m0.read(m0.address("rbnn_kernel_name"), 16).split(b"\0")[0]
    assert name == b"armv6m-hs4"


@pytest.mark.parametrize("fill", ["random", "ones", "zeros"])
def test_kernel_matches_numpy(m0, rng, fill):
    for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 25, 28, 31, 32, 33, 123, 124, 125, 200, 249):
        if fill == "random":
            a = rng.integers(0, 2**32, n, dtype=np.uint32)
            b = rng.integers(0, 2**32, n, dtype=np.uint32)
        else:
            a = np.full(n, 0xFFFFFFFF if fill == "ones" else 0x5A5A5A5A, np.uint32)
            b = np.zeros(n, np.uint32) if fill == "ones" else a.copy()
        m0.free_all()
        # One word of all-ones after each row: reading past n would miscount.
        pa = m0.alloc(np.append(a, np.uint32(0xFFFFFFFF)).tobytes())
        pb = m0.alloc(np.append(b, np.uint32(0)).tobytes())
        assert m0.call("rbnn_xorpop", pa, pb, n).result == int(np.bitwise_count(a ^ b).sum()), n


def test_kernel_rows(m0, rng):
    for n, rows in [(0, 2), (1, 3), (6, 5), (8, 32), (25, 32), (25, 1), (126, 3)]:
        w = rng.integers(0, 2**32, (rows, n), dtype=np.uint32)
        x = rng.integers(0, 2**32, n, dtype=np.uint32)
        m0.free_all()
        pw, px = m0.alloc(w.tobytes()), m0.alloc(x.tobytes())
        out = m0.alloc(b"\xee" * (4 * rows + 4))
        m0.call("rbnn_xorpop_rows", pw, px, n, rows, out)
        got = np.frombuffer(m0.read(out, 4 * rows), "<u4")
        assert (got == np.bitwise_count(w ^ x).sum(axis=1)).all(), (n, rows)
        assert m0.read(out + 4 * rows, 4) == b"\xee" * 4, "wrote past the rows"


def test_kernel_cycles_per_word(m0, rng):
    """The hand-scheduled loop's cost: 52 cycles a group of 4 words (single row)."""
    a = rng.integers(0, 2**32, 64, dtype=np.uint32)
    m0.free_all()
    pa, pb = m0.alloc(a.tobytes()), m0.alloc(a[::-1].copy().tobytes())
    c32 = m0.call("rbnn_xorpop", pa, pb, 32).cycles
    c64 = m0.call("rbnn_xorpop", pa, pb, 64).cycles
    assert c64 - c32 == 8 * 52


# --- the core ----------------------------------------------------------------------
def test_core_matches_twin(m0, rng):
    """rbnn_model_init + rbnn_infer cross-built, on a few random models (weights in flash)."""
    for shape in [(784, [256, 256, 10], 0x80), (70, [33, 5], 0xE0), (40, [7], 0x81)]:
        model = random_model(rng, n_inputs=shape[0], sizes=shape[1], plane_mask=shape[2])
        data = pack.to_bytes(model)
        x = pack_input(rng.integers(0, 256, (2, model.n_inputs), dtype=np.uint8), model.plane_mask)
        want = twin.scores(model, x)
        m0.free_all()
        mdl = m0.alloc(data, region="flash")
        st = m0.alloc(256)
        assert m0.call("rbnn_model_init", st, mdl, len(data)).signed == 0
        scratch, scores = m0.alloc(4 * 64), m0.alloc(4 * model.n_classes)
        for i in range(len(x)):
            inp = m0.alloc(x[i].tobytes())
            r = m0.call("rbnn_infer", st, inp, scratch, scores)
            got = np.frombuffer(m0.read(scores, 4 * model.n_classes), "<i4")
            assert (got == want[i]).all()
            assert r.signed == int(np.argmax(want[i]))


def test_core_conv_matches_twin(m0, rng):
    """Version 3 models cross-built (the one-patch conv path of microcontrollers; one-word
    patches, 9 and 25 bits, finished channel by channel without the kernel): conv stacks with and without the pool, channels
    off multiples of 32 and one of 32 (the word-aligned gather), input modes 0 and 1 over
    several planes; weights in flash, rbnn_ram_bytes = Model.ram_bytes."""
    models = [
        random_conv_model(rng, in_shape=(6, 10, 2), layers=[Layer.conv(5, 3, 1, pool=True), Layer.conv(33, 3, 1),
                                                          Layer(7), Layer(3)], plane_mask=0xC1, input_mode=0),
        random_conv_model(rng, in_shape=(5, 5, 32), layers=[Layer.conv(32, 3, 0, pool=False),
                                                           Layer.conv(6, 1, 0, pool=False), Layer(4)],
                          plane_mask=0x90, input_mode=1),
        random_conv_model(rng, in_shape=(8, 8, 1), layers=[Layer.conv(40, 5, 2, pool=True), Layer(10)],
                          plane_mask=0x80, input_mode=0),
        random_conv_model(rng, in_shape=(6, 4, 1), layers=[Layer.conv(33, 3, 1, pool=True), Layer.conv(8, 3, 1),
                                                          Layer(3)], plane_mask=0x01, input_mode=1),
    ]  # fmt: skip
    for model in models:
        data = pack.to_bytes(model)
        x = pack_input(random_inputs(rng, model.n_inputs, 3), model.plane_mask)
        want = twin.scores(model, x)
        m0.free_all()
        mdl = m0.alloc(data, region="flash")
        st = m0.alloc(256)
        assert m0.call("rbnn_model_init", st, mdl, len(data)).signed == 0
        assert m0.call("rbnn_ram_bytes", st).result == sum(model.ram_bytes().values())
        scratch = m0.alloc(4 * m0.call("rbnn_scratch_words", st).result)
        scores = m0.alloc(4 * model.n_classes)
        for i in range(len(x)):
            r = m0.call("rbnn_infer", st, m0.alloc(x[i].tobytes()), scratch, scores)
            got = np.frombuffer(m0.read(scores, 4 * model.n_classes), "<i4")
            assert (got == want[i]).all() and r.signed == int(np.argmax(want[i]))


def test_training_step_matches_twin(m0, rng):
    """rbnn_train_step cross-built: the twin's predictions, scores and file bytes, on
    models with 1-3 layers, several input planes, widths off multiples of 32, frozen
    blocks, and a schedule that freezes the live block and opens the next (the file in
    SRAM: the step writes it)."""
    models = [
        trainable_model(rng, n_inputs=70, sizes=[33, 5], plane_mask=0xE0, n_frozen=2, bits=5, lr=[1, 0], decay=2,
                        grow_every=0),
        trainable_model(rng, n_inputs=40, sizes=[7], plane_mask=0x81, n_frozen=1, bits=16, lr=[0], loss=1,
                        grow_every=0),
        trainable_model(rng, n_inputs=50, sizes=[40, 31, 4], plane_mask=0x80, n_frozen=0, bits=3, live=False,
                        spare_slots=3, spare_planes=6, grow_every=3, grow_left=3, lr=[0, 1, 0], off_shift=4),
    ]  # fmt: skip
    for model in models:
        data = pack.to_bytes(model)
        x = pack_input(rng.integers(0, 256, (7, model.n_inputs), dtype=np.uint8), model.plane_mask)
        y = rng.integers(0, model.n_classes, 7)
        m0.free_all()
        mdl = m0.alloc(data)
        st = m0.alloc(256)
        assert m0.call("rbnn_model_init", st, mdl, len(data)).signed == 0
        scratch = m0.alloc(m0.call("rbnn_train_scratch_bytes", st).result)
        z = m0.alloc(4 * model.n_classes)
        for i in range(len(x)):
            inp = m0.alloc(x[i].tobytes())
            want_z = twin.scores(model, x[i][None])[0] if model.live_index() is not None else None
            r = m0.call("rbnn_train_step", st, mdl, inp, int(y[i]), scratch, z)
            assert r.signed == S.step(model, x[i], int(y[i]))
            if want_z is not None:
                assert (np.frombuffer(m0.read(z, 4 * model.n_classes), "<i4") == want_z).all()
        m0.call("rbnn_reseal", st, mdl)
        assert m0.read(mdl, len(data)) == pack.to_bytes(model)
    assert [b.state for b in models[2].blocks] == [FROZEN, FROZEN, 1]  # the schedule ran on the M0+
