import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, mounted, music

from instag.common.errors import InstagError
from instag.engines.local.cache import Cache, lock
from instag.tagging.identity import FileKey


@pytest.fixture
def cache(tmp_path):
    c = Cache(tmp_path / "c.sqlite")
    yield c
    c.close()


def key(size=10, mtime=1):
    return FileKey(b"/music/a.flac", size, mtime)


def test_features_round_trip_for_the_same_file_and_vggish(cache):
    feats = np.arange(256, dtype=np.uint8).reshape(2, 128)
    cache.put_features(key(), "vggish-1", "ok", duration=2.0, feats=feats)
    got = cache.get_features(key(), "vggish-1")
    np.testing.assert_array_equal(got.feats, feats)
    assert got.duration == 2.0 and got.status == "ok"


@pytest.mark.parametrize("changed", [key(size=11), key(mtime=2)])
def test_a_changed_file_misses(cache, changed):
    cache.put_features(key(), "v", "ok", duration=1.0, feats=np.zeros((1, 128), np.uint8))
    assert cache.get_features(changed, "v") is None


def test_another_vggish_misses(cache):
    cache.put_features(key(), "v1", "ok", duration=1.0, feats=np.zeros((1, 128), np.uint8))
    assert cache.get_features(key(), "v2") is None


@pytest.mark.parametrize("status", ["error", "empty", "too_short"])
def test_permanent_failures_are_remembered(cache, status):
    cache.put_features(key(), "v", status, "why")
    assert cache.get_features(key(), "v").status == status


@pytest.mark.parametrize("status", ["unreadable", "missing", "unsupported"])
def test_transient_failures_are_not_cached_so_the_next_run_retries(cache, status):
    cache.put_features(key(), "v", status, "why")
    assert cache.get_features(key(), "v") is None


def test_the_cache_keeps_one_row_a_file_and_no_scores(cache):
    """Scores are recomputed from features (cheaper than reading them back: bench/scale.py),
    so a file costs the cache its features alone, whatever models score it."""
    cache.put_features(key(), "v", "ok", duration=2.0, feats=np.zeros((2, 128), np.uint8))
    tables = {name for (name,) in cache.db.execute("SELECT name FROM sqlite_master WHERE "
                                                   "type='table'")}
    assert tables == {"features", "rewrites"}
    assert cache.db.execute("SELECT COUNT(*) FROM features").fetchone() == (1,)


def test_an_older_cache_loses_its_scores_and_keeps_its_features_as_used_today(tmp_path):
    from instag.engines.local.cache import today

    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.executescript("""
        CREATE TABLE features (path BLOB, vggish TEXT, size INTEGER, mtime_ns INTEGER,
            status TEXT, reason TEXT, duration REAL, n INTEGER, feats BLOB,
            PRIMARY KEY (path, vggish));
        CREATE TABLE scores (path BLOB, vggish TEXT, model TEXT, bags TEXT, size INTEGER,
            mtime_ns INTEGER, data BLOB, PRIMARY KEY (path, vggish, model, bags));""")
    old.execute("INSERT INTO features VALUES (?, 'v', 10, 1, 'ok', '', 1.0, 1, ?)",
                (b"/music/a.flac", bytes(128)))
    old.commit()
    old.close()
    with Cache(tmp_path / "old.sqlite") as c:
        assert c.get_features(key(), "v").duration == 1.0
        assert c.stats().identities[0].last_used == today()
        assert not c.db.execute("SELECT name FROM sqlite_master WHERE name='scores'").fetchall()


@pytest.fixture
def on_disk(tmp_path):
    """A cache of three real files: one kept, one changed since, one deleted."""
    files = {}
    for name in ("kept", "changed", "deleted"):
        (tmp_path / name).write_bytes(b"x" * 100)
        files[name] = FileKey.of(tmp_path / name)
    c = Cache(tmp_path / "c.sqlite")
    for k in files.values():
        c.put_features(k, "v", "ok", duration=1.0, feats=np.zeros((1, 128), np.uint8))
    (tmp_path / "changed").write_bytes(b"y" * 50)
    (tmp_path / "deleted").unlink()
    yield c, files
    c.close()


