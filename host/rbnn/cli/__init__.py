"""The ``rbnn`` command line. Each subcommand lives in its own module here, exposing
``register(subparsers)`` (argument set-up, cheap imports only) and ``run(args) -> int``.

Every error a user can cause is one line on stderr, ``rbnn: error: ...``, and exit
status 2: rbnn's own errors, argument errors, OSError (a file, folder or port the
system refused) and MemoryError. Set ``RBNN_TRACEBACK=1`` to see the traceback of those
two; any other exception is a bug and shows its traceback. Ctrl-C: ``rbnn: interrupted``,
exit status 130. A reader that stops reading (``rbnn summary m.rbnn | head -1``): no
message, exit status 141 (128 + SIGPIPE, what a shell reports for a command killed by a
closed pipe).
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys

from .. import __version__
from ..errors import RbnnError

# Subcommand modules, in the order `rbnn --help` lists them.
COMMANDS = ["data", "train", "sensitivity", "prune", "grow", "summary", "eval", "flash", "deploy", "infer", "stream", "pull", "device",
            "virtual"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other rbnn error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        cmd = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        sys.stderr.write(f"rbnn: error: {cmd}{message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="rbnn",
        description="Binarized neural networks for microcontrollers: train, pack, run, deploy.",
    )
    p.add_argument("--version", action="version", version=f"rbnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f".{name}", __name__)
        mod.register(sub)
    return p


SIGPIPE_EXIT = 141


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real stdout (tests, embedding)
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's exit
        return code
    except RbnnError as e:
        print(f"rbnn: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"rbnn: error: {e.filename}: no such file", file=sys.stderr)
        return 2
    except OSError as e:  # the system refused a file, folder or port the user named
        if isinstance(e, BrokenPipeError) and _stdout_reader_gone():  # not another pipe's
            _quiet_stdout()
            return SIGPIPE_EXIT
        if os.environ.get("RBNN_TRACEBACK"):
            raise
        where = "".join(f"{f}: " for f in (e.filename, e.filename2) if f is not None)
        print(f"rbnn: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # numpy names the array it could not allocate
        if os.environ.get("RBNN_TRACEBACK"):
            raise
        print(f"rbnn: error: out of memory: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rbnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
