"""Cortex-M0+ cycles of the XOR-popcount kernels, of one 784-256-256-10 inference and of
one binary CNN inference (issue 9: the 99 % MNIST CNN's shape, 28x28x1 on 4 bit-planes,
conv3x3 32 + pool, conv3x3 64 + pool, conv3x3 64, 128, 10).

The C core (cmodules/rbnn) and the kernel variants (bench/m0plus/variants.c) are
cross-built with gcc-arm-none-eabi for -mcpu=cortex-m0plus and run in the
instruction-level emulator rbnn.m0sim, which charges each instruction its cycles from
the Cortex-M0+ TRM table (zero wait states: code and data in SRAM). Every result is
checked: kernel counts against numpy, the core's scores against the numpy twin.

Run: ``python bench/m0plus.py`` (``make bench`` runs it after bench/host.py);
``--cnn FILE`` also times a trained CNN file on MNIST test images (when cached).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # developer-only support code

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from rbnn.engines import twin  # noqa: E402
from rbnn.format import pack  # noqa: E402
from rbnn.format.bits import words  # noqa: E402
from rbnn.format.model import pack_input  # noqa: E402
from support import m0build  # noqa: E402
from support.m0sim import M0Plus  # noqa: E402
from support.randconv import MNIST_CNN3, mnist_cnn  # noqa: E402
from support.randmodel import random_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "cmodules" / "rbnn"
BUILD = REPO / "build" / "m0plus"
MHZ = 125  # RP2040 default clock
N_INPUTS, SIZES, PLANE_MASK = 784, [256, 256, 10], 0x80
TARGET, FLOOR = 200_000, 125_000  # issue #2 target; DESIGN section 2 floor
ROW_WORDS = (8, 25, 256)  # hidden rows (256 inputs), first-layer rows (784), long rows
GROUP = 32  # rows per rbnn_xorpop_rows call, as the core calls it
KERNEL_FUNCS = ("rbnn_xorpop", "rbnn_xorpop_rows", "rows_m0", "row_m0", "xorpop_long")  # rbnn_kernel.c

# (label, symbol): the C variants at -O2, then the kernel the core links.
VARIANTS = [
    ("SWAR per word, C -O2", "xorpop_swar"),
    ("256-entry table, C -O2", "xorpop_table"),
    ("Harley-Seal groups of 4, C -O2", "xorpop_hs4"),
    ("Harley-Seal groups of 8, C -O2", "xorpop_hs8"),
    ("armv6m-hs4 Thumb-1 asm (rbnn_xorpop)", "rbnn_xorpop"),
]


def build(opt: str) -> tuple[M0Plus, M0Plus]:
    """(core + kernel, variants + kernel) cross-built at ``opt``."""
    core = m0build.build([SRC / "rbnn_core.c", SRC / "rbnn_kernel.c"],
                         BUILD / f"core{opt}.elf", opt=opt, include_dirs=[SRC])  # fmt: skip
    var = m0build.build([REPO / "bench" / "m0plus" / "variants.c", SRC / "rbnn_kernel.c"],
                        BUILD / f"variants{opt}.elf", opt=opt, include_dirs=[SRC])  # fmt: skip
    return M0Plus(core), M0Plus(var)


def kernel_table(m: M0Plus, rng: np.random.Generator) -> None:
    """Cycles per word of each variant, one call per row, results checked."""
    layer_rows = {25: SIZES[0], 8: SIZES[1] + SIZES[2]}  # rows of 784 and of 256 inputs
    head = "".join(f"{f'n={n}':>9}" for n in ROW_WORDS)
    print("kernel cycles per 32-bit word (one call per row, n words; each count checked)")
    print(f"  {'variant':40}{head}{'one inference':>15}")
    data = {n: (rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 2**32, n, dtype=np.uint32))
            for n in ROW_WORDS}  # fmt: skip
    for label, sym in VARIANTS:
        per_word, cycles = [], {}
        for n in ROW_WORDS:
            a, b = data[n]
            m.free_all()
            r = m.call(sym, m.alloc(a.tobytes()), m.alloc(b.tobytes()), n)
            _check(r.result == int(np.bitwise_count(a ^ b).sum()), f"{sym} n={n}: wrong count")
            cycles[n] = r.cycles
            per_word.append(f"{r.cycles / n:9.1f}")
        net = sum(rows * cycles[n] for n, rows in layer_rows.items())
        print(f"  {label:40}{''.join(per_word)}{net:15,}")
    # The entry point the core uses: GROUP rows a call.
    per_word, net = [], 0
    for n in ROW_WORDS:
        w = rng.integers(0, 2**32, (GROUP, n), dtype=np.uint32)
        x = rng.integers(0, 2**32, n, dtype=np.uint32)
        m.free_all()
        out = m.alloc(4 * GROUP)
        r = m.call("rbnn_xorpop_rows", m.alloc(w.tobytes()), m.alloc(x.tobytes()), n, GROUP, out)
        got = np.frombuffer(m.read(out, 4 * GROUP), "<u4")
        _check((got == np.bitwise_count(w ^ x).sum(axis=1)).all(), f"rows n={n}: wrong counts")
        per_word.append(f"{r.cycles / (GROUP * n):9.1f}")
        if n in layer_rows:
            net += layer_rows[n] * r.cycles / GROUP
    label = f"armv6m-hs4 rows ({GROUP} a call)"
    print(f"  {label:40}{''.join(per_word)}{round(net):15,}")
    print("  (one inference: the kernel cycles of its 522 rows, 256 of 25 words and 266 of 8)")


def core_inference(opt: str, m: M0Plus, model, data: bytes, xbits: np.ndarray, want: np.ndarray) -> dict:
    """rbnn_model_init and rbnn_infer on each sample; scores checked against the twin."""
    m.free_all()
    model_addr = m.alloc(data, region="flash")  # weights read in place, as from XIP flash
    state = m.alloc(256)
    init = m.call("rbnn_model_init", state, model_addr, len(data))
    _check(init.signed == 0, f"rbnn_model_init returned {init.signed}")
    scratch = m.alloc(4 * 2 * words(max(SIZES[:-1])))
    scores = m.alloc(4 * SIZES[-1])
    runs = []
    for i in range(len(xbits)):
        inp = m.alloc(xbits[i].tobytes())
        r = m.call("rbnn_infer", state, inp, scratch, scores)
        got = np.frombuffer(m.read(scores, 4 * SIZES[-1]), "<i4")
        _check(np.array_equal(got, want[i]), f"{opt}: scores differ from the twin on sample {i}")
        _check(r.signed == int(np.argmax(want[i])), f"{opt}: class differs from the twin")
        runs.append(r)
    return {"init": init, "runs": runs}


def _cnn_text(model) -> str:
    """28x28x1-conv3x3:32/pool-...: the layers as rbnn summary names them."""
    from rbnn.format.summary import layers_text

    return layers_text(model)


def cnn_inference(builds: dict, rng: np.random.Generator, samples: int, path: str | None = None) -> None:
    """A binary CNN in eBNN order through rbnn_infer: cycles per image, scores checked
    against the twin. Default: the CNN of issue 9 with random weights (the cycles hardly
    depend on them), MSB plane, random inputs; ``path``: a trained CNN file (``--cnn``),
    on MNIST test images when they are cached."""
    if path is None:  # the architecture and planes of the 99 % MNIST CNN (README)
        model, what = mnist_cnn(rng, 0xF0, layers=MNIST_CNN3), "random weights"
        x = rng.integers(0, 256, (samples, 784), dtype=np.uint8)
        inputs = "random inputs"
    else:
        model, what = pack.load(path), Path(path).name
        x, inputs = _test_images(rng, model.n_inputs, samples)
    data = pack.to_bytes(model)
    xbits = pack_input(x, model.plane_mask)
    want = twin.scores(model, xbits)
    ram = sum(model.ram_bytes().values())
    print(f"one binary CNN inference ({_cnn_text(model)}; plane mask 0x{model.plane_mask:02x}; {what}), "
          f"{len(data):,}-byte model read in place, {ram:,} bytes of working RAM, {samples} {inputs}")  # fmt: skip
    print(f"  {'build':6}{'cycles':>12}{'instr.':>12}{'ms@125MHz':>11}{'in kernel':>11}  scores = twin")
    for opt, (m, _) in builds.items():
        m.free_all()
        addr = m.alloc(data, region="flash")
        state = m.alloc(256)
        _check(m.call("rbnn_model_init", state, addr, len(data)).signed == 0, "CNN: rbnn_model_init failed")
        ram_c = m.call("rbnn_ram_bytes", state).result
        _check(ram_c == ram, f"CNN: rbnn_ram_bytes {ram_c} != {ram}")
        scratch = m.alloc(4 * m.call("rbnn_scratch_words", state).result)
        scores = m.alloc(4 * model.n_classes)
        runs = []
        for i in range(samples):
            r = m.call("rbnn_infer", state, m.alloc(xbits[i].tobytes()), scratch, scores, max_instructions=10**9)
            got = np.frombuffer(m.read(scores, 4 * model.n_classes), "<i4")
            _check(np.array_equal(got, want[i]), f"{opt}: CNN scores differ from the twin on sample {i}")
            runs.append(r)
        cyc = max(r.cycles for r in runs)
        kern = sum(runs[0].profile.get(f, 0) for f in KERNEL_FUNCS)
        print(f"  {opt:6}{cyc:12,}{max(r.instructions for r in runs):12,}{cyc / (MHZ * 1000):11.2f}"
              f"{kern / runs[0].cycles:11.1%}  yes ({samples} inputs)")  # fmt: skip


def _test_images(rng: np.random.Generator, n_inputs: int, n: int) -> tuple[np.ndarray, str]:
    """The first ``n`` MNIST test images when cached and 784 features, else random bytes."""
    from rbnn import data as rdata
    from rbnn.errors import RbnnError

    if n_inputs == 784:
        try:
            return rdata.load("mnist", parts=("t10k",)).x_test[:n].reshape(n, -1).astype(np.uint8), "MNIST test images"
        except RbnnError:
            pass
    return rng.integers(0, 256, (n, n_inputs), dtype=np.uint8), "random inputs"


def _check(ok: bool, what: str) -> None:
    if not ok:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4, help="inputs run through the core")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cnn", metavar="FILE", help="also time this trained CNN file (e.g. rbnn train --conv ...)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    builds = {opt: build(opt) for opt in ("-O2", "-Os")}
    core, variants = builds["-O2"]
    name = variants.read(variants.address("rbnn_kernel_name"), 16).split(b"\0")[0].decode()
    print(f"Cortex-M0+ (unicorn + the Cortex-M0+ TRM cycle table; zero wait states, as for code "
          f"and data in SRAM), kernel {name}")  # fmt: skip
    print()
    kernel_table(variants, rng)
    print()

    model = random_model(rng, n_inputs=N_INPUTS, sizes=SIZES, plane_mask=PLANE_MASK)
    data = pack.to_bytes(model)
    x = rng.integers(0, 256, (args.samples, N_INPUTS), dtype=np.uint8)
    xbits = pack_input(x, PLANE_MASK)
    want = twin.scores(model, xbits)
    n_words = sum(o * words(i) for i, o in zip([N_INPUTS] + SIZES[:-1], SIZES, strict=True))
    shape = "-".join(str(s) for s in [N_INPUTS, *SIZES])
    print(f"one {shape} inference, MSB input plane, random weights ({n_words:,} weight words, "
          f"{len(data):,}-byte model read in place from read-only memory), "
          f"{args.samples} random inputs")  # fmt: skip
    print(f"  {'build':6}{'cycles':>10}{'instr.':>10}{'cyc/word':>10}{'ms@125MHz':>11}"
          f"{'in kernel':>11}  scores = twin")  # fmt: skip
    results = {}
    for opt, (m, _) in builds.items():
        res = core_inference(opt, m, model, data, xbits, want)
        results[opt] = res
        cyc = max(r.cycles for r in res["runs"])
        insns = max(r.instructions for r in res["runs"])
        prof = res["runs"][0].profile
        kern = sum(prof.get(f, 0) for f in KERNEL_FUNCS)
        print(f"  {opt:6}{cyc:10,}{insns:10,}{cyc / n_words:10.2f}{cyc / (MHZ * 1000):11.3f}"
              f"{kern / res['runs'][0].cycles:11.1%}  yes ({len(res['runs'])} inputs)")  # fmt: skip
    init = results["-O2"]["init"]
    print(f"  rbnn_model_init -O2 (validation + CRC-32 of {len(data):,} bytes): {init.cycles:,} cycles, "
          f"{init.cycles / (MHZ * 1000):.2f} ms")  # fmt: skip
    best = max(r.cycles for r in results["-O2"]["runs"])
    verdict = "met" if best <= TARGET else "NOT met"
    print(f"  target <= {TARGET:,} cycles: {verdict} ({best:,}); "
          f"{best / FLOOR:.2f}x the ~{FLOOR:,} floor of DESIGN section 2")  # fmt: skip
    print()
    cnn_inference({opt: b for opt, b in builds.items()}, rng, min(args.samples, 2))
    if args.cnn:
        print()
        cnn_inference({opt: b for opt, b in builds.items()}, rng, min(args.samples, 2), args.cnn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
