"""`rbnn prune m.rbnn --data D --max-drop P -o OUT.rbnn`: remove input bit-planes of an
input mode 1 model greedily by sensitivity, fine-tuning after each removal, while the
validation accuracy stays within P percentage points of the start (rbnn.train.prune).

Needs the model's float state (``<stem>.float.npz``, written by ``rbnn train
--per-plane``; or ``--float``): a folded file keeps only signs and integer thresholds,
and fine-tuning needs the latent weights and BatchNorm. Writes OUT and its float state
(``OUT.float.npz``: prune it again), and prints size, first-layer MACs, host C speed and
accuracy before and after. Every input and output is checked before the work; nothing
is written on an error (a prune that would remove every plane included).
"""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int, positive_int

DEFAULTS = {"epochs": 2, "lr": 1e-3, "lr_final": 1e-4}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="remove input bit-planes while accuracy allows (input mode 1 models)")
    p.add_argument("model", help="an input mode 1 .rbnn file (rbnn train --per-plane) with its float state")
    p.add_argument("--data", default="mnist", help="'mnist', a folder of IDX files or a .npz file: the training "
                   "data of the model (its validation split decides; default mnist)")  # fmt: skip
    p.add_argument("--test", metavar="DATA", help="test set to report (default: an IDX set's own test images)")
    p.add_argument("--max-drop", type=float, required=True, metavar="P",
                   help="allowed loss of validation accuracy, percentage points vs the start (e.g. 1.0)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.rbnn", help="the pruned model to write")
    p.add_argument("--float", dest="float_state", metavar="F.npz", help="the float state (default <stem>.float.npz)")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"],
                   help="fine-tuning epochs after each removal (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="fine-tuning learning rate (default %(default)s)")
    p.add_argument("--lr-final", type=float, default=DEFAULTS["lr_final"],
                   help="fine-tuning learning rate at the end of each round (default %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the fine-tuning (default %(default)s)")
    p.add_argument("--no-augment", action="store_true",
                   help="fine-tune without augmentation (default: augment where the training did, with its "
                        "shift, rotation and zoom)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-round lines")
    p.set_defaults(func=run)


def _config(state, args: argparse.Namespace):
    """The fine-tuning run: the recorded training options (augmentation where the training
    augmented, unless --no-augment), new epochs and learning rates, the best epoch kept."""
    from ..train import TrainConfig, TrainError

    c = state.config
    aug = bool(c.get("augmented")) and not args.no_augment
    try:
        jitter = {k: float(c.get(k, 0.0)) if aug else 0.0 for k in ("shift", "rotate", "zoom")}
        cfg = TrainConfig(hidden=list(c["hidden"]), plane_mask=state.net.plane_mask, epochs=args.epochs,
                          batch=int(c.get("batch", 100)), lr=args.lr, lr_final=args.lr_final, loss=c.get("loss", "ce"),
                          lr_scale=c.get("lr_scale", "none"), dropout=float(c.get("dropout", 0.0)),
                          momentum=float(c.get("momentum", 0.1)), eps=state.net.eps, **jitter,
                          augment="on" if aug else "off", threads=int(c.get("threads", 1)), input_mode=state.net.input_mode)  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise TrainError(f"the float state's training options are incomplete ({e})") from None
    if not (0 < cfg.lr < float("inf") and 0 < cfg.lr_final < float("inf")):
        raise TrainError(f"learning rates must be > 0, found --lr {args.lr}, --lr-final {args.lr_final}")
    return cfg


