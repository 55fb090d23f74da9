import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv, wait_until_cached  # noqa: E402
from typer.testing import CliRunner

from instag.cli import app
from instag.engines.local.cache import lock
from instag.engines.local.pool import DecodePool
from instag.tagging.walk import walk

GOOD = ["album/01 intro.wav", "album/02-song.flac", "other/take.ogg", "other/live.mp3",
        "-dash.wav"]
BAD = {"album/corrupt.flac": "error", "empty.wav": "empty", "zero.wav": "empty",
       "notes.flac": "error", "blip.wav": "too_short"}


@pytest.mark.slow
def test_every_file_is_accounted_for_with_its_status(library, run_tag, tmp_path):
    result = run_tag(library, "--out", tmp_path / "tags.json")
    assert result.exit_code == 1, result.output  # some files failed
    files = json.loads((tmp_path / "tags.json").read_text())["files"]
    status = {Path(f["path"]).relative_to(library).as_posix(): f["status"] for f in files}
    assert {k: v for k, v in status.items() if v != "ok"} == BAD
    assert sum(v == "ok" for v in status.values()) == len(GOOD) + 1  # + the non-UTF-8 name
    assert any("\\xe9" in f["path"] for f in files)
    walked = [os.fsencode(p).decode("utf-8", "backslashreplace") for p in walk([library])]
    assert [f["path"] for f in files] == walked  # walk order, whatever order decoding took
    assert all(f.get("reason") for f in files if f["status"] != "ok")


@pytest.mark.slow
def test_csv_and_json_agree_and_segments_lie_inside_each_file(library, run_tag, tmp_path):
    assert run_tag(library, "--out", tmp_path / "t.csv", "--bag", "10").exit_code == 1
    # the same failures again, from the cache: listed, no news (exit 0)
    assert run_tag(library, "--out", tmp_path / "t.json", "--bag", "10").exit_code == 0
    rows = read_csv(tmp_path / "t.csv")
    docs = {f["path"]: f for f in json.loads((tmp_path / "t.json").read_text())["files"]}
    assert {r["path"] for r in rows} == set(docs)
    for r in rows:
        doc = docs[r["path"]]
        assert r["status"] == doc["status"]
        if r["status"] != "ok":
            assert r["instrument"] == ""
            continue
        bag = next(b for b in doc["bags"] if f"{b['start_s']:.2f}" == r["bag_start_s"])
        assert float(r["probability"]) == pytest.approx(bag["probabilities"][r["instrument"]])
        assert (r["present"] == "1") == (r["instrument"] in bag["present"])
        for seg in filter(None, r["segments"].split(";")):
            start, end = map(float, seg.split("-"))
            assert 0 <= start < end <= doc["duration_s"] + 1e-6
            assert float(r["bag_start_s"]) <= start and end <= float(r["bag_end_s"]) + 1e-6


def test_json_has_the_per_instance_timeline_when_asked(library, run_tag, tmp_path):
    run_tag(library / "album" / "02-song.flac", "--out", tmp_path / "t.jsonl", "--timeline")
    (doc,) = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    (bag,) = doc["bags"]  # --bag full: the whole file
    timeline = bag["timeline"]
    assert len(timeline["start_s"]) == 26 and bag["end_s"] == pytest.approx(24.96)
    for name, weights in timeline["attention"].items():
        assert sum(weights) == pytest.approx(1, abs=1e-3)
        assert len(timeline["instance_probs"][name]) == 26


@pytest.mark.slow
def test_a_second_run_comes_from_the_cache_and_gives_the_same_output(library, run_tag, tmp_path,
                                                                     monkeypatch):
    run_tag(library, "--out", tmp_path / "a.csv")
    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoded again"))
    second = run_tag(library, "--out", tmp_path / "b.csv")
    assert "6 of 11 files tagged (6 from the cache)" in second.output
    assert "(5 known from an earlier run)" in second.output
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


@pytest.mark.slow
def test_force_recomputes(library, run_tag, tmp_path):
    run_tag(library / "album", "--out", tmp_path / "a.csv")
    assert "(0 from the cache)" in run_tag(library / "album", "--out", tmp_path / "b.csv",
                                       "--force").output


