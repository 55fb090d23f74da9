"""Every expected failure is an `InstagError`: it says what went wrong (naming the file) and how
to fix it, so the CLI prints it as one line without a traceback (exit 2). Its kinds let a
caller tell them apart (the beets plugin retries a busy cache at the next import, but tells the
user to run `instag setup` when a model is missing)."""

from __future__ import annotations


class InstagError(Exception):
    """An expected failure: says what went wrong (naming the file) and how to fix it."""

    exit_code = 2  # the CLI's: usage, setup or data error, nothing written

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class UsageError(InstagError):
    """An option or argument that cannot work: the call itself must change."""


class SetupError(InstagError):
    """Something instag needs is not installed or provisioned: a model, VGGish, an extra."""


class BusyError(InstagError):
    """Another run holds what this one needs (the cache's lock): try again later."""


class DataError(InstagError):
    """A file instag was handed is not what it must be: a malformed document, a label file,
    a cache of another application."""
