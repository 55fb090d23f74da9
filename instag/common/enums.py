"""Choices written as their values: in CSV and JSON, in messages, on the command line."""

from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """A str Enum whose str() is its value (as enum.StrEnum, which Python 3.10 lacks)."""

    def __str__(self) -> str:
        return self.value
