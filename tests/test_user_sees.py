"""What a person reads: progress that counts what is done, the interrupt line, and the other
lines and files a user reads (issue: what a user sees)."""

import os
import sys
from pathlib import Path

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


def test_ctrl_c_before_the_first_scoring_batch_counts_the_features_in_the_cache(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging.scoring import Scoring

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
        "interrupted: the cache holds 3 of 3 files, where the next run starts; "
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


# -- every output feeds every reader -------------------------------------------------------------
def tagged_in_every_format(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", music(25, 1), SR)
    sf.write(lib / "b.wav", music(12, 2), SR)
    (lib / "bad.wav").write_text("not audio")
    outs = {fmt: tmp_path / f"t.{fmt}" for fmt in ("json", "jsonl", "csv", "parquet")}
    for out in outs.values():
        run_tag(lib, "--out", out, "--bag", "10", "--threshold", "0.3")
    return lib, outs


def comparable(doc):
    """What every format holds of a file: probabilities to CSV's 4 decimals, no timeline."""
    doc = {**doc, "bags": [{**{k: v for k, v in b.items() if k != "timeline"},
                            "probabilities": {c: round(p, 4)
                                              for c, p in b["probabilities"].items()}}
                           for b in doc.get("bags", [])]}
    return {k: v for k, v in doc.items() if v not in ("", None, [])}


def test_every_output_reads_back_as_the_same_documents(run_tag, tmp_path):
    from instag.outputs.readback import read_documents

    _, outs = tagged_in_every_format(run_tag, tmp_path)
    docs = {fmt: [comparable(d) for d in read_documents(out)] for fmt, out in outs.items()}
    assert [d["status"] for d in docs["json"]] == ["ok", "ok", "error"]
    assert len(docs["json"][0]["bags"]) == 3  # 25 s: three bags of 10 instances
    for fmt in ("jsonl", "csv", "parquet"):
        assert docs[fmt] == docs["json"], fmt


def test_write_tags_takes_every_format_and_says_the_same(run_tag, tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    _, outs = tagged_in_every_format(run_tag, tmp_path)
    said = {fmt: CliRunner().invoke(app, ["write-tags", str(out), "--dry-run", "--cache",
                                          str(tmp_path / "cache.sqlite")])
            for fmt, out in outs.items()}
    assert {r.exit_code for r in said.values()} == {0}
    assert "2 files would_change" in said["json"].output
    assert {r.output for r in said.values()} == {said["json"].output}


def test_plot_takes_a_csv_and_finds_the_file_however_it_is_spelled(run_tag, run_plot, tmp_path,
                                                                   monkeypatch):
    lib, outs = tagged_in_every_format(run_tag, tmp_path)
    (tmp_path / "link").symlink_to(lib)
    monkeypatch.chdir(tmp_path)
    for spelled in ("lib/b.wav", "./lib/b.wav", str(lib / "b.wav"), "link/b.wav"):
        result = run_plot(outs["csv"], "--file", spelled, "--out", tmp_path / "b.png")
        assert result.exit_code == 0, (spelled, result.output)
        assert result.output.strip() == f"wrote {tmp_path / 'b.png'}"


def test_a_run_over_a_relative_path_records_absolute_ones(run_tag, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from instag.cli import app

    (tmp_path / "music").mkdir()
    sf.write(tmp_path / "music" / "a.wav", music(3, 1), SR)
    monkeypatch.chdir(tmp_path)
    run_tag("music", "--out", tmp_path / "t.jsonl")
    monkeypatch.chdir("/")  # write-tags from another folder still finds the file
    result = CliRunner().invoke(app, ["write-tags", str(tmp_path / "t.jsonl"), "--dry-run",
                                      "--cache", str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0 and "1 file would_change" in result.output, result.output


# -- which instruments, and at what threshold ----------------------------------------------------
def test_the_summary_csv_has_a_row_per_file_saying_what_is_in_it(run_tag, tmp_path):
    from builders import read_csv

    sf.write(tmp_path / "a.wav", music(12, 1), SR)
    (tmp_path / "bad.wav").write_text("not audio")
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv",
                     "--threshold", "0.3")
    rows = read_csv(tmp_path / "s.csv")
    assert list(rows[0]) == ["path", "status", "instruments", "probabilities", "duration_s",
                             "reason"]
    assert [(r["path"], r["status"]) for r in rows] == [(str(tmp_path / "a.wav"), "ok"),
                                                       (str(tmp_path / "bad.wav"), "error")]
    tagged = {r["instrument"] for r in read_csv(tmp_path / "t.csv") if r["present"] == "1"}
    assert set(rows[0]["instruments"].split("; ")) == tagged and rows[0]["duration_s"] == "12.0"
    assert rows[1]["reason"] and result.exit_code == 1


def test_the_summary_says_how_sure_it_is_of_each_instrument(run_tag, tmp_path):
    from builders import read_csv

    sf.write(tmp_path / "a.wav", music(20, 1), SR)
    (tmp_path / "bad.wav").write_text("not audio")
    run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv",
            "--threshold", "0.3", "--bag", "10")
    ok, bad = read_csv(tmp_path / "s.csv")
    best: dict[str, float] = {}  # each instrument's highest bag probability
    for r in read_csv(tmp_path / "t.csv"):
        if r["status"] == "ok":
            best[r["instrument"]] = max(best.get(r["instrument"], 0), float(r["probability"]))
    present = ok["instruments"].split("; ")
    assert len(present) >= 2  # something to order
    assert ok["probabilities"] == "; ".join(f"{c} {best[c]:.2f}" for c in present)
    assert bad["probabilities"] == "" and bad["instruments"] == ""


def test_a_failed_run_leaves_no_summary_either(run_tag, tmp_path, monkeypatch):
    from instag.tagging.scoring import Scoring

    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    old = "path,status,instruments,duration_s,reason\nold summary,ok,,,\n"
    (tmp_path / "s.csv").write_text(old)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Scoring, "score_many", broken)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert (tmp_path / "s.csv").read_text() == old and not (tmp_path / "t.csv").exists()


def test_json_and_parquet_record_the_thresholds_that_decided(run_tag, tmp_path, scoring_model):
    import json

    import pyarrow.parquet as pq

    from instag.tagging.scoring import ScoringModel

    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    meta = ScoringModel(scoring_model).meta
    first = meta.classes[0]
    (tmp_path / "th.json").write_text(json.dumps({first: 0.25}))
    expected = {c: 0.25 if c == first else (meta.thresholds or {}).get(c, 0.5)
                for c in meta.classes}
    for out in ("t.json", "t.parquet"):
        run_tag(tmp_path / "a.wav", "--out", tmp_path / out, "--thresholds-file",
                tmp_path / "th.json")
    head = json.loads((tmp_path / "t.json").read_text().split("\n", 1)[0] + "]}")
    meta = json.loads(pq.read_schema(tmp_path / "t.parquet").metadata[b"instag"])
    assert head["thresholds"] == meta["thresholds"] == expected
    assert head["threshold_rule"] == "--thresholds-file"


# -- terminals and messages ----------------------------------------------------------------------
def test_a_bad_option_value_is_the_same_error_and_fix_lines_as_every_error(tmp_path, monkeypatch,
                                                                          capsys):
    from instag.__main__ import main

    monkeypatch.setattr(sys, "argv", ["instag", "tag", "--jobs", "0", "--out",
                                      str(tmp_path / "t.csv"), str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: Invalid value for '--jobs': Input should be "
                                       "greater than or equal to 1\n"
                                       "  fix: see `instag tag --help`\n")


def test_an_output_that_is_a_folder_is_named_as_one(run_tag, tmp_path):
    result = run_tag(tmp_path, "--out", tmp_path)
    assert result.exit_code == 2 and f"--out {tmp_path}: is a folder" in result.output


def test_embed_refuses_to_write_features_under_another_extension(tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = CliRunner().invoke(app, ["embed", str(tmp_path), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and "features are written as an .npz" in result.output
    assert not (tmp_path / "f.csv").exists()


def test_doctor_prints_a_line_per_check_not_a_table_wider_than_a_terminal():
    from typer.testing import CliRunner

    from instag.cli import app

    out = CliRunner().invoke(app, ["doctor"]).output
    assert not set("│┃┏┡━─") & set(out)
    assert any(line.startswith("    versions: python: ") for line in out.splitlines())


def test_a_dry_run_says_how_many_files_would_change(run_tag, tmp_path):
    for i in range(2):
        sf.write(tmp_path / f"{i}.flac", music(3, i), SR)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--write-tags", "--dry-run",
                     "--threshold", "0")  # every instrument present: the tags would change
    assert result.exit_code == 0, result.output
    assert "; file tags: 2 files would change (dry run)." in result.output


def test_a_plot_of_a_cjk_name_keeps_matplotlibs_font_warnings_out_of_the_output(
        run_tag, tmp_path, recwarn):
    import logging

    from typer.testing import CliRunner

    from instag.cli import app

    logged = []
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("matplotlib").addHandler(handler)
    sf.write(tmp_path / "東京の夜.wav", music(4, 1), SR)
    run_tag(tmp_path, "--out", tmp_path / "t.json", "--threshold", "0", "--timeline")
    try:
        result = CliRunner().invoke(app, ["plot", str(tmp_path / "t.json"), "--out",
                                          str(tmp_path / "p.png")])
    finally:
        logging.getLogger("matplotlib").removeHandler(handler)
    assert result.output.splitlines() == [
        f"drawing {tmp_path / '東京の夜.wav'} (the first tagged file; --file picks another)",
        f"wrote {tmp_path / 'p.png'}"]
    assert not [w for w in recwarn if "lyph" in str(w.message)]
    assert not [r for r in logged if r.levelno >= logging.WARNING]


def test_report_shows_no_spread_for_a_single_seed_and_draws_both_figures(tmp_path):
    import json

    import matplotlib.image
    import numpy as np
    from typer.testing import CliRunner

    from instag.cli import app

    overall = {"precision": 0.6, "recall": 0.5, "f1": 0.55, "f1_positive": 0.3, "map": 0.45}
    for model in ("att", "rf"):
        (tmp_path / model).mkdir()
        (tmp_path / model / "metrics.json").write_text(json.dumps({
            "model": model, "seed": 0, "classes": ["guitar"], "overall": overall,
            "per_class": {"guitar": {"f1": 0.55}}, "tuned": {"overall": {"f1": 0.6}}}))
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--png", str(tmp_path / "f3.png"),
                                      "--models-png", str(tmp_path / "f2.png")])
    assert result.exit_code == 0, result.output
    assert "0.550" in result.output and "± 0.000" not in result.output
    image = matplotlib.image.imread(tmp_path / "f2.png")  # bars in three colours, and text
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 8


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
