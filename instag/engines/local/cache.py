"""The tagging cache: a SQLite file (stdlib sqlite3, WAL) of each file's features.

A row is valid for one file identity (resolved path, size, mtime_ns) and one features identity
(VGGish's content, PCA checksum, resampler, feature code). A changed file simply misses and is
replaced. Failures that will not change on their own (corrupt, empty, too short) are cached
too, so a re-run does not decode them again; transient ones (missing, permission denied, no
ffmpeg) are not. Only features are kept, 32 kB for a four-minute song: scores are recomputed
from them on every run (`python bench/scale.py` measures it: re-scoring a file costs less
than reading its 41 kB of scores back), so the cache is one row a file and features identity.
Each row remembers the day it was last used, for `prune`.

Every finished file is committed at once: a run killed with -9 loses only the files in flight.
One run at a time per cache: `lock` takes an exclusive flock on ``<cache>.lock``. Which file
may be a cache, and when one is moved aside as damaged: `cachefile`. A connection is used from
whichever thread calls it (beets' threaded importer tags in a thread of its own), one at a time.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import portalocker

from instag.common.errors import BusyError, InstagError
from instag.common.status import Status
from instag.engines.local.cachefile import (
    header,
    mark,
    marked,
    move_aside,
    not_ours,
    refusal,
    refuse_foreign,
    reported_corrupt,
)
from instag.tagging.identity import FileKey, sizes_and_mtimes

SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    path BLOB, vggish TEXT, size INTEGER, mtime_ns INTEGER,
    status TEXT, reason TEXT, duration REAL, n INTEGER, feats BLOB, used INTEGER,
    PRIMARY KEY (path, vggish));
CREATE TABLE IF NOT EXISTS rewrites (
    path BLOB, from_size INTEGER, from_mtime_ns INTEGER, to_size INTEGER, to_mtime_ns INTEGER,
    PRIMARY KEY (path, from_size, from_mtime_ns));
"""
PRUNE_BATCH = 10_000  # entries looked at a time by `prune`
REWRITES_KEPT = 8  # instag's own tag writes remembered per file (a document older than that
#                    many rewrites is refused by write-tags, safely: re-run instag tag)


@dataclass(frozen=True)
class CachedFeatures:
    status: Status
    reason: str
    duration: float | None
    feats: np.ndarray | None


class HeldLock:
    """The run lock as held: `check` says whether it is still the lock others see (someone may
    delete or replace ``<cache>.lock`` mid-run, and a second run would then take a new one)."""

    def __init__(self, path: Path, f) -> None:
        self.path = path
        self.file = f

    def current(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.file.fileno())
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def check(self) -> None:
        if not self.current():
            raise InstagError(f"{self.path}: the cache's lock file vanished or was replaced "
                              "during the run, so another run may be using the cache; stopped, "
                              "the previous output kept", "run again once no other instag run "
                              "uses this cache")


@contextmanager
def lock(cache_path: Path, wait: bool = False) -> Iterator[HeldLock]:
    """Hold the cache's run lock; without `wait`, a second run exits with a clear message.
    The lock belongs to the database itself: the same file reached through a symlink or
    another relative path is the same lock. A sidecar file's flock, not a lock on the database:
    SQLite's own POSIX locks are dropped by any close() of another descriptor on it
    (portalocker: flock on POSIX, LockFileEx on Windows). A path
    that is not instag's cache is refused first, with nothing made beside it."""
    cache_path = Path(cache_path).resolve()
    refuse_foreign(cache_path)
    lock_path = cache_path.with_name(cache_path.name + ".lock")
    for _ in range(10):  # the file may be deleted between our open and our flock
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a+")
        except OSError as e:
            raise _unwritable(cache_path, e) from None
        try:
            portalocker.lock(f, portalocker.LOCK_EX | (0 if wait else portalocker.LOCK_NB))
        except portalocker.AlreadyLocked:
            holder = _holder(f)
            f.close()
            raise BusyError(f"{cache_path}: another `instag tag` run (pid {holder}) is using "
                              "this cache", "wait for it, pass --wait to queue behind it, or "
                              "use another --cache") from None
        held = HeldLock(lock_path, f)
        if held.current():
            break
        f.close()
    else:
        raise InstagError(f"{lock_path}: the lock file keeps vanishing", "check what deletes it")
    with f:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield held
        finally:
            f.truncate(0)
            portalocker.unlock(f)


def _holder(f) -> str:
    """The pid a lock file names (Windows locks it from reading: then just "another")."""
    try:
        f.seek(0)
        return f.read().strip() or "another process"
    except OSError:
        return "another process"


