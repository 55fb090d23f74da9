"""Faults, hostile inputs and data safety: what a cron job meets, and what must not happen."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv, wait_until_cached
from typer.testing import CliRunner

from instag.cli import app
from instag.common.errors import InstagError
from instag.engines.local.pool import DecodePool
from instag.outputs.writers import MIN_FREE_BYTES


def no_decoding(monkeypatch):
    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoding started"))


@pytest.fixture
def old_output(tmp_path):
    out = tmp_path / "tags.csv"
    out.write_text("path,status,instrument\nprevious,ok,\n")
    return out


@contextmanager
def mounted(folder, options):
    """A small tmpfs at `folder` (tests run as root, where chmod stops nothing); skipped where
    this machine does not allow mounting."""
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# -- 1. a missing library root -------------------------------------------------------------------
def test_a_missing_input_root_is_a_usage_error_that_keeps_the_output(run_tag, old_output,
                                                                     tmp_path):
    result = run_tag(tmp_path / "not-mounted", "--out", old_output)
    assert result.exit_code == 2
    assert "not-mounted: no such file or folder" in result.output
    assert old_output.read_text() == "path,status,instrument\nprevious,ok,\n"


# -- 2. permissions ------------------------------------------------------------------------------
def test_a_rerun_keeps_the_outputs_mode(run_tag, library, old_output):
    os.chmod(old_output, 0o644)
    run_tag(library / "other", "--out", old_output)
    assert "previous" not in old_output.read_text()
    assert stat.S_IMODE(old_output.stat().st_mode) == 0o644


# -- 3. what a decoder reports is checked --------------------------------------------------------
@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg not installed")
def test_a_file_with_sample_rate_0_is_its_own_error_and_embed_keeps_the_rest(
        library, standin_vggish, standin_pca, tmp_path):
    result = CliRunner().invoke(app, [
        "embed", str(library / "notes.flac"), str(library / "other"), "--out",
        str(tmp_path / "f.npz"), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
        "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 1, result.output
    assert "sample rate of 0 Hz" in result.output and "ZeroDivision" not in result.output
    with np.load(tmp_path / "f.npz") as npz:
        assert len(npz["files"]) == 2 and len(npz["failed"]) == 1


# -- 4. figures ----------------------------------------------------------------------------------
def test_tag_plot_draws_files_whose_names_are_not_utf8(run_tag, library, tmp_path):
    import matplotlib.image

    one = library / "solo"
    one.mkdir()
    os.rename(os.fsencode(library) + b"/caf\xe9.wav", os.fsencode(one) + b"/caf\xe9.wav")
    result = run_tag(one, "--out", tmp_path / "t.csv", "--plot", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    (png,) = (tmp_path / "figs").glob("*.png")
    present = sum(r["present"] == "1" for r in read_csv(tmp_path / "t.csv"))
    rows = min(max(present, 1), 4)  # the spectrogram, then a row per instrument present
    assert matplotlib.image.imread(png).shape[:2] == (round(100 * (2.6 + 1.2 * rows)), 1000)


def test_plot_finds_a_non_utf8_file_from_its_json_path(run_tag, run_plot, library, tmp_path):
    run_tag(library, "--out", tmp_path / "t.json")
    doc = next(f for f in json.loads((tmp_path / "t.json").read_text())["files"]
               if "\\xe9" in f["path"])
    result = run_plot(tmp_path / "t.json", "--file", doc["path"], "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_plot_of_a_moved_file_says_how_to_point_at_it(run_tag, library, tmp_path):
    run_tag(library / "other", "--out", tmp_path / "t.json", "--timeline")
    shutil.move(library / "other", tmp_path / "moved")
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "t.json"), "--out",
                                      str(tmp_path / "f.png")])
    assert result.exit_code == 2 and "--audio" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "t.json"), "--out",
                                      str(tmp_path / "f.png"), "--audio",
                                      str(tmp_path / "moved" / "live.mp3")])
    assert result.exit_code == 0, result.output


def test_the_spectrogram_of_an_hour_is_bounded(monkeypatch):
    from instag.outputs.plot import MAX_FRAMES, log_mel

    hour = (np.zeros(16000 * 60, np.float32) for _ in range(60))
    hop = -(-3600 * 16000 // MAX_FRAMES)
    assert log_mel(hour, hop).shape == (MAX_FRAMES, 64)


# -- 5. signals ----------------------------------------------------------------------------------
def start_tag(tmp_path, scoring_model, standin_vggish, standin_pca, out, files=8, seconds=30):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(files):
        sf.write(lib / f"{i:02d}.flac", music(seconds, i), SR)
    cache = tmp_path / "cache.sqlite"
    cmd = [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(out), "--model",
           str(scoring_model), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
           "--cache", str(cache), "--jobs", "2", "--resampler", "resampy"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, like a terminal's
    if wait_until_cached(proc, cache, 1):
        return proc, cmd
    pytest.fail(f"the run ended or stalled before it could be signalled: {proc.poll()}")


@pytest.mark.parametrize("how, code, word", [("ctrl-c", 130, "interrupted"),
                                             ("sigterm", 143, "terminated")])
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


# -- 6a. decode pool liveness --------------------------------------------------------------------
def test_a_decode_worker_killed_mid_run_costs_at_most_its_file(tmp_path, scoring_model,
                                                               standin_vggish, standin_pca):
    out = tmp_path / "tags.csv"
    proc, cmd = start_tag(tmp_path, scoring_model, standin_vggish, standin_pca, out)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    workers = [pid for pid in map(int, children.stdout.split())  # not the resource tracker
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # never hangs
    rows = read_csv(out)
    assert len({r["path"] for r in rows}) == 8
    assert {r["status"] for r in rows} <= {"ok", "crashed"}, err
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr  # a crash is not cached as the file's fault
    assert {r["status"] for r in read_csv(out)} == {"ok"}


@pytest.fixture
def hanging_ffmpeg(tmp_path, monkeypatch):
    """An ffmpeg that never produces anything (a hung network mount looks the same)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffprobe").write_text("#!/bin/sh\necho 44100\n")
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\nexec sleep 30\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_decoder_that_makes_no_progress_is_stopped_and_retried_next_time(
        hanging_ffmpeg, run_tag, library, tmp_path):
    (library / "other" / "stuck.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    t = time.monotonic()
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert time.monotonic() - t < 60
    assert result.exit_code == 1, result.output
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status == {"live.mp3": "ok", "stuck.m4a": "timeout", "take.ogg": "ok"}
    again = run_tag(library / "other", "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert "(2 from the cache)" in again.output  # the stuck file was tried again


def test_a_fifo_in_the_library_is_unsupported_not_a_hang(run_tag, library, tmp_path):
    os.mkfifo(library / "other" / "x.wav")
    result = run_tag(library / "other", "--out", tmp_path / "t.csv")
    assert result.exit_code == 1
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status["x.wav"] == "unsupported"


# -- 6b. outputs that would destroy something ----------------------------------------------------
@pytest.mark.parametrize("where", ["input", "library", "cache", "lock"])
def test_an_output_that_would_replace_an_input_or_the_cache_is_refused(
        run_tag, library, tmp_path, monkeypatch, where):
    target = {"input": library / "-dash.wav", "library": library / "album" / "new.wav",
              "cache": tmp_path / "cache.sqlite", "lock": tmp_path / "cache.sqlite.lock"}[where]
    if where in ("cache", "lock"):
        target.write_bytes(b"keep me")
    before = target.read_bytes() if target.exists() else None
    no_decoding(monkeypatch)
    result = run_tag(library, "--out", target, "--format", "csv")
    assert result.exit_code == 2, result.output
    assert (target.read_bytes() if target.exists() else None) == before


def test_an_output_that_is_a_folder_is_refused_before_any_work(run_tag, library, tmp_path,
                                                               monkeypatch):
    (tmp_path / "out.csv").mkdir()
    no_decoding(monkeypatch)
    result = run_tag(library, "--out", tmp_path / "out.csv")
    assert result.exit_code == 2 and "is a folder" in result.output


# -- 6c. faults that must be one line and exit 2 -------------------------------------------------
def test_a_cache_damaged_during_a_run_is_one_line_and_the_next_run_recovers(
        run_tag, library, tmp_path):
    from test_cache import damage, filled_cache

    path = filled_cache(tmp_path / "cache.sqlite")
    damage(path, 4096, path.stat().st_size - 4096)  # every page but the schema's
    first = run_tag(library / "other", "--out", tmp_path / "t.csv")
    assert first.exit_code == 2, first.output
    assert "damaged" in first.output and "Traceback" not in first.output
    assert run_tag(library / "other", "--out", tmp_path / "t.csv").exit_code == 0


def test_a_read_only_cache_folder_is_one_line_and_exit_2(run_tag, library, tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--cache",
                         ro / "cache.sqlite")
    assert result.exit_code == 2, result.output
    assert "cannot use the cache" in result.output and "Traceback" not in result.output


def test_an_output_in_a_read_only_folder_is_refused_before_any_work(run_tag, library, tmp_path,
                                                                    monkeypatch):
    no_decoding(monkeypatch)
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        result = run_tag(library / "other", "--out", ro / "t.csv")
    assert result.exit_code == 2 and "cannot write" in result.output


def test_a_disk_that_fills_up_at_the_end_keeps_the_old_output(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "long.wav", music(240, 1), SR)
    with mounted(tmp_path / "small", "size=256k") as small:
        out = small / "tags.json"
        head = b'{"instag_version": "previous", "files": [\n'  # an earlier output, padded
        out.write_bytes(head + b" " * (256 * 1024 - MIN_FREE_BYTES - 8192 - len(head)))
        before = out.read_bytes()
        result = run_tag(lib, "--out", out, "--bag", "1", "--timeline")  # ~250 bags: too big
        assert result.exit_code == 2, result.output
        assert "cannot write" in result.output and "Traceback" not in result.output
        assert out.read_bytes() == before
        assert [p.name for p in small.iterdir()] == ["tags.json"]


def test_thresholds_with_a_null_are_one_line_and_exit_2(run_tag, library, tmp_path):
    (tmp_path / "t.json").write_text('{"c0": null}')
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--thresholds",
                     tmp_path / "t.json")
    assert result.exit_code == 2 and "not a number" in result.output


def test_a_model_with_more_outputs_than_named_instruments_is_refused_before_scoring(
        run_tag, library, tmp_path, old_output):
    import torch

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    torch.manual_seed(0)
    wrong = export_model(build_model("att", 4).eval(), {"model": "att", "in_dim": 128,
                         "classes": ["a", "b", "c"]}, tmp_path / "wrong.onnx")
    result = run_tag(library / "other", "--out", old_output, "--model", wrong)
    assert result.exit_code == 2, result.output
    assert "outputs shapes (2, 4)" in result.output
    assert "metadata names 3 instruments" in result.output
    assert old_output.read_text() == "path,status,instrument\nprevious,ok,\n"


@pytest.mark.parametrize("key, value, message", [
    ("instag.in_dim", "12x", "not a positive integer"),
    ("instag.classes", '["a", "a", "b"]', "not a list of distinct names"),
    ("instag.classes", "piano", "malformed"),
])
def test_malformed_model_metadata_is_a_clear_error(scoring_model, tmp_path, key, value, message):
    import onnx

    from instag.tagging.scoring import ScoringModel

    proto = onnx.load(str(scoring_model))
    next(p for p in proto.metadata_props if p.key == key).value = value
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(InstagError, match=message):
        ScoringModel(tmp_path / "bad.onnx", "cpu")


# -- 6d. other inputs ----------------------------------------------------------------------------
def test_an_all_nan_file_is_an_error_not_a_confident_tag(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "nan.wav", np.full(16000 * 3, np.nan, np.float32), 16000, subtype="FLOAT")
    result = run_tag(lib, "--out", tmp_path / "t.csv")
    (row,) = read_csv(tmp_path / "t.csv")
    assert result.exit_code == 1 and row["status"] == "error"
    assert "non-finite samples" in row["reason"] and row["probability"] == ""


@pytest.mark.parametrize("jobs", ["0", "-4"])
def test_a_non_positive_job_count_is_refused(run_tag, library, tmp_path, jobs):
    assert run_tag(library, "--out", tmp_path / "t.csv", "--jobs", jobs).exit_code == 2


def test_workers_are_never_more_than_the_files(run_tag, library, tmp_path, monkeypatch):
    started = []
    real = DecodePool.__init__

    def init(self, jobs, *args):
        started.append(jobs)
        real(self, jobs, *args)

    monkeypatch.setattr(DecodePool, "__init__", init)
    run_tag(library / "other", "--out", tmp_path / "t.csv", "--jobs", "64")
    assert started == [2]


# -- 6e. models that take a fixed number of instances --------------------------------------------
@pytest.fixture
def fc_model(tmp_path):
    import torch

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    torch.manual_seed(0)
    return export_model(build_model("fc", 3).eval(), {"model": "fc", "in_dim": 128,
                        "classes": ["c0", "c1", "c2"]}, tmp_path / "fc.onnx")


def test_a_fixed_size_model_scores_the_end_of_a_file_with_an_aligned_last_bag(
        run_tag, fc_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", music(12, 1), SR)  # 12 instances
    sf.write(lib / "b.wav", music(5, 2), SR)  # 5 instances: fewer than the model's 10
    result = run_tag(lib, "--out", tmp_path / "t.json", "--model", fc_model, "--bag", "10")
    assert result.exit_code == 1, result.output
    a, b = json.loads((tmp_path / "t.json").read_text())["files"]
    assert [(g["start_s"], g["end_s"]) for g in a["bags"]] == [(0.0, 9.6), (1.92, 11.52)]
    assert b["status"] == "too_short" and "exactly 10 instances" in b["reason"]


def test_a_fixed_size_model_without_its_bag_size_is_a_usage_error(run_tag, fc_model, library,
                                                                  tmp_path):
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--model", fc_model)
    assert result.exit_code == 2 and "use --bag 10" in result.output


# -- 7. options ----------------------------------------------------------------------------------
def test_out_dash_writes_csv_to_stdout(run_tag, library):
    result = run_tag(library / "other", "--out", "-", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("path,status,reason,duration_s")
    assert not Path("-").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "x.txt"], "unknown output extension"),
    (["--out", "t.csv", "--threshold", "2"], "outside [0, 1]"),
])
def test_bad_output_and_threshold_options_are_refused(run_tag, library, tmp_path, monkeypatch,
                                                      args, message):
    monkeypatch.chdir(tmp_path)
    result = run_tag(library, *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.txt").exists()
