"""A library people recognise: `instag tag` records each file's artist, title and album from
its own tags as optional fields of its documents, in every output format; documents written
before those fields existed still read, and a Parquet output of then still resumes."""

import json
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music

from instag.outputs.documents import check_document
from instag.outputs.readback import read_documents
from instag.outputs.songtags import MAX_CHARS, read_song

SONG = {"artist": "Ornette Coleman", "title": "Lonely Woman", "album": "The Shape of Jazz"}


@pytest.fixture
def songs(tmp_path) -> Path:
    """A FLAC with Vorbis comments, a WAV with ID3 frames, and a WAV without tags."""
    from mutagen.flac import FLAC
    from mutagen.id3 import TIT2, TPE1
    from mutagen.wave import WAVE

    lib = tmp_path / "songs"
    lib.mkdir()
    for i, name in enumerate(["vorbis.flac", "id3.wav", "bare.wav"]):
        sf.write(lib / name, music(6, i), SR)
    flac = FLAC(lib / "vorbis.flac")
    flac.update({k: [v] for k, v in SONG.items()})
    flac.save()
    wave = WAVE(lib / "id3.wav")
    wave.add_tags()
    wave.tags.add(TPE1(text=["Nina Simone"]))
    wave.tags.add(TIT2(text=["Feeling Good"]))
    wave.save()
    return lib


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_every_output_records_artist_title_and_album_from_the_files_own_tags(
        songs, run_tag, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")  # the parquet extra
    out = tmp_path / f"tags{suffix}"
    assert run_tag(songs, "--out", out).exit_code == 0
    docs = {Path(d["path"]).name: d for d in read_documents(out)}
    assert {k: docs["vorbis.flac"].get(k) for k in SONG} == SONG
    assert {k: docs["id3.wav"].get(k) for k in SONG} == {
        "artist": "Nina Simone", "title": "Feeling Good", "album": None}  # none: absent
    assert not {"artist", "title", "album"} & docs["bare.wav"].keys()


def test_a_jsonl_document_carries_the_fields_only_where_the_file_has_them(songs, run_tag,
                                                                          tmp_path):
    out = tmp_path / "tags.jsonl"
    run_tag(songs, "--out", out)
    lines = {Path(d["path"]).name: d for d in map(json.loads, out.read_text().splitlines())}
    assert lines["vorbis.flac"]["title"] == "Lonely Woman"
    assert "artist" not in lines["bare.wav"]


def test_a_very_long_tag_is_cut_to_the_cap_and_a_longer_document_field_is_refused(tmp_path):
    from mutagen.flac import FLAC

    sf.write(tmp_path / "long.flac", music(1), SR)
    flac = FLAC(tmp_path / "long.flac")
    flac["title"] = ["x" * 5000]
    flac.save()
    assert read_song(tmp_path / "long.flac") == {"title": "x" * MAX_CHARS}
    doc = {"path": "/m/a.wav", "status": "missing", "title": "x" * (MAX_CHARS + 1)}
    with pytest.raises(Exception, match="field title: longer than"):
        check_document(doc, "tags.jsonl, line 1")
    with pytest.raises(Exception, match="field artist: 7 is not a string"):
        check_document({**doc, "title": "ok", "artist": 7}, "tags.jsonl, line 1")


def test_a_file_whose_tags_cannot_be_read_has_none(tmp_path):
    (tmp_path / "junk.mp3").write_bytes(b"ID3\x04junk" * 10)
    assert read_song(tmp_path / "junk.mp3") == {}
    assert read_song(tmp_path / "absent.flac") == {}


def test_an_older_csv_without_the_song_columns_still_reads(songs, run_tag, tmp_path):
    out = tmp_path / "tags.csv"
    run_tag(songs, "--out", out)
    lines = out.read_text().splitlines()
    cut = len(",artist,title,album")
    old = tmp_path / "old.csv"
    old.write_text("\n".join([lines[0][:-cut]] + [line.rsplit(",", 3)[0] for line in lines[1:]]))
    docs = list(read_documents(old))
    assert len(docs) == 3 and not any("title" in d for d in docs)


def test_an_older_parquet_output_reads_and_its_rows_are_carried_over(songs, run_tag,
                                                                      tmp_path):
    """Resuming copies a previous output's rows as they are: those of an output written before
    the song's fields get them as nulls, and the carried results keep the songs of newer ones."""
    import numpy as np

    from instag.outputs.parquet import PreviousOutput, parquet_writer

    pq = pytest.importorskip("pyarrow.parquet")
    out, old = tmp_path / "tags.parquet", tmp_path / "old.parquet"
    run_tag(songs, "--out", out)
    table = pq.read_table(out)
    pq.write_table(table.drop_columns(["artist", "title", "album"]), old)  # as written before
    assert not any("title" in d for d in read_documents(old))
    for previous_output in (old, out):
        previous = PreviousOutput(previous_output, table["model_id"][0].as_py())
        paths = previous.candidates["path"].to_pylist()
        carried = list(previous.results(np.ones(len(paths), bool),
                                        lambda k, paths=paths: Path(paths[k])))
        assert len(carried) == 3
        with parquet_writer(tmp_path / "new.parquet") as write:
            for r in carried:
                write(r)
        titles = sorted(map(str, pq.read_table(tmp_path / "new.parquet")["title"].to_pylist()))
        assert titles == (["None"] * 3 if previous_output == old else
                          ["Feeling Good", "Lonely Woman", "None"])
        songs_carried = sorted(r.song.get("title", "") for r in carried)
        assert songs_carried == (["", "", ""] if previous_output == old else
                                 ["", "Feeling Good", "Lonely Woman"])
