"""Errors with enough context to act on: file, offset, field, expected vs found."""

from __future__ import annotations

# Codes shared with the C core and docs/FORMAT.md, written once in rbnn.format.constants.
from .format.constants import CODES, NAMES  # noqa: E402, F401 (re-exported)


class RbnnError(Exception):
    """Base class of every error rbnn reports to a user."""


class FormatError(RbnnError, ValueError):
    """A model file that does not follow docs/FORMAT.md."""

    def __init__(
        self,
        code: str,
        field: str,
        offset: int | None = None,
        expected: object = None,
        found: object = None,
        path: str | None = None,
    ):
        self.code = code
        self.field = field
        self.offset = offset
        self.expected = expected
        self.found = found
        self.path = path
        super().__init__(self._text())

    def _text(self) -> str:
        where = self.path or "<buffer>"
        if self.offset is not None:
            where += f" @ offset {self.offset}"
        msg = f"{where}: {self.code}: {self.field}"
        if self.expected is not None or self.found is not None:
            msg += f": expected {self.expected}, found {self.found}"
        return msg

    def with_path(self, path: str) -> FormatError:
        self.path = path
        self.args = (self._text(),)
        return self


class DataError(RbnnError, ValueError):
    """A data set that is missing, corrupt or of the wrong shape."""


class ModelError(RbnnError, ValueError):
    """A model, or a request to run one, that rbnn cannot carry out: layer shapes that do
    not chain or do not fit version 1 of the format, samples of the wrong type or shape
    for the model, an unknown engine."""