def test_prune_drops_the_entries_of_files_changed_or_gone_and_keeps_the_rest(on_disk):
    c, files = on_disk
    dropped, _ = c.prune(unused_days=30)
    assert dropped == 2
    assert c.get_features(files["kept"], "v") is not None
    paths = {p for (p,) in c.db.execute("SELECT path FROM features")}
    assert paths == {files["kept"].path}


def test_prune_keeps_the_entries_of_a_disk_that_is_not_mounted(cache):
    cache.put_features(FileKey(b"/media/usb-not-mounted/album/a.flac", 10, 1), "v", "ok",
                       duration=1.0, feats=np.zeros((1, 128), np.uint8))
    assert cache.prune(unused_days=30)[0] == 0


def test_prune_drops_entries_unused_for_the_days_given_and_shrinks_the_file(on_disk, tmp_path):
    c, files = on_disk
    c.db.execute("UPDATE features SET feats=?", (bytes(128 * 2000),))  # 256 kB each
    c.db.execute("UPDATE features SET used=used-40 WHERE path=?", (files["kept"].path,))
    c.db.commit()
    size = c.stats().size
    dropped, freed = c.prune(unused_days=30)
    assert dropped == 3 and not c.db.execute("SELECT * FROM features").fetchall()
    assert freed > 700_000 and c.stats().size == size - freed


def test_a_lookup_marks_the_entry_used_today_and_the_mark_survives_the_close(tmp_path):
    from instag.engines.local.cache import today

    with Cache(tmp_path / "c.sqlite") as c:
        c.put_features(key(), "v", "ok", duration=1.0, feats=np.zeros((1, 128), np.uint8))
        c.db.execute("UPDATE features SET used=used-100")
        c.db.commit()
    with Cache(tmp_path / "c.sqlite") as c:
        c.get_features(key(), "v")  # a run served from the cache: nothing else is written
    with Cache(tmp_path / "c.sqlite") as c:
        assert c.stats().identities[0].last_used == today()


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "c.sqlite").write_text("not sqlite " * 100)
    with pytest.raises(InstagError, match="not an instag cache"):
        Cache(tmp_path / "c.sqlite")
    assert (tmp_path / "c.sqlite").read_text() == "not sqlite " * 100


def filled_cache(path, rows=200):
    c = Cache(path)
    for i in range(rows):
        c.put_features(FileKey(f"/music/{i}.flac".encode(), 1, 1), "v", "ok", duration=1.0,
                       feats=np.full((30, 128), i % 256, np.uint8))
    c.close()
    return path


def damage(path, offset, length=4096):
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = b"\xa5" * length
    path.write_bytes(bytes(data))


def test_a_cache_damaged_at_its_start_is_moved_aside_and_a_fresh_one_used(tmp_path):
    path = filled_cache(tmp_path / "c.sqlite")
    damage(path, 100, 3000)  # the schema page, after the SQLite header
    c = Cache(path)
    assert c.moved_aside is not None and c.moved_aside.is_file()
    assert c.get_features(FileKey(b"/music/1.flac", 1, 1), "v") is None  # fresh
    c.close()


def test_damage_found_during_a_run_is_one_clear_error_and_the_next_run_starts_afresh(tmp_path):
    path = filled_cache(tmp_path / "c.sqlite")
    damage(path, 4096 * 20, 4096 * 100)  # rows' pages
    c = Cache(path)
    with pytest.raises(InstagError, match="damaged.*moved it aside"):
        for i in range(200):
            c.get_features(FileKey(f"/music/{i}.flac".encode(), 1, 1), "v")
    assert Cache(path).get_features(FileKey(b"/music/1.flac", 1, 1), "v") is None


