"""A run's counts: a file counts once its features are committed, and the time left comes from
the audio embedded per second."""


import pytest
import soundfile as sf
from builders import SR, music

import instag
from instag.tagging.counts import RunCounts


def options(scoring_model, standin_vggish, standin_pca, tmp_path):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=2)


class Recorder(instag.Reporter):
    """Records what a run told it: the progress count at each step, and when files finished."""

    def __init__(self):
        self.told = []

    def embedded(self, summary):
        self.told.append(("embedded", summary.progressed, summary.done))

    def file_done(self, result, summary):
        self.told.append(("done", summary.progressed, summary.done))


@pytest.mark.slow
def test_a_file_counts_when_its_features_are_committed_not_when_its_batch_is_scored(
        tmp_path, scoring_model, standin_vggish, standin_pca):
    for i in range(4):  # 40 s each: a VGGish call (64 windows) for each file
        sf.write(tmp_path / f"{i}.wav", music(40, i), SR)
    recorder = Recorder()
    opts = options(scoring_model, standin_vggish, standin_pca, tmp_path)
    results = list(instag.tag([tmp_path], opts, recorder))
    assert [r.status for r in results] == [instag.Status.OK] * 4
    first_done = next(i for i, (what, *_) in enumerate(recorder.told) if what == "done")
    # all four are counted before their one scoring batch gives the first result
    assert recorder.told[first_done - 1] == ("embedded", 4, 0)
    counted = [n for what, n, _ in recorder.told[:first_done]]
    assert counted == sorted(counted) and counted[0] < 4


def test_the_time_left_comes_from_the_audio_embedded_per_second():
    s = RunCounts(total=10, done=3, awaiting_scores=1, embedded_files=4, embedded_files_s=400.0,
                embedded_s=450.0)  # 100 s per file; 50 s of the fifth file embedded already
    assert s.eta(elapsed=45.0) == 55.0  # (6 files * 100 s - 50 s) at 10 s of audio per second
    assert RunCounts(total=10, embedded_files=2, embedded_files_s=200.0,
                   embedded_s=200.0).eta(elapsed=20.0) is None  # too few files to tell


def test_the_log_line_says_the_time_left(capsys):
    from instag.cli.progress import LogReporter

    reporter = LogReporter(quiet=False)
    reporter.clock = lambda: 45.0
    reporter.start = reporter.last = 0.0
    reporter.err.width = 200
    reporter.embedded(RunCounts(total=10, done=3, awaiting_scores=1, embedded_files=4,
                              embedded_files_s=400.0, embedded_s=450.0))
    assert capsys.readouterr().err == (
        "4/10 files done, 0.12 h of audio embedded so far, about 0:00:55 left\n")
