"""Exceptions with messages a user can act on.

Every error matxfer raises for bad input derives from :class:`MatxferError`;
the CLI prints its message as one readable line (plus any listed problems)
and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class MatxferError(Exception):
    """Base class of all user-facing matxfer errors."""


class ConfigError(MatxferError):
    """A configuration value or command-line option is invalid."""


class MissingDependencyError(MatxferError):
    """An optional dependency a feature needs is not installed (the message says how to
    install it)."""


@dataclass(frozen=True)
class Problem:
    """One problem with one input record.

    Args:
        source: File (or other source) the record came from.
        index: 0-based position of the record in that source (``None`` when
            the problem concerns the whole file).
        record_id: The record's id, when it could be read.
        reason: What is wrong, in words a user can act on.
    """

    source: str
    index: int | None
    record_id: str | None
    reason: str

    def __str__(self) -> str:
        where = self.source
        if self.index is not None:
            where += f": record {self.index}"
        if self.record_id is not None:
            where += f" (id {self.record_id})"
        return f"{where}: {self.reason}"


class DataError(MatxferError):
    """A dataset could not be read or holds invalid records.

    Args:
        message: One-line summary.
        problems: One :class:`Problem` per bad record (may be empty when the
            whole file is unreadable and the message says why).
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems or [])
