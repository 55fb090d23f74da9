"""An identity changes when what it names changes: new VGGish weights under the same name mean
new features, a new model_id, and no resumed rows."""

import shutil

import pytest
import soundfile as sf
from builders import SR, music

import instag
from instag.engines.local.pool import DecodePool


@pytest.fixture
def own_vggish(standin_vggish, tmp_path):
    """A copy of the stand-in that the test may change in place."""
    return shutil.copytree(standin_vggish, tmp_path / "vggish")


def new_weights_in_place(saved, tmp_path):
    """The same SavedModel folder, its variables replaced by another model's."""
    from standins import build_standin_vggish

    other = build_standin_vggish(tmp_path / "other", "tiny", seed=7)
    shutil.rmtree(saved / "variables")
    shutil.copytree(other / "variables", saved / "variables")


def submitted(monkeypatch) -> list:
    calls = []
    submit = DecodePool.submit
    monkeypatch.setattr(DecodePool, "submit",
                        lambda self, i, p: (calls.append(p), submit(self, i, p))[1])
    return calls


@pytest.mark.tensorflow
def test_new_vggish_weights_under_the_same_name_recompute_the_features(
        own_vggish, scoring_model, standin_pca, tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    opts = instag.TagOptions(model=scoring_model, vggish=str(own_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=1)
    (first,) = instag.tag([tmp_path / "a.wav"], opts)
    new_weights_in_place(own_vggish, tmp_path)
    calls = submitted(monkeypatch)
    (second,) = instag.tag([tmp_path / "a.wav"], opts)
    assert calls == [tmp_path / "a.wav"]  # decoded and embedded again, not from the cache
    assert second.model_id != first.model_id
    assert (second.features.values != first.features.values).any()


def test_a_ray_resume_carries_nothing_over_new_vggish_weights(
        own_vggish, scoring_model, standin_pca, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    import ray

    from instag.outputs.writers import Format, result_writer

    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", music(3, i), SR)
    opts = instag.TagOptions(model=scoring_model, vggish=str(own_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        out = tmp_path / "t.parquet"
        with result_writer(out, Format.PARQUET) as write:
            for r in instag.tag_on_ray([tmp_path], opts):
                write(r)
        again = instag.tag_on_ray([tmp_path], opts, previous=out)
        assert len(list(again)) == 2 and again.counts.from_cache == 2
        new_weights_in_place(own_vggish, tmp_path)
        after = instag.tag_on_ray([tmp_path], opts, previous=out)
        assert len(list(after)) == 2 and after.counts.from_cache == 0
    finally:
        ray.shutdown()


def test_an_upgrade_that_changes_the_feature_code_retries_cached_failures(
        scoring_model, standin_vggish, standin_pca, tmp_path, monkeypatch):
    from instag.features import embed

    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + bytes(4000))
    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=1)
    list(instag.tag([tmp_path / "corrupt.flac"], opts))  # `error`: remembered
    calls = submitted(monkeypatch)
    list(instag.tag([tmp_path / "corrupt.flac"], opts))
    assert calls == []  # the cache knew it
    monkeypatch.setattr(embed, "FEATURES_VERSION", embed.FEATURES_VERSION + "-next")
    (result,) = instag.tag([tmp_path / "corrupt.flac"], opts)
    assert calls == [tmp_path / "corrupt.flac"] and result.status == "error"