def test_the_run_lock_is_the_same_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with lock(tmp_path / "real" / "c.sqlite"), pytest.raises(InstagError, match="another"):
        with lock(tmp_path / "link" / "c.sqlite"):
            pass


def test_instag_cache_shows_entries_size_and_the_features_identities(on_disk, tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    c, _ = on_disk
    c.put_features(key(), "other-vggish", "empty", "no audio")
    c.db.commit()
    shown = CliRunner().invoke(app, ["cache", "--cache", str(tmp_path / "c.sqlite")])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'c.sqlite'}: 4 entries, ")
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == ["other-vggish", "v"]
    assert any("v: 3 files (3 with features, 0 failures that stay)" in ln for ln in lines)


def test_instag_cache_prune_says_what_it_dropped_and_waits_for_no_run(on_disk, tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    db = tmp_path / "c.sqlite"
    pruned = CliRunner().invoke(app, ["cache", "prune", "--cache", str(db)])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith(f"{db}: dropped 2 entries, ")
    with lock(db):  # a run holds the cache: prune is one line, exit 2
        busy = CliRunner().invoke(app, ["cache", "prune", "--cache", str(db)])
    assert busy.exit_code == 2 and "another `instag tag` run" in busy.output


def test_instag_cache_without_a_cache_says_so(tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    result = CliRunner().invoke(app, ["cache", "--cache", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 2 and "no cache here yet" in result.output
    assert not (tmp_path / "none.sqlite").exists()


# -- the cache is instag's, and usable from any thread ---------------------------------------
def one_song(tmp_path):
    import soundfile as sf
    from builders import SR, music

    (tmp_path / "songs").mkdir(exist_ok=True)
    sf.write(tmp_path / "songs" / "a.wav", music(3), SR)
    return tmp_path / "songs"


def sqlite_file(path, *statements, wal=False):
    import sqlite3

    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path


INSTAG_FEATURES = ("CREATE TABLE features (path BLOB, vggish TEXT, size INTEGER, mtime_ns "
                   "INTEGER, status TEXT, reason TEXT, duration REAL, n INTEGER, feats BLOB, "
                   "used INTEGER, PRIMARY KEY (path, vggish))")


@pytest.mark.parametrize("statements, wal", [
    (["PRAGMA application_id=1234", INSTAG_FEATURES], False),  # another application's mark
    (["CREATE TABLE notes (body TEXT)"], True),  # unmarked, another application's tables
    ([INSTAG_FEATURES, "CREATE TABLE notes (body TEXT)"], False),  # ... and instag's
    (["CREATE TABLE features (id INTEGER, name TEXT)"], False),  # a `features` not instag's
], ids=["other-application-id", "other-tables", "instags-and-more", "other-features"])
def test_another_applications_database_is_refused_untouched_with_nothing_beside_it(
        run_tag, tmp_path, statements, wal):
    (tmp_path / "app").mkdir()
    other = sqlite_file(tmp_path / "app" / "other-app.sqlite", *statements, wal=wal)
    before = other.read_bytes()
    result = run_tag(one_song(tmp_path), "--out", tmp_path / "t.csv", "--cache", other)
    assert result.exit_code == 2, result.output
    assert "not an instag cache" in result.output and "Traceback" not in result.output
    assert other.read_bytes() == before  # no table added, no mark, no WAL switch
    assert sorted(p.name for p in other.parent.iterdir()) == ["other-app.sqlite"]  # no .lock


@pytest.mark.parametrize("kind", ["new", "empty", "made before the mark"])
def test_a_new_file_or_a_cache_made_before_the_mark_becomes_a_marked_instag_cache(tmp_path,
                                                                                  kind):
    path = tmp_path / "c.sqlite"
    if kind == "empty":
        path.touch()
    elif kind == "made before the mark":  # today's caches: exactly instag's tables, unmarked
        sqlite_file(path, INSTAG_FEATURES, "INSERT INTO features VALUES "
                    "(X'2f6d757369632f612e666c6163', 'v', 10, 1, 'ok', '', 1.0, 1, "
                    "zeroblob(128), 0)", wal=True)
    with lock(path) as held, Cache(path, held) as c:
        if kind == "made before the mark":
            assert c.get_features(key(), "v").duration == 1.0  # adopted: its entries kept
        c.put_features(key(mtime=2), "v", "ok", duration=1.0, feats=np.zeros((1, 128), np.uint8))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone() == (int.from_bytes(b"iTAG", "big"),)
    assert path.read_bytes()[68:72] == b"iTAG"  # in the file itself, not only in its WAL


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_cache_that_is_not_a_regular_file_is_one_line_and_makes_no_lock_beside_it(
        run_tag, tmp_path, kind):
    import os

    target = {"device": Path("/dev/null"), "fifo": tmp_path / "fifo", "folder": tmp_path / "dir"}[
        kind]
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    lock_before = Path(f"{target}.lock").exists()
    result = run_tag(one_song(tmp_path), "--out", tmp_path / "t.csv", "--cache", target)
    assert result.exit_code == 2, result.output
    assert "must be a regular file or a new path" in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2  # error: ..., fix: ...
    assert Path(f"{target}.lock").exists() == lock_before  # never /dev/null.lock
    assert not (tmp_path / "t.csv").exists()


class Codeless:
    """A connection whose statements fail with a DatabaseError that carries no SQLite error
    code, as every one does on Python 3.10."""

    def __init__(self, db):
        self.db = db

    def execute(self, *args):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.mark.parametrize("damaged", [True, False])
def test_without_an_error_code_sqlites_quick_check_decides_whether_it_is_damaged(tmp_path,
                                                                                  damaged):
    path = filled_cache(tmp_path / "c.sqlite")
    c = Cache(path)
    if damaged:
        damage(path, 4096 * 20, 4096 * 100)
    c.db = Codeless(c.db)
    with pytest.raises(InstagError if damaged else sqlite3.DatabaseError) as raised:
        c.get_features(key(), "v")
    assert bool(list(tmp_path.glob("c.sqlite.damaged-*"))) == damaged, raised.value
    if not damaged:  # what it is: a healthy database, kept with every entry
        with Cache(path) as again:
            assert again.get_features(FileKey(b"/music/1.flac", 1, 1), "v") is not None


def test_a_programming_error_is_what_it_is_and_the_cache_is_never_moved_aside(tmp_path):
    path = filled_cache(tmp_path / "c.sqlite")
    c = Cache(path)
    c.db.close()  # a mistake in instag, not damage in the file
    with pytest.raises(sqlite3.ProgrammingError):
        c.get_features(FileKey(b"/music/1.flac", 1, 1), "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"]
    with Cache(path) as again:
        assert again.get_features(FileKey(b"/music/1.flac", 1, 1), "v") is not None


def test_a_damaged_database_not_marked_as_instags_is_refused_untouched(tmp_path):
    path = sqlite_file(tmp_path / "other.sqlite", "CREATE TABLE notes (body BLOB)",
                       *[f"INSERT INTO notes VALUES (zeroblob({4096 * 3}))" for _ in range(40)])
    damage(path, 100, 3000)  # its schema page
    before = path.read_bytes()
    with pytest.raises(InstagError, match="not an instag cache"):
        Cache(path)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_instag_cache_lists_the_files_moved_aside_with_their_size_and_how_to_remove_them(
        tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    path = filled_cache(tmp_path / "c.sqlite")
    damage(path, 100, 3000)
    Cache(path).close()  # moved aside, a fresh cache made
    (aside,) = tmp_path.glob("c.sqlite.damaged-*")
    shown = CliRunner().invoke(app, ["cache", "--cache", str(path)])
    assert shown.exit_code == 0, shown.output
    assert f"{aside}: {aside.stat().st_size / 1e3:,.0f} kB" in shown.output
    assert f"rm -- {aside}" in shown.output
    path.unlink()  # and when nothing but the moved-aside file is left
    shown = CliRunner().invoke(app, ["cache", "--cache", str(path)])
    assert shown.exit_code == 0 and f"rm -- {aside}" in shown.output, shown.output


def test_a_tag_session_is_opened_used_and_closed_from_different_threads(
        tmp_path, scoring_model, standin_vggish, standin_pca):
    import threading

    import instag

    songs = one_song(tmp_path)
    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "c.sqlite", jobs=1)

    def in_a_thread(work):
        done = []
        thread = threading.Thread(target=lambda: done.append(work()))
        thread.start()
        thread.join()
        assert done, "the thread failed"
        return done[0]

    for run in range(2):  # then served by the cache another thread filled
        session = in_a_thread(lambda: instag.TagSession(opts).__enter__())
        tagging = session.tag([songs])
        results = in_a_thread(lambda tagging=tagging: list(tagging))
        in_a_thread(lambda session=session: session.__exit__(None, None, None))
        assert [r.status for r in results] == ["ok"]
        assert tagging.counts.cached_features == 1 and \
            tagging.counts.embedded_files == (1 - run)
    assert sorted(p.name for p in tmp_path.glob("c.sqlite*")) == ["c.sqlite", "c.sqlite.lock"]


# -- 15. the cache and its lock, vanished under a run ---------------------------------------------
def vanish_after_the_first_commit(monkeypatch, do):
    from instag.engines.local.cache import Cache

    put = Cache.put_features
    calls = []

    def put_then(self, *args, **kwargs):
        put(self, *args, **kwargs)
        if not calls:
            do(self.path)
        calls.append(1)

    monkeypatch.setattr(Cache, "put_features", put_then)


@pytest.mark.parametrize("what", ["lock deleted", "cache deleted", "cache truncated"])
def test_a_cache_or_lock_that_vanishes_mid_run_stops_it_with_one_line(
        run_tag, tmp_path, monkeypatch, what):
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", music(2, i), SR)
    (tmp_path / "t.csv").write_text("path,status,instrument\nprevious,ok,\n")
    action = {"lock deleted": lambda db: os.unlink(f"{db}.lock"),
              "cache deleted": lambda db: os.unlink(db),
              "cache truncated": lambda db: os.truncate(db, 0)}[what]
    vanish_after_the_first_commit(monkeypatch, action)
    result = run_tag(*(tmp_path / f"{i}.wav" for i in range(3)), "--out", tmp_path / "t.csv",
                     "--jobs", "1")
    assert result.exit_code == 2, result.output
    word = "lock file vanished" if what == "lock deleted" else (
        "vanished" if what == "cache deleted" else "replaced or truncated")
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert word in error and "Traceback" not in result.output
    assert (tmp_path / "t.csv").read_text() == "path,status,instrument\nprevious,ok,\n"


# -- 6c. faults that must be one line and exit 2 -------------------------------------------------
@pytest.mark.slow
def test_a_cache_damaged_during_a_run_is_one_line_and_the_next_run_recovers(
        run_tag, library, tmp_path):
    path = filled_cache(tmp_path / "cache.sqlite")
    damage(path, 4096, path.stat().st_size - 4096)  # every page but the schema's
    first = run_tag(library / "other", "--out", tmp_path / "t.csv")
    assert first.exit_code == 2, first.output
    assert "damaged" in first.output and "Traceback" not in first.output
    assert run_tag(library / "other", "--out", tmp_path / "t.csv").exit_code == 0


def test_a_read_only_cache_folder_is_one_line_and_exit_2(run_tag, library, tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--cache",
                         ro / "cache.sqlite")
    assert result.exit_code == 2, result.output
    assert "cannot use the cache" in result.output and "Traceback" not in result.output
