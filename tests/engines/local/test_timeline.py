"""Outputs sized for catalogues: the per-instance timeline is opt-in (--timeline), and `instag
plot` recomputes it from the cache's features with the scoring model for any output."""

import json

import pytest
import soundfile as sf
from builders import SR, music
from typer.testing import CliRunner

import instag
from instag.cli import app
from instag.engines.local.timeline import with_timeline
from instag.outputs.readback import read_documents


@pytest.fixture
def song(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "song.wav", music(40, 3), SR)
    return lib / "song.wav"


@pytest.fixture
def options(scoring_model, standin_vggish, standin_pca, tmp_path):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=1)


def plot_args(options):
    return ["--model", str(options.model), "--vggish", options.vggish, "--pca",
            str(options.pca), "--cache", str(options.cache)]


def test_a_jsonl_line_holds_no_timeline_unless_asked_and_stays_small(run_tag, song, tmp_path):
    assert run_tag(song, "--out", tmp_path / "c.jsonl", "--bag", "10").exit_code == 0
    assert run_tag(song, "--out", tmp_path / "t.jsonl", "--bag", "10",
                   "--timeline").exit_code == 0
    compact = (tmp_path / "c.jsonl").read_text()
    full = json.loads((tmp_path / "t.jsonl").read_text())
    assert "timeline" not in compact and len(compact) < 2_500  # 5 bags, 3 instruments
    assert [len(b["timeline"]["start_s"]) for b in full["bags"]] == [10, 10, 10, 10, 1]
    assert {k: v for k, v in full.items() if k != "bags"} == \
        {k: v for k, v in json.loads(compact).items() if k != "bags"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_plot_recomputes_the_timeline_a_timeline_output_would_hold(
        run_tag, song, tmp_path, options, fmt):
    pytest.importorskip("matplotlib")  # the plot extra
    assert run_tag(song, "--out", tmp_path / f"c.{fmt}", "--bag", "10").exit_code == 0
    assert run_tag(song, "--out", tmp_path / "t.json", "--bag", "10",
                   "--timeline").exit_code == 0
    (compact,) = read_documents(tmp_path / f"c.{fmt}")
    (full,) = read_documents(tmp_path / "t.json")
    recomputed = with_timeline(compact, options)
    for got, want in zip(recomputed["bags"], full["bags"], strict=True):
        assert got["timeline"] == want["timeline"]
    drawn = CliRunner().invoke(app, ["plot", str(tmp_path / f"c.{fmt}"), "--out",
                                     str(tmp_path / "f.png"), *plot_args(options)])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_the_features_in_the_cache_says_how_to_get_the_timeline(
        run_tag, song, tmp_path, options):
    assert run_tag(song, "--out", tmp_path / "c.csv").exit_code == 0
    (tmp_path / "elsewhere.sqlite").touch()
    args = plot_args(options)
    args[args.index("--cache") + 1] = str(tmp_path / "elsewhere.sqlite")
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "c.csv"), "--out",
                                      str(tmp_path / "f.png"), *args])
    assert result.exit_code == 2
    assert "holds no features of the file" in result.output
    assert "--timeline" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "f.png").exists()


def test_plot_with_another_model_than_the_one_that_tagged_says_so(
        run_tag, song, tmp_path, options):
    import csv

    assert run_tag(song, "--out", tmp_path / "c.csv").exit_code == 0
    with open(tmp_path / "c.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    p = float(rows[0]["probability"])  # what another model would have said
    rows[0]["probability"] = f"{p + 0.2 if p < 0.5 else p - 0.2:.4f}"
    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "c.csv"), "--out",
                                      str(tmp_path / "f.png"), *plot_args(options)])
    assert result.exit_code == 2
    assert "not the model that tagged the file" in result.output
