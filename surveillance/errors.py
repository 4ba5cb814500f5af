"""One error family: library code raises these; only the CLI turns them into one line and exit 1."""

from __future__ import annotations


class SurveillanceError(Exception):
    """Base of every error the tool reports to a user."""


class InputError(SurveillanceError):
    """A bad input file; the message names the file and, where known, the line."""

    def __init__(self, path: object, problem: str, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class DatabaseError(SurveillanceError):
    """The database cannot be opened, is locked, or is from an incompatible version."""


class StaleDataError(DatabaseError):
    """A derived table is older than the data it came from and this connection cannot rebuild it."""


class NoDataError(SurveillanceError):
    """What was asked for is not in the database (no such case, nothing loaded yet)."""


class LimitError(SurveillanceError):
    """A statement ran past its time or memory limit."""


class UsageError(SurveillanceError):
    """A request that cannot be satisfied as asked (unknown quarter, substance, parameter)."""


class QuarterError(UsageError, ValueError):
    """Not a FAERS quarter such as 2014Q3 (a ValueError too, for callers that catch that)."""
