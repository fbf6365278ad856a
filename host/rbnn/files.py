"""Files the commands read and write: a model file read with its problems named, output
paths checked before any long work starts, and outputs written atomically (a temp file
beside the target, then a rename), so a failed or interrupted run leaves no partial file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import FormatError, RbnnError


class FileError(RbnnError):
    """A file a command needs that is missing, unreadable, or of the wrong kind."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file; FileError naming the path and what is wrong.

    Devices and pipes are refused rather than read (``/dev/zero`` never ends).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as e:
        raise FileError(f"{path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"{path}: expected a {what}, found {_kind(st.st_mode)}")
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise FileError(f"{path}: cannot read: {e.strerror}") from None


def read_model(path: str | os.PathLike) -> tuple[bytes, object]:
    """(bytes, :class:`rbnn.format.model.Model`) of a .rbnn file; FormatError names the file."""
    from ..format.pack import from_bytes

    raw = read_input(path, ".rbnn model file")
    try:
        return raw, from_bytes(raw)
    except FormatError as e:
        raise e.with_path(str(path)) from None


def check_output(path: str | os.PathLike, option: str) -> Path:
    """Refuse an output path that cannot be written, before the work that fills it.

    Parameters
    ----------
    path : the file to be written
    option : the command-line option that named it, e.g. ``--scores``

    Returns
    -------
    Path
    """
    p = Path(path)
    if p.is_dir():
        raise FileError(f"{option} {path}: expected a file name, found a folder")
    folder = p.parent
    if not folder.is_dir():
        raise FileError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise FileError(f"{option} {path}: not writable")
    return p


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it to ``path``.

    On any failure (Ctrl-C included) the temp file is removed and ``path`` is untouched.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, p)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, permissions, a folder in the way
            raise FileError(f"{path}: cannot write: {e.strerror}") from None
        raise
