"""Progress bars, drawn only on a terminal.

A bar redraws itself with carriage returns; in a log file (``make demo > log 2>&1``,
CI) that is a frame per update and nothing a reader wants. So every bar of the host
comes from :func:`bar`, which draws it only when stderr is a terminal, and lines a
command prints while a bar may be drawn go through :func:`write`. Without a terminal
the commands' own lines (one per epoch, the results) are all that is printed.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether bars are drawn: stderr (where tqdm draws) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(show: bool = True, **kw) -> tqdm:
    """A tqdm bar (``kw`` as for tqdm), inert unless ``show`` and :func:`on_terminal`.

    An inert bar takes the same calls (``update``, ``set_postfix``, ``close``, ``with``)
    and prints nothing.
    """
    return tqdm(disable=not (show and on_terminal()), **kw)


def write(line: str) -> None:
    """Print ``line`` on stdout without breaking a bar drawn on stderr."""
    tqdm.write(line, file=sys.stdout)
