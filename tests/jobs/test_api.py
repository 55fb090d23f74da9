"""The one-call API: a waveform or features in, a FileResult out, with no pool, cache or lock,
the same answer as a run over the file."""

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music

import instag


@pytest.fixture
def opts(scoring_model, standin_vggish, standin_pca, tmp_path):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=1, threshold=0.5)


def probabilities(result) -> list[dict]:
    return [b.probabilities for b in result.bags]


def test_tag_audio_gives_the_answer_a_run_gives_for_the_same_samples(opts, tmp_path):
    x = music(12, 3)
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    (from_run,) = instag.tag([tmp_path / "a.wav"], opts)
    one = instag.tag_audio(x, SR, opts)
    assert one.status == from_run.status == "ok"
    assert one.instruments() == from_run.instruments()
    for got, want in zip(probabilities(one), probabilities(from_run), strict=True):
        assert max(abs(got[c] - want[c]) for c in want) <= 1e-6
    assert one.segments() == from_run.segments() and one.model_id == from_run.model_id


def test_score_takes_features_as_instag_embed_makes_them(opts, tmp_path):
    sf.write(tmp_path / "a.wav", music(12, 4), SR)
    (from_run,) = instag.tag([tmp_path / "a.wav"], opts)
    result = instag.score(from_run.features.values, opts)
    assert probabilities(result) == probabilities(from_run)


@pytest.mark.parametrize("samples, rate, says", [
    (np.full(SR, np.nan, np.float32), SR, "non-finite samples"),
    (np.zeros(SR, np.float32), 1, "a sample rate of 1 Hz"),
    (np.zeros(100, np.float32), SR, "too short"),
], ids=["nan", "rate", "short"])
def test_tag_audio_checks_a_waveform_as_a_decoded_file(opts, samples, rate, says):
    result = instag.tag_audio(samples, rate, opts)
    assert not result.ok and says in result.reason


@pytest.mark.parametrize("given, says", [
    ({"bag": 0}, "bag=0"), ({"hop": 3}, "hop=3 without bag"),
    ({"jobs": 0}, "jobs=0"), ({"threshold": 1.5}, "threshold: threshold 1.5 is outside [0, 1]"),
    ({"device": "tpu"}, "device='tpu'"), ({"file_timeout": 0}, "file_timeout=0"),
    ({"resampler": "best"}, "resampler='best'"),
])
def test_options_are_checked_where_they_are_made_in_the_callers_words(given, says):
    """From Python an error names the keyword (`bag=0`); the CLI names the flag."""
    with pytest.raises(instag.UsageError) as e:
        instag.TagOptions(**given)
    assert says in e.value.message and "--" not in e.value.message


@pytest.mark.parametrize("flag, says", [(["--bag", "0"], "--bag '0': expected 'full' or a"),
                                        (["--bag", "5", "--hop", "7"], "--hop 7 is larger than "
                                                                       "--bag 5"),
                                        (["--threshold", "1.5"], "--threshold: threshold 1.5")])
def test_the_command_line_names_the_flag(tmp_path, scoring_model, flag, says):
    from typer.testing import CliRunner

    from instag.cli import app

    result = CliRunner().invoke(app, ["tag", str(tmp_path), "--out", str(tmp_path / "t.csv"),
                                      "--model", str(scoring_model), *flag])
    assert result.exit_code == 2 and says in result.output, result.output
    if flag[0] == "--threshold":
        assert "e.g. --threshold 0.5" in result.output  # the fix is about the option


@pytest.mark.parametrize("old, new", [("bag_size", "bag"), ("stall_timeout", "file_timeout"),
                                      ("include_hidden", "hidden")])
def test_an_old_keyword_still_works_for_one_release_with_a_warning(old, new):
    value = {"bag_size": 10, "stall_timeout": 30.0, "include_hidden": True}[old]
    with pytest.warns(DeprecationWarning, match=f"now TagOptions\\({new}="):
        opts = instag.TagOptions(**{old: value})
    assert getattr(opts, new) == value


def test_options_given_as_text_become_their_choices():
    opts = instag.TagOptions(device="cpu", resampler="soxr")
    assert (opts.device, opts.resampler) == (instag.Device.CPU, instag.Resampler.SOXR)


def test_errors_have_kinds_a_caller_can_tell_apart(tmp_path, scoring_model, standin_vggish,
                                                   standin_pca):
    """A busy cache (retry later) is a BusyError, a machine not set up a SetupError; both are
    InstagErrors with a message and a fix."""
    import instag
    from instag.engines.local.cache import lock

    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(instag.SetupError, match="no trained model") as missing:
        instag.Run([tmp_path], instag.TagOptions(cache=tmp_path / "c.sqlite")).run()
    assert missing.value.fix and isinstance(missing.value, instag.InstagError)
    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "c.sqlite")
    with lock(tmp_path / "c.sqlite"), pytest.raises(instag.BusyError, match="is using"):
        instag.Run([tmp_path], opts).run()


def test_the_old_names_of_a_runs_counts_still_work_for_one_release_with_a_warning():
    """`instag.Summary` was a run's counts, a name a reader took for the `--summary` CSV: it is
    `instag.RunCounts` now (and `Run.counts`)."""
    import instag

    with pytest.warns(DeprecationWarning, match="RunCounts"):
        assert instag.Summary is instag.RunCounts
    assert "RunCounts" in dir(instag) and "Summary" not in instag.__all__
