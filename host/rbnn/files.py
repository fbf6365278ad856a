"""Files rbnn reads and writes, for every layer of the host (format, training, CLI).

- :func:`read_model`: the one reader of .rbnn files: a regular file only, its header
  checked against its size before the rest is read, every problem named with the path.
- :func:`check_output`: an output path refused before the work that fills it (a folder,
  a missing folder, no write permission, a block device, or one of the command's inputs).
- :func:`write_atomic`: a temp file beside the target, written, flushed, fsynced and
  renamed over it, so a failed or interrupted run leaves the old file whole and no
  partial one. A pipe or character device (``/dev/null``, ``/dev/stdout``, a FIFO) is
  written into directly: there is nothing to replace, and a rename would replace the
  device itself with a regular file.
- :func:`env_path`: a path from an environment variable, relative ones taken from the
  working directory rbnn started in (a later chdir, or a child's ``cwd=``, must not
  move them).
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import FormatError, RbnnError

try:
    START_DIR = os.getcwd()
except OSError:  # started in a folder that no longer exists: relative paths stay relative
    START_DIR = None


class FileError(RbnnError):
    """A file a command needs that is missing, unreadable, or of the wrong kind."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: str | os.PathLike) -> os.stat_result | None:
    """os.stat following links; None when nothing is there (a dangling link included)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def is_stream(path: str | os.PathLike) -> bool:
    """True when ``path`` is an existing pipe or character device: written into directly,
    with no files beside it (``rbnn train -o /dev/null`` writes no ``/dev/null.curves.png``)."""
    try:
        st = _stat(path)
    except OSError:
        return False
    return st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode))


def env_path(name: str) -> Path | None:
    """The path in environment variable ``name`` (None when unset or empty), made absolute
    against the working directory rbnn started in."""
    value = os.environ.get(name)
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() or START_DIR is None else Path(START_DIR) / p


# --- reading -------------------------------------------------------------------------------
def _open_regular(path: str | os.PathLike, what: str) -> tuple[BinaryIO, int]:
    """(open binary file, size) of a regular file; FileError naming the path otherwise.

    Devices and pipes are refused before they are opened (``/dev/zero`` never ends, a
    FIFO's open waits for a writer).
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
        return open(path, "rb"), st.st_size
    except OSError as e:
        raise FileError(f"{path}: cannot read: {e.strerror}") from None


def _read(f: BinaryIO, n: int, path: str | os.PathLike) -> bytes:
    try:
        return f.read(n)
    except OSError as e:
        raise FileError(f"{path}: cannot read: {e.strerror}") from None


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file; FileError naming the path and what is wrong."""
    f, size = _open_regular(path, what)
    with f:
        return _read(f, -1, path)


def read_model(path: str | os.PathLike) -> tuple[bytes, object]:
    """(bytes, :class:`rbnn.format.model.Model`) of a .rbnn file.

    The header (and layer table) is read and checked against the file's size first
    (:func:`rbnn.format.pack.check_head`: magic, version, fields, ``file_bytes``), so a
    large file that is no model is refused after reading a few bytes, not all of it.
    FormatError and FileError name the path.
    """
    from .format import pack

    f, size = _open_regular(path, ".rbnn model file")
    with f:
        head = _read(f, pack.HEAD_MAX_BYTES, path)
        if len(head) != min(size, pack.HEAD_MAX_BYTES):
            raise FileError(f"{path}: changed while read: {len(head)} bytes, expected {size}")
        try:
            pack.check_head(head, size)
            raw = head + _read(f, size - len(head), path)
            if len(raw) != size:
                raise FileError(f"{path}: changed while read: {len(raw)} bytes, expected {size}")
            return raw, pack.from_bytes(raw)
        except FormatError as e:
            raise e.with_path(str(path)) from None


# --- writing -------------------------------------------------------------------------------
def check_output(path: str | os.PathLike, option: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output path that cannot be written, before the work that fills it.

    Parameters
    ----------
    path : the file to be written
    option : the command-line option that named it, e.g. ``--scores``
    inputs : the files the command reads: an output that is one of them (the same file,
        through a symlink or a hard link too) is refused, as writing it would destroy it

    Returns
    -------
    Path
    """
    p = Path(path)
    try:
        st = _stat(p)
    except OSError as e:
        raise FileError(f"{option} {path}: {e.strerror}") from None
    if st is None:
        folder = p.parent
        if not folder.is_dir():
            raise FileError(f"{option} {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FileError(f"{option} {path}: not writable")
        return p
    if stat.S_ISDIR(st.st_mode):
        raise FileError(f"{option} {path}: expected a file name, found a folder")
    if not (stat.S_ISREG(st.st_mode) or is_stream(p)):
        raise FileError(f"{option} {path}: expected a file, a pipe or a character device, found {_kind(st.st_mode)}")
    if not os.access(p, os.W_OK) or (stat.S_ISREG(st.st_mode) and not os.access(p.resolve().parent, os.W_OK | os.X_OK)):
        raise FileError(f"{option} {path}: not writable")
    for src in inputs:
        try:
            same = os.path.samefile(p, src)
        except OSError:  # an input that is not there is not this file
            same = False
        if same:
            also = "" if os.fspath(src) == os.fspath(path) else f" ({src})"
            raise FileError(f"{option} {path}: is an input of this command{also}; writing it would "
                            "destroy it: choose another file")  # fmt: skip
    return p


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it to ``path``.

    The temp file is flushed and fsynced before the rename (and the folder after it),
    so ``path`` holds the old bytes or the new ones, never a mix, even after a power
    cut. On any failure (Ctrl-C included) the temp file is removed and ``path`` is
    untouched; an OSError becomes a FileError naming ``path``. A symlink is followed:
    the file it points to is replaced, the link stays.

    A ``path`` that is a pipe or a character device is not replaced: what ``write``
    wrote (into memory) is written into it directly (``/dev/null`` stays the machine's
    ``/dev/null``). Anything else
    that is not a regular file (a folder, a block device, a socket) is refused with a
    FileError; :func:`check_output` refuses those before any work.
    """
    try:
        st = _stat(path)
        if st is not None and is_stream(path):
            buf = io.BytesIO()  # writers may seek or tell (np.save does); a pipe cannot
            write(buf)
            with open(path, "wb") as f:
                f.write(buf.getbuffer())
            return
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise FileError(f"{path}: cannot write: expected a file, found {_kind(st.st_mode)}")
        target = Path(os.path.realpath(path))
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a partial file behind
            raise
        _fsync_folder(target.parent)
    except OSError as e:  # disk full, permissions, a folder in the way, a closed pipe
        raise FileError(f"{path}: cannot write: {e.strerror or e}") from None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; file systems that cannot sync a folder are let be."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def npz_arrays(path: str | os.PathLike, error: type[RbnnError], what: str = ".npz file") -> dict:
    """Every array of a ``.npz`` file (no pickles), or ``error`` naming the file: missing,
    or not a readable ``what``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise error(f"{path}: not a readable {what} ({e})") from None
