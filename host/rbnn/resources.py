"""Files the package reads that are not its own Python modules: the C core's sources
(``cmodules/rbnn``), the MicroPython firmware (``firmware/``) and the virtual board's
script. ``rbnn/_data`` holds links to the checkout's folders; building a wheel copies
what they point to, so an installed package carries its own copies and a checkout
(editable install) reads the originals: one source either way."""

from __future__ import annotations

from pathlib import Path

_DATA = Path(__file__).resolve().parent / "_data"


def c_sources() -> Path:
    """The folder of the C core and the MicroPython C module."""
    return (_DATA / "cmodules").resolve()


def firmware() -> Path:
    """The folder of the firmware modules put on a board (``rbnn_server.py``, ...)."""
    return (_DATA / "firmware").resolve()


def vboard() -> Path:
    """The MicroPython script of the virtual board's console."""
    return Path(__file__).resolve().parent / "device" / "board" / "vboard.py"


def checkout() -> Path | None:
    """The root of the source checkout the package runs from, or None when installed."""
    root = c_sources().parents[1]
    return root if (root / "Makefile").is_file() and (root / "host" / "pyproject.toml").is_file() else None
