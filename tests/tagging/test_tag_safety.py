"""Never the wrong write: a file's tags are written only into the file that was tagged, only in
instag's own fields, through links, and one file's trouble never ends the run."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from builders import SR, music
from mutagen.id3 import ID3, TIT2
from typer.testing import CliRunner

from instag.cli import app
from instag.engines.local.pool import DecodePool
from instag.outputs import filetags
from instag.outputs.filetags import write_tags
from instag.tagging.tagwriting import TagWriting


def flac(path: Path, seconds: float = 2, seed: int = 1, title: str = "Song") -> Path:
    sf.write(path, music(seconds, seed), SR)
    audio = mutagen.File(path)
    audio["TITLE"] = title
    audio.save()
    return path


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".instag.")]


def write_tags_cli(*args):
    return CliRunner().invoke(app, ["write-tags", *map(str, args)])


# -- 0. one file's tags never end the run -------------------------------------------------------
@pytest.mark.parametrize("rate", [22050, 11025], ids=["mpeg2", "mpeg2.5"])
def test_an_mp3_of_mpeg2_audio_without_id3_is_tagged(tmp_path, rate):
    path = tmp_path / "low.mp3"
    sf.write(path, music(3, 1)[: 3 * rate], rate, format="MP3")
    assert path.read_bytes()[:3] != b"ID3"  # nothing but MPEG frames: mutagen must be told
    change = write_tags(path, {"INSTRUMENTS": ["piano", "voice"]}, TagWriting())
    assert change.outcome == "written", change.reason
    assert list(ID3(path).getall("TXXX:INSTRUMENTS")[0].text) == ["piano", "voice"]
    assert sf.info(path).samplerate == rate


def test_a_flac_with_an_id3_tag_in_front_is_tagged_as_flac(tmp_path):
    plain = flac(tmp_path / "plain.flac")
    front = io.BytesIO()
    tags = ID3()
    tags.add(TIT2(encoding=3, text="from a careless tagger"))
    tags.save(front)
    path = tmp_path / "id3.flac"
    path.write_bytes(front.getvalue() + plain.read_bytes())
    before = sf.read(path)[0]
    change = write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting())
    assert change.outcome == "written", change.reason
    assert list(mutagen.File(path)["INSTRUMENTS"]) == ["piano"]
    np.testing.assert_array_equal(sf.read(path)[0], before)


def test_an_unexpected_error_on_one_file_is_that_files_failure(tmp_path, monkeypatch):
    path = flac(tmp_path / "a.flac")

    def explode(*args):
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr(filetags, "_apply", explode)
    change = write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting())
    assert change.outcome == "failed" and "a decoder bug" in change.reason
    assert temps(tmp_path) == []


@pytest.mark.slow
def test_a_terminated_write_tags_removes_its_copy_and_says_one_line(tmp_path, run_tag):
    path = flac(tmp_path / "a.flac")
    run_tag(path, "--out", tmp_path / "t.json", "--threshold", "0")
    code = ("import sys, time; from instag.outputs import filetags; "
            "filetags._apply = lambda *a: time.sleep(60); "
            "from instag.cli import app; sys.argv = ['instag'] + sys.argv[1:]; app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "write-tags", str(tmp_path / "t.json"),
                             "--cache", str(tmp_path / "cache.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not temps(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temps(tmp_path), "the copy never appeared"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, out
    assert out.strip().splitlines()[-1] == "terminated: 0 files written, the rest left as " \
        "they were"
    assert "Traceback" not in out and temps(tmp_path) == []
    assert "INSTRUMENTS" not in mutagen.File(path)


# -- 1. a guarded write --------------------------------------------------------------------------
def edit_meanwhile(monkeypatch, edit):
    """Run `edit(original)` between the copy's tagging and the rename (or the in-place save)."""
    apply = filetags._apply

    def apply_then_edit(audio, *args, **kwargs):
        edit(Path(os.path.realpath(audio.filename)).parent)
        apply(audio, *args, **kwargs)

    monkeypatch.setattr(filetags, "_apply", apply_then_edit)


def retitle(path: Path, title: str) -> None:
    audio = mutagen.File(path)
    audio["TITLE"] = title
    audio.save()


