"""`rbnn grow M.rbnn --data D -o OUT.rbnn`: keep training a model inside its arena, block
by block, with the integer step of docs/TRAINING.md, as a device would (`rbnn stream` runs
the same samples on a board and ends in the same bytes).

Samples are taken in file order from ``--offset`` (``--limit`` of them, ``--epochs``
times; ``--shuffle`` permutes each epoch with the seed). Each new block opens in free
planes, trains on ``samples / --blocks`` of them and freezes; the next opens in the planes
it released. Printed per block: samples seen, bits per weight of the arena, running
accuracy on its own samples, test accuracy. Beside OUT: ``OUT.growth.png`` (test accuracy
against samples seen, each new block marked, and against bits per weight) and
``OUT.growth.json``. ``--new --hidden H --arena P`` starts from an empty arena, every
block trained by the step (the RBNN paper's setting).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..learn.defaults import BITS
from .argtypes import non_negative_int, positive_int

KINDS = ("auto", "new", "domain", "same")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options of a growth run, the same for `rbnn grow` and `rbnn stream` (docs/
    TRAINING.md, The growth run): which samples, the schedule, the seed, the kind."""
    p.add_argument("--data", default="mnist", help="'mnist', a folder of IDX files (its training images) or a .npz file")
    p.add_argument("--offset", type=non_negative_int, default=0, help="first sample (default 0)")
    p.add_argument("--limit", type=positive_int, help="samples per epoch (default: all from --offset)")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the samples (default 1)")
    p.add_argument("--shuffle", action="store_true", help="permute each epoch (seeded), else file order")
    p.add_argument("--bits", type=int,
                   help="planes of every new block, 1..16 (default 8, or all the free planes when fewer)")
    p.add_argument("--blocks", type=positive_int,
                   help="new blocks to grow (default: as many as the arena holds)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of the step's random numbers (default 1)")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help="hyper-parameters for data unlike the frozen blocks' (domain), more of the same "
                        "(same), or an empty arena (new); auto (default): same when the frozen blocks "
                        "classify the first 1,000 samples at 80 %% or better, else domain")  # fmt: skip
    p.add_argument("--scale-shift", type=int, help="override the live output scale 2^N")
    p.add_argument("--margin", type=positive_int, help="override the hinge margin (score units)")
    p.add_argument("--keep-live", action="store_true", help="leave the last block live (default: freeze it)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grow", help="train new blocks in a model's arena with the integer step")
    p.add_argument("model", nargs="?", help=".rbnn file to grow (not with --new)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.rbnn", help="the grown model")
    add_run_args(p)
    p.add_argument("--engine", choices=["c", "twin"], default="c",
                   help="the C core (default) or the numpy twin: the same bytes")  # fmt: skip
    p.add_argument("--test", metavar="DATA", help="test set (default: an IDX set's own test images)")
    p.add_argument("--new", action="store_true", help="start from an empty arena (needs --hidden and --arena)")
    p.add_argument("--hidden", help="--new: hidden widths, e.g. 256,256")
    p.add_argument("--arena", type=int, metavar="P", help="--new: bit-planes of the arena")
    planes = p.add_mutually_exclusive_group()
    planes.add_argument("--planes", metavar="K", help="--new: the K most significant input planes (default 1)")
    planes.add_argument("--plane-mask", metavar="MASK", help="--new: input planes of this mask")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def check_bits(args: argparse.Namespace) -> None:
    from ..errors import RbnnError

    if args.bits is not None and not 1 <= args.bits <= 16:
        raise RbnnError(f"--bits: expected 1..16, found {args.bits}")


def check_fit(m, ds, what: str) -> None:
    """The data's samples and labels fit the model ``what`` (its inputs and classes)."""
    from ..errors import RbnnError

    if m.n_inputs != ds.x_train.shape[1]:
        raise RbnnError(f"{what} has {m.n_inputs} inputs, --data has {ds.x_train.shape[1]}")
    if int(ds.y_train.max()) >= m.n_classes:
        raise RbnnError(f"{what} has {m.n_classes} classes, --data has labels up to {int(ds.y_train.max())}")


def run_key(args: argparse.Namespace, ds) -> int:
    """The run's digest apart from the model (rbnn.learn.run.run_digest), of the options
    as given: the same for `grow` and `stream`, and for a stream before and after it
    began (none of it depends on the model)."""
    from ..learn import run as R

    p = R.plan(len(ds.y_train), args.offset, args.limit, args.epochs, args.shuffle, args.seed, 1)
    opts = {"epochs": args.epochs, "shuffle": args.shuffle, "seed": args.seed, "bits": args.bits,
            "blocks": args.blocks, "kind": "new" if getattr(args, "new", False) else args.kind,
            "scale_shift": args.scale_shift, "margin": args.margin, "keep_live": args.keep_live}  # fmt: skip
    return R.run_digest(ds.x_train, ds.y_train, p.offset, p.count, opts)


@dataclass
class Setup:
    """A prepared run: its plan, the blocks and bits it grows, the kind of
    hyper-parameters, and the stream id stamped into the model."""

    plan: object  # rbnn.learn.run.Plan
    blocks: int
    bits: int
    kind: str
    stream_id: int