@pytest.mark.torch
def test_a_new_model_rescores_cached_features_without_decoding(library, run_tag, tmp_path,
                                                              monkeypatch):
    import torch

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    run_tag(library / "album", "--out", tmp_path / "a.json")
    torch.manual_seed(1)
    other = export_model(build_model("att", 3).eval(), {"model": "att", "in_dim": 128,
                         "classes": ["c0", "c1", "c2"]}, tmp_path / "other.onnx")
    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoded again"))
    result = run_tag(library / "album", "--out", tmp_path / "b.json", "--model", other)
    assert result.exit_code == 0, result.output  # corrupt.flac still fails, known from the cache
    a, b = (json.loads((tmp_path / n).read_text())["files"] for n in ("a.json", "b.json"))
    assert [f["status"] for f in a] == [f["status"] for f in b]
    assert a[0]["bags"][0]["probabilities"] != b[0]["bags"][0]["probabilities"]


def test_paths_can_come_from_stdin(library, run_tag, tmp_path):
    paths = f"{library / 'album' / '01 intro.wav'}\n{library / '-dash.wav'}\n"
    result = run_tag("-", "--out", tmp_path / "t.csv", input=paths)
    assert result.exit_code == 0, result.output
    assert {r["path"] for r in read_csv(tmp_path / "t.csv")} == \
        {str(library / "album" / "01 intro.wav"), str(library / "-dash.wav")}


def test_all_files_tagged_exits_0(library, run_tag, tmp_path):
    assert run_tag(library / "other", "--out", tmp_path / "t.csv").exit_code == 0