@pytest.mark.parametrize("in_place", [False, True], ids=["copy", "in-place"])
def test_an_edit_saved_while_instag_tags_the_file_is_kept(tmp_path, monkeypatch, in_place):
    path = flac(tmp_path / "a.flac")
    edit_meanwhile(monkeypatch, lambda folder: retitle(folder / "a.flac", "Picard's edit"))
    change = write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting(in_place=in_place))
    assert change.describe() == "failed: changed while being tagged (nothing written; the " \
        "next run retries)"
    audio = mutagen.File(path)
    assert audio["TITLE"] == ["Picard's edit"] and "INSTRUMENTS" not in audio
    assert temps(tmp_path) == []


def test_write_tags_refuses_a_file_that_changed_since_it_was_tagged(tmp_path, run_tag):
    path = flac(tmp_path / "a.flac")
    run_tag(path, "--out", tmp_path / "old.json", "--threshold", "0")
    sf.write(path, music(3, 7), SR)  # another song now sits at that path
    result = write_tags_cli(tmp_path / "old.json", "--cache", tmp_path / "cache.sqlite")
    assert result.exit_code == 1
    assert "a.flac: failed: changed since it was tagged (re-run instag tag)" in result.output
    assert "INSTRUMENTS" not in mutagen.File(path)


def test_write_tags_twice_on_instags_own_output_works_both_times(tmp_path, run_tag):
    path = flac(tmp_path / "a.flac")
    run_tag(path, "--out", tmp_path / "t.json", "--threshold", "0", "--write-tags")
    cache = tmp_path / "cache.sqlite"
    first = write_tags_cli(tmp_path / "t.json", "--tag-field", "MOOD_INSTRUMENTS",
                           "--cache", cache)
    second = write_tags_cli(tmp_path / "t.json", "--tag-field", "INSTRUMENTS2", "--cache", cache)
    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    audio = mutagen.File(path)
    assert [list(audio[f]) for f in ("INSTRUMENTS", "MOOD_INSTRUMENTS", "INSTRUMENTS2")] == \
        [["c0", "c1", "c2"]] * 3


def test_a_file_edited_between_decoding_and_writing_is_not_tagged_nor_cached(
        tmp_path, run_tag, monkeypatch):
    from instag.outputs.sinks import FileTags

    path = flac(tmp_path / "a.flac")
    write = FileTags._change

    def edit_first(self, result, context):
        sf.write(path, music(3, 7), SR)  # the user replaced the song meanwhile
        return write(self, result, context)

    monkeypatch.setattr(FileTags, "_change", edit_first)
    result = run_tag(path, "--out", tmp_path / "t.json", "--threshold", "0", "--write-tags")
    doc = json.loads((tmp_path / "t.json").read_text())["files"][0]
    assert result.exit_code == 1
    assert doc["file_tags"].startswith("failed: changed while being tagged")
    assert "INSTRUMENTS" not in mutagen.File(path)
    monkeypatch.undo()
    submitted = []
    monkeypatch.setattr(DecodePool, "submit", lambda self, idx, p, s=DecodePool.submit:
                        (submitted.append(p), s(self, idx, p))[1])
    again = run_tag(path, "--out", tmp_path / "t2.json", "--threshold", "0")
    assert again.exit_code == 0 and submitted == [path]  # the new song is decoded, not reused


# -- 2. only instag's own fields -----------------------------------------------------------------
@pytest.mark.parametrize("field", ["TITLE", "artist", "Album Artist", "ALBUMARTIST", "COMMENT",
                                   "genre", "DATE", "GROUPING", "MOOD", "LYRICS", "COMPOSER",
                                   "REPLAYGAIN_TRACK_GAIN", "MusicBrainz Track Id", "TIT2",
                                   "INSTAG_PIANO", "WM/Genre", ""])
def test_a_standard_field_is_refused_with_one_line(tmp_path, field):
    (tmp_path / "t.json").write_text('{"files": []}')
    result = write_tags_cli(tmp_path / "t.json", "--remove", "--tag-field", field)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --tag-field {field}") or \
        result.output.startswith(f"error: --tag-field {field!r}")
    assert "Traceback" not in result.output


