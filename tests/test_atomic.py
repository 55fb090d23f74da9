"""Outputs replace old ones atomically, with the permissions a user expects."""

import os
import stat
import subprocess
import sys

import pytest

from instag.common.atomic import atomic_write


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_users_umask(tmp_path, umask_022):
    with atomic_write(tmp_path / "tags.csv") as f:
        f.write("new\n")
    assert mode(tmp_path / "tags.csv") == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    (tmp_path / "tags.csv").write_text("old\n")
    os.chmod(tmp_path / "tags.csv", 0o640)
    with atomic_write(tmp_path / "tags.csv") as f:
        f.write("new\n")
    assert (tmp_path / "tags.csv").read_text() == "new\n"
    assert mode(tmp_path / "tags.csv") == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    (tmp_path / "tags.csv").write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "tags.csv") as f:
        f.write("half")
        raise RuntimeError
    assert os.listdir(tmp_path) == ["tags.csv"]
    assert (tmp_path / "tags.csv").read_text() == "old\n"


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".tags.csv.{dead}.abcd1234.tmp"
    stale.write_text("left by kill -9")
    other = tmp_path / f".tags.csv.{os.getpid()}.live0000.tmp"  # a live writer's: kept
    other.write_text("in progress")
    with atomic_write(tmp_path / "tags.csv") as f:
        f.write("new\n")
    assert sorted(os.listdir(tmp_path)) == sorted(["tags.csv", other.name])


def test_a_new_dataset_folder_gets_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path,
                                                                                 umask_022):
    from instag.common.atomic import SUCCESS, atomic_dir

    with atomic_dir(tmp_path / "ds") as d:
        (d / "part-0").write_text("a")
    assert mode(tmp_path / "ds") == 0o755 and (tmp_path / "ds" / SUCCESS).is_file()
    os.chmod(tmp_path / "ds", 0o750)
    with atomic_dir(tmp_path / "ds") as d:
        (d / "part-0").write_text("b")
    assert mode(tmp_path / "ds") == 0o750
    assert (tmp_path / "ds" / "part-0").read_text() == "b"


def test_a_killed_writers_fixed_length_temp_is_removed_by_the_next_write_there(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".instag.{dead}.0123abcd.tmp").write_bytes(b"a full-size copy, left by -9")
    (tmp_path / f".instag.{dead}.4567cdef.tmp").mkdir()  # an unfinished dataset folder
    mine = tmp_path / ".instag.1.notours.tmp"  # not instag's form: someone else's file
    mine.write_text("kept")
    with atomic_write(tmp_path / "other.csv") as f:
        f.write("new\n")
    assert sorted(os.listdir(tmp_path)) == sorted(["other.csv", mine.name])


def test_a_folder_of_2000_files_is_listed_once_however_many_are_written(tmp_path, monkeypatch):
    from instag.common import atomic

    listings = []
    scandir = os.scandir
    monkeypatch.setattr(atomic.os, "scandir", lambda p: (listings.append(p), scandir(p))[1])
    for i in range(2000):
        with atomic_write(tmp_path / f"{i:04d}.txt") as f:
            f.write("x")
    assert listings == [tmp_path]


def test_the_temp_name_is_short_whatever_the_target_is_called(tmp_path):
    from instag.common.atomic import atomic_path

    target = tmp_path / ("x" * 250)
    with atomic_path(target) as tmp:
        assert len(tmp.name) <= 32 and tmp.parent == tmp_path
        tmp.write_text("ok")
    assert target.read_text() == "ok"
