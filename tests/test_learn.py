"""The integer training step (docs/TRAINING.md) and growth runs: the numpy twin against a
literal implementation of the written spec, the schedule, the errors, and `rbnn grow`."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rbnn.cli import main
from rbnn.data.plain import write_npz
from rbnn.errors import FormatError
from rbnn.format import pack
from rbnn.format.model import FROZEN, LIVE, Model, pack_input
from rbnn.format.trainstate import TrainState
from rbnn.learn import prng
from rbnn.learn import step as S
from rbnn.learn.arena import empty_arena
from rbnn.learn.defaults import GrowError, choose_kind, defaults, schedule_params
from rbnn.learn.run import plan, prepare
from support import scalar_step
from support.randmodel import random_model


def trainable(rng: np.random.Generator, n_frozen: int | None = None, bits: int | None = None,
              n_planes: int | None = None) -> Model:  # fmt: skip
    """A random model with frozen blocks and room to grow, and a random training state
    (hyper-parameters anywhere in their ranges; a schedule that opens and freezes blocks)."""
    n_in = int(rng.integers(1, 90))
    L = int(rng.integers(1, 4))
    sizes = [int(rng.integers(1, 70)) for _ in range(L - 1)] + [int(rng.integers(2, 12))]
    k = int(rng.integers(1, 5))
    mask = int(np.bitwise_or.reduce([1 << int(v) for v in rng.choice(8, k, replace=False)]))
    n_frozen = int(rng.integers(0, 4)) if n_frozen is None else n_frozen
    bits = int(rng.integers(2, 17)) if bits is None else bits
    n_planes = n_frozen + bits + int(rng.integers(0, 5)) if n_planes is None else n_planes
    m = empty_arena(n_in, sizes, mask, n_planes)
    if n_frozen:
        f = random_model(rng, n_in, sizes, mask, n_blocks=n_frozen)
        m.arena[:n_frozen] = f.arena
        m.blocks = f.blocks
        for b in m.blocks:  # within the block budget
            b.scale = (b.scale // 64).astype(np.int32)
            b.offset = (b.offset // 64).astype(np.int32)
    st = defaults(m, "new", bits)
    nh = L - 1
    st.lr = [int(v) for v in rng.integers(0, 20, L)]
    st.decay = int(rng.integers(0, 32))
    st.gate = [int(rng.integers(0, S.layer_smax(m, i) + 1)) for i in range(nh)]
    st.thr_shift = [int(v) for v in rng.integers(-1, 6, nh)]
    st.off_shift = int(rng.integers(-1, 12))
    st.loss = int(rng.integers(0, 2))
    st.init_bits = int(rng.integers(0, 16))
    st.margin = int(rng.integers(1, min(m.budget, 1 << 22)))
    st.seed = int(rng.integers(0, 2**32))
    st.grow_left = min(2, len(m.free_planes()) - bits + 1, m.capacity - len(m.blocks))
    st.grow_every = int(rng.integers(3, 9))
    m.train = st
    pack.to_bytes(m)  # a state a reader accepts
    return m


def samples(rng: np.random.Generator, m: Model, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, (n, m.n_inputs), dtype=np.uint8)
    x[rng.random((n, m.n_inputs)) < 0.5] = 0
    return pack_input(x, m.plane_mask), rng.integers(0, m.n_classes, n)


def test_generator_is_lowbias32_of_the_counter():
    M = 0xFFFFFFFF
    for v in [0, 1, 0xDEADBEEF, M, 12345678]:
        assert int(prng.lowbias32(v)) == scalar_step.lowbias32(v)
        assert int(prng.key(v, v ^ 0x55)) == scalar_step.key_of(v, v ^ 0x55)
    idx = np.arange(0, 5000, 7, dtype=np.uint32)
    want = [scalar_step.rnd(0xC0FFEE, int(i)) for i in idx]
    assert prng.rand(0xC0FFEE, idx).tolist() == want
    assert int(prng.lowbias32(0)) == 0 and int(prng.lowbias32(1)) != 1  # a real mixing, not the identity


@pytest.mark.parametrize("b", [1, 2, 5, 8, 16])
def test_bit_sliced_counters_saturate(rng, b):
    n = 64
    u = rng.integers(0, 1 << b, n)
    u[:4] = [0, (1 << b) - 1, 0, (1 << b) - 1]  # at both ends
    inc = rng.random(n) < 0.5
    dec = ~inc & (rng.random(n) < 0.7)
    inc[:2], dec[:2] = [False, True], [True, False]  # push each end outward: they stay
    planes = np.array([[(int(u[i]) >> (b - 1 - p)) & 1 for i in range(n)] for p in range(b)], bool)
    pack_ = lambda bits: np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)  # noqa: E731
    sub = np.stack([pack_(planes[p]) for p in range(b)])
    S.counter_add(sub, pack_(inc), pack_(dec))
    got = np.zeros(n, np.int64)
    for p in range(b):
        got = (got << 1) | np.unpackbits(sub[p].view(np.uint8), bitorder="little")[:n]
    want = np.clip(u + inc.astype(int) - dec.astype(int), 0, (1 << b) - 1)
    assert got.tolist() == want.tolist()


def test_twin_step_equals_the_written_spec():
    """The numpy twin against tests/support/scalar_step.py, a literal implementation of
    docs/TRAINING.md (one word at a time, 32-bit values asserted): random shapes, input
    planes, bits, hyper-parameters, both losses, blocks opened and frozen by the schedule."""
    rng = np.random.default_rng(20261202)
    for case in range(24):
        m = trainable(rng)
        ref = copy.deepcopy(m)
        xb, y = samples(rng, m, 3 * m.state().grow_every)
        for i in range(len(y)):
            if m.live_index() is None and m.state().grow_left == 0:
                break
            p1 = S.step(m, xb[i], int(y[i]))
            p2 = scalar_step.train(ref, xb[i], int(y[i]), lambda mm, x=xb[i]: S.frozen_scores(mm, x[None])[0])
            assert p1 == p2, f"case {case} step {i}: prediction"
            assert pack.to_bytes(m) == pack.to_bytes(ref), f"case {case} step {i}: the files differ"


def test_schedule_opens_and_freezes_blocks_at_fixed_steps(rng):
    m = trainable(rng, n_frozen=1, bits=4, n_planes=8)
    st = m.state()
    st.grow_left, st.grow_every = 2, 5
    xb, y = samples(rng, m, 10)
    seen = []
    for i in range(10):
        S.step(m, xb[i], int(y[i]))
        seen.append((len(m.blocks), m.live_index()))
    # block 1 opens at step 0 and freezes after 5 steps; block 2 opens at step 5
    assert seen[:4] == [(2, 1)] * 4 and seen[4] == (2, None)
    assert seen[5:9] == [(3, 2)] * 4 and seen[9] == (3, None)
    assert [len(b.planes) for b in m.blocks] == [1, 1, 1] and st.grow_left == 0 and st.block_steps == 0
    assert st.steps == 10 and len(m.free_planes()) == 5
    assert not m.arena[m.free_planes()].any()  # released planes are zeroed
    before = pack.to_bytes(m)
    with pytest.raises(S.StepError, match="E_FULL: no live block"):
        S.step(m, xb[0], int(y[0]))
    assert pack.to_bytes(m) == before  # nothing changed


def test_errors_change_nothing(rng):
    m = trainable(rng, n_frozen=1, bits=4, n_planes=5)
    xb, y = samples(rng, m, 1)
    before = pack.to_bytes(m)
    with pytest.raises(S.StepError, match=rf"E_LABEL: label {m.n_classes}: expected 0\.\.{m.n_classes - 1}"):
        S.step(m, xb[0], m.n_classes)
    with pytest.raises(S.StepError, match="E_FULL: no live block to freeze"):
        S.freeze(m)
    assert pack.to_bytes(m) == before
    S.new_block(m)
    with pytest.raises(S.StepError, match="E_FULL: a live block exists"):
        S.new_block(m)
    S.freeze(m)
    m.state().bits = 5  # one plane kept by each frozen block: 3 free, 5 needed
    with pytest.raises(S.StepError, match="E_FULL: no room for a 5-bit block: 3 free planes"):
        S.new_block(m)


def test_training_keeps_the_file_valid_and_is_deterministic(rng):
    m = trainable(rng, n_frozen=2, bits=6)
    m.state().grow_every = 40
    xb, y = samples(rng, m, 100)
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    for i in range(100):
        if a.live_index() is None and a.state().grow_left == 0:
            break
        S.step(a, xb[i], int(y[i]))
        S.step(b, xb[i], int(y[i]))
    data = pack.to_bytes(a)
    assert data == pack.to_bytes(b)
    back = pack.from_bytes(data)  # counters, offsets and thresholds stay in range
    assert back.state().steps == a.state().steps > 0
    c = copy.deepcopy(m)
    c.state().seed ^= 1
    for i in range(10):
        S.step(c, xb[i], int(y[i]))
    assert pack.to_bytes(c) != pack.to_bytes(a)


def test_live_block_output_stays_within_half_the_budget(rng):
    # offsets clamp at half - 1: a long run of one label pushes them to the clamp
    m = trainable(rng, n_frozen=0, bits=4, n_planes=4)
    st = m.state()
    st.off_shift, st.grow_every, st.margin = 23, 0, m.budget
    xb, _ = samples(rng, m, 30)
    for i in range(30):
        S.step(m, xb[i], 0)
    blk = m.blocks[m.live_index()]
    assert blk.offset[0] == m.half - 1 and pack.from_bytes(pack.to_bytes(m))


def test_choose_kind():
    assert choose_kind(None) == "new"
    assert choose_kind(0.35) == "domain" and choose_kind(0.9) == "same"


# --- rbnn grow ----------------------------------------------------------------------------
@pytest.fixture
def grow_files(tmp_path, rng):
    """A 4-class plain data set and a model trained on part of it, in an arena of 8 planes."""
    y = rng.integers(0, 4, 1200).astype(np.uint8)
    proto = rng.random((4, 64)) < 0.5
    x = ((proto[y] ^ (rng.random((1200, 64)) < 0.1)) * 255).astype(np.uint8)
    write_npz(tmp_path / "d.npz", x[:1000], y[:1000], 4)
    write_npz(tmp_path / "t.npz", x[1000:], y[1000:], 4)
    m = tmp_path / "m.rbnn"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--hidden", "16", "--epochs", "2", "--val", "100",
                 "--limit", "300", "--augment", "off", "--arena", "8", "-o", str(m)]) == 0  # fmt: skip
    return tmp_path


def test_grow_cli(grow_files, capsys):
    d = grow_files
    out = d / "g.rbnn"
    capsys.readouterr()
    assert main(["grow", str(d / "m.rbnn"), "--data", str(d / "d.npz"), "--test", str(d / "t.npz"), "--offset", "300",
                 "--limit", "600", "--bits", "4", "--blocks", "3", "--engine", "twin", "-o", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "600 samples (600 from 300, 1 epoch(s)), 3 new block(s) of 4 bits, 200 samples each" in text
    assert text.count("running") == 3 and "blocks  4:       600 samples   2.00 b/w" in text
    g = pack.load(out)
    assert [b.state for b in g.blocks] == [FROZEN] * 4 and g.state().steps == 600
    assert (d / "g.growth.json").exists() and (d / "g.growth.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "arena: 8 planes of 0.14 kB, 4 of 8 block slots used, 4 free planes; 2.00 bits per weight (8 planes / 4 blocks)" in text
    assert "blocks: #0 frozen plane 0 | #1 frozen plane 1 | #2 frozen plane 2 | #3 frozen plane 3" in text
    assert "600 steps" in text and "schedule: 0 more block(s) of 4 bits, 200 steps each" in text
    # twice the same: the same bytes
    assert main(["grow", str(d / "m.rbnn"), "--data", str(d / "d.npz"), "--test", str(d / "t.npz"), "--offset", "300",
                 "--limit", "600", "--bits", "4", "--blocks", "3", "--engine", "twin", "-o", str(d / "g2.rbnn")]) == 0  # fmt: skip
    assert (d / "g2.rbnn").read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--offset", "1000"], "--offset 1000: the data has 1000 samples"),
        (["--offset", "900", "--limit", "200"], "--limit 200: from --offset 900 the data has 100 samples"),
        (["--bits", "0"], "--bits: expected 1..16, found 0"),
        (["--bits", "8"], "no room left to grow: 7 free planes of 8 (a block needs 8)"),
        (["--blocks", "6", "--bits", "4"], "--blocks 6: the arena holds 4 more block(s) of 4 bits"),
        (["--hidden", "8"], "--hidden goes with --new only"),
    ],
)
def test_grow_refusals_write_nothing(grow_files, capsys, args, message):
    d = grow_files
    bits = [] if "--bits" in args else ["--bits", "4"]
    rc = main(["grow", str(d / "m.rbnn"), "--data", str(d / "d.npz"), "--engine", "twin", "-o", str(d / "g.rbnn"),
               *bits, *args])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (d / "g.rbnn").exists() and not (d / "g.growth.json").exists()


def test_grow_interrupted_leaves_no_output(grow_files, monkeypatch):
    d = grow_files
    from rbnn.learn import run as R

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "_accuracy", boom)
    assert main(["grow", str(d / "m.rbnn"), "--data", str(d / "d.npz"), "--engine", "twin", "-o", str(d / "g.rbnn")]) == 130
    assert not list(d.glob("g*"))


def test_grow_new_from_an_empty_arena(grow_files, capsys):
    d = grow_files
    out = d / "n.rbnn"
    assert main(["grow", "--new", "--hidden", "16", "--arena", "6", "--bits", "3", "--data", str(d / "d.npz"),
                 "--test", str(d / "t.npz"), "--engine", "twin", "--epochs", "2", "-o", str(out)]) == 0  # fmt: skip
    g = pack.load(out)
    assert len(g.blocks) == 4 and g.bits_per_weight == 1.5  # 6 planes: 4 blocks of 3 bits fit one after the other
    acc = float(capsys.readouterr().out.split("t.npz ")[-1].split(" %")[0])
    assert acc > 60  # the step learns from nothing (4 classes, 25 % by chance)
    with pytest.raises(FormatError):  # and an empty arena is a valid file too
        pack.from_bytes(b"")
    e = empty_arena(64, [16, 4], 0x80, 6)
    assert pack.from_bytes(pack.to_bytes(e)).blocks == [] and e.state().grow_left == 0
    assert TrainState.blank(2).rule == 1 and LIVE == 1


def test_decay_and_threshold_step_follow_the_block_length():
    """One halving of the row probability over a block, however long; the first layer's
    threshold step halves per 4x longer block than calibrated (2^12 .. 2^13 - 1 steps keep
    the calibrated values, so the rot and same runs of bench/growth.py are unchanged)."""
    assert schedule_params(7143, 2) == (12, 2) and schedule_params(4096, 10) == (12, 10)
    assert schedule_params(50_000, 2) == (15, 1) and schedule_params(500_000, 2) == (18, 0)
    assert schedule_params(500_000, 10) == (18, 7) and schedule_params(1, 2) == (0, 2)
    assert schedule_params(1 << 40, 2) == (31, 0)  # decay is a u8 field of 0..31
    m = empty_arena(64, [16, 4], 0x80, 6)
    p = plan(1000, 0, 1000, 100, False, 1, 2)  # 50,000 steps per block
    prepare(m, p, 1, 3, "new")
    assert (m.train.decay, m.train.thr_shift) == (15, [1])
    prepare(m, p, 1, 3, "new", {"decay": 9})  # an option still overrides
    assert m.train.decay == 9


def test_hidden_gate_is_wider_except_on_a_new_domain():
    """Two standard deviations of a hidden layer's random sum for new and same data, one for
    a domain run (a wider gate there costs what the frozen blocks knew: 52 -> 49 % on MNIST)."""
    m = empty_arena(64, [25, 36, 4], 0x80, 6)
    assert defaults(m, "new").gate == defaults(m, "same").gate == [8, 10]
    assert defaults(m, "domain").gate == [8, 5]


# --- a version 3 model is not trained (docs/FORMAT.md, Training a version 3 model) ---------
def test_integer_step_refuses_a_version3_model(rng):
    from support.randconv import random_conv_model

    for conv in (True, False):  # a conv stack; a dense model in input mode 1
        m = random_conv_model(rng, conv=conv, n_blocks=1)
        m.max_blocks, m.arena = 3, np.concatenate([m.arena, np.zeros_like(m.arena), np.zeros_like(m.arena)])
        before = pack.to_bytes(m)
        xb = pack_input(rng.integers(0, 256, m.n_inputs, dtype=np.uint8), m.plane_mask)
        for fn, args in ((S.step, (m, xb, 0)), (S.new_block, (m,))):
            with pytest.raises(S.StepError, match="E_FULL: a model with conv layers or input mode 1"):
                fn(*args)
        with pytest.raises(GrowError, match="not trained by the integer step"):
            prepare(m, plan(10, 0, None, 1, False, 0, 1), 0, 1, "new")
        assert pack.to_bytes(m) == before  # nothing changed


def test_grow_cli_refuses_a_version3_model(tmp_path, rng, capsys):
    from support.randconv import random_conv_model

    m = random_conv_model(rng, conv=False, n_blocks=1)
    pack.save(m, tmp_path / "c.rbnn")
    x = rng.integers(0, 256, (50, m.n_inputs), dtype=np.uint8)
    write_npz(tmp_path / "d.npz", x, (np.arange(50) % m.n_classes).astype(np.uint8), m.n_classes)
    rc = main(["grow", str(tmp_path / "c.rbnn"), "--data", str(tmp_path / "d.npz"), "--engine", "twin",
               "-o", str(tmp_path / "g.rbnn")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "is not trained by the integer step" in err and "nothing written" in err
    assert not (tmp_path / "g.rbnn").exists()
