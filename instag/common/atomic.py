"""Write files so that readers see the old content or the new one, never half of either.

A new file gets the mode the user's umask gives; a replaced file keeps its mode (a tags.csv a
media server reads stays readable). A write can be told what it replaces (`Stamp`): just before
the rename it checks that the target is still that file, so an edit saved meanwhile by another
program is never silently discarded.

Temp files and folders are named ``.instag.HOST.PID.XXXXXXXXXXXXXXXX.tmp`` beside the target
(HOST: 8 hex digits of this machine's name; 16 random hex digits): a fixed length, so any name
that exists can be replaced (a long name plus a suffix would pass the file system's 255-byte
limit), and a shape no user file has. The sweep removes only names of that shape, written by
this host, whose process is gone, and older than `SWEEP_AGE_S` (on a network share another
host's temp, or one a live writer is still filling, is never touched). Each folder is swept
once per process, not on every write (a 20,000-file album folder is listed once).
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".instag."
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OURS = re.compile(r"\.instag\.([0-9a-f]{8})\.(\d+)\.[0-9a-f]{16}\.(tmp|old)")
SWEEP_AGE_S = 3600.0  # a dead writer's temp is removed once it is this old
_swept: set[tuple[int, int]] = set()  # folders (device, inode) this process has swept


@dataclass(frozen=True)
class Stamp:
    """What a file is, as far as a stat can tell: the same inode, size, mtime and ctime mean
    nobody has written to it or replaced it since (ctime moves on any change, even one that
    puts the mtime back)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> Stamp:
        return cls.of_stat(os.stat(path))

    @classmethod
    def of_stat(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Changed(Exception):
    """The file a write was to replace is no longer the one it read: nothing was replaced."""


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def mode_for(path: Path) -> int:
    """The permission bits a file written at `path` should have."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~umask()


def is_temp_name(name: str) -> bool:
    """Whether `name` is one only instag's temp files have."""
    return _OURS.fullmatch(name) is not None


def _abandoned(entry: os.DirEntry, now: float) -> bool:
    """A temp of this host whose writer is gone and that is old: provably abandoned."""
    m = _OURS.fullmatch(entry.name)
    if m is None or m.group(1) != HOST or _alive(int(m.group(2))):
        return False
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > SWEEP_AGE_S
    except OSError:
        return False


def sweep(folder: Path) -> None:
    """Remove the temp files and folders that dead instag processes of this host left in
    `folder`, the first time this process writes there."""
    try:
        st = os.stat(folder)
    except OSError:
        return
    if (st.st_dev, st.st_ino) in _swept:
        return
    _swept.add((st.st_dev, st.st_ino))
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not _abandoned(entry, now):
                continue
            if entry.is_dir(follow_symlinks=False):  # an unfinished dataset folder
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def temp_name(folder: Path, kind: str = "tmp") -> Path:
    """A new temp name in `folder` (see the module's docstring)."""
    return Path(folder) / f"{TEMP_PREFIX}{HOST}.{os.getpid()}.{secrets.token_hex(8)}.{kind}"


@contextmanager
def temp_dir(folder: Path) -> Iterator[Path]:
    """A private temp folder in `folder`, removed with what is left in it when the block
    ends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep(folder)
    tmp = temp_name(folder)
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp_or_none(path: Path) -> Stamp | None:
    try:
        return Stamp.of(path)
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Unchecked:
    """`atomic_path`'s default: replace whatever is at the path (instag's own files)."""


UNCHECKED = _Unchecked()


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


@contextmanager
def atomic_path(path: str | os.PathLike, replaces: Stamp | None | _Unchecked = UNCHECKED,
                keep_same: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename. With
    `replaces`, `path` must still be that file (None: still absent) just before the rename,
    else `Changed` is raised and nothing is replaced. With `keep_same`, new bytes equal to
    the old ones leave `path` as it was (its inode and mtime: backups and media servers see
    no change)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    tmp_path = temp_name(path.parent)
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, mode_for(path))
        if replaces is not UNCHECKED and _stamp_or_none(path) != replaces:
            raise Changed(f"{path}: changed while being written")
        if keep_same and _same_bytes(tmp_path, path):
            return
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # make the rename itself durable where possible
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w",
                 replaces: Stamp | None | _Unchecked = UNCHECKED, keep_same: bool = False,
                 **kwargs) -> Iterator[IO]:
    """Open a temp file for writing that replaces `path` only when the block succeeds (and,
    with `replaces`, only while `path` is still what it was; with `keep_same`, only if the
    bytes differ)."""
    with atomic_path(path, replaces, keep_same) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


SUCCESS = "_SUCCESS"  # the marker of a finished dataset directory (Spark's and Hadoop's)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp directory beside `path` to fill; on success it is marked finished
    (`_SUCCESS`) and takes `path`'s place, the previous directory removed only after. Readers
    see the old dataset or the new one: never a half-written one under `path` (between the
    two renames `path` is briefly absent, never incomplete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    tmp = temp_name(path.parent)
    tmp.mkdir(mode=0o700)
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if path.is_dir() else
                 0o777 & ~umask())  # the replaced folder's mode, else the umask's
        yield tmp
        (tmp / SUCCESS).touch()
        old = None
        if path.exists():
            old = temp_name(path.parent, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
