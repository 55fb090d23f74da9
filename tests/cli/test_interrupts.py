"""Interrupting a run at the moments a person does: before it starts, while onnxruntime
imports, before the first scores, after the output is in place; one line, what was kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import soundfile as sf
from builders import SR, music, start_tag


# -- 14. signals: a run's exit code once its output is in place ---------------------------------
@pytest.mark.slow
def test_a_sigterm_after_the_output_is_in_place_keeps_the_runs_exit_code(
        scoring_model, standin_vggish, standin_pca, tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    (tmp_path / "t.csv").write_text("path,status,instrument\nprevious,ok,\n")
    code = ("import os, signal, sys; from instag.cli import app, tagging; "
            "line = tagging.summary_line; "
            "tagging.summary_line = lambda *a: (os.kill(os.getpid(), signal.SIGTERM), "
            "line(*a))[1]; sys.argv = ['instag'] + sys.argv[1:]; app()")
    done = subprocess.run(
        [sys.executable, "-c", code, "tag", str(tmp_path / "a.wav"), "--out",
         str(tmp_path / "t.csv"), "--model", str(scoring_model), "--vggish", str(standin_vggish),
         "--pca", str(standin_pca), "--cache", str(tmp_path / "c.sqlite")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 of 1 file tagged" in done.stderr and "terminated" not in done.stderr
    assert "previous" not in (tmp_path / "t.csv").read_text()


def test_ctrl_c_before_a_run_starts_is_one_line(run_tag, tmp_path, monkeypatch):
    from instag.jobs import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as while the models load

    monkeypatch.setattr(run, "tag_locally", interrupted)
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv")
    assert (result.exit_code, result.output.strip()) == (130, "interrupted: nothing written")


def test_ctrl_c_while_onnxruntime_imports_is_an_interruption_not_a_broken_model(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging import scoring

    def importing(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:  # what a C extension's import makes of a Ctrl-C
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(scoring, "choose_providers", importing)
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv")
    assert result.exit_code == 130
    assert result.output.strip().startswith("interrupted: ")
    assert "ONNX" not in result.output and not (tmp_path / "t.csv").exists()


def test_ctrl_c_while_the_commands_are_built_is_one_line(monkeypatch, capsys):
    import typer.main

    from instag.__main__ import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as in typer reading the commands' signatures, at 0.3 s

    monkeypatch.setattr(typer.main, "get_command", interrupted)
    monkeypatch.setattr(sys, "argv", ["instag", "--help"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert (stop.value.code, capsys.readouterr().err) == (130, "interrupted: nothing done\n")


@pytest.mark.slow
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


@pytest.mark.parametrize("how, code, word", [("ctrl-c", 130, "interrupted"),
                                             ("sigterm", 143, "terminated")])
@pytest.mark.slow
def test_a_signalled_run_says_what_it_kept_in_one_line(tmp_path, scoring_model, standin_vggish,
                                                       standin_pca, old_output, how, code, word):
    proc, _ = start_tag(tmp_path, scoring_model, standin_vggish, standin_pca, old_output)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # a terminal signals the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{word}: " in err and "where the next run starts; previous output kept" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert old_output.read_text() == "path,status,instrument\nprevious,ok,\n"
    assert sorted(p.name for p in old_output.parent.glob(".tags.csv*")) == []
