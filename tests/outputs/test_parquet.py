"""Parquet output: one row per file and bag, as a file or a dataset directory that is complete
or absent; and the identity (size, mtime, models) every output format now carries."""

import json
import os
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music, read_csv

pq = pytest.importorskip("pyarrow.parquet")


def rows(path):
    return pq.read_table(path).to_pylist()


def test_a_parquet_file_has_a_row_per_file_and_bag_and_failed_files_with_their_status(
        library, run_tag, tmp_path):
    result = run_tag(library / "album", library / "blip.wav", "--out", tmp_path / "t.parquet",
                     "--bag", "10")
    assert result.exit_code == 1, result.output
    table = rows(tmp_path / "t.parquet")
    per_file = {}
    for r in table:
        per_file.setdefault(Path(r["path"]).name, []).append(r)
    assert {n: rs[0]["status"] for n, rs in per_file.items()} == {
        "01 intro.wav": "ok", "02-song.flac": "ok", "corrupt.flac": "error",
        "blip.wav": "too_short"}
    assert len(per_file["01 intro.wav"]) == 2  # 12 instances: bags 0-10 and 2-12
    assert len(per_file["02-song.flac"]) == 3  # 26 instances: three bags of 10
    assert per_file["corrupt.flac"][0]["probabilities"] is None
    assert per_file["corrupt.flac"][0]["reason"]


def test_parquet_holds_what_the_json_output_says(library, run_tag, tmp_path):
    run_tag(library / "album", "--out", tmp_path / "t.parquet")
    run_tag(library / "album", "--out", tmp_path / "t.json")
    docs = {Path(d["path"]).name: d for d in json.loads((tmp_path / "t.json").read_text())["files"]}
    for r in rows(tmp_path / "t.parquet"):
        doc = docs[Path(r["path"]).name]
        assert (r["size"], r["mtime_ns"], r["model_id"]) == (doc["size"], doc["mtime_ns"],
                                                             doc["model_id"])
        if r["status"] != "ok":
            continue
        (bag,) = doc["bags"]
        assert dict(r["probabilities"]) == pytest.approx(bag["probabilities"], abs=5e-5)
        assert r["present"] == bag["present"]
        assert [(s["instrument"], [s["start_s"], s["end_s"]]) for s in r["segments"]] == [
            (c, seg) for c, segs in bag["segments"].items() for seg in segs]


