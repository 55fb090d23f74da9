"""Which file the tagging cache may be: a SQLite database instag made, and nothing else.

instag marks its databases with SQLite's ``application_id`` (``iTAG``). A ``--cache`` naming
anything else is refused before anything is written into it or created beside it (the run
lock included): another application's database, a database of other tables, a file that is not
SQLite, a device, a FIFO, a folder. Caches made before the mark (exactly instag's tables) are
adopted and marked. A database is moved aside only when SQLite itself reports it corrupt (its
error code; ``PRAGMA quick_check`` on Python 3.10, whose errors carry none) and it bears the
mark: a programming error is never taken for damage, and nobody else's file is ever moved.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import stat
import time
from pathlib import Path

from instag.common.errors import InstagError

APPLICATION_ID = int.from_bytes(b"iTAG", "big")
_FEATURES = {"path", "vggish", "size", "mtime_ns", "status", "reason", "duration", "n", "feats"}
# instag's tables and their columns, as every version made them (`used`: since `prune`;
# `scores`: kept before 2026-12, dropped at opening)
TABLES = {
    "features": ({*_FEATURES, "used"}, _FEATURES),
    "rewrites": ({"path", "from_size", "from_mtime_ns", "to_size", "to_mtime_ns"},),
    "scores": ({"path", "vggish", "model", "bags", "size", "mtime_ns", "data"},),
}
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26  # primary result codes: SQLite's own verdict
DAMAGED = ".damaged-"  # NAME.damaged-TIME: a database moved aside


def not_ours(path: Path, why: str) -> InstagError:
    return InstagError(f"{path}: not an instag cache ({why}); left untouched",
                       "name another --cache (a new path, or a cache instag made)")


def check_path(path: Path) -> None:
    """A cache is a regular file or a new path: a device, FIFO or folder is refused before
    anything is made beside it (``/dev/null.lock``)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise InstagError(f"{path}: cannot use the cache ({e.strerror or e})",
                          "name another --cache") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise InstagError(f"{path}: the cache must be a regular file or a new path, not {kind}",
                          "name another --cache (a file path)")


def header(path: Path) -> bytes:
    """The file's first 100 bytes (SQLite's header): empty for a new or empty file."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except (FileNotFoundError, NotADirectoryError):
        return b""
    except OSError as e:
        raise InstagError(f"{path}: cannot use the cache ({e.strerror or e})",
                          "name another --cache") from None


def marked(head: bytes) -> bool:
    return int.from_bytes(head[68:72], "big") == APPLICATION_ID


def refuse_foreign(path: Path) -> None:
    """Refuse a path that is not instag's cache, reading it only (SQLite's ``immutable``: no
    lock, no WAL or shared-memory file made beside it). A database SQLite cannot read is let
    through when it bears instag's mark (opened under the lock, it is moved aside)."""
    check_path(path)
    head = header(path)
    if not head or marked(head):
        return
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise not_ours(path, "not a SQLite database")
    uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            why = refusal(db)
    except sqlite3.OperationalError:
        return  # unreadable for now (permissions): opening it says why
    except sqlite3.DatabaseError as e:
        why = f"damaged ({e}), and not marked as instag's"
    if why:
        raise not_ours(path, why)


def refusal(db: sqlite3.Connection) -> str | None:
    """Why the database is not instag's, or None: marked as instag's, empty, or holding
    exactly instag's tables (a cache made before the mark)."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    if app:
        return None if app == APPLICATION_ID else f"the database of application {app:#010x}"
    for kind, name in db.execute("SELECT type, name FROM sqlite_master "
                                 "WHERE substr(name, 1, 7) != 'sqlite_'"):
        if kind != "table" or name not in TABLES:
            return f"it holds the {kind} {name!r}, which instag does not make"
        columns = {row[1] for row in db.execute(f'PRAGMA table_info("{name}")')}
        if columns not in TABLES[name]:
            return f"its table {name!r} is not instag's"
    return None


def mark(db: sqlite3.Connection) -> None:
    """Mark the database as instag's (a new one, or one adopted), in the file itself at once:
    a mark left in the WAL would not protect it if the file were damaged before a checkpoint."""
    if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def reported_corrupt(path: Path, e: sqlite3.DatabaseError) -> bool:
    """Whether SQLite itself says the database is damaged. Corruption is always a plain
    DatabaseError; its subclasses (ProgrammingError, IntegrityError, ...) never are."""
    if type(e) is not sqlite3.DatabaseError:
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:  # Python 3.11+
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    except sqlite3.OperationalError:
        return False  # busy or unreadable: nothing says it is damaged
    except sqlite3.DatabaseError:
        return True


def move_aside(path: Path) -> Path:
    """Rename the database and its WAL files to ``NAME.damaged-TIME`` (a stale WAL next to a
    fresh database would be replayed into it)."""
    aside = path.with_name(f"{path.name}{DAMAGED}{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def moved_aside(path: Path) -> list[tuple[Path, int]]:
    """The files moved aside beside the cache, with their sizes: instag uses them no more."""
    found = []
    for p in sorted(path.parent.glob(f"{glob.escape(path.name)}{DAMAGED}*")):
        with contextlib.suppress(OSError):
            found.append((p, p.stat().st_size))
    return found
