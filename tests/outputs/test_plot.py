"""`instag plot` and `tag --plot`: any output, any spelling of the file, names that are not
UTF-8 or not Latin, a moved file named with its fix."""

import json
import os
import shutil

import pytest
import soundfile as sf
from builders import SR, music, read_csv, tagged_in_every_format
from typer.testing import CliRunner

from instag.cli import app

pytest.importorskip("matplotlib")  # the plot extra


def test_plot_takes_a_csv_and_finds_the_file_however_it_is_spelled(run_tag, run_plot, tmp_path,
                                                                   monkeypatch):
    lib, outs = tagged_in_every_format(run_tag, tmp_path)
    (tmp_path / "link").symlink_to(lib)
    monkeypatch.chdir(tmp_path)
    for spelled in ("lib/b.wav", "./lib/b.wav", str(lib / "b.wav"), "link/b.wav"):
        result = run_plot(outs["csv"], "--file", spelled, "--out", tmp_path / "b.png")
        assert result.exit_code == 0, (spelled, result.output)
        assert result.output.strip() == f"wrote {tmp_path / 'b.png'}"


def test_a_plot_of_a_cjk_name_keeps_matplotlibs_font_warnings_out_of_the_output(
        run_tag, standin_vggish, tmp_path, recwarn):
    import logging



    logged = []
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("matplotlib").addHandler(handler)
    sf.write(tmp_path / "東京の夜.wav", music(4, 1), SR)
    run_tag(tmp_path, "--out", tmp_path / "t.json", "--threshold", "0", "--timeline")
    try:
        result = CliRunner().invoke(app, ["plot", str(tmp_path / "t.json"), "--out",
                                          str(tmp_path / "p.png"), "--vggish",
                                          str(standin_vggish)])
    finally:
        logging.getLogger("matplotlib").removeHandler(handler)
    assert result.output.splitlines() == [
        f"drawing {tmp_path / '東京の夜.wav'} (the first tagged file; --file picks another)",
        f"wrote {tmp_path / 'p.png'}"]
    assert not [w for w in recwarn if "lyph" in str(w.message)]
    assert not [r for r in logged if r.levelno >= logging.WARNING]


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


def test_plot_of_a_moved_file_says_how_to_point_at_it(run_tag, run_plot, library, tmp_path):
    run_tag(library / "other", "--out", tmp_path / "t.json", "--timeline")
    shutil.move(library / "other", tmp_path / "moved")
    result = run_plot(tmp_path / "t.json", "--out", tmp_path / "f.png")
    assert result.exit_code == 2 and "--audio" in result.output
    assert "Traceback" not in result.output
    result = run_plot(tmp_path / "t.json", "--out", tmp_path / "f.png", "--audio",
                      tmp_path / "moved" / "live.mp3")
    assert result.exit_code == 0, result.output


def test_a_file_moved_since_a_csv_was_written_is_plotted_with_audio(run_tag, run_plot, library,
                                                                    tmp_path):
    """A CSV has no timeline: it is recomputed from the features cached under the path the file
    was tagged at, which --audio (the file where it is now, the same size) leads to."""
    run_tag(library / "other", "--out", tmp_path / "t.csv")
    shutil.copyfile(library / "other" / "live.mp3", tmp_path / "copy.mp3")  # a new mtime
    (library / "other" / "live.mp3").unlink()
    result = run_plot(tmp_path / "t.csv", "--file", library / "other" / "live.mp3", "--out",
                      tmp_path / "f.png", "--audio", tmp_path / "copy.mp3")
    assert result.exit_code == 0, result.output
