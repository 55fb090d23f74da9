"""One schema for instag's documents, one rule for the files instag reads.

Every malformed record of an output (CSV, JSON, JSONL, Parquet) is one line naming the
document, the record and the field, exit 2, and nothing written: `browse` and `export` create
no folder, `write-tags` touches no file, not even one a valid record before the bad one names.
Inputs are regular files of bounded size (`/dev/zero` is refused at once, wherever it is
given), stdin has a stated cap, settings.json is type-checked by key, labels split on "\\n"
only, a label with one side is refused, and `doctor` says "can run" only once it has loaded
what tagging loads and written into the cache folder."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv, tagged_in_every_format
from typer.testing import CliRunner

import instag
from instag.cli import app
from instag.outputs.forms import CSV_FIELDS
from instag.outputs.writers import Format, result_writer

MODEL_ID = "m0"


# -- a valid document, in every format ------------------------------------------------------
@pytest.fixture
def song(tmp_path) -> Path:
    path = tmp_path / "Music" / "song.flac"
    path.parent.mkdir()
    sf.write(path, np.sin(np.arange(3 * 16000) / 10).astype(np.float32) * 0.3, 16000)
    return path


def valid_doc(song: Path) -> dict:
    st = song.stat()
    return {"path": str(song), "status": "ok", "duration_s": 3.0, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "model_id": MODEL_ID, "instruments": ["piano"],
            "segments": {"piano": [[0.0, 0.96]]},
            "bags": [{"start_s": 0.0, "end_s": 2.88, "probabilities": {"piano": 0.9,
                                                                       "voice": 0.2},
                      "present": ["piano"], "segments": {"piano": [[0.0, 0.96]]}}]}


def other(good: dict, **fields) -> dict:
    """A second file's record: `good` at another path, with `fields` changed."""
    return {**good, "path": str(Path(good["path"]).with_name("other.flac")), **fields}


def other_bag(good: dict, **fields) -> dict:
    return other(good, bags=[{**good["bags"][0], **fields}])


def csv_rows(doc: dict) -> list[dict]:
    base = {"path": doc["path"], "status": doc["status"], "reason": "",
            "duration_s": f"{doc['duration_s']:.3f}", "file_tags": "", "size": doc["size"],
            "mtime_ns": doc["mtime_ns"], "model_id": doc["model_id"]}
    return [{**base, "bag_start_s": f"{b['start_s']:.2f}", "bag_end_s": f"{b['end_s']:.2f}",
             "instrument": c, "probability": f"{p:.4f}", "present": str(int(c in b["present"])),
             "segments": ";".join(f"{s:.2f}-{e:.2f}" for s, e in b["segments"].get(c, []))}
            for b in doc["bags"] for c, p in b["probabilities"].items()]


def parquet_rows(doc: dict) -> list[dict]:
    base = {k: doc[k] for k in ("path", "status", "duration_s", "size", "mtime_ns",
                                "model_id")} | {"reason": "", "file_tags": ""}
    return [{**base, "bag_start_s": b["start_s"], "bag_end_s": b["end_s"],
             "probabilities": list(b["probabilities"].items()), "present": b["present"],
             "segments": [{"instrument": c, "start_s": s, "end_s": e}
                          for c, segs in b["segments"].items() for s, e in segs]}
            for b in doc["bags"]]