def test_remove_takes_out_only_instags_fields(tmp_path):
    path = flac(tmp_path / "a.flac")
    audio = mutagen.File(path)
    audio["INSTRUMENTATION"], audio["GENRE"] = "strings", "Jazz"
    audio.save()
    write_tags(path, {"INSTRUMENTS": ["piano"], "INSTAG_PIANO": ["0.90"]}, TagWriting())
    write_tags(path, None, TagWriting())
    audio = mutagen.File(path)
    assert sorted(audio.keys()) == ["genre", "instrumentation", "title"]


# -- 3. links kept -------------------------------------------------------------------------------
def test_a_symlinked_file_is_written_through_and_stays_a_link(tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    target = flac(nas / "a.flac")
    (tmp_path / "lib").mkdir()
    link = tmp_path / "lib" / "a.flac"
    link.symlink_to(target)
    change = write_tags(link, {"INSTRUMENTS": ["piano"]}, TagWriting())
    assert change.outcome == "written"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert list(mutagen.File(target)["INSTRUMENTS"]) == ["piano"]
    assert os.listdir(tmp_path / "lib") == ["a.flac"]  # no copy, no temp beside the link


def test_two_links_to_one_file_in_a_run_tag_it_once(tmp_path, run_tag):
    (tmp_path / "real").mkdir()
    (tmp_path / "lib").mkdir()
    target = flac(tmp_path / "real" / "a.flac")
    for name in ("x.flac", "y.flac"):
        (tmp_path / "lib" / name).symlink_to(target)
    result = run_tag(tmp_path / "lib", "--out", tmp_path / "t.json", "--threshold", "0",
                     "--write-tags", "--follow-links")  # links out of the library, asked for
    assert result.exit_code == 0, result.output
    outcomes = [d["file_tags"] for d in json.loads((tmp_path / "t.json").read_text())["files"]]
    # whichever link finished decoding first wrote the file; the other found it done
    assert sorted(o.split(":")[0] for o in outcomes) == ["unchanged", "written"], outcomes
    assert list(mutagen.File(target)["INSTRUMENTS"]) == ["c0", "c1", "c2"]


def test_by_default_a_link_is_written_through_only_while_it_stays_in_the_library(
        tmp_path, run_tag):
    """Nothing is written through a link out of the folder the run was aimed at, unless
    --follow-links says so; a link to another file of the library is written through."""
    (tmp_path / "elsewhere").mkdir()
    outside = flac(tmp_path / "elsewhere" / "out.flac")
    before = outside.read_bytes()
    lib = tmp_path / "lib"
    (lib / "real").mkdir(parents=True)
    inside = flac(lib / "real" / "in.flac")
    (lib / "out.flac").symlink_to(outside)
    (lib / "in.flac").symlink_to(inside)
    assert run_tag(lib, "--out", tmp_path / "t.json", "--threshold", "0",
                   "--write-tags").exit_code == 0
    docs = {Path(d["path"]).name: d["file_tags"]
            for d in json.loads((tmp_path / "t.json").read_text())["files"]}
    assert docs["out.flac"].startswith("unsupported: a link out of the library"), docs
    assert outside.read_bytes() == before
    assert list(mutagen.File(inside)["INSTRUMENTS"]) == ["c0", "c1", "c2"]


def test_no_follow_links_leaves_linked_files_alone(tmp_path):
    target = flac(tmp_path / "a.flac")
    (tmp_path / "link.flac").symlink_to(target)
    data = target.read_bytes()
    change = write_tags(tmp_path / "link.flac", {"INSTRUMENTS": ["piano"]},
                        TagWriting(follow_links=False))
    assert change.describe() == "unsupported: a link (--no-follow-links)"
    assert target.read_bytes() == data


def test_a_file_with_hard_links_is_not_split_and_the_summary_counts_it(tmp_path, run_tag):
    (tmp_path / "lib").mkdir()
    path = flac(tmp_path / "lib" / "a.flac")
    os.link(path, tmp_path / "other-name.flac")
    data = path.read_bytes()
    result = run_tag(path, "--out", tmp_path / "t.json", "--threshold", "0", "--write-tags")
    assert "file tags of" in result.output and \
        "unsupported: 2 hard links; --in-place keeps them" in result.output
    assert "; file tags: 1 file unsupported." in result.output
    assert os.path.samefile(path, tmp_path / "other-name.flac") and path.read_bytes() == data


def test_the_copy_keeps_owner_mode_and_extended_attributes(tmp_path):
    path = flac(tmp_path / "a.flac")
    os.chmod(path, 0o604)
    os.chown(path, 1234, 5678)
    try:
        os.setxattr(path, "user.origin", b"nas")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    acl = shutil.which("setfacl") and subprocess.run(
        ["setfacl", "-m", "u:4321:r", str(path)], capture_output=True).returncode == 0
    mode = path.stat().st_mode & 0o777  # an ACL's mask shows in the group bits
    write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting())
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, 1234, 5678)
    assert os.getxattr(path, "user.origin") == b"nas"
    if acl:
        assert "user:4321:r--" in subprocess.run(["getfacl", "-p", str(path)],
                                                 capture_output=True, text=True).stdout