def run(args: argparse.Namespace) -> int:
    import math

    import numpy as np

    from ..files import read_model, write_atomic
    from ..format import pack
    from ..format.model import kept_planes, pack_input
    from ..format.planes import droppable
    from ..progress import write
    from ..train import TrainError, blas_threads, config_dict
    from ..train.prune import c_speed, first_layer_bytes, first_layer_macs, host_engine, prune
    from ..train.state import FloatState, save_state
    from .pruneio import load_state_for, split, table
    from .sidefiles import check_outputs
    from .train import training_sets

    if not (math.isfinite(args.max_drop) and 0 <= args.max_drop < 100):
        raise TrainError(f"--max-drop: expected percentage points 0 <= P < 100, found {args.max_drop}")
    _, m = read_model(args.model)
    droppable(m)
    state, state_path = load_state_for(args.model, args.float_state, m, required=True)
    cfg = _config(state, args)
    ds, test = training_sets(args.data, args.test)
    inputs = [args.model, state_path, *ds.files, *test.files]
    out, sides, notes = check_outputs(args.output, tuple(inputs), {"float state": "float.npz"})
    sp = split(ds, m.n_inputs, m.n_classes, state, 0, 0)
    if len(test.y_test) and (test.x_test.shape[1] != m.n_inputs or int(test.y_test.max()) >= m.n_classes):
        raise TrainError(f"--test {test.name}: does not fit the model ({m.n_inputs} inputs, {m.n_classes} classes)")
    engine, _, why = host_engine(m)
    print(sp.what)
    print(f"accuracy engine: {engine}" + (f" ({why})" if why else ""))
    jitter = f"shift {cfg.shift:g}, rotate {cfg.rotate:g}, zoom {cfg.zoom:g}" if cfg.shift or cfg.rotate or cfg.zoom else "off"
    print(f"fine-tuning: {cfg.epochs} epochs a round, lr {cfg.lr:g} -> {cfg.lr_final:g}, augmentation {jitter}")

    def log(line: str) -> None:
        if not args.quiet:
            write(line)

    with blas_threads(cfg.threads):
        net, pruned, start, rounds = prune(state.net, m, (sp.x_tr, sp.y_tr), (sp.x_va, sp.y_va), args.max_drop, cfg,
                                           args.seed, log, progress=not args.quiet)  # fmt: skip
    pruned.meta = {**m.meta, "pruned": {"from": m.plane_mask, "max_drop": args.max_drop}}
    nbytes = pack.save(pruned, out)
    if "float state" in sides:
        st = FloatState(net, {**state.config, "pruned": config_dict(cfg)}, state.val_idx, state.n_train)
        write_atomic(sides["float state"], lambda f: save_state(f, st))

    def acc(model, x, y) -> str:
        if not len(y):
            return "-"
        _, score, _ = host_engine(model)
        pred = np.concatenate([np.argmax(score(pack_input(x[lo : lo + 2000], model.plane_mask)), axis=1)
                               for lo in range(0, len(x), 2000)])  # fmt: skip
        return f"{100 * np.mean(pred == y):.2f} %"

    bench_x = test.x_test if len(test.y_test) else sp.x_va
    speeds = c_speed([m, pruned], bench_x)
    before_bytes, after_bytes = len(pack.to_bytes(m)), nbytes

    def ratio(a: float | None, b: float | None, inverse: bool = False) -> str:
        if not a or not b:
            return "-"
        return f"{(b / a if inverse else a / b):.2f}x"

    def planes(model) -> str:
        return f"{model.plane_mask:#04x} ({','.join(map(str, kept_planes(model.plane_mask)))})"

    sp_text = [f"{s:,.0f}" if s else "n/a" for s in speeds]
    rows = [["", "before", "after", "ratio"],
            ["input planes (mask)", planes(m), planes(pruned), f"{m.k_planes}->{pruned.k_planes}"],
            ["first-layer bytes", f"{first_layer_bytes(m):,}", f"{first_layer_bytes(pruned):,}",
             ratio(first_layer_bytes(m), first_layer_bytes(pruned))],
            ["file bytes", f"{before_bytes:,}", f"{after_bytes:,}", ratio(before_bytes, after_bytes)],
            ["first-layer MACs", f"{first_layer_macs(m):,}", f"{first_layer_macs(pruned):,}",
             ratio(first_layer_macs(m), first_layer_macs(pruned))],
            ["host C inference (samples/s)", *sp_text, ratio(speeds[0], speeds[1], inverse=True)],
            ["validation accuracy", f"{100 * start:.2f} %", acc(pruned, sp.x_va, sp.y_va), ""],
            ["test accuracy", acc(m, test.x_test, test.y_test), acc(pruned, test.x_test, test.y_test), ""]]  # fmt: skip
    removed = [r.plane for r in rounds if r.kept]
    print(f"removed planes: {', '.join(map(str, removed)) or 'none'} ({len(rounds)} rounds, "
          f"--max-drop {args.max_drop:g} points, {args.epochs} fine-tuning epochs each)")  # fmt: skip
    print(table(rows))
    if None in speeds:
        print("host C inference: n/a where the C core cannot run the model (" + (why or "it does not read it") + ")")
    if not len(test.y_test):
        print("test accuracy: no test set (a .npz --data has none: give one with --test)")
    print(f"model: {out} ({nbytes} bytes)")
    for what, path in sides.items():
        print(f"{what}: {path}")
    for note in notes:
        print(note)
    return 0
