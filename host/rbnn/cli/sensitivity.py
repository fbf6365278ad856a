"""`rbnn sensitivity m.rbnn --data D`: the validation accuracy of an input mode 1 model
(per-plane weights, ``rbnn train --per-plane``) when each kept input bit-plane is removed
by the exact rule of docs/FORMAT.md, as a table and a PNG (``<stem>.sensitivity.png``).

The validation samples are a held-out part of ``--data``'s training samples, never its
test set: those the training held out when the float state (``<stem>.float.npz``) is
beside the model, else ``--val`` samples drawn with ``--seed`` as ``rbnn train`` draws them.
"""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="validation accuracy lost when each input bit-plane is removed")
    p.add_argument("model", help="an input mode 1 .rbnn file (rbnn train --per-plane)")
    p.add_argument("--data", default="mnist", help="'mnist', a folder of IDX files or a .npz file: its training "
                   "samples give the validation split (default mnist)")  # fmt: skip
    p.add_argument("--float", dest="float_state", metavar="F.npz",
                   help="the model's float state (default <stem>.float.npz beside it, when there): its split")
    p.add_argument("--val", type=positive_int, default=5000,
                   help="without a float state: validation samples (default %(default)s, as rbnn train)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="without a float state: the seed of the split (default %(default)s, as rbnn train)")
    p.add_argument("--plot", metavar="PNG", help="the bar chart to write (default <stem>.sensitivity.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import data
    from ..files import check_output, read_model, write_atomic
    from ..format.model import kept_planes
    from ..format.planes import droppable
    from ..train.plots import missing
    from ..train.prune import accuracy, host_engine, sensitivity
    from .pruneio import load_state_for, split, table
    from .sidefiles import side_path

    _, m = read_model(args.model)
    droppable(m)
    state, _ = load_state_for(args.model, args.float_state, m, required=False)
    ds = data.load(args.data, parts=("train",))
    sp = split(ds, m.n_inputs, m.n_classes, state, args.val, args.seed)
    plot = args.plot or str(side_path(args.model, "sensitivity.png"))
    no_plots = missing()
    if not no_plots:
        check_output(plot, "--plot", inputs=[args.model, *ds.files])
    engine, _, why = host_engine(m)
    start = accuracy(m, sp.x_va, sp.y_va)
    rows = sensitivity(m, sp.x_va, sp.y_va)
    print(f"{args.model}: planes {', '.join(map(str, kept_planes(m.plane_mask)))} (mask {m.plane_mask:#04x}), "
          f"input mode 1")  # fmt: skip
    print(sp.what)
    print(f"engine: {engine}" + (f" ({why})" if why else ""))
    body = [["plane removed", "validation accuracy", "lost (points)"], ["none", f"{100 * start:.2f} %", "-"]]
    body += [[str(p), f"{100 * acc:.2f} %", f"{100 * (start - acc):.2f}"] for p, acc in rows]
    print(table(body))
    if no_plots:
        print(f"plot: not written: {no_plots}")
        return 0
    from ..train.plots import plot_sensitivity

    title = f"{args.model}: validation {100 * start:.2f} % with planes {m.plane_mask:#04x}"
    write_atomic(plot, lambda f: plot_sensitivity(rows, start, f, title))
    print(f"plot: {plot}")
    return 0
