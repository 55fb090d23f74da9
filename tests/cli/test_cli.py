import subprocess
import sys

import pytest


def test_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from instag.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- instag tag: options that depend on another ------------------------------------------------
DEPENDENT = [  # (the option alone, what it needs)
    (["--write-scores"], "--write-tags"), (["--tag-field", "MOOD_INSTRUMENTS"], "--write-tags"),
    (["--tag-separator", "; "], "--write-tags"), (["--no-follow-links"], "--write-tags"),
    (["--follow-links"], "--write-tags"), (["--in-place"], "--write-tags"),
    (["--dry-run"], "--write-tags"), (["--segments-format", "sv"], "--segments-out"),
    (["--ray-address", "auto"], "--engine ray"), (["--hop", "2"], "--bag N"),
    (["--timeline"], "a .json or .jsonl --out"),
    (["--engine", "ray", "--jobs", "2"], "--engine local"),
    (["--engine", "ray", "--cache", "c.sqlite"], "--engine local"),
    (["--engine", "ray", "--wait"], "--engine local"),
]


@pytest.mark.parametrize("args, needs", DEPENDENT, ids=[" ".join(a) for a, _ in DEPENDENT])
def test_an_option_without_the_one_it_depends_on_is_refused(tmp_path, args, needs):
    from typer.testing import CliRunner

    from instag.cli import app

    result = CliRunner().invoke(app, ["tag", str(tmp_path), "--out", str(tmp_path / "t.csv"),
                                      *args])
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert f"means something only with {needs}" in line and not (tmp_path / "t.csv").exists()


def test_tag_help_shows_its_options_in_panels():
    from typer.testing import CliRunner

    from instag.cli import app

    shown = CliRunner().invoke(app, ["tag", "--help"], env={"COLUMNS": "200"}).output
    panels = [line.split("─ ")[1].split(" ─")[0] for line in shown.splitlines() if "╭─ " in line]
    assert panels[2:] == ["Input", "Outputs", "Model and scoring", "Engine",
                          "File tags (--write-tags)", "Advanced"]


@pytest.mark.parametrize("old, new", [("--ext", "--extensions"),
                                      ("--thresholds", "--thresholds-file")])
def test_an_old_spelling_still_works_for_one_release_with_a_line(tmp_path, old, new):
    from typer.testing import CliRunner

    from instag.cli import app

    (tmp_path / "t.json").write_text("{}")
    value = "flac" if old == "--ext" else str(tmp_path / "t.json")
    result = CliRunner().invoke(app, ["tag", str(tmp_path / "nowhere"), "--out",
                                      str(tmp_path / "t.csv"), old, value])
    assert f"note: {old} is now {new}" in result.output
    assert "error: no trained model" in result.output  # the run went on (to need a model)


@pytest.mark.slow
def test_the_documented_cron_line_prints_only_news(tmp_path, scoring_model, standin_vggish,
                                                   standin_pca):
    """docs/guides/nightly.md's line, twice, on a library with a permanent failure: the first
    run says the new failure in one line (exit 1); the second prints nothing, exit 0."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import soundfile as sf
    from builders import SR, music

    doc = (Path(__file__).parents[2] / "docs" / "guides" / "nightly.md").read_text()
    cron = doc.split("```cron")[1].split("```")[0]
    (line,) = re.findall(r"instag tag /srv/music --out \S+ (.*)", cron)
    lib = tmp_path / "music"
    lib.mkdir()
    sf.write(lib / "song.wav", music(3, 1), SR)
    (lib / "empty.wav").write_bytes(b"")
    cmd = [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(tmp_path / "t.csv"),
           *line.split(), "--model", str(scoring_model), "--vggish", str(standin_vggish),
           "--pca", str(standin_pca), "--cache", str(tmp_path / "c.sqlite")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1 and first.stdout == ""
    news = [x for x in first.stderr.splitlines() if not x.startswith("note: ")]  # (once:
    assert news == [f"empty: {lib / 'empty.wav'}: empty file (0 bytes)"], first.stderr  # VGGish)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


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
