"""Argument types for the commands: numbers checked where argparse reads them, so a bad
value is a one-line usage error naming the option, before any work starts."""

from __future__ import annotations

import argparse

# termios takes a custom baud rate as a C int (pyserial's set_custom_baud): a larger
# value is an OverflowError deep in pyserial, not a rate any UART runs at.
MAX_BAUD = 2**31 - 1


def _int_in(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, found {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--limit``, ...)."""
    return _int_in(text, 1, None, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--seed``: numpy seeds are never negative)."""
    return _int_in(text, 0, None, "an integer >= 0")


def baud_rate(text: str) -> int:
    """A baud rate 1..MAX_BAUD (``--baud``)."""
    return _int_in(text, 1, MAX_BAUD, f"a baud rate 1..{MAX_BAUD} such as 115200")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (``--wait`` seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value
