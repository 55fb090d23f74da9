"""What a person reads: progress that counts what is done, the interrupt line, and the other
lines and files a user reads (issue: what a user sees)."""

import os
from pathlib import Path

import soundfile as sf
from builders import SR, music

import instag
from instag.tagging.job import Summary


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
    s = Summary(total=10, done=3, scoring=1, embedded_files=4, embedded_files_s=400.0,
                embedded_s=450.0)  # 100 s per file; 50 s of the fifth file embedded already
    assert s.eta(elapsed=45.0) == 55.0  # (6 files * 100 s - 50 s) at 10 s of audio per second
    assert Summary(total=10, embedded_files=2, embedded_files_s=200.0,
                   embedded_s=200.0).eta(elapsed=20.0) is None  # too few files to tell


def test_the_log_line_says_the_time_left(capsys):
    from instag.cli.progress import LogReporter

    reporter = LogReporter(quiet=False)
    reporter.clock = lambda: 45.0
    reporter.start = reporter.last = 0.0
    reporter.err.width = 200
    reporter.embedded(Summary(total=10, done=3, scoring=1, embedded_files=4,
                              embedded_files_s=400.0, embedded_s=450.0))
    assert capsys.readouterr().err == (
        "4/10 files done, 0.12 h of audio embedded so far, about 0:00:55 left\n")


def test_ctrl_c_before_the_first_scoring_batch_counts_the_features_in_the_cache(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging.job import Scoring

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        sf.write(lib / f"{i}.wav", music(3, i), SR)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C as the first batch is scored

    with monkeypatch.context() as m:
        m.setattr(Scoring, "score_many", interrupted)
        stopped = run_tag(lib, "--out", tmp_path / "t.csv")
    assert stopped.exit_code == 130
    assert stopped.output.splitlines()[-1] == (
        "interrupted: the cache holds 3 of 3 files (0 scored), where the next run starts; "
        "no output written")
    again = run_tag(lib, "--out", tmp_path / "t.csv")
    assert "(3 from the cache)" in again.output


def test_a_failure_remembered_from_an_earlier_run_does_not_fail_a_nightly_run(run_tag, tmp_path):
    import numpy as np

    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), SR)
    first = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert first.exit_code == 1  # computed in this run: news
    again = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert again.exit_code == 0, again.output
    assert "failed: 1 empty (1 known from an earlier run)" in again.output
    assert "empty" in (tmp_path / "t.csv").read_text()  # still listed in the output
    assert run_tag(tmp_path, "--out", tmp_path / "t.csv", "--strict").exit_code == 1


def test_a_retryable_failure_fails_every_run(run_tag, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("ffprobe", "echo 44100"), ("ffmpeg", "exec sleep 60")):  # a hung mount
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "a.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    for _ in range(2):  # a timeout is never remembered: each run computes it, and says so
        result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--file-timeout", "1")
        assert result.exit_code == 1 and "failed: 1 timeout." in result.output, result.output


def test_an_unreadable_folder_gets_a_line_of_its_own(run_tag, tmp_path, monkeypatch):
    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    (tmp_path / "shut").mkdir()
    real = os.scandir

    def scandir(folder):
        if Path(folder).name == "shut":
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert f"unreadable: {tmp_path / 'shut'}: " in result.output