# -- 4. any name that exists can be tagged -------------------------------------------------------
def test_a_file_with_a_name_at_the_file_systems_limit_is_tagged(tmp_path):
    name = "弦" * 80 + ".flac"  # 245 bytes of UTF-8
    assert len(os.fsencode(name)) > 236
    path = flac(tmp_path / name)
    assert write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting()).outcome == "written"
    assert list(mutagen.File(path)["INSTRUMENTS"]) == ["piano"]


# -- 6. multi-values players can read ------------------------------------------------------------
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
ENCODED = {"m4a": "aac", "opus": "libopus", "wma": "wmav2"}  # made by ffmpeg


def a_file(tmp_path: Path, kind: str) -> Path:
    from builders import write_ogg

    if kind in ENCODED:
        if shutil.which("ffmpeg") is None:
            pytest.skip("ffmpeg not installed")
        sf.write(tmp_path / "src.wav", music(2, 1), SR)
        path = tmp_path / f"a.{kind}"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "src.wav"), "-c:a",
                        ENCODED[kind], str(path)], check=True)
        return path
    path = tmp_path / f"a.{kind.removesuffix('-v23')}"
    if kind == "ogg":
        write_ogg(path, music(2, 1))
    else:
        sf.write(path, music(2, 1), SR, format={"mp3": "MP3", "mp3-v23": "MP3"}.get(kind))
    if kind == "mp3-v23":
        tags = ID3()
        tags.add(TIT2(encoding=3, text="a v2.3 file"))
        tags.save(path, v2_version=3)
    return path


KINDS = ["mp3", "mp3-v23", "flac", "ogg", "opus", "m4a", "wav", "aiff", "wma"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_instrument_reads_back_as_its_own_value_in_mutagen_and_taglib(tmp_path, kind):
    from builders import instruments_in

    taglib = pytest.importorskip("taglib")
    path = a_file(tmp_path, kind)
    write_tags(path, {"INSTRUMENTS": ["piano", "voice", "drums"]}, TagWriting())
    assert instruments_in(path) == ["piano", "voice", "drums"]
    if kind == "mp3-v23":
        assert ID3(path).version[:2] == (2, 3)
    if kind == "wma":
        pytest.skip("TagLib maps no custom ASF attribute (it lists INSTRUMENTS as unsupported)")
    with taglib.File(str(path)) as f:
        assert f.tags["INSTRUMENTS"] == ["piano", "voice", "drums"]


@needs_ffmpeg
@pytest.mark.parametrize("kind", KINDS)
def test_with_a_tag_separator_ffprobe_shows_every_instrument(tmp_path, kind):
    path = a_file(tmp_path, kind)
    writing = TagWriting(separator="; ")
    write_tags(path, filetags.wanted(["piano", "voice"], {}, writing), writing)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags", "-of", "json",
         str(path)], capture_output=True, text=True, check=True).stdout)
    tags = {**probe["format"].get("tags", {}), **probe["streams"][0].get("tags", {})}
    assert {k.upper(): v for k, v in tags.items()}["INSTRUMENTS"] == "piano; voice"
