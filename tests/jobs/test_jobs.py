"""One run object, whoever starts it: `instag tag` and a Python script with the same options
write the same outputs (the tags file, the summary, segment exports and the files' own tags),
because the CLI is that script's run with its options parsed."""

from __future__ import annotations

import shutil
from pathlib import Path

import mutagen
import pytest
import soundfile as sf
from builders import SR, music, read_csv

import instag


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A library `lib` of four files in two folders, named relative to the working folder
    (so that two copies of it give the same paths in every output)."""
    lib = tmp_path / "a" / "lib"
    (lib / "album").mkdir(parents=True)
    for i, name in enumerate(["album/01.flac", "album/02.flac", "03.wav", "04.flac"]):
        sf.write(lib / name, music(6 + 3 * i, i), SR)
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy2)
    monkeypatch.chdir(tmp_path / "a")
    return tmp_path


@pytest.fixture
def options(scoring_model, standin_vggish, standin_pca, here):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=here / "cache.sqlite", jobs=2, bag=5, threshold=0.3)


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_the_cli_and_a_script_write_byte_identical_outputs(run_tag, options, here):
    result = run_tag("lib", "--out", "cli/tags.csv", "--summary", "cli/summary.csv",
                     "--segments-out", "cli/segments", "--segments-format", "audacity",
                     "--bag", "5", "--threshold", "0.3")
    assert result.exit_code == 0, result.output
    run = instag.Run(["lib"], options, [
        instag.SegmentsFolder("api/segments", "audacity"), instag.TagsFile("api/tags.csv"),
        instag.SummaryFile("api/summary.csv")])
    summary = run.run()
    assert summary.ok == 4
    cli, api = files(here / "a" / "cli"), files(here / "a" / "api")
    assert cli.keys() == api.keys() and len(cli) == 2 + 4
    assert cli == api


def instruments(path):
    return mutagen.File(path).get("INSTRUMENTS") or mutagen.File(path).get("TXXX:INSTRUMENTS")


@pytest.mark.slow
def test_the_cli_and_a_script_write_the_same_tags_into_the_files(run_tag, options, here,
                                                                 monkeypatch):
    assert run_tag("lib", "--out", "tags.csv", "--write-tags", "--bag", "5", "--threshold",
                   "0.3").exit_code == 0
    monkeypatch.chdir(here / "b")
    run = instag.Run(["lib"], options, [instag.TagsFile("tags.csv"), instag.FileTags()])
    assert run.run().file_tags_outcomes == {"written": 4}
    for song in (here / "a" / "lib").rglob("*.*"):
        twin = here / "b" / song.relative_to(here / "a")
        assert instruments(song) == instruments(twin) and instruments(song), song
    a, b = (read_csv(here / x / "tags.csv") for x in "ab")
    for copy, rows in zip("ab", (a, b), strict=True):
        for row in rows:
            row.pop("mtime_ns")  # when each copy's tags were written: the one difference
            row["path"] = row["path"].replace(str(here / copy), "")
    assert a == b


def test_a_run_stopped_by_its_caller_leaves_the_previous_outputs(options, here):
    first = instag.Run(["lib"], options, [instag.TagsFile("t.csv"),
                                          instag.SummaryFile("s.csv")])
    first.run()
    before = {p: (here / "a" / p).read_bytes() for p in ("t.csv", "s.csv")}
    again = iter(instag.Run(["lib"], options, [instag.TagsFile("t.csv"),
                                               instag.SummaryFile("s.csv")]))
    next(again)
    again.close()  # the caller stops after one file
    assert {p: (here / "a" / p).read_bytes() for p in before} == before


def test_two_outputs_on_one_path_are_refused_before_anything_runs(options, here):
    with pytest.raises(instag.UsageError, match="named twice"):
        instag.Run(["lib"], options, [instag.TagsFile("t.csv"), instag.SummaryFile("t.csv")])


def test_an_output_another_program_writes_during_the_run_puts_no_output_in_place(
        run_tag, options, here):
    """All targets are checked before the first goes into place: the summary is not replaced
    while the tags file (changed meanwhile) is refused; the CLI says so in one line, exit 2."""
    assert run_tag("lib", "--out", "t.csv", "--summary", "s.csv").exit_code == 0
    before = {p: (here / "a" / p).read_bytes() for p in ("t.csv", "s.csv")}
    run = instag.Run(["lib"], options, [instag.TagsFile("t.csv"), instag.SummaryFile("s.csv")])
    results = iter(run)
    next(results)
    (here / "a" / "t.csv").write_bytes(before["t.csv"] + b"\n")  # someone saves it meanwhile
    with pytest.raises(Exception, match="written by another program"):
        list(results)
    assert (here / "a" / "s.csv").read_bytes() == before["s.csv"]


def test_a_run_reads_its_defaults_once_when_it_is_made(options, here, monkeypatch):
    """Options resolved at the edge: the model named by $INSTAG_MODEL and the precision in
    $INSTAG_PRECISION are read when the run is made; a change to the environment while it
    runs (a nightly job's shell, a script) does not change what the run uses."""
    import dataclasses

    monkeypatch.setenv("INSTAG_MODEL", str(options.model))
    monkeypatch.setenv("INSTAG_PRECISION", "fp32")
    run = instag.Run(["lib"], dataclasses.replace(options, model=None))
    monkeypatch.setenv("INSTAG_MODEL", str(here / "gone.onnx"))
    monkeypatch.setenv("INSTAG_PRECISION", "int8")  # no INT8 VGGish here: would be refused
    assert run.run().ok == 4


def test_the_readmes_python_example_writes_what_its_command_line_writes(
        run_tag, options, here):
    """README's Python block, saved as a script and run as a user runs it (`python
    script.py`: decode workers start by importing it; the library named `lib` instead of
    ~/Music, the stand-ins by their environment variables), and README's second command line
    give the same tags file, summary and file tags."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```python\n(import instag\n.*?)```", readme, re.DOTALL)
    assert run_tag("lib", "--out", "tags.csv", "--summary", "summary.csv",
                   "--write-tags").exit_code == 0
    (here / "b" / "script.py").write_text(block.replace('Path.home() / "Music"', 'Path("lib")'))
    env = {**os.environ, **{f"INSTAG_{name}": str(value) for name, value in (
        ("MODEL", options.model), ("VGGISH", options.vggish), ("PCA", options.pca))}}
    done = subprocess.run([sys.executable, "script.py"], cwd=here / "b", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 4  # the loop: a line per file
    summaries = [(here / x / "summary.csv").read_text().replace(str(here / x), "")
                 for x in "ab"]
    assert summaries[0] == summaries[1]
    a, b = (read_csv(here / x / "tags.csv") for x in "ab")
    for copy, rows in zip("ab", (a, b), strict=True):
        for row in rows:
            row.pop("mtime_ns")  # when each copy's tags were written: the one difference
            row["path"] = row["path"].replace(str(here / copy), "")
    assert a == b and all(row["file_tags"] for row in a if row["status"] == "ok")
    for song in (here / "a" / "lib").rglob("*.*"):
        assert instruments(song) == instruments(here / "b" / song.relative_to(here / "a"))


def test_one_path_given_alone_is_that_path_not_its_characters(options, here):
    """`instag.tag("lib")`: a str is one path (iterating it would walk `l`, `i`, `b`, and a
    string such as "/srv/music" would start at `/`)."""
    run = instag.Run("lib", options)
    assert run.paths == [Path("lib")]
    assert run.run().ok == 4


def test_a_missing_root_from_python_is_refused_before_it_replaces_an_output(options, here):
    """As on the command line: an unmounted disk must not replace a good output with one row
    saying `missing`."""
    assert instag.Run(["lib"], options, [instag.TagsFile("t.csv")]).run().ok == 4
    before = (here / "a" / "t.csv").read_bytes()
    for gone in (["/mnt/not-mounted/Music"], ["~/Music"]):
        with pytest.raises(instag.UsageError, match="no such file or folder"):
            instag.Run(gone, options, [instag.TagsFile("t.csv")])
    assert (here / "a" / "t.csv").read_bytes() == before


@pytest.mark.parametrize("given, walked", [
    ("wav", (".wav",)), (("WAV", ".Flac"), (".wav", ".flac")), ("mp3, .OGG", (".mp3", ".ogg"))])
def test_extensions_are_taken_as_a_user_writes_them(given, walked):
    assert instag.TagOptions(extensions=given).extensions == walked


@pytest.mark.parametrize("kwargs, said", [
    ({"extensions": ","}, "extensions=','"), ({"extensions": ()}, "extensions=()"),
    ({"extensions": None}, "extensions=None"),
    ({"bag": 5, "bag_size": 10}, "bag_size is the old name of bag"),
    ({"hidden": False, "include_hidden": True}, "include_hidden is the old name of hidden"),
    ({"write_tags": "yes"}, "write_tags='yes'")])
def test_options_a_run_could_not_mean_are_refused_in_pythons_words(kwargs, said):
    with pytest.raises(instag.UsageError) as e:
        instag.TagOptions(**kwargs)
    assert said in e.value.message


def test_write_tags_true_means_the_command_lines_write_tags():
    assert instag.TagOptions(write_tags=True).write_tags == instag.TagWriting()


def test_a_run_is_refused_what_would_do_something_twice_or_nothing(options, here):
    import dataclasses

    writing = dataclasses.replace(options, write_tags=instag.TagWriting())
    with pytest.raises(instag.UsageError, match="named twice"):
        instag.Run(["lib"], writing, [instag.FileTags()])
    with pytest.raises(instag.UsageError, match="address"):
        instag.Run(["lib"], options, address="ray://x:1")
    with pytest.raises(instag.UsageError, match="engine='spark'"):
        instag.Run(["lib"], options, engine="spark")
    with pytest.raises(instag.UsageError, match="not a TagOptions"):
        instag.Run(["lib"], {"bag": 10})
    run = instag.Run(["lib"], options)
    assert run.run().done == 4
    with pytest.raises(instag.UsageError, match="has run"):
        run.run()


def test_the_pca_is_read_once_too(options, here, monkeypatch):
    monkeypatch.setenv("INSTAG_PCA", str(options.pca))
    import dataclasses

    run = instag.Run(["lib"], dataclasses.replace(options, pca=None))
    monkeypatch.setenv("INSTAG_PCA", str(here / "gone.npz"))
    assert run.run().ok == 4


@pytest.mark.parametrize("make, said", [
    (lambda: [instag.SummaryFile("s.txt")], "SummaryFile s.txt: a summary is a .csv"),
    (lambda: [instag.TagsFile("t.txt")], "TagsFile t.txt: unknown output extension"),
    (lambda: [instag.FileTags(instag.TagWriting(field="TITLE"))], "field TITLE: a standard tag"),
    (lambda: [instag.FileTags(instag.TagWriting(separator=" "))], "separator ' ': needs")])
def test_an_outputs_error_names_it_as_python_does(options, here, make, said):
    """From Python, an output is named by its class and keyword, not by the command line's
    flag (`SummaryFile`, not `--summary`)."""
    with pytest.raises(instag.UsageError) as e:
        instag.Run(["lib"], options, make())
    assert e.value.message.startswith(said) and "--" not in e.value.message
