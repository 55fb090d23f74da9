"""Memory flat in the number of files: what a run holds does not grow with the library
(`python bench/scale.py` measures every stage at a million files; these pin the mechanisms)."""

import numpy as np
import pytest

import instag
from instag.engines.local import run
from instag.engines.local.cache import Cache
from instag.features.embed import Embedder
from instag.tagging import scoring
from instag.tagging.identity import FileKey


@pytest.fixture
def cached_library(tmp_path, standin_vggish, standin_pca):
    """600 files whose features the cache already holds (empty files: nothing is decoded)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    opts = instag.TagOptions(vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "c.sqlite")
    identity = Embedder(opts.vggish, opts.pca).identity
    with Cache(opts.cache_path()) as cache:
        for i in range(600):
            (lib / f"{i:03d}.wav").touch()
            cache.put_features(FileKey.of(lib / f"{i:03d}.wav"), identity, "ok", duration=1.92,
                               feats=np.zeros((2, 128), np.uint8))
    return lib, opts


@pytest.mark.parametrize("scored", [False, True])
def test_a_run_served_from_the_cache_hands_out_results_as_it_goes(
        cached_library, scoring_model, monkeypatch, scored):
    """The first result comes out before the whole library is looked up: finished results
    waiting for the caller are bounded like those waiting for an earlier file."""
    lib, opts = cached_library
    looked_up = []
    get = Cache.get_features
    monkeypatch.setattr(Cache, "get_features",
                        lambda self, key, v: looked_up.append(key) or get(self, key, v))
    results = iter(instag.tag([lib], instag.TagOptions(**{**vars(opts), "model": scoring_model}))
                   if scored else instag.embed([lib], opts))
    first = next(results)
    assert first.ok and first.path.name == "000.wav"
    assert len(looked_up) <= run.MAX_WAITING_RESULTS + scoring.SCORE_BATCH_FILES
    assert sum(1 for _ in results) == 599
