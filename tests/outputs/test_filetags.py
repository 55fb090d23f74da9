"""Tags where the music lives: the instruments written into the files, and nothing else moved."""

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
from builders import SR, instruments_in, mounted, music, tagged_in_every_format, write_ogg
from mutagen.flac import Picture
from mutagen.id3 import APIC, ID3, TIT2, TPE1
from mutagen.mp4 import MP4Cover
from typer.testing import CliRunner

from instag.cli import app
from instag.engines.local.pool import DecodePool
from instag.outputs.filetags import wanted, write_tags
from instag.tagging.tagwriting import TagWriting

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
COVER = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # a picture's bytes, kept as they are


def other_tags(path: Path) -> dict:
    """Everything but instag's fields, in a comparable form."""
    audio = mutagen.File(path)
    return {k: repr(v) for k, v in (audio.tags.items() if audio.tags else [])
            if "INSTRUMENTS" not in k.upper() and "INSTAG_" not in k.upper()}


def audio_md5(path: Path) -> str:
    """The audio packets, whatever the container's layout (ffmpeg copies them, unchanged)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy",
                          "-f", "md5", "-"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def samples(path: Path) -> np.ndarray:
    from instag.features.resample import load_16k

    return load_16k(path)


@pytest.fixture
def tagged_library(tmp_path):
    """Five formats, each with a title, an artist and cover art, as a library has them."""
    root = tmp_path / "lib"
    root.mkdir()
    sf.write(root / "a.mp3", music(6, 1), SR, format="MP3")
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Song A"))
    tags.add(TPE1(encoding=3, text="Band"))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=COVER))
    tags.save(root / "a.mp3", v2_version=3)  # an ID3v2.3 file, as many taggers write
    sf.write(root / "b.flac", music(6, 2), SR)
    flac = mutagen.File(root / "b.flac")
    flac["TITLE"], flac["ARTIST"] = "Song B", "Band"
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/png", COVER
    flac.add_picture(picture)
    flac.save()
    write_ogg(root / "c.ogg", music(6, 3))
    ogg = mutagen.File(root / "c.ogg")
    ogg["TITLE"], ogg["ARTIST"] = "Song C", "Band"
    ogg.save()
    sf.write(root / "e.wav", music(6, 5), SR)
    wav = mutagen.File(root / "e.wav")
    wav.add_tags()
    wav.tags.add(TIT2(encoding=3, text="Song E"))
    wav.tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=COVER))
    wav.save()
    if shutil.which("ffmpeg"):
        sf.write(tmp_path / "plain.wav", music(6, 4), SR)
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "plain.wav"), "-c:a",
                        "aac", str(root / "d.m4a")], check=True)
        m4a = mutagen.File(root / "d.m4a")
        m4a["\xa9nam"], m4a["\xa9ART"] = "Song D", "Band"
        m4a["covr"] = [MP4Cover(COVER, imageformat=MP4Cover.FORMAT_PNG)]
        m4a.save()
    return root


@needs_ffmpeg
@pytest.mark.slow
def test_write_tags_puts_the_instruments_in_every_format_and_moves_nothing_else(
        tagged_library, run_tag, tmp_path, monkeypatch):
    files = sorted(tagged_library.iterdir())
    before = {p.name: (other_tags(p), audio_md5(p), samples(p)) for p in files}
    result = run_tag(tagged_library, "--out", tmp_path / "t.json", "--write-tags",
                     "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    docs = {Path(d["path"]).name: d for d in
            json.loads((tmp_path / "t.json").read_text())["files"]}
    for p in files:
        assert instruments_in(p) == docs[p.name]["instruments"], p.name
        assert docs[p.name]["file_tags"].startswith("written")
        tags, packets, decoded = before[p.name]
        assert other_tags(p) == tags, p.name  # title, artist, cover art: as they were
        assert audio_md5(p) == packets, p.name
        np.testing.assert_array_equal(samples(p), decoded)
    assert mutagen.File(tagged_library / "a.mp3").tags.version[:2] == (2, 3)

    monkeypatch.setattr(DecodePool, "submit", lambda *a: pytest.fail("decoded again"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    again = run_tag(tagged_library, "--out", tmp_path / "t2.json", "--write-tags",
                    "--threshold", "0.5")
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in files} == mtimes  # nothing rewritten
    assert {d["file_tags"] for d in json.loads((tmp_path / "t2.json").read_text())["files"]} \
        == {"unchanged"}


def test_a_file_gets_the_mode_and_a_fresh_mtime_and_other_fields_stay(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, music(2, 1), SR)
    os.chmod(path, 0o640)
    os.utime(path, (1_000_000, 1_000_000))
    change = write_tags(path, wanted(["piano"], {"piano": 0.876}, TagWriting(scores=True)),
                        TagWriting(scores=True))
    assert change.outcome == "written"
    audio = mutagen.File(path)
    assert list(audio["INSTRUMENTS"]) == ["piano"] and list(audio["INSTAG_PIANO"]) == ["0.88"]
    st = path.stat()
    assert st.st_mode & 0o777 == 0o640 and st.st_mtime > 1_000_000 + 3600


def test_dry_run_shows_and_writes_nothing(tagged_library, run_tag, tmp_path):
    path = tagged_library / "b.flac"
    data = path.read_bytes()
    result = run_tag(path, "--out", tmp_path / "t.csv", "--write-tags", "--dry-run",
                     "--threshold", "0")
    assert "file tags of" in result.output and "would change: INSTRUMENTS=" in result.output
    assert path.read_bytes() == data


def test_write_tags_from_a_finished_run_and_remove_them_again(tagged_library, run_tag,
                                                              tmp_path):
    path = tagged_library / "b.flac"
    run_tag(path, "--out", tmp_path / "t.json", "--threshold", "0")
    result = CliRunner().invoke(app, ["write-tags", str(tmp_path / "t.json"), "--cache",
                                      str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0, result.output
    assert instruments_in(path) == ["c0", "c1", "c2"]
    result = CliRunner().invoke(app, ["write-tags", str(tmp_path / "t.json"), "--remove",
                                      "--cache", str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0, result.output
    assert instruments_in(path) == [] and mutagen.File(path)["TITLE"] == ["Song B"]


def test_a_read_only_file_is_reported_and_the_run_goes_on(tagged_library, run_tag, tmp_path):
    os.chmod(tagged_library / "b.flac", 0o444)
    result = run_tag(tagged_library / "b.flac", tagged_library / "c.ogg", "--out",
                     tmp_path / "t.csv", "--write-tags", "--threshold", "0")
    assert result.exit_code == 1 and "read-only file" in result.output
    assert instruments_in(tagged_library / "c.ogg") == ["c0", "c1", "c2"]
    assert instruments_in(tagged_library / "b.flac") == []


@needs_ffmpeg
def test_a_format_mutagen_cannot_tag_safely_is_unsupported(tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "aac",
                    str(tmp_path / "raw.aac")], check=True)
    data = (tmp_path / "raw.aac").read_bytes()
    change = write_tags(tmp_path / "raw.aac", {"INSTRUMENTS": ["piano"]}, TagWriting())
    assert change.outcome == "unsupported" and (tmp_path / "raw.aac").read_bytes() == data


@pytest.mark.slow
def test_a_write_killed_at_any_instant_leaves_a_whole_file(tmp_path):
    """SIGKILL at several instants of a write of a large file: the file is always readable, with
    its old tags or its new ones; a later write clears what the killed one left."""
    path = tmp_path / "big.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 2) as f:  # noise: ~50 MB of FLAC
        for _ in range(30):
            f.write((rng.standard_normal((SR * 10, 2)) * 0.3).astype(np.float32))
    audio = mutagen.File(path)
    audio["TITLE"] = "Big"
    audio.save()
    code = ("import sys; from pathlib import Path; from instag import TagWriting, write_tags; "
            "w = TagWriting(); write_tags(Path(sys.argv[1]), {'INSTRUMENTS': ['piano']}, w)")
    outcomes = set()
    for delay in (0.3, 0.5, 0.7, 0.9, 1.2, 1.6):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        audio = mutagen.File(path)  # raises if the file were broken
        assert audio["TITLE"] == ["Big"]
        outcomes.add(tuple(audio.get("INSTRUMENTS", [])))
        assert audio.info.length == pytest.approx(300, abs=0.1)
        if outcomes == {(), ("piano",)}:
            break
    for left in tmp_path.glob(".instag.*"):  # the sweep takes a dead writer's temp once old
        os.utime(left, (time.time() - 7200, time.time() - 7200))
    write_tags(path, {"INSTRUMENTS": ["violin"]}, TagWriting())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.flac"]  # no temp copy left


def test_in_place_keeps_hard_links(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, music(2, 1), SR)
    os.link(path, tmp_path / "link.flac")
    write_tags(path, {"INSTRUMENTS": ["piano"]}, TagWriting(in_place=True))
    assert os.path.samefile(path, tmp_path / "link.flac")
    assert instruments_in(tmp_path / "link.flac") == ["piano"]


def test_a_read_only_folder_is_reported_per_file(tmp_path):
    source = tmp_path / "x.flac"
    sf.write(source, music(2, 1), SR)
    folder = tmp_path / "ro"
    with mounted(folder, "size=4m") as m:
        shutil.copy(source, m / "x.flac")
        subprocess.run(["mount", "-o", "remount,ro", str(m)], check=True)
        change = write_tags(m / "x.flac", {"INSTRUMENTS": ["piano"]}, TagWriting())
        assert change.outcome == "failed" and "Read-only file system" in change.reason


# -- idempotent: a file already right is never touched --------------------------------------------
FFMPEG_MADE = {"opus": "libopus", "m4a": "aac", "wma": "wmav2", "wv": "wavpack"}


def ffmpeg_encoders() -> set[str]:
    if shutil.which("ffmpeg") is None:
        return set()
    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                         text=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith(" A")}


def every_format(root: Path) -> list[Path]:
    """One file in each format instag writes tags into (an ID3v2.3 MP3 too); those only ffmpeg
    makes where its encoder is there."""
    root.mkdir()
    sf.write(root / "a.mp3", music(3, 1), SR, format="MP3")
    sf.write(root / "b.mp3", music(3, 2), SR, format="MP3")
    tags = ID3()
    tags.add(TIT2(encoding=3, text="a v2.3 file"))
    tags.save(root / "b.mp3", v2_version=3)
    sf.write(root / "c.flac", music(3, 3), SR)
    write_ogg(root / "d.ogg", music(3, 4))
    sf.write(root / "e.wav", music(3, 5), SR)
    sf.write(root / "f.aiff", music(3, 6), SR, format="AIFF")
    encoders = ffmpeg_encoders()
    for seed, (ext, encoder) in enumerate(FFMPEG_MADE.items(), 7):
        if encoder in encoders:
            source = root.parent / f"source{seed}.wav"
            sf.write(source, music(3, seed), SR)
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-c:a", encoder,
                            str(root / f"{chr(ord('a') + seed - 1)}.{ext}")], check=True)
    return sorted(root.iterdir())


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file in the folder (a temp copy left behind included): inode, mtime and bytes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.iterdir())}


def instag_fields(path: Path) -> list[str]:
    """The names of instag's fields in a file, as mutagen lists them in any format."""
    audio = mutagen.File(path)
    return [k for k in (audio.tags.keys() if audio.tags is not None else [])
            if "INSTRUMENTS" in k.upper() or "INSTAG_" in k.upper()]


