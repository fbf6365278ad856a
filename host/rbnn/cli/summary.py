"""`rbnn summary m.rbnn`: the layer table, storage and inference RAM."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="print the layer table of a model file")
    p.add_argument("model", help=".rbnn file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from ..files import read_model
    from ..format.summary import summary

    raw, m = read_model(args.model)
    print(summary(m, os.path.basename(args.model), len(raw)))
    return 0
