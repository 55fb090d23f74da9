"""What a result is of: a file as it was read (its key) and the models and settings that made
the result (its identity). Both engines and every output use these, so one file gets one answer
and an answer names exactly what made it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileKey:
    path: bytes  # resolved path as bytes: any file name survives
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        """Raises OSError when the file is gone or cannot be looked at."""
        st = os.stat(path)
        return cls(os.fsencode(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def result_identity(*parts: str) -> str:
    """A short digest of everything a result depends on besides the file itself."""
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