def test_no_model_is_a_setup_error_with_exit_2(library, tmp_path, monkeypatch):
    monkeypatch.delenv("INSTAG_MODEL", raising=False)
    result = CliRunner().invoke(app, ["tag", str(library), "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 2
    assert "no trained model" in result.output and "instag setup" in result.output


def test_a_second_run_on_a_locked_cache_exits_with_a_clear_message(library, run_tag, tmp_path):
    with lock(tmp_path / "cache.sqlite"):
        result = run_tag(library / "other", "--out", tmp_path / "t.csv")
    assert result.exit_code == 2 and "another `instag tag` run" in result.output
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.slow
def test_wait_queues_behind_the_running_one(library, run_tag, tmp_path):
    held = threading.Event()

    def hold():
        with lock(tmp_path / "cache.sqlite"):
            held.set()
            time.sleep(1.5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--wait")
    t.join()
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_plot_draws_figure_4(library, run_tag, run_plot, tmp_path):
    run_tag(library / "other", "--out", tmp_path / "t.json")
    result = run_plot(tmp_path / "t.json", "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "f.png")  # spectrogram + one row per instrument
    rows = len(json.loads((tmp_path / "t.json").read_text())["files"][0]["instruments"]) or 1
    assert image.shape[:2] == (round(100 * (2.6 + 1.2 * min(rows, 4))), 1000)
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 50  # not blank


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_m4a_files_are_tagged_through_ffmpeg(tmp_path, run_tag):
    sf.write(tmp_path / "a.wav", music(5), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "aac",
                    str(tmp_path / "song.m4a")], check=True)
    (tmp_path / "a.wav").unlink()
    assert run_tag(tmp_path, "--out", tmp_path / "t.csv").exit_code == 0
    assert read_csv(tmp_path / "t.csv")[0]["path"].endswith("song.m4a")


@pytest.mark.slow
def test_a_killed_run_leaves_the_old_output_and_the_next_run_resumes(
        tmp_path, scoring_model, standin_vggish, standin_pca):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(12):
        sf.write(lib / f"{i:02d}.flac", music(20, i), SR)
    out, cache = tmp_path / "tags.csv", tmp_path / "cache.sqlite"
    out.write_text("path,status,instrument\nold output,ok,\n")
    cmd = [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(out), "--model",
           str(scoring_model), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
           "--cache", str(cache), "--jobs", "1", "--resampler", "resampy"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until_cached(proc, cache, 2), "the run finished before it could be killed"
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.read_text() == "path,status,instrument\nold output,ok,\n"
    time.sleep(4)  # orphaned decode workers notice within a couple of seconds and exit
    for pid in map(int, workers.stdout.split()):
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/status").read_text().count("State:\tZ"), f"worker {pid} lingers"
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    cached = int(re.search(r"\((\d+) from the cache\)", resumed.stderr).group(1))
    assert 2 <= cached < 12  # what finished before the kill was not decoded again
    assert len({r["path"] for r in read_csv(out)}) == 12


def test_plot_dir_draws_one_figure_per_tagged_file(library, run_tag, tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra
    run_tag(library / "other", "--out", tmp_path / "t.csv", "--plot", tmp_path / "figs")
    assert len(list((tmp_path / "figs").glob("*.png"))) == 2


def test_an_empty_folder_gives_valid_empty_outputs(run_tag, tmp_path):
    (tmp_path / "nothing").mkdir()
    for name in ("t.json", "t.jsonl", "t.csv"):
        assert run_tag(tmp_path / "nothing", "--out", tmp_path / name).exit_code == 0
    assert json.loads((tmp_path / "t.json").read_text())["files"] == []
    assert (tmp_path / "t.jsonl").read_text() == ""
    assert read_csv(tmp_path / "t.csv") == []



@pytest.mark.slow
def test_the_python_api_yields_one_result_per_file_in_walk_order(library, scoring_model,
                                                                 standin_vggish, standin_pca,
                                                                 tmp_path):
    import instag

    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=2)
    run = instag.tag([library / "other", library / "notes.flac"], opts)
    results = list(run)
    assert [r.path.name for r in results] == ["live.mp3", "take.ogg", "notes.flac"]
    assert [r.status for r in results] == [instag.Status.OK, instag.Status.OK,
                                           instag.Status.ERROR]
    assert all(len(r.bags) == 1 and r.features.values.shape[1] == 128 for r in results[:2])
    assert (run.counts.ok, run.counts.done) == (2, 3)


@pytest.fixture
def run_embed(standin_vggish, standin_pca, tmp_path):
    def run(*args):
        return CliRunner().invoke(app, [
            "embed", "--vggish", str(standin_vggish), "--pca", str(standin_pca), "--cache",
            str(tmp_path / "cache.sqlite"), "--jobs", "2", *map(str, args)])
    return run


@pytest.mark.slow
def test_embed_keeps_every_good_file_when_one_is_corrupt(library, run_embed, tmp_path):
    result = run_embed(library / "album", "--out", tmp_path / "f.npz", "--clips", "10")
    assert result.exit_code == 1, result.output  # corrupt.flac failed ...
    with np.load(tmp_path / "f.npz") as npz:  # ... and the others' work is in the file
        assert [Path(f).name for f in npz["files"]] == ["01 intro.wav", "02-song.flac"]
        assert [Path(f).name for f in npz["failed"]] == ["corrupt.flac"]
        assert npz["X"].shape == (1 + 2, 10, 128)  # 12 s -> 12 instances, 25 s -> 26


@pytest.mark.slow
def test_embed_reuses_the_features_tagging_cached(library, run_tag, run_embed, tmp_path,
                                                  monkeypatch):
    run_tag(library / "other", "--out", tmp_path / "t.csv")
    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoded again"))
    result = run_embed(library / "other", "--out", tmp_path / "f.npz")
    assert result.exit_code == 0, result.output
    assert "(2 from the cache)" in result.output
    with np.load(tmp_path / "f.npz") as npz:
        assert npz["X"].shape == (11 + 14, 128)


@pytest.mark.torch
def test_the_models_tuned_thresholds_are_the_default_and_threshold_overrides_them(
        library, run_tag, scoring_model, tmp_path):
    import onnx

    from instag.common.modelmeta import THRESHOLDS

    proto = onnx.load(str(scoring_model))
    next(p for p in proto.metadata_props if p.key == THRESHOLDS).value = \
        json.dumps({"c0": 0.0, "c1": 1.0, "c2": 0.0})  # c0, c2 always present, c1 never
    onnx.save(proto, str(tmp_path / "tuned.onnx"))
    run_tag(library / "other", "--out", tmp_path / "a.json", "--model", tmp_path / "tuned.onnx")
    files = json.loads((tmp_path / "a.json").read_text())["files"]
    assert [f["instruments"] for f in files] == [["c0", "c2"], ["c0", "c2"]]
    run_tag(library / "other", "--out", tmp_path / "b.json", "--model", tmp_path / "tuned.onnx",
            "--threshold", "0")
    files = json.loads((tmp_path / "b.json").read_text())["files"]
    assert [f["instruments"] for f in files] == [["c0", "c1", "c2"]] * 2


def test_a_hop_larger_than_the_bag_is_refused(library, run_tag, tmp_path):
    result = run_tag(library, "--out", tmp_path / "t.csv", "--bag", "10", "--hop", "12")
    assert result.exit_code == 2 and "never be scored" in result.output


@pytest.mark.tensorflow
def test_a_vggish_that_cannot_be_had_fails_before_the_run_announces_itself(
        library, run_tag, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty-hub"))
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--vggish",
                     "http://127.0.0.1:9/vggish/1")
    assert result.exit_code == 2 and "cannot load VGGish" in result.output
    assert "tagging" not in result.output


def test_one_file_is_one_file(library, run_tag, tmp_path):
    result = run_tag(library / "other" / "take.ogg", "--out", tmp_path / "t.csv")
    assert "tagging 1 file (" in result.output and "1 of 1 file tagged" in result.output


@pytest.mark.tensorflow
def test_a_vggish_folder_that_does_not_exist_is_named_not_blamed_on_the_network(
        library, run_tag, tmp_path):
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--vggish", "./no-such-dir")
    assert result.exit_code == 2 and "not a SavedModel folder" in result.output
    assert "internet" not in result.output


@pytest.mark.slow
def test_progress_counts_audio_as_it_is_embedded_not_only_finished_files(
        scoring_model, standin_vggish, standin_pca, tmp_path):
    import instag
    from instag.tagging.job import Reporter

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        sf.write(lib / f"{i}.wav", music(70, i), SR)  # two VGGish chunks each
    seen = []

    class Recorder(Reporter):
        def embedded(self, summary):
            seen.append(("embedded", summary.embedded_s, summary.done))

        def file_done(self, result, summary):
            seen.append(("done", summary.embedded_s, summary.done))

    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "c.sqlite", jobs=1)
    list(instag.tag([lib], opts, Recorder()))
    first_done = next(i for i, e in enumerate(seen) if e[0] == "done")
    assert any(e[0] == "embedded" and e[1] > 0 for e in seen[:first_done])  # before any file
    assert seen[-1][1] == pytest.approx(3 * 72 * 0.96)  # every instance, as it happened


@pytest.mark.slow
def test_short_files_are_embedded_many_per_vggish_call(scoring_model, standin_vggish,
                                                       standin_pca, tmp_path):
    """A decoded file waiting for VGGish does not hold back the next file's decoding: a library
    of one-second clips is embedded in a few large calls, not two files at a time."""
    import instag
    from instag.tagging.job import Reporter

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(40):
        sf.write(lib / f"{i:02d}.wav", music(1, i), SR)
    calls = []

    class Recorder(Reporter):
        def embedded(self, summary):
            calls.append(summary.embedded_s)

    opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "c.sqlite", jobs=1)
    results = list(instag.tag([lib], opts, Recorder()))
    assert [r.status for r in results] == [instag.Status.OK] * 40
    assert calls[-1] == pytest.approx(40 * 0.96)
    assert len(calls) <= 8  # one file's decoding per call would be 20 calls or more


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
    assert result.exit_code == 0 and "1 file would change (dry run)" in result.output, result.output


# -- 1. a missing library root -------------------------------------------------------------------
def test_a_missing_input_root_is_a_usage_error_that_keeps_the_output(run_tag, old_output,
                                                                     tmp_path):
    result = run_tag(tmp_path / "not-mounted", "--out", old_output)
    assert result.exit_code == 2
    assert "not-mounted: no such file or folder" in result.output
    assert old_output.read_text() == "path,status,instrument\nprevious,ok,\n"