def test_a_dataset_directory_is_marked_complete_and_replaced_whole(library, run_tag, tmp_path):
    out = tmp_path / "tags"
    assert run_tag(library / "other", "--out", out, "--format", "parquet").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert len({r["path"] for r in rows(out)}) == 2
    assert run_tag(library / "album" / "01 intro.wav", "--out", out, "--format",
                   "parquet").exit_code == 0
    assert [Path(r["path"]).name for r in rows(out)] == ["01 intro.wav"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_dataset_that_fails_midway_leaves_the_previous_one(tmp_path):
    from instag.common.status import Status
    from instag.outputs.parquet import parquet_writer
    from instag.tagging.results import FileResult

    out = tmp_path / "tags"
    with parquet_writer(out) as write:
        write(FileResult(Path("a.wav"), Status.ERROR, "old"))
    with pytest.raises(KeyboardInterrupt), parquet_writer(out) as write:
        write(FileResult(Path("b.wav"), Status.ERROR, "new"))
        raise KeyboardInterrupt
    assert [r["path"] for r in rows(out)] == ["a.wav"]
    assert [p.name for p in tmp_path.iterdir()] == ["tags"]  # no temp directory left


def test_a_folder_that_is_not_a_dataset_is_refused_as_output(library, run_tag, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = run_tag(library / "other", "--out", other, "--format", "parquet")
    assert result.exit_code == 2 and "not a Parquet dataset" in result.output
    assert (other / "notes.txt").read_text() == "keep me"
    into_library = run_tag(library, "--out", library, "--format", "parquet")
    assert into_library.exit_code == 2 and (library / "album").is_dir()


def test_parquet_cannot_go_to_standard_output(library, run_tag):
    result = run_tag(library / "other", "--out", "-", "--format", "parquet")
    assert result.exit_code == 2 and "standard output" in result.output


def test_every_output_names_the_files_size_mtime_and_the_models(library, run_tag, tmp_path):
    run_tag(library / "other", "--out", tmp_path / "a.csv")
    run_tag(library / "other", "--out", tmp_path / "b.csv", "--threshold", "0.3")
    a, b = read_csv(tmp_path / "a.csv"), read_csv(tmp_path / "b.csv")
    st = os.stat(library / "other" / "take.ogg")
    take = next(r for r in a if r["path"].endswith("take.ogg"))
    assert (int(take["size"]), int(take["mtime_ns"])) == (st.st_size, st.st_mtime_ns)
    assert len({r["model_id"] for r in a}) == 1  # one run, one identity
    assert {r["model_id"] for r in a} != {r["model_id"] for r in b}  # other thresholds


def test_written_tags_leave_the_output_with_the_files_new_size_and_mtime(
        library, run_tag, tmp_path):
    sf.write(tmp_path / "song.flac", music(4, 1), SR)
    result = run_tag(tmp_path / "song.flac", "--out", tmp_path / "t.csv", "--write-tags")
    assert result.exit_code == 0, result.output
    (row, *_) = read_csv(tmp_path / "t.csv")
    st = os.stat(tmp_path / "song.flac")
    assert (int(row["size"]), int(row["mtime_ns"])) == (st.st_size, st.st_mtime_ns)


def test_the_files_can_come_from_a_parquet_list_of_paths(library, run_tag, tmp_path):
    import pyarrow as pa

    listed = [str(library / "other" / "take.ogg"), str(library / "gone.wav")]
    pq.write_table(pa.table({"path": listed}), tmp_path / "paths.parquet")
    result = run_tag("--paths-from", tmp_path / "paths.parquet", "--out", tmp_path / "t.csv")
    assert result.exit_code == 1, result.output
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status == {"take.ogg": "ok", "gone.wav": "missing"}


def test_the_files_can_come_from_a_text_list_of_paths(library, run_tag, tmp_path):
    (tmp_path / "paths.txt").write_text(f"{library / 'other' / 'take.ogg'}\n\n")
    result = run_tag("--paths-from", tmp_path / "paths.txt", "--out", tmp_path / "t.csv")
    assert result.exit_code == 0, result.output
    assert {Path(r["path"]).name for r in read_csv(tmp_path / "t.csv")} == {"take.ogg"}


def test_paths_and_a_list_of_paths_are_one_or_the_other(library, run_tag, tmp_path):
    (tmp_path / "paths.txt").write_text(f"{library / 'other' / 'take.ogg'}\n")
    both = run_tag(library, "--paths-from", tmp_path / "paths.txt", "--out", tmp_path / "t.csv")
    neither = run_tag("--out", tmp_path / "t.csv")
    assert both.exit_code == neither.exit_code == 2
    assert "one of them" in both.output and not (tmp_path / "t.csv").exists()


def test_a_previous_output_offers_one_candidate_per_file_it_may_carry_over(
        library, run_tag, tmp_path):
    """By columns: files that ended ok or in a failure that stays, made by the same models."""
    from instag.outputs.parquet import PreviousOutput

    out = tmp_path / "t.parquet"
    run_tag(library / "album", library / "blip.wav", "--out", out, "--bag", "10")
    model_id = rows(out)[0]["model_id"]
    candidates = PreviousOutput(out, model_id).candidates.to_pylist()
    assert sorted(Path(c["path"]).name for c in candidates) == [
        "01 intro.wav", "02-song.flac", "blip.wav", "corrupt.flac"]  # one each, bags or not
    for c in candidates:
        assert (c["size"], c["mtime_ns"]) == (os.stat(c["path"]).st_size,
                                              os.stat(c["path"]).st_mtime_ns)
    assert not PreviousOutput(out, "another-model").candidates.num_rows


def test_carried_rows_are_written_as_they_were_and_their_results_say_what_is_in_them(
        library, run_tag, tmp_path):
    import numpy as np

    from instag.outputs.parquet import PreviousOutput, parquet_writer

    out = tmp_path / "t.parquet"
    run_tag(library / "album", "--out", out, "--bag", "10")
    run_tag(library / "album", "--out", tmp_path / "t.json", "--bag", "10")
    docs = {d["path"]: d for d in json.loads((tmp_path / "t.json").read_text())["files"]}
    previous = PreviousOutput(out, rows(out)[0]["model_id"])
    paths = previous.candidates["path"].to_pylist()
    unchanged = np.array([not p.endswith("corrupt.flac") for p in paths])
    carried = list(previous.results(unchanged, lambda pos: Path(paths[pos])))
    assert sorted(r.path.name for r in carried) == ["01 intro.wav", "02-song.flac"]
    for r in carried:
        doc = docs[r.display_path]
        assert (r.status, r.duration, r.instruments()) == (doc["status"], doc["duration_s"],
                                                           doc["instruments"])
        assert {c: [list(s) for s in segs] for c, segs in r.segments().items()} == \
            doc["segments"]
    with parquet_writer(tmp_path / "new.parquet") as write:
        for r in carried:
            write(r)
    assert rows(tmp_path / "new.parquet") == [r for r in rows(out)
                                              if not r["path"].endswith("corrupt.flac")]


def test_a_file_whose_rows_straddle_two_row_batches_is_carried_once_whole(
        library, run_tag, tmp_path, monkeypatch):
    import numpy as np

    from instag.outputs import parquet

    out = tmp_path / "t.parquet"
    run_tag(library / "album", "--out", out, "--bag", "10")  # files of 2 and 3 bags
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 2)  # batches of 2 rows: files cut across
    previous = parquet.PreviousOutput(out, rows(out)[0]["model_id"])
    paths = previous.candidates["path"].to_pylist()
    carried = list(previous.results(np.ones(len(paths), bool), lambda pos: Path(paths[pos])))
    assert sorted(r.path.name for r in carried) == ["01 intro.wav", "02-song.flac",
                                                     "corrupt.flac"]
    assert {r.path.name: len(r.bags) for r in carried if r.bags} == {"01 intro.wav": 2,
                                                                      "02-song.flac": 3}


def test_a_file_walked_twice_is_carried_once_and_computed_once(library, run_tag, tmp_path):
    """Resuming (the Ray engine's rule): every walked file ends as exactly one result."""
    import numpy as np

    from instag.engines.ray.pipeline import _carried
    from instag.outputs.parquet import PreviousOutput

    out = tmp_path / "t.parquet"
    song = library / "album" / "01 intro.wav"
    run_tag(song, "--out", out)
    files = [song, library / "other" / "take.ogg", song]
    carried = np.zeros(3, bool)
    results = list(_carried(files, PreviousOutput(out, rows(out)[0]["model_id"]), carried))
    assert [r.path for r in results] == [song]
    assert carried.tolist() == [False, False, True]  # the other two are computed


def test_an_output_of_another_layout_carries_nothing_over_and_is_not_an_error(tmp_path):
    """Its rows could not be copied as they are: every file is computed again."""
    import pyarrow as pa

    from instag.outputs.parquet import PreviousOutput

    out = tmp_path / "t.parquet"
    pq.write_table(pa.table({"path": ["/music/a.flac"], "status": ["ok"], "size": [1],
                             "mtime_ns": [1], "model_id": ["m"]}), out)
    assert PreviousOutput(out, "m").candidates.num_rows == 0
    out.write_text("not parquet")
    with pytest.raises(Exception, match="cannot read it as a previous Parquet output"):
        PreviousOutput(out, "m")


def test_json_and_parquet_record_the_thresholds_that_decided(run_tag, tmp_path, scoring_model):
    import json

    import pyarrow.parquet as pq

    from instag.tagging.scoring import ScoringModel

    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    meta = ScoringModel(scoring_model).meta
    first = meta.classes[0]
    (tmp_path / "th.json").write_text(json.dumps({first: 0.25}))
    expected = {c: 0.25 if c == first else (meta.thresholds or {}).get(c, 0.5)
                for c in meta.classes}
    for out in ("t.json", "t.parquet"):
        run_tag(tmp_path / "a.wav", "--out", tmp_path / out, "--thresholds-file",
                tmp_path / "th.json")
    head = json.loads((tmp_path / "t.json").read_text().split("\n", 1)[0] + "]}")
    meta = json.loads(pq.read_schema(tmp_path / "t.parquet").metadata[b"instag"])
    assert head["thresholds"] == meta["thresholds"] == expected
    assert head["threshold_rule"] == "--thresholds-file"
