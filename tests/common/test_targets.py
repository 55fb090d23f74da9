"""The output-target rule, command by command: every file or folder a user names as an output
is new, empty or instag's own; anything else (a user's file, an audio file, the command's own
input) is refused in one line, exit 2, its bytes untouched. Inside output folders nothing is
written through a link, long names are shortened and collisions get names of their own.

The table lists every command option that names an output; a test reads the commands from the
CLI itself, so a command added later fails here until it is in the table (and so goes through
the rule)."""

from __future__ import annotations

import errno
import json
import os
import typing
from pathlib import Path

import pytest
import soundfile as sf
import typer
from builders import SR, mounted, music
from typer.testing import CliRunner

from instag.cli import app
from instag.engines.local.pool import DecodePool

# Path-valued options that are read, never written (inputs), and the cache, which has its own
# rule (instag's database: tests/engines/local/test_cache.py).
READ_ONLY = {
    ("tag", "paths"), ("tag", "paths_from"), ("tag", "model"), ("tag", "pca"),
    ("tag", "thresholds"), ("tag", "thresholds_file"), ("plot", "tags_file"), ("plot", "audio"),
    ("plot", "model"),
    ("plot", "pca"), ("embed", "paths"), ("embed", "pca"), ("write-tags", "tags_file"),
    ("export", "tags_file"), ("export", "root"), ("browse", "tags_file"), ("browse", "model"),
    ("browse", "pca"),
    ("train", "openmic"), ("train", "labels"), ("train", "labels_from_folders"), ("train", "pca"),
    ("evaluate", "run_dir"), ("evaluate", "openmic"), ("report", "run_dirs"),
    ("export-onnx", "run_dir"), ("setup", "openmic"), ("setup", "pca"), ("setup", "vggish"),
    ("doctor", "model"), ("doctor", "pca"),
}
CACHES = {(c, "cache") for c in ("tag", "plot", "embed", "write-tags", "train", "cache", "browse",
                                 "prune")}

# (command, option): how to run the command with OUT as that option (fixtures fill the rest)
FILE_OUTPUTS = {
    ("tag", "out"): lambda f, out: f.tag(f.lib, "--out", out),
    ("tag", "summary"): lambda f, out: f.tag(f.lib, "--out", f.tmp / "s.csv", "--summary", out),
    ("plot", "out"): lambda f, out: f.cli("plot", f.tags, "--out", out, *f.models, "--cache",
                                          f.cache),
    ("embed", "out"): lambda f, out: f.cli("embed", f.lib, "--out", out, *f.models[2:]),
    ("report", "png"): lambda f, out: f.report("--png", out),
    ("report", "models_png"): lambda f, out: f.report("--models-png", out),
    ("report", "json_out"): lambda f, out: f.report("--json", out),
    ("evaluate", "json_out"): lambda f, out: f.cli("evaluate", f.run, "--json", out),
    ("export-onnx", "out"): lambda f, out: f.cli("export-onnx", f.run, "--out", out),
}
FOLDER_OUTPUTS = {
    ("tag", "plot"): lambda f, out: f.tag(f.lib, "--out", f.tmp / "p.csv", "--plot", out),
    ("tag", "segments_out"): lambda f, out: f.tag(f.lib, "--out", f.tmp / "g.csv",
                                                  "--segments-out", out),
    ("export", "out"): lambda f, out: f.cli("export", f.tags, "--out", out),
    ("browse", "out"): lambda f, out: f.cli("browse", f.tags, "--out", out),
    ("train", "out"): lambda f, out: f.cli("train", "--openmic", f.run.parent / "data",
                                           "--epochs", "1", "--out", out),
}
# the name a user gives each file output (its extension decides the format where it does)
NAME = {("tag", "out"): "tags.csv", ("tag", "summary"): "summary.csv",
        ("plot", "out"): "figure.png", ("embed", "out"): "features.npz",
        ("report", "png"): "report.png", ("report", "models_png"): "models.png",
        ("report", "json_out"): "report.json", ("evaluate", "json_out"): "evaluation.json",
        ("export-onnx", "out"): "model.onnx"}


def path_options() -> set[tuple[str, str]]:
    """Every (command, parameter) of the CLI whose value is a path (or paths)."""

    def commands(group):
        for name, command in group.commands.items():
            yield from commands(command) if hasattr(command, "commands") else [(name, command)]

    def is_path(annotation) -> bool:
        return annotation is Path or any(is_path(a) for a in typing.get_args(annotation))

    return {(name, p.name) for name, command in commands(typer.main.get_command(app))
            for p in command.params if is_path(p.type_descriptor.annotation)}


