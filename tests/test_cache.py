import numpy as np
import pytest

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


def test_scores_are_kept_per_model_and_bag_setting(cache):
    bag, rows = np.ones((1, 3), np.float32), np.full((4, 3), 0.25, np.float32)
    cache.put_scores(key(), "v", "model-a", "full/", bag, rows, rows)
    assert cache.get_scores(key(), "v", "model-b", "full/") is None
    assert cache.get_scores(key(), "v", "model-a", "10/10") is None
    np.testing.assert_array_equal(cache.get_scores(key(), "v", "model-a", "full/")[2], rows)


def test_scores_keep_only_the_latest_two_settings_and_the_file_as_it_is(cache):
    bag, rows = np.ones((1, 3), np.float32), np.full((4, 3), 0.25, np.float32)
    for model in ("model-a", "model-b", "model-c"):
        cache.put_scores(key(), "v", model, "full/", bag, rows, rows)
    assert cache.get_scores(key(), "v", "model-a", "full/") is None  # the oldest, pruned
    assert cache.get_scores(key(), "v", "model-b", "full/") is not None
    cache.put_scores(key(mtime=2), "v", "model-c", "full/", bag, rows, rows)  # the file changed
    (count,) = cache.db.execute("SELECT COUNT(*) FROM scores").fetchone()
    assert count == 1


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