def prepare_run(args: argparse.Namespace, m, ds, what: str, key: int | None = None) -> Setup:
    """Prepare ``m`` for the run of ``args`` exactly as `rbnn grow` does: bits and blocks
    (defaults from the arena), the plan, hyper-parameters (rbnn.learn.run.prepare) and
    the stream stamp (rbnn.learn.run.stamp). ``what`` names the model in messages."""
    from ..learn import run as R
    from ..learn import step as S

    if not m.trainable:  # before any default is drawn from its arena
        raise R.GrowError(f"{what}: {S.UNTRAINABLE}; nothing written")
    key = run_key(args, ds) if key is None else key
    bits = args.bits if args.bits is not None else max(1, min(BITS, R.room_planes(m)))
    fits = R.room(m, bits)
    blocks = args.blocks or fits
    if fits == 0:
        raise R.GrowError(f"{what}: no room left to grow: {len(m.free_planes())} free planes of "
                          f"{m.n_planes} (a block needs {bits}), {m.capacity - len(m.blocks)} empty block "
                          "slots; nothing written")  # fmt: skip
    p = R.plan(len(ds.y_train), args.offset, args.limit, args.epochs, args.shuffle, args.seed, blocks)
    overrides = {k: v for k, v in (("scale_shift", args.scale_shift), ("margin", args.margin)) if v is not None}
    first = p.order[:1000]
    kind = R.prepare(m, p, args.seed, bits, "new" if getattr(args, "new", False) else args.kind, overrides,
                     probe=(ds.x_train[first], ds.y_train[first]))  # fmt: skip
    return Setup(p, blocks, bits, kind, R.stamp(m, key))


def _model(args: argparse.Namespace, ds):
    from ..errors import RbnnError
    from ..files import read_model
    from ..learn.arena import empty_arena
    from .train import parse_hidden, parse_planes

    if args.new:
        if args.model is not None:
            raise RbnnError("grow --new starts from an empty arena: give no model file")
        if args.hidden is None or args.arena is None:
            raise RbnnError("grow --new needs --hidden (e.g. 256,256) and --arena P")
        sizes = parse_hidden(args.hidden) + [int(ds.n_classes)]
        return None, empty_arena(ds.x_train.shape[1], sizes, parse_planes(args.planes, args.plane_mask), args.arena)
    if args.model is None:
        raise RbnnError("grow: give the model file to grow (or --new --hidden H --arena P)")
    for opt in ("hidden", "arena", "planes", "plane_mask"):
        if getattr(args, opt) is not None:
            raise RbnnError(f"--{opt.replace('_', '-')} goes with --new only (the model file has its shape)")
    raw, m = read_model(args.model)
    check_fit(m, ds, args.model)
    return args.model, m


def run(args: argparse.Namespace) -> int:
    import json

    from ..files import write_atomic
    from ..format import pack
    from ..learn import run as R
    from ..progress import bar, write
    from .sidefiles import check_outputs
    from .train import training_sets

    check_bits(args)
    ds, test = training_sets(args.data, args.test)
    source, m = _model(args, ds)
    inputs = ds.files + test.files + ((source,) if source else ())
    out, sides, notes = check_outputs(args.output, inputs, {"growth": "growth.png", "history": "growth.json"})
    run = prepare_run(args, m, ds, source or "the arena")
    p, kind, blocks = run.plan, run.kind, run.blocks
    args.bits = run.bits
    st = m.state()
    tests = {test.name: (test.x_test, test.y_test)} if len(test.y_test) else {}
    print(f"grow: {p.samples:,} samples ({p.count:,} from {p.offset}, {p.epochs} epoch(s){', shuffled' if p.shuffle else ''}), "
          f"{blocks} new block(s) of {args.bits} bits, {p.grow_every:,} samples each; engine {args.engine}; "
          f"hyper-parameters {kind} (scale 2^{st.scale_shift}, margin {st.margin:,})")  # fmt: skip
    rows = []

    def report(r) -> None:
        rows.append(r)
        acc = "  ".join(f"{k} {100 * v:.2f} %" for k, v in r.test.items())
        tr = "" if r.train_acc is None else f"running {100 * r.train_acc:.2f} %  "
        write(f"blocks {r.block:2d}: {r.samples:>9,} samples  {r.bits_per_weight:5.2f} b/w  {r.kb:.1f} kB  {tr}{acc}")

    with bar(not args.quiet, total=p.samples, desc=f"grow ({args.engine})", unit="sample", leave=False) as b:
        grown, _ = R.grow(m, ds.x_train, ds.y_train, p, args.engine, tests, args.keep_live, report,
                          lambda k: b.update(k - b.n))  # fmt: skip
    nbytes = pack.save(grown, out)
    print(f"model: {out} ({nbytes:,} bytes, {len(grown.blocks)} blocks, {grown.bits_per_weight:.2f} bits per weight, "
          f"{len(grown.free_planes())} free planes)")  # fmt: skip
    history = {
        "model": str(out), "source": source, "data": ds.name, "engine": args.engine, "kind": kind,
        "samples": p.samples, "blocks": blocks, "bits": args.bits, "seed": args.seed,
        "rows": [r.__dict__ for r in rows],
    }  # fmt: skip
    if "history" in sides:
        text = json.dumps(history, indent=1, allow_nan=False) + "\n"
        write_atomic(sides["history"], lambda f: f.write(text.encode()))
    if "growth" in sides and tests:
        from ..train.plots import plot_growth

        write_atomic(sides["growth"], lambda f: plot_growth(rows, f, f"{grown.n_inputs}-{'-'.join(map(str, grown.sizes))}, "
                                                                      f"{args.bits}-bit blocks, {kind}"))  # fmt: skip
    for what, path in sides.items():
        if what != "growth" or tests:
            print(f"{what}: {path}")
    for note in notes:
        print(note)
    return 0