def _unwritable(path: Path, e: Exception) -> InstagError:
    return InstagError(f"{path}: cannot use the cache ({getattr(e, 'strerror', None) or e})",
                       "pass --cache on a writable disk with free space")


def _blob(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Cache:
    """One run's connection. A damaged database (it only ever holds what can be recomputed)
    is moved aside rather than failing every later run: at opening, silently but for
    `moved_aside`; found during a run, with an error that says the next run starts afresh. A
    file that is not instag's is never touched: it may be someone's data."""

    def __init__(self, path: Path, held: HeldLock | None = None) -> None:
        self.path = Path(path)
        self.held = held
        self.moved_aside: Path | None = None
        self._lock = threading.RLock()  # the connection serves any thread, one at a time
        refuse_foreign(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except (OSError, sqlite3.OperationalError) as e:
            raise _unwritable(self.path, e) from None
        except sqlite3.DatabaseError as e:
            self.moved_aside = self._set_aside(e)
            self._open()

    def _open(self) -> None:
        self.db = sqlite3.connect(str(self.path), check_same_thread=False)
        if why := refusal(self.db):  # again, under the lock: what the run will write into
            self.db.close()
            raise not_ours(self.path, why)
        mark(self.db)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(features)")}
        if "used" not in columns:  # a cache of instag 0.x before `prune`: used today
            self.db.execute(f"ALTER TABLE features ADD COLUMN used INTEGER NOT NULL DEFAULT "
                            f"{today()}")
        self.db.execute("DROP TABLE IF EXISTS scores")  # kept by instag before 2026-12
        self.db.commit()
        st = os.stat(self.path)
        self._identity, self._size = (st.st_dev, st.st_ino), st.st_size

    def _commit(self) -> None:
        """Commit, once the lock is still ours and the database still the one opened: deleted,
        replaced or truncated under the run, the cache would silently lose everything."""
        if self.held is not None:
            self.held.check()
        try:
            st = os.stat(self.path)
            gone = None if (st.st_dev, st.st_ino) == self._identity and \
                st.st_size >= self._size else "was replaced or truncated"
        except FileNotFoundError:
            gone = "vanished"
        if gone:
            raise InstagError(f"{self.path}: the cache {gone} during the run; stopped, the "
                              "previous output kept", "run again: a fresh cache is made")
        self.db.commit()
        self._size = os.stat(self.path).st_size

    def _set_aside(self, e: sqlite3.DatabaseError) -> Path:
        """Move the database aside, if SQLite itself reports it corrupt and it is instag's;
        any other error propagates as what it is (a programming error is no damage)."""
        if not reported_corrupt(self.path, e):
            raise e
        with contextlib.suppress(AttributeError, sqlite3.Error):
            self.db.close()
        if not marked(header(self.path)):
            raise not_ours(self.path, f"damaged ({e}), and not marked as instag's") from None
        return move_aside(self.path)

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """Database errors during a run become one clear InstagError; the connection is used
        by one thread at a time."""
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as e:  # full disk, read-only, I/O error
                raise _unwritable(self.path, e) from None
            except sqlite3.DatabaseError as e:
                aside = self._set_aside(e)
                raise InstagError(f"{self.path}: the cache is damaged ({e}); moved it aside "
                                  f"to {aside}", "run again: the next run starts a fresh cache "
                                  "(it only holds what can be recomputed)") from None

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is left (the days entries were used: a run served from the cache
        writes nothing else), unless the database is no longer the one opened."""
        with self._lock:
            with contextlib.suppress(InstagError, sqlite3.Error):
                if self.db.in_transaction:
                    self._commit()
            self.db.close()

    def get_features(self, key: FileKey, vggish: str) -> CachedFeatures | None:
        with self._sql():
            row = self.db.execute(
                "SELECT size, mtime_ns, status, reason, duration, n, feats, used, rowid "
                "FROM features WHERE path=? AND vggish=?", (key.path, vggish)).fetchone()
            if row is None or (row[0], row[1]) != (key.size, key.mtime_ns):
                return None
            if row[7] != (day := today()):  # committed with the next write, or at close
                self.db.execute("UPDATE features SET used=? WHERE rowid=?", (day, row[8]))
        feats = None if row[6] is None else np.frombuffer(row[6], np.uint8).reshape(row[5], 128)
        return CachedFeatures(Status(row[2]), row[3] or "", row[4], feats)

    def put_features(self, key: FileKey, vggish: str, status: Status | str, reason: str = "",
                     duration: float | None = None, feats: np.ndarray | None = None) -> None:
        """Remember a file's features, or a failure that will not change on its own."""
        status = Status(status)
        if status is not Status.OK and not status.permanent:
            return
        with self._sql():
            self.db.execute(
                "INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key.path, vggish, key.size, key.mtime_ns, status.value, reason, duration,
                 0 if feats is None else len(feats),
                 None if feats is None else np.ascontiguousarray(feats, np.uint8).tobytes(),
                 today()))
            self._commit()

    def rekey(self, old: FileKey, new: FileKey) -> None:
        """A file whose tags instag rewrote keeps its features: the audio is the same (only its
        size and mtime changed), so nothing must be decoded again. The rewrite is remembered
        too (`same_audio`), for the documents that name the file as it was."""
        with self._sql():
            self.db.execute("UPDATE features SET size=?, mtime_ns=? WHERE path=? AND size=? "
                            "AND mtime_ns=?", (new.size, new.mtime_ns, old.path, old.size,
                                               old.mtime_ns))
            self.db.execute("INSERT OR REPLACE INTO rewrites VALUES (?,?,?,?,?)",
                            (old.path, old.size, old.mtime_ns, new.size, new.mtime_ns))
            self.db.execute("DELETE FROM rewrites WHERE path=? AND rowid NOT IN (SELECT rowid "
                            "FROM rewrites WHERE path=? ORDER BY rowid DESC LIMIT ?)",
                            (old.path, old.path, REWRITES_KEPT))
            self._commit()

    def same_audio(self, was: FileKey, now: FileKey) -> bool:
        """Whether the file `was` names became `now` through instag's own tag writes only."""
        key = (was.size, was.mtime_ns)
        with self._sql():
            for _ in range(REWRITES_KEPT):
                row = self.db.execute("SELECT to_size, to_mtime_ns FROM rewrites WHERE path=? "
                                      "AND from_size=? AND from_mtime_ns=?",
                                      (was.path, *key)).fetchone()
                if row is None:
                    return False
                key = tuple(row)
                if key == (now.size, now.mtime_ns):
                    return True
        return False

    def stats(self) -> CacheStats:
        """What the cache holds: entries per features identity, with the day each was last
        used, and the database's size on disk."""
        with self._sql():
            rows = self.db.execute(
                "SELECT vggish, COUNT(*), SUM(status='ok'), SUM(LENGTH(feats)), MAX(used) "
                "FROM features GROUP BY vggish ORDER BY MAX(used) DESC").fetchall()
        size = sum(os.stat(f"{self.path}{x}").st_size for x in ("", "-wal")
                   if os.path.exists(f"{self.path}{x}"))
        return CacheStats(self.path, size, [IdentityStats(v, n, ok or 0, feats or 0, used)
                                            for v, n, ok, feats, used in rows])

    def prune(self, unused_days: float) -> tuple[int, int]:
        """Drop the entries not used for `unused_days` and those of files changed or gone
        since (gone from a folder that is still there: a disk that is not mounted keeps its
        entries), then VACUUM (the file shrinks only then). Returns (entries dropped, bytes
        freed)."""
        before = self.stats().size
        cutoff = today() - unused_days
        dropped = 0
        with self._sql():
            dropped += self.db.execute("DELETE FROM features WHERE used < ?",
                                       (cutoff,)).rowcount
            last = 0
            while batch := self.db.execute(
                    "SELECT rowid, path, size, mtime_ns FROM features WHERE rowid > ? "
                    "ORDER BY rowid LIMIT ?", (last, PRUNE_BATCH)).fetchall():
                last = batch[-1][0]
                now = sizes_and_mtimes(path for _, path, _, _ in batch)
                gone = [(rowid,) for (rowid, path, size, mtime), (size_now, mtime_now)
                        in zip(batch, now, strict=True) if (size, mtime) != (size_now, mtime_now)
                        and (size_now >= 0 or os.path.isdir(os.path.dirname(path)))]
                dropped += len(gone)
                self.db.executemany("DELETE FROM features WHERE rowid=?", gone)
            self.db.execute("DELETE FROM rewrites WHERE path NOT IN (SELECT path FROM features)")
            self._commit()
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL holds the copy
        return dropped, max(0, before - self.stats().size)


def today() -> int:
    """Days since 1970 (UTC): how `used` is kept, so that a run writes it once a day at most."""
    return int(time.time() // 86400)


@dataclass(frozen=True)
class IdentityStats:
    vggish: str  # the features identity: VGGish's digest, the PCA's, the resampler, the code
    entries: int
    ok: int  # ... of which features (the rest: failures that stay)
    feature_bytes: int
    last_used: int  # day (`today`)


@dataclass(frozen=True)
class CacheStats:
    path: Path
    size: int  # bytes on disk (database and its WAL)
    identities: list[IdentityStats]
