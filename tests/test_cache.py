import numpy as np
import pytest

from instag.common.errors import InstagError
from instag.tagging.cache import Cache, FileKey


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


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "c.sqlite").write_text("not sqlite " * 100)
    with pytest.raises(InstagError, match="not a usable cache"):
        Cache(tmp_path / "c.sqlite")
