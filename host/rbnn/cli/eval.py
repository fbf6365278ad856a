"""`rbnn eval m.rbnn --data mnist --engine twin|c`: test-set accuracy of a model file.

Several models and several ``--data`` give a table, one row per model, one column per
test set (e.g. a model before and after `rbnn grow`, on the plain and the rotated digits).
"""

from __future__ import annotations

import argparse

from ..engines import ENGINES
from .argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of a model file on a test set")
    p.add_argument("model", nargs="+", help=".rbnn file(s)")
    p.add_argument("--data", action="append", help="'mnist' (default), a folder of IDX files (only the t10k files "
                   "are read) or a .npz file; repeat for a table over several test sets")  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default="twin")
    p.add_argument("--limit", type=positive_int, help="only the first N test images")
    p.add_argument("--scores", metavar="OUT.npy", help="write the int32 scores here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import RbnnError

    args.data = args.data or ["mnist"]
    if len(args.model) == 1 and len(args.data) == 1:
        args.model, args.data = args.model[0], args.data[0]
        return _one(args)
    if args.scores:
        raise RbnnError("--scores goes with one model and one --data")
    return _table(args)


def _score_all(score, x, plane_mask: int, n_classes: int, desc: str):
    """int32 scores (n, n_classes) of every row of ``x`` (uint8 (n, features)), 1,000 at a
    time, with a progress bar on a terminal."""
    import numpy as np

    from ..format.model import pack_input
    from ..progress import bar

    out = np.empty((len(x), n_classes), np.int32)
    step = 1000
    with bar(total=len(x), desc=desc, unit="img", leave=False) as b:
        for lo in range(0, len(x), step):
            out[lo : lo + step] = score(pack_input(x[lo : lo + step], plane_mask))
            b.update(min(step, len(x) - lo))
    return out


def _table(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engines import scorer
    from ..files import read_model
    from .testset import fit_test_set, load_test_set

    models = [(path, *read_model(path)) for path in args.model]  # every file checked before any work
    sets = [load_test_set(d) for d in args.data]
    rows = []
    for path, raw, m in models:
        score, cells = scorer(args.engine, raw), []
        for ds in sets:
            x, y = fit_test_set(ds, args.limit, m.n_inputs, m.n_classes, f"{path}: model")
            pred = np.argmax(_score_all(score, x, m.plane_mask, m.n_classes, f"eval {path}"), axis=1)
            right = int(np.sum(pred == y))
            cells.append(f"{100 * right / max(1, len(y)):.2f} % of {len(y):,}")
        rows.append([path, *cells])
    head = [f"accuracy ({args.engine})", *(ds.name for ds in sets)]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    return 0


def _one(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..engines import scorer
    from ..files import check_output, read_model, write_atomic
    from .testset import fit_test_set, load_test_set

    raw, m = read_model(args.model)
    ds = load_test_set(args.data)
    x, y = fit_test_set(ds, args.limit, m.n_inputs, m.n_classes, f"{args.model}: model")
    if args.scores:
        check_output(args.scores, "--scores", inputs=[args.model, *ds.files])
    score = scorer(args.engine, raw)
    t0 = time.perf_counter()
    out = _score_all(score, x, m.plane_mask, m.n_classes, f"eval ({args.engine})")
    dt = time.perf_counter() - t0
    pred = np.argmax(out, axis=1)
    correct = int(np.sum(pred == y))
    print(f"accuracy: {correct / max(1, len(y)):.4f} ({correct}/{len(y)})")
    print(f"engine: {args.engine}, {len(y) / dt:,.0f} samples/s")
    if args.scores:
        write_atomic(args.scores, lambda f: np.save(f, out))  # the exact name, never a partial file
    return 0
