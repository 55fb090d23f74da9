"""Hardening III: no hang, no blow-up, no wrong "ok": hostile audio, frozen workers, hostile
models and settings, names that are not what they seem."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv
from typer.testing import CliRunner

import instag
from instag.cli import app
from instag.outputs.writers import Format, result_writer

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

PREVIOUS_JSON = '{"instag_version": "previous", "files": [\n]}\n'  # an earlier output


def statuses(csv_path: Path) -> dict[str, str]:
    return {Path(r["path"]).name: r["status"] for r in read_csv(csv_path)}


# -- 2. ffmpeg's stderr never fills its pipe ----------------------------------------------------
@pytest.fixture
def chatty_ffmpeg(tmp_path, monkeypatch):
    """An ffmpeg that writes 400 kB of errors before its audio (a damaged 10-minute m4a)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffprobe").write_text("#!/bin/sh\necho 16000\n")
    (bin_dir / "ffmpeg").write_text(
        f"#!{sys.executable}\nimport sys, numpy as np\n"
        "for i in range(4000):\n"
        "    sys.stderr.write(f'[aac @ 0x55] Number of bands ({i}) exceeds limit.' + 'x' * 50)\n"
        "    sys.stderr.write('\\n')\n"
        "sys.stderr.flush()\n"
        "t = np.arange(16000 * 5) / 16000\n"
        "sys.stdout.buffer.write((0.3 * np.sin(2 * np.pi * 440 * t)).astype('<f4').tobytes())\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_an_ffmpeg_that_writes_many_errors_is_not_a_timeout(chatty_ffmpeg, run_tag, tmp_path):
    song = tmp_path / "damaged.m4a"
    song.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    t = time.monotonic()
    result = run_tag(song, "--out", tmp_path / "t.csv", "--file-timeout", "3")
    assert time.monotonic() - t < 60
    assert statuses(tmp_path / "t.csv") == {"damaged.m4a": "ok"}, result.output


# -- 10. names with Unicode line separators -----------------------------------------------------
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_jsonl_names_with_every_unicode_line_separator_reach_write_tags(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, sep in enumerate(SEPARATORS):
        sf.write(lib / f"a{sep}{i}.flac", music(2, i), SR)
    run_tag(lib, "--out", tmp_path / "t.jsonl", "--threshold", "0")
    result = CliRunner().invoke(app, ["write-tags", str(tmp_path / "t.jsonl"), "--cache",
                                      str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0, result.output
    for i, sep in enumerate(SEPARATORS):
        assert list(mutagen.File(lib / f"a{sep}{i}.flac")["INSTRUMENTS"]) == ["c0", "c1", "c2"]


# -- 11. names that ffmpeg would take for options or protocols -----------------------------------
@needs_ffmpeg
@pytest.mark.parametrize("name", ["-dash.m4a", "-", "pipe:x.mp3"])
def test_a_name_that_looks_like_an_option_or_a_protocol_is_a_file_to_ffmpeg(
        tmp_path, monkeypatch, name):
    from instag.features.resample import load_16k

    sf.write(tmp_path / "src.wav", music(2, 1), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "src.wav"), "-c:a", "aac",
                    "-f", "mp4", str(tmp_path / "plain.m4a")], check=True)
    shutil.copy(tmp_path / "plain.m4a", tmp_path / name)
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(load_16k(Path(name)), load_16k(tmp_path / "plain.m4a"))


# -- 13. CSV cells no spreadsheet runs -----------------------------------------------------------
FORMULA_NAMES = ["=HYPERLINK(1).wav", "+1.wav", "-2+3.wav", "@SUM(1).wav", "\ttab.wav",
                 "\rcr.wav", "'quoted.wav", "''twice.wav"]


def test_csv_neutralises_formulas_and_paths_from_reads_the_names_back(run_tag, tmp_path,
                                                                      monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, name in enumerate(FORMULA_NAMES):
        sf.write(lib / name, music(2, i), SR)
    monkeypatch.chdir(lib)
    # a run records absolute paths; a result made through the API keeps the name it was given
    with result_writer(tmp_path / "t.csv", Format.CSV) as write:
        for name in FORMULA_NAMES:
            write(instag.FileResult(Path(name), instag.Status.ERROR, name))
    cells = read_csv(tmp_path / "t.csv")
    assert {r["path"] for r in cells} == {"'" + n for n in FORMULA_NAMES}  # text, not formulas
    assert {r["reason"] for r in cells} == {"'" + n for n in FORMULA_NAMES}
    again = run_tag("--paths-from", tmp_path / "t.csv", "--out", tmp_path / "again.json")
    assert again.exit_code == 0, again.output
    docs = json.loads((tmp_path / "again.json").read_text())["files"]
    assert [d["path"] for d in docs] == [str(lib / n) for n in FORMULA_NAMES]
    assert {d["status"] for d in docs} == {"ok"}


def test_json_keeps_a_formula_like_name_exactly(run_tag, tmp_path, monkeypatch):
    sf.write(tmp_path / "=1+1.wav", music(2, 1), SR)
    monkeypatch.chdir(tmp_path)
    run_tag("=1+1.wav", "--out", tmp_path / "t.json")
    path = json.loads((tmp_path / "t.json").read_text())["files"][0]["path"]
    assert path == str(tmp_path / "=1+1.wav")


# -- 9. thresholds files as people write them -----------------------------------------------------
def test_a_threshold_of_400_digits_is_one_line(run_tag, tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    (tmp_path / "t.json").write_text('{"c0": 1' + "0" * 400 + "}")
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--thresholds-file",
                     tmp_path / "t.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "outside [0, 1]" in result.output


@pytest.mark.parametrize("text", ['{"c0": 0.3}', "c0,0.3\n"], ids=["json", "csv"])
def test_a_thresholds_file_with_a_utf8_bom_is_read(tmp_path, text):
    from instag.tagging.thresholds import load_thresholds

    (tmp_path / "t.txt").write_bytes("\ufeff".encode() + text.encode())
    assert load_thresholds(("c0", "c1"), None, tmp_path / "t.txt") == {"c0": 0.3, "c1": 0.5}


# -- 14. signals: a run's exit code once its output is in place ---------------------------------
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


# -- 15. the cache and its lock, vanished under a run ---------------------------------------------
def vanish_after_the_first_commit(monkeypatch, do):
    from instag.engines.local.cache import Cache

    put = Cache.put_features
    calls = []

    def put_then(self, *args, **kwargs):
        put(self, *args, **kwargs)
        if not calls:
            do(self.path)
        calls.append(1)

    monkeypatch.setattr(Cache, "put_features", put_then)


@pytest.mark.parametrize("what", ["lock deleted", "cache deleted", "cache truncated"])
def test_a_cache_or_lock_that_vanishes_mid_run_stops_it_with_one_line(
        run_tag, tmp_path, monkeypatch, what):
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", music(2, i), SR)
    (tmp_path / "t.csv").write_text("path,status,instrument\nprevious,ok,\n")
    action = {"lock deleted": lambda db: os.unlink(f"{db}.lock"),
              "cache deleted": lambda db: os.unlink(db),
              "cache truncated": lambda db: os.truncate(db, 0)}[what]
    vanish_after_the_first_commit(monkeypatch, action)
    result = run_tag(*(tmp_path / f"{i}.wav" for i in range(3)), "--out", tmp_path / "t.csv",
                     "--jobs", "1")
    assert result.exit_code == 2, result.output
    word = "lock file vanished" if what == "lock deleted" else (
        "vanished" if what == "cache deleted" else "replaced or truncated")
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert word in error and "Traceback" not in result.output
    assert (tmp_path / "t.csv").read_text() == "path,status,instrument\nprevious,ok,\n"


# -- 3. memory bounded per worker, whatever the channel count -----------------------------------
def sparse_wav(path: Path, channels: int, rate: int, seconds: float) -> Path:
    """A WAV whose header says `channels` x `seconds` of 16-bit audio at `rate`: the data are
    a hole in the file (a few kB on disk, gigabytes to decode)."""
    sf.write(path, np.zeros((1, channels), np.int16), rate, subtype="PCM_16")
    head = bytearray(path.read_bytes())
    data = head.index(b"data")
    size = int(seconds * rate) * channels * 2
    head[data + 4 : data + 8] = size.to_bytes(4, "little")
    head[4:8] = (data + 8 + size - 8).to_bytes(4, "little")
    path.write_bytes(bytes(head[: data + 8]))
    os.truncate(path, data + 8 + size)
    return path


def test_a_255_channel_96_khz_file_decodes_in_bounded_memory(tmp_path):
    path = sparse_wav(tmp_path / "many.wav", 255, 96000, 20)  # 1.96 GB as float32 at once
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its forking parent's peak
    code = ("import sys; from instag.features.resample import stream_16k; "
            "n = sum(len(b) for b in stream_16k(sys.argv[1])); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print(n, int(hwm.split()[1]) // 1024)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=600, check=True)
    samples, peak_mb = map(int, done.stdout.split())
    assert samples == 20 * 16000
    assert peak_mb < 250, f"peak {peak_mb} MB"


# -- 4. claims the file cannot back --------------------------------------------------------------
def test_a_sample_rate_outside_what_audio_uses_is_an_error(tmp_path):
    from instag.features.decode import AudioError
    from instag.features.resample import load_16k

    sf.write(tmp_path / "one-hz.wav", np.zeros(1800, np.int16), 1, subtype="PCM_16")
    with pytest.raises(AudioError, match="sample rate of 1 Hz, outside what audio uses") as e:
        load_16k(tmp_path / "one-hz.wav")
    assert e.value.status == "error"


def test_a_file_over_max_duration_is_too_long_and_not_remembered(run_tag, tmp_path):
    sf.write(tmp_path / "long.wav", music(20, 1), SR)
    first = run_tag(tmp_path / "long.wav", "--out", tmp_path / "t.csv", "--max-duration", "10")
    assert first.exit_code == 1
    (row,) = read_csv(tmp_path / "t.csv")
    assert row["status"] == "too_long" and "over --max-duration" in row["reason"]
    again = run_tag(tmp_path / "long.wav", "--out", tmp_path / "t.csv", "--max-duration", "1m")
    assert again.exit_code == 0 and statuses(tmp_path / "t.csv") == {"long.wav": "ok"}


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nanh"])
def test_a_bad_max_duration_is_one_line(run_tag, tmp_path, bad):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--max-duration", bad)
    assert result.exit_code == 2 and "not a duration" in result.output


@needs_ffmpeg
def test_a_flac_whose_header_claims_2_to_the_36_samples_is_decoded_by_ffmpeg(tmp_path):
    from instag.features.resample import load_16k

    sf.write(tmp_path / "ok.flac", music(3, 1), SR)
    data = bytearray((tmp_path / "ok.flac").read_bytes())
    fields = int.from_bytes(data[18:26], "big")  # STREAMINFO: ..., total samples (36 bits)
    data[18:26] = (fields | (1 << 36) - 1).to_bytes(8, "big")
    (tmp_path / "huge.flac").write_bytes(bytes(data))
    assert sf.info(tmp_path / "huge.flac").frames == (1 << 36) - 1
    audio = load_16k(tmp_path / "huge.flac")
    assert len(audio) == pytest.approx(3 * 16000, abs=16)


# -- 5. samples that are not audio ---------------------------------------------------------------
def test_a_float_file_with_absurd_samples_is_an_error_not_ok(run_tag, tmp_path):
    x = music(3, 1)
    x[SR : SR + 10] = 1e19
    sf.write(tmp_path / "loud.wav", x, SR, subtype="FLOAT")
    run_tag(tmp_path / "loud.wav", "--out", tmp_path / "t.csv")
    (row, *_) = read_csv(tmp_path / "t.csv")
    assert row["status"] == "error" and "samples out of range (1e+19)" in row["reason"]


def test_non_finite_embeddings_fail_only_their_file(run_tag, tmp_path, monkeypatch):
    from instag.features.embed import Embedder

    for name, seed in (("good.wav", 1), ("bad.wav", 2)):
        sf.write(tmp_path / name, music(3, seed), SR)
    embed = Embedder.embed_chunks

    def nan_for_bad(self, chunks):
        out = embed(self, chunks)
        return [None if abs(float(c[SR]) - float(bad[SR])) < 1e-6 else f
                for c, f in zip(chunks, out, strict=True)]

    from instag.features.resample import load_16k

    bad = load_16k(tmp_path / "bad.wav")
    monkeypatch.setattr(Embedder, "embed_chunks", nan_for_bad)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--jobs", "1")
    assert result.exit_code == 1
    assert statuses(tmp_path / "t.csv") == {"bad.wav": "error", "good.wav": "ok"}
    assert "non-finite embeddings" in {r["path"][-7:]: r for r in
                                       read_csv(tmp_path / "t.csv")}["bad.wav"]["reason"]


# -- 6, 7. hostile models --------------------------------------------------------------------------
def hostile(scoring_model: Path, out: Path, kind: str) -> Path:
    """The test model with its bag output rewired: NaN everywhere, or a shape that grows with
    the bag's length (right for one instance, wrong for more)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(scoring_model)
    g = m.graph
    for node in g.node:
        node.output[:] = ["orig_bag" if o == "bag_probs" else o for o in node.output]
    if kind == "nan":
        g.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
        g.node.append(helper.make_node("Mul", ["orig_bag", "nan_c"], ["bag_probs"]))
    else:
        g.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "one"),
                              numpy_helper.from_array(np.array(1, np.int64), "axis1")])
        g.node.extend([
            helper.make_node("Shape", ["features"], ["fshape"]),
            helper.make_node("Gather", ["fshape", "axis1"], ["t"]),
            helper.make_node("Unsqueeze", ["t", "zero_axes"], ["t1"]),
            helper.make_node("Concat", ["one", "t1"], ["reps"], axis=0),
            helper.make_node("Tile", ["orig_bag", "reps"], ["bag_probs"])])
        g.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axes"))
    g.output[0].type.tensor_type.ClearField("shape")
    onnx.save(m, out)
    return out


@pytest.mark.parametrize("kind, says", [("nan", "not finite"),
                                        ("shape", "for 2 bags of 3 instances")])
def test_a_hostile_model_is_refused_at_load_with_one_line(run_tag, scoring_model, tmp_path,
                                                          kind, says):
    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    (tmp_path / "t.json").write_text(PREVIOUS_JSON)
    model = hostile(scoring_model, tmp_path / f"{kind}.onnx", kind)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.json", "--model", model)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert says in error
    assert (tmp_path / "t.json").read_text() == PREVIOUS_JSON


def test_a_non_finite_score_in_a_run_is_that_files_error_and_json_holds_no_nan(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging.scoring import ScoringModel

    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    sf.write(tmp_path / "bad.wav", music(8, 2), SR)  # 8 instances: the longer bag
    run = ScoringModel.run

    def nan_for_long_bags(self, features, mask):
        bag, inst, att = run(self, features, mask)
        bag = bag.copy()
        bag[mask.sum(axis=1) >= 8] = np.nan
        return bag, inst, att

    monkeypatch.setattr(ScoringModel, "run", nan_for_long_bags)
    result = run_tag(tmp_path, "--out", tmp_path / "t.json", "--jobs", "1")
    assert result.exit_code == 1
    text = (tmp_path / "t.json").read_text()

    def no_bare_nan(token):
        raise AssertionError(f"{token} in the JSON")

    docs = {Path(d["path"]).name: d
            for d in json.loads(text, parse_constant=no_bare_nan)["files"]}
    assert (docs["good.wav"]["status"], docs["bad.wav"]["status"]) == ("ok", "error")
    assert "non-finite scores" in docs["bad.wav"]["reason"]


# -- 8. a random forest run that cannot run code -------------------------------------------------
@pytest.fixture
def rf_run(tmp_path):
    pytest.importorskip("skops")
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    data = load_openmic(random_openmic(tmp_path / "data", n=80))
    train_run(data, Recipe(model="rf", device="cpu"), tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_a_random_forest_run_is_stored_without_pickle_and_evaluates(rf_run):
    assert (rf_run / "model.skops").is_file() and not (rf_run / "model.joblib").exists()
    result = CliRunner().invoke(app, ["evaluate", str(rf_run)])
    assert result.exit_code == 0, result.output
    assert json.loads((rf_run / "evaluation.json").read_text())["model"] == "rf"


def test_a_model_file_holding_another_type_is_refused(rf_run, tmp_path):
    import skops.io as sio

    sio.dump({"meta": {}, "params": {}, "forests": [tmp_path]}, rf_run / "model.skops")  # a Path
    result = CliRunner().invoke(app, ["evaluate", str(rf_run)])
    assert result.exit_code == 2 and "holds types instag never writes" in result.output


class Payload:
    """What a hostile pickle does when it is loaded: here, leave a mark."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (Path(self.mark),))


def test_an_old_pickled_run_is_loaded_only_with_trust_pickle(rf_run, tmp_path):
    import joblib

    mark = tmp_path / "code-ran"
    (rf_run / "model.skops").unlink()
    joblib.dump({"meta": {}, "model": Payload(str(mark))}, rf_run / "model.joblib")
    for command in (["evaluate", str(rf_run)], ["export-onnx", str(rf_run)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and not mark.exists(), result.output
    assert "--trust-pickle" in CliRunner().invoke(app, ["evaluate", str(rf_run)]).output
    CliRunner().invoke(app, ["evaluate", str(rf_run), "--trust-pickle"])
    assert mark.exists()  # what trusting a pickle means
