"""The ``rbnn`` command line. Each subcommand lives in its own module here, exposing
``register(subparsers)`` (argument set-up, cheap imports only) and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import RbnnError

# Subcommand modules, in the order `rbnn --help` lists them.
COMMANDS = ["data", "train", "summary", "eval", "flash", "deploy", "infer", "device", "virtual"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rbnn",
        description="Binarized neural networks for microcontrollers: train, pack, run, deploy.",
    )
    p.add_argument("--version", action="version", version=f"rbnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f".{name}", __name__)
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RbnnError as e:
        print(f"rbnn: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"rbnn: error: {e.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rbnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
