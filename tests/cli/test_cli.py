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
    assert panels == ["Arguments", "Input", "Outputs", "Model and scoring", "Engine",
                      "File tags (--write-tags)", "Advanced"]  # no panel for --help alone
    assert "PATH..." in shown and "list[" not in shown  # what to type, not a Python type
    assert "<bool>" not in shown  # a flag takes no value: --quiet, not --quiet <bool>


def test_a_bad_choice_is_one_line_in_plain_words(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "instag", "export", str(tmp_path / "t.csv"),
                           "--format", "xyz", "--out", str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Value error" not in done.stderr
    assert "'xyz' is not one of 'jams', 'audacity', 'sv'" in done.stderr


def test_plot_without_file_says_which_file_it_draws(run_tag, run_plot, library, tmp_path):
    assert run_tag(library / "album" / "01 intro.wav", "--out", tmp_path / "t.json").exit_code == 0
    result = run_plot(tmp_path / "t.json", "--out", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert "drawing " in result.output and "01 intro.wav" in result.output
    assert "--file picks another" in result.output


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
    assert "nowhere: no such file or folder" in result.output  # the run went on (to the paths)


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


def test_a_wrong_option_is_named_before_a_missing_model(tmp_path, monkeypatch):
    """Fix what you typed first: a bad --threshold on a machine without a model names the
    threshold (and says what a good one looks like), not the set-up."""
    import subprocess
    import sys

    monkeypatch.delenv("INSTAG_MODEL", raising=False)
    done = subprocess.run([sys.executable, "-m", "instag", "tag", str(tmp_path), "--out",
                           str(tmp_path / "t.csv"), "--threshold", "1.5"], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --threshold: threshold 1.5 is outside [0, 1]",
                                        "  fix: e.g. --threshold 0.5"]


def test_on_a_terminal_the_bar_is_gone_before_the_summary_line(
        scoring_model, standin_vggish, standin_pca, tmp_path):
    """A real terminal (a pty, as a person runs it): the summary starts on a line of its own
    and no bar is drawn after it."""
    import os
    import pty
    import subprocess
    import sys

    import soundfile as sf
    from builders import SR, music

    (tmp_path / "lib").mkdir()
    for i in range(3):
        sf.write(tmp_path / "lib" / f"{i}.wav", music(4, i), SR)
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "instag", "tag", str(tmp_path / "lib"), "--out",
         str(tmp_path / "t.csv"), "--model", str(scoring_model), "--vggish",
         str(standin_vggish), "--pca", str(standin_pca), "--cache", str(tmp_path / "c.sqlite")],
        stdin=sub, stdout=sub, stderr=sub, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(sub)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))  # colours
    text = text.replace("\r\n", "\n")
    summary = text.index("3 of 3 files tagged")
    assert text[summary - 1] == "\n", text[summary - 80 : summary + 40]  # a line of its own
    assert "━" not in text[summary:] and "tagging" not in text[summary:]  # no bar below it


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


@pytest.mark.parametrize("args, said", [
    (["--ext", "wav", "--extensions", "flac"], "--ext is the old spelling of --extensions"),
    (["--extensions", ","], "--extensions ,: no extension in it")])
def test_a_spelling_that_could_mean_two_things_or_nothing_is_refused(tmp_path, args, said):
    from typer.testing import CliRunner

    from instag.cli import app

    (tmp_path / "t.csv").write_text("path\n")
    result = CliRunner().invoke(app, ["tag", str(tmp_path), "--out", str(tmp_path / "t.csv"),
                                      *args])
    assert result.exit_code == 2 and said in result.output
    assert (tmp_path / "t.csv").read_text() == "path\n"  # the previous output untouched