def test_every_option_that_names_an_output_is_in_the_table():
    outputs = path_options() - READ_ONLY - CACHES
    assert outputs == set(FILE_OUTPUTS) | set(FOLDER_OUTPUTS)


class Fixture:
    """A tagged library, its JSONL output and a trained run (made once for the module), a
    scratch folder per test, and the command runners."""

    def __init__(self, made: dict, tmp: Path):
        self.lib, self.tags, self.run, self.models = (made[k] for k in
                                                      ("lib", "tags", "run", "models"))
        self.cache, self.tmp = made["cache"], tmp

    @staticmethod
    def cli(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    def report(self, option, out):
        """`instag report` with `option` OUT, its other figures in the scratch folder."""
        figures = {"--png": self.tmp / "f3.png", "--models-png": self.tmp / "f2.png", option: out}
        return self.cli("report", self.run, *(x for kv in figures.items() for x in kv))

    def tag(self, *args):
        return self.cli("tag", *self.models, "--cache", self.cache, "--jobs", "1", *args)


@pytest.fixture(scope="module")
def made(tmp_path_factory, scoring_model, standin_vggish, standin_pca, trained_run):
    root = tmp_path_factory.mktemp("targets")
    lib = root / "lib"
    (lib / "album").mkdir(parents=True)
    sf.write(lib / "album" / "01.wav", music(4, 1), SR)
    sf.write(lib / "02.wav", music(3, 2), SR)
    made = {"lib": lib, "tags": root / "tags.jsonl", "run": trained_run,
            "cache": root / "cache.sqlite",
            "models": ["--model", scoring_model, "--vggish", standin_vggish, "--pca",
                       standin_pca]}
    assert Fixture(made, root).tag(lib, "--out", made["tags"]).exit_code == 0
    return made


@pytest.fixture
def f(made, tmp_path):
    return Fixture(made, tmp_path)


def refused(result, *untouched: tuple[Path, bytes]) -> None:
    """Exit 2, one error line, no traceback, and the files as they were."""
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    for path, before in untouched:
        assert path.read_bytes() == before, path


@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_a_users_file_named_as_an_output_is_refused_untouched(f, case):
    mine = f.tmp / "mine" / NAME[case]
    mine.parent.mkdir()
    mine.write_bytes(b"my own notes, not instag's\n")
    refused(FILE_OUTPUTS[case](f, mine), (mine, b"my own notes, not instag's\n"))


@pytest.mark.parametrize("spelling", ["/", "/."])
@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_a_file_output_spelled_as_a_folder_is_refused_not_written_as_a_file(f, case, spelling):
    """`plot --out figs/` names a folder: Typer's Path dropped the slash (and `/.`), and a
    file named `figs` was written."""
    result = FILE_OUTPUTS[case](f, f"{f.tmp / NAME[case]}{spelling}")
    assert result.exit_code == 2 and "names a folder" in said(result)
    assert not (f.tmp / NAME[case]).exists()


@pytest.mark.parametrize("case", sorted(FOLDER_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_an_empty_folder_name_is_refused_not_taken_for_the_current_folder(f, case, monkeypatch):
    """`--segments-out ''` wrote into the folder the command ran in."""
    monkeypatch.chdir(f.tmp)
    result = FOLDER_OUTPUTS[case](f, "")
    assert result.exit_code == 2 and "names no folder" in said(result)
    assert list(f.tmp.iterdir()) == []


@pytest.mark.parametrize("whole", ["dataset", "site"])
@pytest.mark.parametrize("case", [("tag", "plot"), ("tag", "segments_out"), ("export", "out")],
                         ids="{0[0]} --{0[1]}".format)
def test_a_folder_output_is_never_added_to_another_output_that_is_a_folder(f, case, whole):
    """JAMS files or figures added to a Parquet dataset or a browse site break it."""
    folder = f.tmp / whole
    made = (f.tag(f.lib, "--format", "parquet", "--out", folder) if whole == "dataset" else
            f.cli("browse", f.tags, "--out", folder))
    assert made.exit_code == 0, made.output
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    result = FOLDER_OUTPUTS[case](f, folder)
    assert result.exit_code == 2 and "a file added to it would break it" in said(result)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_a_cache_spelled_as_a_folder_is_refused(f):
    result = f.cli("tag", f.lib, "--out", f.tmp / "t.csv", "--cache", f"{f.tmp / 'c'}/")
    assert result.exit_code == 2 and "names a folder" in said(result)
    assert not (f.tmp / "c").exists()


def said(result) -> str:
    """A usage error's words, without the box Typer draws around them in tests."""
    return " ".join(result.output.replace("│", " ").split())


def test_one_file_named_for_two_outputs_is_refused_naming_both(f):
    """Each would replace the other: export-onnx's card and its model (`--out m.json`),
    report's two figures; `tag` names its outputs as they were typed."""
    refused(export := f.cli("export-onnx", f.run, "--out", f.tmp / "m.json"))
    assert "--out and --out's card name one file" in export.output
    refused(report := f.cli("report", f.run, "--png", f.tmp / "r.png", "--models-png",
                            f.tmp / "r.png"))
    assert "--png and --models-png name one file" in report.output
    refused(tag := f.tag(f.lib, "--out", f.tmp / "t.csv", "--summary", f.tmp / "t.csv"))
    assert "named twice, as --out and as --summary" in tag.output
    assert list(f.tmp.iterdir()) == []


@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_an_audio_file_named_as_an_output_is_refused_untouched(f, case):
    song = f.lib / "album" / "01.wav"
    before = song.read_bytes()
    refused(FILE_OUTPUTS[case](f, song), (song, before))


@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_a_link_named_as_an_output_is_refused_and_its_target_untouched(f, case):
    elsewhere = f.tmp / "elsewhere.txt"
    elsewhere.write_bytes(b"kept")
    link = f.tmp / "links" / NAME[case]
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    refused(FILE_OUTPUTS[case](f, link), (elsewhere, b"kept"))
    assert link.is_symlink()


def test_the_commands_own_input_is_refused_as_its_output(f):
    before = f.tags.read_bytes()
    refused(f.cli("plot", f.tags, "--out", f.tags, *f.models), (f.tags, before))
    metrics = f.run / "metrics.json"
    before = metrics.read_bytes()
    refused(f.report("--json", metrics), (metrics, before))


@pytest.mark.parametrize("case", [("tag", "out"), ("tag", "summary"), ("plot", "out"),
                                  ("report", "png")], ids="{0[0]} --{0[1]}".format)
def test_an_empty_file_or_instags_own_output_is_replaced(f, case):
    out = f.tmp / "outs" / NAME[case]
    out.parent.mkdir()
    out.touch()
    for _ in range(2):  # empty, then its own output of the first run
        result = FILE_OUTPUTS[case](f, out)
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0


def test_outputs_of_the_previous_shape_are_recognised_as_instags(f):
    """The next cron run after an upgrade replaces what the old version wrote."""
    old_csv = f.tmp / "old.csv"
    old_csv.write_text("path,status,reason,duration_s,instrument,probability,present\r\n")
    old_json = f.tmp / "old.json"
    old_json.write_text('{"instag_version": "0.0.9", "files": [\n]}\n')
    for out in (old_csv, old_json):
        assert f.tag(f.lib, "--out", out).exit_code == 0


@pytest.mark.parametrize("case", sorted(FOLDER_OUTPUTS), ids="{0[0]} --{0[1]}".format)
def test_a_file_named_as_an_output_folder_is_refused_untouched(f, case):
    mine = f.tmp / "notes.txt"
    mine.write_bytes(b"mine")
    refused(FOLDER_OUTPUTS[case](f, mine), (mine, b"mine"))


def test_export_writes_nothing_through_a_link_inside_its_folder(f):
    outside = f.tmp / "outside"
    outside.mkdir()
    victim = outside / "01.wav.jams"
    victim.write_bytes(b"someone else's")
    out = f.tmp / "x"
    out.mkdir()
    (out / "album").symlink_to(outside)  # where album/01.wav.jams would go
    result = f.cli("export", f.tags, "--out", out)
    assert result.exit_code == 1, result.output  # that file failed, the other was written
    assert "album" in result.output and "Traceback" not in result.output
    assert victim.read_bytes() == b"someone else's"
    assert (out / "02.wav.jams").is_file()


def test_export_shortens_names_past_the_limit_and_separates_collisions(f):
    """A 250-byte name gets a suffix past 255 bytes, and an audio file `d` beside a folder
    `d.wav.txt/`: every file is written, each in a place of its own."""
    lib = f.tmp / "lib2"
    lib.mkdir()
    sf.write(lib / ("x" * 250 + ".wav"), music(3, 3), SR)
    (lib / "d.wav.txt").mkdir()
    sf.write(lib / "d.wav", music(3, 4), SR)
    sf.write(lib / "d.wav.txt" / "e.wav", music(3, 5), SR)
    tags = f.tmp / "lib2.jsonl"
    assert f.tag(lib, "--out", tags).exit_code == 0
    out = f.tmp / "labels"
    for _ in range(2):  # and again: the same places, its own files replaced
        result = f.cli("export", tags, "--out", out, "--format", "audacity")
        assert result.exit_code == 0, result.output
        assert "3 files of segments written" in result.output
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt") if p.is_file())
    assert len(names) == 3 and all(len(os.fsencode(Path(n).name)) <= 255 for n in names)
    assert "d.wav.txt" in names and any(n.startswith("d.wav~") for n in names), names


def test_a_full_disk_during_export_is_one_line_and_the_previous_files_are_kept(f, monkeypatch):
    out = f.tmp / "x"
    assert f.cli("export", f.tags, "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from instag.outputs import exports

    def full(self, doc, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exports.SegmentsWriter, "_content", full)
    refused(f.cli("export", f.tags, "--out", out), *before.items())
    assert {p for p in out.rglob("*") if p.is_file()} == set(before)


def test_a_full_disk_during_tag_is_one_line_and_the_previous_output_is_kept(f, monkeypatch):
    out = f.tmp / "tags.csv"
    assert f.tag(f.lib, "--out", out).exit_code == 0
    before = out.read_bytes()
    from instag.outputs import forms

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(forms, "csv_rows", full)
    monkeypatch.setattr("instag.outputs.writers.csv_rows", full)
    refused(f.tag(f.lib, "--out", out), (out, before))


def test_browse_replaces_only_its_own_site(f):
    site = f.tmp / "site"
    assert f.cli("browse", f.tags, "--out", site).exit_code == 0
    assert f.cli("browse", f.tags, "--out", site).exit_code == 0
    mine = f.tmp / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    refused(f.cli("browse", f.tags, "--out", mine), (mine / "index.html", b"my page"))


def test_a_report_of_an_older_shape_is_recognised(f):
    out = f.tmp / "summary.json"
    out.write_text(json.dumps({"att": {"runs": 1, "f1": {"mean": 0.5, "std": 0.0}}}))
    assert f.report("--json", out).exit_code == 0


# -- what instag reads: every option that names a file to read refuses a FIFO at once --------
INPUT_FILES = {  # (command, option) -> its arguments with FILE as that option's value
    ("tag", "paths_from"): lambda f, x: ["tag", "--paths-from", x, "--out", f.tmp / "t.csv"],
    ("tag", "thresholds_file"): lambda f, x: ["tag", f.lib, "--out", f.tmp / "t.csv",
                                              "--thresholds-file", x, *f.models],
    ("tag", "model"): lambda f, x: ["tag", f.lib, "--out", f.tmp / "t.csv", "--model", x],
    ("plot", "tags_file"): lambda f, x: ["plot", x, "--out", f.tmp / "p.png"],
    ("write-tags", "tags_file"): lambda f, x: ["write-tags", x],
    ("export", "tags_file"): lambda f, x: ["export", x, "--out", f.tmp / "x"],
    ("browse", "tags_file"): lambda f, x: ["browse", x, "--out", f.tmp / "site"],
    ("train", "labels"): lambda f, x: ["train", "--labels", x, "--out", f.tmp / "run"],
}


@pytest.mark.parametrize("case", sorted(INPUT_FILES), ids="{0[0]} --{0[1]}".format)
def test_a_fifo_named_as_an_input_is_refused_in_one_line_without_blocking(f, case):
    import subprocess
    import sys

    fifo = f.tmp / "pipe.csv"
    os.mkfifo(fifo)
    args = [str(a) for a in INPUT_FILES[case](f, fifo)]
    done = subprocess.run([sys.executable, "-m", "instag", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_output_that_is_a_folder_is_named_as_one(run_tag, tmp_path):
    result = run_tag(tmp_path, "--out", tmp_path)
    assert result.exit_code == 2 and f"--out {tmp_path}: is a folder" in result.output


def no_decoding(monkeypatch):
    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoding started"))


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


def test_an_output_in_a_read_only_folder_is_refused_before_any_work(run_tag, library, tmp_path,
                                                                    monkeypatch):
    no_decoding(monkeypatch)
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        result = run_tag(library / "other", "--out", ro / "t.csv")
    assert result.exit_code == 2 and "cannot write" in result.output
