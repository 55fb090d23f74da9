"""Memory flat in the number of files: what a run holds does not grow with the library
(`python bench/scale.py` measures every stage at a million files; these pin the mechanisms)."""


import numpy as np
import pytest
import soundfile as sf
from builders import SR, music

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


@pytest.mark.slow
def test_a_run_forgets_each_file_once_its_result_is_out(run_tag, tmp_path, monkeypatch):
    from instag.engines.local import run
    from instag.tagging import scoring

    for i in range(60):
        sf.write(tmp_path / f"{i:02d}.wav", music(1, i), SR)
    run_tag(tmp_path, "--out", tmp_path / "a.csv")  # then all 60 come from the cache
    held = []
    finish = run._Run.finish

    def watched(self, task, result, from_cache=False):
        finish(self, task, result, from_cache)
        held.append(len(self.decoding) + len(self.batch.waiting))  # the files it still knows

    monkeypatch.setattr(run._Run, "finish", watched)
    assert run_tag(tmp_path, "--out", tmp_path / "b.csv").exit_code == 0
    assert len(held) == 60 and max(held) <= scoring.SCORE_BATCH_FILES  # not one per file
