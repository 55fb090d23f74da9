import os
from pathlib import Path

import pytest
from builders import read_csv

from instag.common.errors import InstagError
from instag.tagging import walk as walk_module
from instag.tagging.walk import check_roots, parse_extensions, walk


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_walks_recursively_in_sorted_order_taking_audio_extensions(tmp_path):
    for name in ["b/2.flac", "a/1.MP3", "a/notes.txt", "c.wav", "a/z/3.ogg"]:
        touch(tmp_path / name)
    assert [p.relative_to(tmp_path).as_posix() for p in walk([tmp_path])] == \
        ["a/1.MP3", "a/z/3.ogg", "b/2.flac", "c.wav"]


def test_hidden_files_and_folders_are_skipped_unless_asked(tmp_path):
    touch(tmp_path / ".cache" / "a.mp3")
    touch(tmp_path / ".b.mp3")
    touch(tmp_path / "c.mp3")
    assert [p.name for p in walk([tmp_path])] == ["c.mp3"]
    assert len(list(walk([tmp_path], hidden=True))) == 3


def test_symlink_loops_are_walked_once(tmp_path):
    touch(tmp_path / "music" / "a.mp3")
    os.symlink(tmp_path / "music", tmp_path / "music" / "loop")
    os.symlink(tmp_path / "music", tmp_path / "alias")
    assert [p.name for p in walk([tmp_path])] == ["a.mp3"]


def test_odd_names_pass_through(tmp_path):
    names = [os.fsdecode(b"caf\xe9.mp3"), "-dash.mp3", "with space.mp3"]
    for n in names:
        touch(tmp_path / n)
    found = {p.name for p in walk([tmp_path])}
    assert found == set(names)
    assert all(p.exists() for p in walk([tmp_path]))


def test_unreadable_folders_are_reported_and_skipped(tmp_path, monkeypatch):
    touch(tmp_path / "ok" / "a.mp3")
    touch(tmp_path / "locked" / "b.mp3")
    real = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(walk_module.os, "scandir", scandir)
    errors = []
    assert [p.name for p in walk([tmp_path], on_error=lambda p, why: errors.append(p))] == \
        ["a.mp3"]
    assert errors == [tmp_path / "locked"]


def test_extensions_are_configurable():
    assert parse_extensions("mp3, .FLAC") == (".mp3", ".flac")


@pytest.mark.slow
def test_a_thousand_nested_folders_are_walked_without_recursion(tmp_path):
    folders = [tmp_path]
    for _ in range(1000):
        folders.append(folders[-1] / "d")
        folders[-1].mkdir()  # os.makedirs and shutil.rmtree recurse: not for this depth
    song = touch(folders[-1] / "song.mp3")
    try:
        assert list(walk([tmp_path])) == [song]
    finally:
        song.unlink()
        for folder in reversed(folders[1:]):
            folder.rmdir()


def test_a_missing_root_is_a_usage_error():
    with pytest.raises(InstagError, match="no such file or folder"):
        check_roots([Path("/mnt/not-mounted")])


def test_the_walks_list_packs_paths_and_gives_them_back_exactly(tmp_path):
    import os

    from instag.tagging.walk import PathList

    names = [tmp_path / "a b.flac", Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.wav")),
             tmp_path / "-dash.mp3"]
    packed = PathList(names)
    assert len(packed) == 3 and list(packed) == names
    assert packed[-1] == names[-1] and os.fsencode(packed[1]).endswith(b"caf\xe9.wav")
    with pytest.raises(IndexError):
        packed[3]


def test_a_fifo_in_the_library_is_unsupported_not_a_hang(run_tag, library, tmp_path):
    os.mkfifo(library / "other" / "x.wav")
    result = run_tag(library / "other", "--out", tmp_path / "t.csv")
    assert result.exit_code == 1
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status["x.wav"] == "unsupported"
