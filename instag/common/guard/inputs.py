"""The one rule for the files instag reads that a user names: documents (instag's outputs read
back), label CSVs, thresholds files, lists of paths, settings.json, and paths on stdin.

An input is a regular file (a symlink to one is fine): never a FIFO, a device or a folder,
which would block a read or never end it (`/dev/zero`). It is opened without blocking and
checked on the open descriptor, so nothing swapped in after a check is read. Each kind has a
cap (`Limit`): files read whole have a size cap; documents are any size (a million files'
tags.parquet or tags.csv is legitimately gigabytes) but are read as a stream of lines, each
line (one record) capped. Standard input has the same caps as a path list. Every violation is
one InstagError naming the option and the file.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from instag.common.errors import InstagError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 1 * MiB
BOM = b"\xef\xbb\xbf"  # as Excel writes UTF-8


@dataclass(frozen=True)
class Limit:
    """What a kind of input may be: at most `max_bytes` in all (None: any size, as a stream)
    and lines (records) of at most `max_line` bytes."""

    what: str
    max_bytes: int | None
    max_line: int


# a record of a document: a JSON line with a 12-hour file's --timeline is ~16 MB
DOCUMENT = Limit("an instag output", None, 64 * MiB)
LABELS = Limit("a labels CSV", 64 * MiB, 1 * MiB)
THRESHOLDS = Limit("a thresholds file", 1 * MiB, 64 * KiB)
SETTINGS = Limit("settings.json", 1 * MiB, 1 * MiB)
# a text or Parquet list of paths, or paths on stdin: ~10 million paths; a path is < 4 KiB
PATH_LIST = Limit("a list of paths", 1 * GiB, 64 * KiB)


def _where(path: Path | str, option: str) -> str:
    return f"{option} {path}" if option else str(path)


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB" if n >= MiB else \
        f"{n / KiB:g} KiB"


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or
            stat.S_ISBLK(mode) else "not a regular file")


def check_regular(st: os.stat_result, path: Path | str, option: str, limit: Limit) -> None:
    """`st` is a regular file within `limit`'s size, or an InstagError naming it."""
    where = _where(path, option)
    if not stat.S_ISREG(st.st_mode):
        raise InstagError(f"{where}: {_kind(st.st_mode)}, not a regular file",
                          f"give {limit.what} as a regular file (a FIFO, a device or a "
                          "folder is never read)")
    if limit.max_bytes is not None and st.st_size > limit.max_bytes:
        raise too_big(path, option, limit)


def too_big(path: Path | str, option: str, limit: Limit) -> InstagError:
    size = _size(limit.max_bytes or 0)
    return InstagError(f"{_where(path, option)}: larger than {size}, the most {limit.what} "
                       "may hold", f"is it {limit.what}? give one of at most {size}")


def regular_file(path: Path | str, option: str, limit: Limit) -> Path:
    """`path`, once it is known to be a regular file within `limit` (for files that a library
    opens itself: Parquet)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise _unreadable(path, option, e) from None
    check_regular(st, path, option, limit)
    return Path(path)


def _unreadable(path: Path | str, option: str, e: OSError) -> InstagError:
    if isinstance(e, FileNotFoundError):
        return InstagError(f"{_where(path, option)}: no such file", "name a file that exists")
    return InstagError(f"{_where(path, option)}: cannot read it ({e.strerror or e})",
                       "check that it is readable")


def open_input(path: Path | str, option: str, limit: Limit) -> BinaryIO:
    """`path` opened for reading, checked on its descriptor: opening never blocks (a FIFO's
    open waits for a writer), and what is read is what was checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _unreadable(path, option, e) from None
    try:
        check_regular(os.fstat(fd), path, option, limit)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes(path: Path | str, option: str, limit: Limit) -> bytes:
    """The whole file, of at most `limit.max_bytes` (a file that grows past it while read
    is refused too)."""
    cap = limit.max_bytes if limit.max_bytes is not None else limit.max_line
    with open_input(path, option, limit) as f:
        try:
            data = f.read(cap + 1)
        except OSError as e:
            raise _unreadable(path, option, e) from None
    if len(data) > cap:
        raise too_big(path, option, limit)
    return data


def read_text(path: Path | str, option: str, limit: Limit) -> str:
    """The whole file as UTF-8 text (a leading BOM dropped)."""
    data = read_bytes(path, option, limit)
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InstagError(f"{_where(path, option)}: not UTF-8 text (byte {e.start})",
                          f"save {limit.what} as UTF-8") from None


def byte_lines(stream: BinaryIO, where: str, limit: Limit, keepends: bool = False
               ) -> Iterator[bytes]:
    """A stream's lines, split on b"\\n" only, each of at most `limit.max_line` bytes and
    at most `limit.max_bytes` in all: read a chunk at a time (memory: one line and a chunk)."""
    total, rest, n = 0, b"", 1
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if limit.max_bytes is not None and total > limit.max_bytes:
            raise InstagError(f"{where}: more than {_size(limit.max_bytes)}, the most "
                              f"{limit.what} may hold", "give it in smaller parts")
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line + b"\n" if keepends else line
        n += len(lines)
        if len(rest) > limit.max_line:
            raise InstagError(f"{where}, line {n}: longer than {_size(limit.max_line)}, the "
                              f"longest line {limit.what} may have", f"is this {limit.what}?")
    if rest:
        yield rest


def text_lines(path: Path | str, option: str, limit: Limit, keepends: bool = False
               ) -> Iterator[str]:
    """A file's lines as UTF-8 text, split on "\\n" only: names may hold U+2028, U+0085 and
    the other characters that str.splitlines() takes for line ends."""
    where = _where(path, option)
    with open_input(path, option, limit) as f:
        for n, line in enumerate(byte_lines(f, where, limit, keepends), start=1):
            try:
                yield (line.removeprefix(BOM) if n == 1 else line).decode("utf-8")
            except UnicodeDecodeError as e:
                raise InstagError(f"{where}, line {n}: not UTF-8 text (byte {e.start})",
                                  f"save {limit.what} as UTF-8") from None


def stdin_lines(stream: BinaryIO, option: str) -> Iterator[bytes]:
    """Paths on standard input, one a line (bytes kept as they are), with a path list's caps."""
    yield from byte_lines(stream, f"{option} (standard input)", PATH_LIST)
