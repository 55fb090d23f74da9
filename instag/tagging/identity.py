"""What a result is of: a file as it was read (its key) and the models and settings that made
the result (its identity). Both engines and every output use these, so one file gets one answer
and an answer names exactly what made it."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np


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


STAT_THREADS = 16  # files looked at at once: on a network disk a stat is a round trip
STAT_CHUNK = 1024  # files a thread looks at per task (a task per file costs more than a stat)


def sizes_and_mtimes(paths: Iterable[Path | bytes]) -> np.ndarray:
    """[n, 2] int64: each file's (size, mtime_ns) now, (-1, -1) for one gone or unreadable;
    looked at by a pool of threads, in order."""
    found: list[np.ndarray] = []
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        ahead: deque = deque()  # chunks submitted, a few per thread: not the whole list
        for chunk in _chunks(paths):
            ahead.append(pool.submit(_stat_all, chunk))
            if len(ahead) > 2 * STAT_THREADS:
                found.append(np.array(ahead.popleft().result(), np.int64).reshape(-1, 2))
        found += [np.array(f.result(), np.int64).reshape(-1, 2) for f in ahead]
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def _chunks(paths: Iterable[Path | bytes]) -> Iterator[list[Path | bytes]]:
    it = iter(paths)
    while chunk := list(islice(it, STAT_CHUNK)):
        yield chunk


def _stat_all(paths: list[Path | bytes]) -> list[tuple[int, int]]:
    found = []
    for path in paths:
        try:
            st = os.stat(path)
            found.append((st.st_size, st.st_mtime_ns))
        except OSError:
            found.append((-1, -1))
    return found