def instag_write_tags(doc: Path, *options) -> str:
    result = CliRunner().invoke(app, ["write-tags", str(doc), "--cache",
                                      str(doc.parent / "cache.sqlite"), *map(str, options)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("options", [[], ["--write-scores", "--tag-separator", "; "]])
@pytest.mark.slow
def test_tag_write_tags_again_touches_no_file_with_or_without_instruments(tmp_path, run_tag,
                                                                          options):
    root = tmp_path / "lib"
    files = every_format(root)

    def tag(threshold: str) -> list[dict]:
        result = run_tag(root, "--out", tmp_path / "t.json", "--write-tags", "--threshold",
                         threshold, *options)
        assert result.exit_code == 0, result.output
        docs = json.loads((tmp_path / "t.json").read_text())["files"]
        assert [d["status"] for d in docs] == ["ok"] * len(files)
        if threshold == "1":
            assert all(d["instruments"] == [] for d in docs)
            assert not any("INSTRUMENTS" in k.upper() for p in files for k in instag_fields(p))
        return docs

    for threshold in ("1", "0", "1"):  # no instrument (no field at all), every one, none again
        tag(threshold)
        before = snapshot(root)
        docs = tag(threshold)
        assert snapshot(root) == before, f"--threshold {threshold}: rewritten again"
        assert {d["file_tags"] for d in docs} == {"unchanged"}, threshold


@pytest.mark.parametrize("options", [[], ["--write-scores", "--in-place"],
                                     ["--tag-separator", "; ", "--tag-field", "Instruments"]])
@pytest.mark.slow
def test_write_tags_again_touches_no_file_and_says_unchanged(tmp_path, run_tag, options):
    root = tmp_path / "lib"
    files = every_format(root)
    doc = tmp_path / "t.json"
    assert run_tag(root, "--out", doc, "--threshold", "0").exit_code == 0
    data = json.loads(doc.read_text())
    for d in data["files"][::2]:
        d["instruments"] = []  # every other file with no instrument
    doc.write_text(json.dumps(data))
    assert "written" in instag_write_tags(doc, *options)
    before = snapshot(root)
    assert instag_write_tags(doc, *options).strip() == f"{len(files)} files unchanged"
    assert snapshot(root) == before
    for d in data["files"][::2]:
        assert not any("INSTRUMENTS" in k.upper() for k in instag_fields(Path(d["path"])))


@pytest.mark.slow
def test_remove_on_files_without_instags_fields_says_unchanged_and_touches_nothing(
        tmp_path, run_tag):
    root = tmp_path / "lib"
    files = every_format(root)
    doc = tmp_path / "t.json"
    assert run_tag(root, "--out", doc, "--threshold", "0").exit_code == 0
    before = snapshot(root)
    assert instag_write_tags(doc, "--remove").strip() == f"{len(files)} files unchanged"
    assert snapshot(root) == before  # never tagged: nothing to take out

    instag_write_tags(doc, "--write-scores")
    assert "written" in instag_write_tags(doc, "--remove")
    before = snapshot(root)
    assert instag_write_tags(doc, "--remove").strip() == f"{len(files)} files unchanged"
    assert snapshot(root) == before
    assert not any(instag_fields(p) for p in files)


@pytest.mark.slow
def test_another_separator_or_scores_setting_is_a_change_the_same_scores_are_not(tmp_path):
    scored, joined, plain = TagWriting(scores=True), TagWriting(separator="; "), TagWriting()
    for path in every_format(tmp_path / "lib"):
        def write(writing: TagWriting, best: dict[str, float], path=path) -> str:
            return write_tags(path, wanted(["c0", "c1"], best, writing), writing).outcome

        assert write(scored, {"c0": 0.876, "c1": 0.1}) == "written", path.name
        before = snapshot(path.parent)
        assert write(scored, {"c0": 0.8751, "c1": 0.1049}) == "unchanged", path.name
        assert snapshot(path.parent) == before, path.name  # equal to two decimals
        assert [write(joined, {}), write(joined, {})] == ["written", "unchanged"], path.name
        assert [write(plain, {}), write(plain, {})] == ["written", "unchanged"], path.name
        assert not any("INSTAG_" in k.upper() for k in instag_fields(path)), path.name


@pytest.mark.slow
def test_write_tags_takes_every_format_and_says_the_same(run_tag, tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    _, outs = tagged_in_every_format(run_tag, tmp_path)
    said = {fmt: CliRunner().invoke(app, ["write-tags", str(out), "--dry-run", "--cache",
                                          str(tmp_path / "cache.sqlite")])
            for fmt, out in outs.items()}
    assert {r.exit_code for r in said.values()} == {0}
    assert "2 files would change (dry run)" in said["json"].output
    assert {r.output for r in said.values()} == {said["json"].output}


def test_a_dry_run_says_how_many_files_would_change(run_tag, tmp_path):
    for i in range(2):
        sf.write(tmp_path / f"{i}.flac", music(3, i), SR)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--write-tags", "--dry-run",
                     "--threshold", "0")  # every instrument present: the tags would change
    assert result.exit_code == 0, result.output
    assert "; file tags: 2 files would change (dry run)." in result.output
