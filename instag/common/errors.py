"""One exception type for every expected failure, so the CLI can print it without a traceback."""

from __future__ import annotations


class InstagError(Exception):
    """An expected failure: says what went wrong (naming the file) and how to fix it."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"
