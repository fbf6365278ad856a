"""`rbnn infer --port P --data mnist`: test-set accuracy computed on the board."""

from __future__ import annotations

import argparse

from .argtypes import positive_int
from .device import add_port_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="accuracy of the board's model on a test set, inferred on the board")
    add_port_args(p)
    p.add_argument("--data", default="mnist", help="'mnist' or a folder of IDX files (only the t10k files are read)")
    p.add_argument("--limit", type=positive_int, help="only the first N test images")
    p.add_argument("--model", help="model file on the board (default: the loaded one, else the device's default)")
    p.add_argument("--scores", metavar="OUT.npy", help="also fetch the int32 scores and write them here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..device.link import Link, check_model_name
    from ..device.virtual import port_session
    from ..errors import DataError
    from ..files import check_output, write_atomic
    from ..format.model import pack_input
    from ..progress import bar
    from .testset import fit_test_set, load_test_set

    if args.model is not None:
        check_model_name(args.model)
    ds = load_test_set(args.data)
    if args.scores:  # refused before the board is touched
        check_output(args.scores, "--scores", inputs=[args.port, *ds.files])
    with port_session(args.port, args.fs) as port:
        link = Link.open(port, args.baud, name=args.port)
        try:
            mi = link.ensure_model(args.model)
            x, y = fit_test_set(ds, args.limit, mi["inputs"], mi["layers"][-1], "the board's model")
            xb = pack_input(x, mi["plane_mask"]).astype("<u4").view(np.uint8).reshape(len(y), -1)
            if xb.shape[1] != mi["input_bytes"]:
                raise DataError(f"packed input of {xb.shape[1]} bytes, the board expects {mi['input_bytes']}")
            t0 = time.perf_counter()
            with bar(total=len(y), desc=f"infer ({mi['engine']} on device)", unit="img", leave=False) as b:
                pred, scores, us = link.infer(xb, scores=bool(args.scores), progress=lambda k: b.update(k - b.n))
            dt = time.perf_counter() - t0
            link.leave()
        finally:
            link.close()
    correct = int(np.sum(pred == y))
    print(f"accuracy: {correct / max(1, len(y)):.4f} ({correct}/{len(y)})")
    print(f"engine: {mi['engine']} on {port}, {len(y) / dt:,.0f} samples/s end to end, "
          f"{us / max(1, len(y)) / 1000:.3f} ms per sample on the device")  # fmt: skip
    if args.scores:
        write_atomic(args.scores, lambda f: np.save(f, scores))  # the exact name, never a partial file
    return 0