# writers: (folder, the valid record) -> the document, holding the valid record first
def jsonl(bad):
    """A JSONL output: the valid record, then `bad(good)` (or a raw line)."""
    def write(folder: Path, good: dict) -> Path:
        line = bad if isinstance(bad, str) else json.dumps(bad(good))
        (path := folder / "tags.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
        return path
    return write


def json_doc(bad):
    """A JSON output as instag writes it (a header line, one record a line), or raw text."""
    def write(folder: Path, good: dict) -> Path:
        text = bad if isinstance(bad, str) else (
            '{"instag_version": "0.1.0", "files": [\n' + json.dumps(good) + ",\n"
            + json.dumps(bad(good)) + "\n]}\n")
        (path := folder / "tags.json").write_text(text)
        return path
    return write


def csv_doc(change, drop: str | None = None):
    """A CSV output: the valid file's rows, then another file's with `change(row)` applied
    to each; `drop`: a column left out of the whole file."""
    def write(folder: Path, good: dict) -> Path:
        import csv

        rows = csv_rows(good) + [change(dict(r)) for r in csv_rows(other(good))]
        fields = [f for f in CSV_FIELDS if f != drop]
        with open(path := folder / "tags.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        return path
    return write


def parquet_doc(change=lambda rows: rows, column=None):
    """A Parquet output: the valid file's rows, then another file's changed by `change`;
    `column`: (name, type) replacing a column of the schema (its values cast or made)."""
    def write(folder: Path, good: dict) -> Path:
        pa = pytest.importorskip("pyarrow")  # the parquet extra
        import pyarrow.parquet as pq

        from instag.outputs.parquet import schema

        rows = parquet_rows(good) + change(parquet_rows(other(good)))
        table = pa.Table.from_pylist(rows, schema())
        if column is not None:
            name, kind = column
            i = table.schema.get_field_index(name)
            if kind is None:
                table = table.remove_column(i)
            else:
                kind = pa.type_for_alias(kind)
                table = table.set_column(i, pa.field(name, kind), pa.array(
                    [str(v) for v in table[name].to_pylist()], kind))
        pq.write_table(table, path := folder / "tags.parquet")
        return path
    return write


def row_set(**cells):
    return lambda row: {**row, **cells}


def parquet_set(**cells):
    return lambda rows: [{**r, **cells} for r in rows]


DEEP = "[" * 100_000 + "]" * 100_000

MALFORMED = [  # (what, writer, what the error names)
    ("a null path", jsonl(lambda g: other(g, path=None)), "field path"),
    ("a path that is a number", jsonl(lambda g: other(g, path=42)), "field path"),
    ("an empty path", jsonl(lambda g: other(g, path="")), "field path"),
    ("no path", jsonl(lambda g: {k: v for k, v in g.items() if k != "path"}), "field path"),
    ("a path with a NUL", jsonl(lambda g: other(g, path="a\0b.flac")), "field path"),
    ("an unknown status", jsonl(lambda g: other(g, status="great")), "field status"),
    ("a null status", jsonl(lambda g: other(g, status=None)), "field status"),
    ("a reason that is a number", jsonl(lambda g: other(g, status="error", reason=5)),
     "field reason"),
    ("a duration 'abc'", jsonl(lambda g: other(g, duration_s="abc")), "field duration_s"),
    ("a negative duration", jsonl(lambda g: other(g, duration_s=-1)), "field duration_s"),
    ("a size 'big'", jsonl(lambda g: other(g, size="big")), "field size"),
    ("a fractional size", jsonl(lambda g: other(g, size=1.5)), "field size"),
    ("an mtime beyond 64 bits", jsonl(lambda g: other(g, mtime_ns=2**70)), "field mtime_ns"),
    ("a model_id that is a number", jsonl(lambda g: other(g, model_id=7)), "field model_id"),
    ("instruments as a string", jsonl(lambda g: other(g, instruments="piano")),
     "field instruments"),
    ("an instrument no bag scores", jsonl(lambda g: other(g, instruments=["kazoo"])),
     "field instruments[0]"),
    ("segments as a list", jsonl(lambda g: other(g, segments=[])), "field segments"),
    ("a three-number segment", jsonl(lambda g: other(g, segments={"piano": [[0, 1, 2]]})),
     "field segments.piano[0]"),
    ("an instrument twice", jsonl(lambda g: other(g, instruments=["piano", "piano"])),
     "field instruments[1]"),
    ("a segment ending before it starts",
     jsonl(lambda g: other(g, segments={"piano": [[2.0, 1.0]]})), "field segments.piano[0]"),
    ("null bags", jsonl(lambda g: other(g, bags=None)), "field bags"),
    ("a bag that is a number", jsonl(lambda g: other(g, bags=[42])), "field bags[0]"),
    ("a null bag start", jsonl(lambda g: other_bag(g, start_s=None)), "field bags[0].start_s"),
    ("a probability 'abc'", jsonl(lambda g: other_bag(g, probabilities={"piano": "abc"})),
     "field bags[0].probabilities.piano"),
    ("a probability NaN", jsonl(lambda g: other_bag(g, probabilities={"piano": float("nan")})),
     "field bags[0].probabilities.piano"),
    ("a probability 2.0", jsonl(lambda g: other_bag(g, probabilities={"piano": 2.0})),
     "field bags[0].probabilities.piano"),
    ("probabilities as a list", jsonl(lambda g: other_bag(g, probabilities=[0.5])),
     "field bags[0].probabilities"),
    ("present as a string", jsonl(lambda g: other_bag(g, present="piano")),
     "field bags[0].present"),
    ("a bag's three-number segment", jsonl(lambda g: other_bag(g, segments={"piano": [[0, 1,
                                                                                      2]]})),
     "field bags[0].segments.piano[0]"),
    ("a timeline of the wrong length", jsonl(lambda g: other_bag(g, timeline={
        "start_s": [0.0, 0.96], "instance_probs": {"piano": [0.5]}, "attention": {}})),
     "field bags[0].timeline.instance_probs.piano"),
    ("a JSONL line 42", jsonl("42"), "line 2: field (record)"),
    ("a JSONL line []", jsonl("[]"), "line 2: field (record)"),
    ("a JSONL line null", jsonl("null"), "line 2: field (record)"),
    ("a JSONL line cut short", jsonl('{"path": "a.flac", "sta'), "line 2: not JSON"),
    ("JSON nested 100,000 deep", jsonl(DEEP), "line 2: not JSON"),
    ("a JSON record with a null path", json_doc(lambda g: other(g, path=None)),
     "line 3: field path"),
    ("a JSON document that is a list", json_doc("[1, 2]\n"), "field files"),
    ("JSON files that are a number", json_doc('{"files": 5}\n'), "field files"),
    ("a JSON header that does not parse", json_doc('[{"files": [\n]}\n'), "not JSON"),
    ("a CSV without a probability column", csv_doc(lambda r: r, drop="probability"),
     "field probability"),
    ("a CSV probability 'abc'", csv_doc(row_set(probability="abc")), "field probability"),
    ("a CSV probability NaN", csv_doc(row_set(probability="nan")), "probabilities.piano"),
    ("a CSV present 'yes'", csv_doc(row_set(present="yes")), "field present"),
    ("a CSV three-number segment", csv_doc(row_set(segments="0.00-0.96-1.92")),
     "field segments"),
    ("a CSV size 'x'", csv_doc(row_set(size="x")), "field size"),
    ("a CSV unknown status", csv_doc(row_set(status="fine")), "field status"),
    ("Parquet sizes as strings", parquet_doc(column=("size", "string")), "field size"),
    ("Parquet without probabilities", parquet_doc(column=("probabilities", None)),
     "field probabilities"),
    ("a Parquet null path", parquet_doc(parquet_set(path=None)), "field path"),
    ("a Parquet probability NaN", parquet_doc(parquet_set(probabilities=[("piano", np.nan)])),
     "probabilities.piano"),
    ("a Parquet null segment start", parquet_doc(parquet_set(
        segments=[{"instrument": "piano", "start_s": None, "end_s": 1.0}])),
     "field bags[0].segments.piano[0]"),
    ("a Parquet unknown status", parquet_doc(parquet_set(status="fine")), "field status"),
]


def commands(doc: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {"browse": ["browse", str(doc), "--out", str(tmp_path / "site")],
            "export": ["export", str(doc), "--out", str(tmp_path / "segments"), "--format",
                       "audacity"],
            "write-tags": ["write-tags", str(doc), "--cache", str(tmp_path / "cache.sqlite")]}


def one_error_line(output: str) -> str:
    """The error, which is one line, the last but its fix."""
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, output
    assert all(line.startswith("  fix: ") for line in lines[errors[0] + 1:]), output
    assert len(lines[errors[0] + 1:]) <= 1, output
    return lines[errors[0]]


@pytest.mark.parametrize("command", ["browse", "export", "write-tags"])
def test_a_valid_document_is_read_by_every_command(song, tmp_path, command):
    """The control: the documents the table breaks are valid up to their bad record."""
    before = song.read_bytes()
    for write in (jsonl(lambda g: other(g, status="missing", reason="gone")),
                  csv_doc(row_set(status="missing", bag_start_s="", instrument="")),
                  parquet_doc(parquet_set(status="missing"))):
        doc = write(tmp_path, valid_doc(song))
        result = CliRunner().invoke(app, commands(doc, tmp_path)[command])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "site" / "index.html").is_file() if command == "browse" else True
    assert (song.read_bytes() != before) == (command == "write-tags")


@pytest.mark.parametrize("what, write, names", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_record_is_one_line_naming_it_and_nothing_is_written(
        song, tmp_path, what, write, names):
    doc = write(tmp_path, valid_doc(song))
    before = song.read_bytes()
    for command, args in commands(doc, tmp_path).items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (command, result.output)
        line = one_error_line(result.output)
        assert str(doc) in line and names in line, (command, line)
        assert not (tmp_path / "site").exists() and not (tmp_path / "segments").exists()
        assert song.read_bytes() == before, command  # the valid record's file untouched


def test_a_document_that_changes_between_its_check_and_its_use_is_refused(song, tmp_path):
    from instag.common.errors import InstagError
    from instag.outputs.readback import checked_documents

    doc = jsonl(lambda g: other(g, status="missing"))(tmp_path, valid_doc(song))
    docs = checked_documents(doc)
    assert docs.count == 2
    doc.write_text(doc.read_text() + "42\n")
    with pytest.raises(InstagError, match="changed while it was read"):
        list(docs)


# -- a previous Parquet output the Ray engine resumes from -----------------------------------
@pytest.mark.parametrize("change, names", [
    (parquet_set(path=None), "row 2: field path"),
    (parquet_set(size=None), "row 2: field size"),
    (parquet_set(status="fine"), "row 2: field status"),
])
def test_a_previous_output_with_a_malformed_row_is_refused_naming_it(song, tmp_path, change,
                                                                     names):
    from instag.common.errors import InstagError
    from instag.outputs.parquet import PreviousOutput

    out = parquet_doc(change)(tmp_path, valid_doc(song))
    with pytest.raises(InstagError, match=names):
        PreviousOutput(out, MODEL_ID)


def test_a_previous_outputs_carried_rows_are_checked_against_the_schema(song, tmp_path):
    from instag.common.errors import InstagError
    from instag.outputs.parquet import PreviousOutput

    out = parquet_doc(parquet_set(probabilities=[("piano", 2.0), ("voice", 0.1)]))(
        tmp_path, valid_doc(song))
    previous = PreviousOutput(out, MODEL_ID)
    with pytest.raises(InstagError, match=r"other\.flac: field bags\[0\]\.probabilities\.piano"):
        list(previous.results(np.ones(previous.candidates.num_rows, bool),
                              [song, song.with_name("other.flac")].__getitem__))


# -- inputs: regular files of bounded size ---------------------------------------------------
def bounded_cli(*args, stdin=None):
    """instag in a process that may not take more than 4 GiB (a reader without bound fails
    in seconds, not by taking the machine's memory) nor 90 seconds (a read that blocks)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run([sys.executable, "-m", "instag", *map(str, args)], stdin=stdin,
                          capture_output=True, text=True, timeout=90, preexec_fn=limit)


@pytest.mark.parametrize("where", ["--paths-from", "--thresholds", "--labels", "browse",
                                   "stdin"])
def test_dev_zero_is_refused_at_once_wherever_it_is_given(where, tmp_path, song, scoring_model,
                                                          standin_vggish, standin_pca):
    tag = ["tag", "--out", tmp_path / "t.csv", "--model", scoring_model, "--vggish",
           standin_vggish, "--pca", standin_pca, "--cache", tmp_path / "c.sqlite"]
    args = {"--paths-from": [*tag, "--paths-from", "/dev/zero"],
            "--thresholds": [*tag, song, "--thresholds", "/dev/zero"],
            "--labels": ["train", "--labels", "/dev/zero", "--out", tmp_path / "run"],
            "browse": ["browse", "/dev/zero", "--out", tmp_path / "site"],
            "stdin": [*tag, "-"]}[where]
    with open("/dev/zero", "rb") as zero:
        out = bounded_cli(*args, stdin=zero)
    assert out.returncode == 2, out.stderr[-2000:]
    line = one_error_line(out.stderr)
    assert "/dev/zero" in line or "standard input" in line, line
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "site").exists()


def test_a_fifo_document_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "tags.jsonl")
    out = bounded_cli("browse", tmp_path / "tags.jsonl", "--out", tmp_path / "site")
    assert out.returncode == 2
    assert "a FIFO, not a regular file" in one_error_line(out.stderr)


# -- settings.json ---------------------------------------------------------------------------
@pytest.mark.parametrize("command, key", [("doctor", "pca"), ("tag", "pca"),
                                          ("train", "openmic")])
def test_settings_with_a_number_where_a_path_goes_is_one_line_naming_the_key(
        command, key, tmp_path, song, scoring_model, standin_vggish):
    settings = Path(os.environ["INSTAG_DATA_DIR"]) / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({key: 42}))
    args = {"doctor": ["doctor", "--model", str(scoring_model)],
            "tag": ["tag", str(song), "--out", str(tmp_path / "t.csv"), "--model",
                    str(scoring_model), "--vggish", str(standin_vggish), "--cache",
                    str(tmp_path / "c.sqlite")],
            "train": ["train", "--out", str(tmp_path / "run")]}[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "settings.json" in line and f"key '{key}'" in line, line


# -- labels ----------------------------------------------------------------------------------
def test_a_labels_csv_splits_rows_on_newlines_only(tmp_path):
    from instag.learning.labels import read_labels_csv

    for name in ("a\u2028b.wav", "c.wav"):
        sf.write(tmp_path / name, np.zeros(16000, np.float32), 16000)
    (tmp_path / "labels.csv").write_text("a\u2028b.wav,kazoo,1\nc.wav,kazoo,0\n",
                                         encoding="utf-8")
    labels = read_labels_csv(tmp_path / "labels.csv")
    assert [f.name for f in labels.files] == ["a\u2028b.wav", "c.wav"]


@pytest.mark.parametrize("present, counts", [("1", "(6 with it, 0 without)"),
                                             ("0", "(0 with it, 6 without)")])
def test_a_label_with_one_side_only_is_refused_before_any_song_is_decoded(
        tmp_path, present, counts, standin_vggish, standin_pca):
    rows = []
    for i in range(6):
        sf.write(tmp_path / f"s{i}.wav", np.zeros(16000 * 2, np.float32), 16000)
        rows.append(f"s{i}.wav,kazoo,{present}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(app, [
        "train", "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "run"),
        "--epochs", "1", "--vggish", str(standin_vggish), "--pca", str(standin_pca),
        "--cache", str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert f"kazoo {counts}" in line, line
    assert not (tmp_path / "cache.sqlite").exists() and not (tmp_path / "run").exists()


# -- doctor ----------------------------------------------------------------------------------
@pytest.mark.tensorflow
def test_doctor_does_not_say_can_run_with_a_junk_vggish(tmp_path, scoring_model, standin_pca):
    (tmp_path / "vggish").mkdir()
    (tmp_path / "vggish" / "saved_model.pb").write_bytes(b"junk")
    result = CliRunner().invoke(app, ["doctor", "--model", str(scoring_model), "--vggish",
                                      str(tmp_path / "vggish"), "--pca", str(standin_pca)])
    assert result.exit_code == 2, result.output
    assert "can run" not in result.output.replace("cannot run", "")
    assert "NO  models: VGGish loads:" in result.output and "fix:" in result.output


def test_doctor_does_not_say_can_run_with_a_cache_folder_that_is_a_file(
        tmp_path, monkeypatch, scoring_model, standin_vggish, standin_pca):
    (tmp_path / "cache-file").write_text("not a folder")
    monkeypatch.setenv("INSTAG_CACHE_DIR", str(tmp_path / "cache-file"))
    result = CliRunner().invoke(app, ["doctor", "--model", str(scoring_model), "--vggish",
                                      str(standin_vggish), "--pca", str(standin_pca)])
    assert result.exit_code == 2, result.output
    assert "can run" not in result.output.replace("cannot run", "")
    assert "NO  directories: cache writable:" in result.output
    assert (tmp_path / "cache-file").read_text() == "not a folder"


# -- 10. names with Unicode line separators -----------------------------------------------------
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.slow
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


def comparable(doc):
    """What every format holds of a file: probabilities to CSV's 4 decimals, no timeline."""
    doc = {**doc, "bags": [{**{k: v for k, v in b.items() if k != "timeline"},
                            "probabilities": {c: round(p, 4)
                                              for c, p in b["probabilities"].items()}}
                           for b in doc.get("bags", [])]}
    return {k: v for k, v in doc.items() if v not in ("", None, [])}


@pytest.mark.slow
def test_every_output_reads_back_as_the_same_documents(run_tag, tmp_path):
    from instag.outputs.readback import read_documents

    _, outs = tagged_in_every_format(run_tag, tmp_path)
    docs = {fmt: [comparable(d) for d in read_documents(out)] for fmt, out in outs.items()}
    assert [d["status"] for d in docs["json"]] == ["ok", "ok", "error"]
    assert len(docs["json"][0]["bags"]) == 3  # 25 s: three bags of 10 instances
    for fmt in ("jsonl", "csv", "parquet"):
        assert docs[fmt] == docs["json"], fmt


# -- 7. options ----------------------------------------------------------------------------------
def test_out_dash_writes_csv_to_stdout(run_tag, library):
    result = run_tag(library / "other", "--out", "-", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("path,status,reason,duration_s")
    assert not Path("-").exists()
