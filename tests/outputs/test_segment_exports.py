"""Segments where people open them: JAMS files that validate, Audacity label tracks and Sonic
Visualiser layers, one per audio file named after its path in the library, the same from
every output format and from `tag --segments-out`."""

import csv
import json
import os
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music
from typer.testing import CliRunner

from instag.cli import app
from instag.tagging.results import audio_path

jams = pytest.importorskip("jams")


@pytest.fixture
def tagged(run_tag, tmp_path):
    """Two albums with a `01.wav` each, and a name that is not UTF-8, tagged into every
    output format with overlapping bags."""
    lib = tmp_path / "lib"
    for album in ("a", "b"):
        (lib / album).mkdir(parents=True)
        sf.write(lib / album / "01.wav", music(14, len(album)), SR)
    sf.write(os.fsencode(lib / "a") + b"/caf\xe9.wav", music(12, 5), SR)
    outs = {}
    for fmt in ("json", "jsonl", "csv", "parquet"):
        outs[fmt] = tmp_path / f"t.{fmt}"
        result = run_tag(lib, "--out", outs[fmt], "--bag", "10", "--hop", "5",
                         "--threshold", "0.3")
        assert result.exit_code == 0, result.output
    return lib, outs


def export(tags, out, fmt):
    result = CliRunner().invoke(app, ["export", str(tags), "--out", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    return result


def json_segments(tags):
    """(file name, start, end, instrument, probability) of every file's segments, each with the
    highest probability of the bags it overlaps that hold its instrument."""
    docs = [json.loads(line) for line in tags.read_text().splitlines()]
    return {(audio_path(d["path"]).name, s, e, c,
             max(b["probabilities"][c] for b in d["bags"]
                 if c in b["present"] and b["start_s"] < e and s < b["end_s"]))
            for d in docs for c, segs in d["segments"].items() for s, e in segs}


def test_every_tagged_file_gets_a_jams_file_that_validates_named_after_its_path(
        tagged, tmp_path):
    lib, outs = tagged
    said = export(outs["json"], tmp_path / "x", "jams")
    assert "3 files of segments written" in said.output
    names = sorted(os.fsencode(p.relative_to(tmp_path / "x")) for p in
                   (tmp_path / "x").rglob("*.jams"))
    assert names == [b"a/01.wav.jams", b"a/caf\xe9.wav.jams", b"b/01.wav.jams"]
    header = json.loads((outs["json"]).read_text().splitlines()[0] + "]}")
    found = set()
    for path in (tmp_path / "x").rglob("*.jams"):
        jam = jams.load(str(path), validate=True, strict=True)
        (ann,) = jam.annotations
        assert ann.namespace == "tag_open"
        assert ann.annotation_metadata.annotation_tools.startswith("instag ")
        assert ann.sandbox.instag["thresholds"] == header["thresholds"]
        assert jam.file_metadata.duration == pytest.approx(14 if "01" in path.name else 12)
        found |= {(Path(os.fsdecode(path.name)).stem, o.time, o.time + o.duration, o.value,
                   o.confidence) for o in ann.data}
    want = {(name, s, e, c, p) for name, s, e, c, p in json_segments(outs["jsonl"])}
    assert {(n, round(s, 6), round(e, 6), c, p) for n, s, e, c, p in found} == \
        {(n, round(s, 6), round(e, 6), c, p) for n, s, e, c, p in want}
    assert len(want) > 3  # something to compare: instruments present


def test_audacity_labels_and_sonic_visualiser_layers_hold_the_same_segments(tagged, tmp_path):
    lib, outs = tagged
    export(outs["jsonl"], tmp_path / "aud", "audacity")
    export(outs["jsonl"], tmp_path / "sv", "sv")
    want = json_segments(outs["jsonl"])
    labels, layers = set(), set()
    for path in (tmp_path / "aud").rglob("*.txt"):
        for line in path.read_text().splitlines():
            start, end, label = line.split("\t")
            labels.add((Path(os.fsdecode(path.name)).stem, float(start), float(end), label))
    for path in (tmp_path / "sv").rglob("*.csv"):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["time", "value", "duration", "label"]  # SV's own column names
        assert [float(r[0]) for r in rows[1:]] == sorted(float(r[0]) for r in rows[1:])
        layers |= {(Path(os.fsdecode(path.name)).stem, float(t), round(float(t) + float(d), 6),
                    label, float(v)) for t, v, d, label in rows[1:]}
    assert labels == {(n, s, e, c) for n, s, e, c, _ in want}
    assert layers == {(n, s, round(e, 6), c, p) for n, s, e, c, p in want}


@pytest.mark.parametrize("fmt", ["jams", "audacity", "sv"])
def test_every_output_format_exports_the_same_segments(tagged, tmp_path, fmt):
    lib, outs = tagged
    exported = {}
    for source in ("csv", "jsonl", "parquet"):
        export(outs[source], tmp_path / source, fmt)
        exported[source] = {p.relative_to(tmp_path / source): segments_in(p, fmt)
                            for p in (tmp_path / source).rglob("*.*")}
    assert len(exported["csv"]) == 3
    assert exported["csv"] == exported["jsonl"] == exported["parquet"]


def segments_in(path, fmt):
    if fmt == "jams":
        return sorted((o.time, o.duration, o.value, o.confidence)
                      for o in jams.load(str(path)).annotations[0].data)
    return path.read_text()


def test_tag_writes_the_same_segments_as_export_would(run_tag, tagged, tmp_path):
    lib, outs = tagged
    result = run_tag(lib, "--out", tmp_path / "again.csv", "--bag", "10", "--hop", "5",
                     "--threshold", "0.3", "--segments-out", tmp_path / "during",
                     "--segments-format", "audacity")
    assert result.exit_code == 0, result.output
    export(outs["csv"], tmp_path / "after", "audacity")
    during = {p.relative_to(tmp_path / "during"): p.read_text()
              for p in (tmp_path / "during").rglob("*.txt")}
    after = {p.relative_to(tmp_path / "after"): p.read_text()
             for p in (tmp_path / "after").rglob("*.txt")}
    assert during == after and len(during) == 3


def test_segments_into_a_file_are_refused_in_one_line(tagged, tmp_path):
    lib, outs = tagged
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["export", str(outs["csv"]), "--out",
                                      str(tmp_path / "afile")])
    assert result.exit_code == 2 and "is a file" in result.output
    assert (tmp_path / "afile").read_text() == "x"


def test_a_tag_run_that_fails_leaves_the_previous_segment_files_as_they_were(tagged, tmp_path):
    """`tag --segments-out` stages its files and moves them in only when the run's output is
    in place: a run that fails or is stopped replaces none of them."""
    from instag.outputs.exports import SegmentsWriter
    from instag.outputs.readback import read_documents
    from instag.tagging.results import audio_path

    lib, outs = tagged
    docs = [d for d in read_documents(outs["jsonl"]) if d["status"] == "ok"]
    writer = SegmentsWriter(tmp_path / "seg", "audacity", lib)
    with writer.staged():
        for d in docs:
            writer(d)
    assert len(list((tmp_path / "seg").rglob("*.txt"))) == 3
    first = writer.out / os.fsdecode(writer.relative(audio_path(docs[0]["path"])))
    first.write_text("previous\n")
    with pytest.raises(RuntimeError), writer.staged():
        writer(docs[0])
        raise RuntimeError("the run fails")
    assert first.read_text() == "previous\n"
    assert [p.name for p in (tmp_path / "seg").iterdir() if p.name.startswith(".")] == []


def every_fourth_instance(weights, first_instance=0):
    """Attention that points at one instance in four: fragments 2.88 s apart (the stand-in
    model's attention is even, which gives whole bags)."""
    from instag.features.instances import instance_span

    return [instance_span(first_instance + i) for i in range(0, len(weights), 4)]


def test_one_segment_rule_gives_the_same_segments_in_the_tags_file_an_export_and_the_page(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging.segments import SegmentRule

    monkeypatch.setattr("instag.tagging.results.attention_segments", every_fourth_instance)
    (tmp_path / "lib").mkdir()
    sf.write(tmp_path / "lib" / "a.wav", music(60, 3), SR)
    rule = ["--min-segment", "2", "--merge-gap", "3"]
    tags = tmp_path / "t.jsonl"
    result = run_tag(tmp_path / "lib", "--out", tags, "--bag", "10", "--threshold", "0.3", *rule,
                     "--segments-out", tmp_path / "during")
    assert result.exit_code == 0, result.output
    (doc,) = [json.loads(line) for line in tags.read_text().splitlines()]
    in_tags = {(c, round(s, 2), round(e, 2)) for c, segs in doc["segments"].items()
               for s, e in segs}
    bags_alone = {(c, round(s, 2), round(e, 2)) for c in doc["instruments"]
                  for s, e in SegmentRule(0, 0).apply(
                      tuple(s) for b in doc["bags"] for s in b["segments"].get(c, []))}
    assert in_tags and in_tags != bags_alone  # the rule made a difference to see

    def jams_segments(folder):
        (path,) = folder.rglob("*.jams")
        return {(o.value, round(o.time, 2), round(o.time + o.duration, 2))
                for o in jams.load(str(path)).annotations[0].data}

    # a CSV holds the bags' segments alone: export makes the file's again, under the rule
    assert run_tag(tmp_path / "lib", "--out", tmp_path / "t.csv", "--bag", "10", "--threshold",
                   "0.3").exit_code == 0
    assert CliRunner().invoke(app, ["export", str(tmp_path / "t.csv"), "--out",
                                    str(tmp_path / "after"), *rule]).exit_code == 0
    site = CliRunner().invoke(app, ["browse", str(tags), "--out", str(tmp_path / "site"), *rule])
    assert site.exit_code == 0, site.output
    chunk = (tmp_path / "site" / "data" / "chunk-0000.js").read_text()
    (row,) = json.loads(chunk[chunk.index("(") + 1 : chunk.rindex(")")])[1]
    on_page = {(name, s, e) for name, _, present, segs in row[5] if present for s, e in segs}
    assert jams_segments(tmp_path / "during") == jams_segments(tmp_path / "after") == \
        on_page == in_tags
