"""Outputs replace old ones atomically, with the permissions a user expects."""

import os
import stat
import subprocess
import sys
import time

import pytest
import soundfile as sf
from builders import SR, mounted, music

from instag.common.atomic import atomic_write
from instag.outputs.writers import MIN_FREE_BYTES


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


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_writers_old_temp_of_this_host_is_removed_by_the_next_write_there(tmp_path):
    from instag.common.atomic import HOST

    dead = _dead_pid()
    left = [tmp_path / f".instag.{HOST}.{dead}.0123456789abcdef.tmp",
            tmp_path / f".instag.{HOST}.{dead}.fedcba9876543210.tmp"]
    left[0].write_bytes(b"a full-size copy, left by -9")
    left[1].mkdir()  # an unfinished dataset folder
    for p in left:
        _age(p, 2 * 3600)
    with atomic_write(tmp_path / "other.csv") as f:
        f.write("new\n")
    assert sorted(os.listdir(tmp_path)) == ["other.csv"]


def test_the_sweep_never_removes_what_it_cannot_prove_abandoned(tmp_path):
    """Only instag's temp shape, of this host, of a dead writer, and old: a user's file in the
    shape an older instag used, another host's temp on a share, a fresh temp and a live
    writer's are all kept."""
    from instag.common.atomic import HOST

    dead = _dead_pid()
    other_host = "0" * 8 if HOST != "0" * 8 else "1" * 8
    kept = [tmp_path / f".notes.txt.{dead}.abcd1234.tmp",  # the legacy pattern: a user's file
            tmp_path / f".instag.{dead}.0123abcd.tmp",  # an older instag's name
            tmp_path / f".instag.{other_host}.{dead}.0123456789abcdef.tmp",  # another host
            tmp_path / f".instag.{HOST}.{os.getpid()}.0123456789abcdef.tmp",  # alive
            tmp_path / f".instag.{HOST}.{dead}.aaaaaaaaaaaaaaaa.tmp"]  # dead but fresh
    for p in kept:
        p.write_text("kept")
    for p in kept[:-1]:
        _age(p, 2 * 3600)
    with atomic_write(tmp_path / "other.csv") as f:
        f.write("new\n")
    assert sorted(os.listdir(tmp_path)) == sorted(["other.csv", *(p.name for p in kept)])


@pytest.mark.slow
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
    from instag.common.atomic import atomic_path, is_temp_name

    target = tmp_path / ("x" * 250)
    with atomic_path(target) as tmp:
        assert len(tmp.name) <= 48 and tmp.parent == tmp_path
        assert is_temp_name(tmp.name)
        tmp.write_text("ok")
    assert target.read_text() == "ok"


# -- 2. permissions ------------------------------------------------------------------------------
def test_a_rerun_keeps_the_outputs_mode(run_tag, library, old_output):
    os.chmod(old_output, 0o644)
    run_tag(library / "other", "--out", old_output)
    assert "previous" not in old_output.read_text()
    assert stat.S_IMODE(old_output.stat().st_mode) == 0o644


@pytest.mark.slow
def test_a_disk_that_fills_up_at_the_end_keeps_the_old_output(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "long.wav", music(240, 1), SR)
    with mounted(tmp_path / "small", "size=256k") as small:
        out = small / "tags.json"
        head = b'{"instag_version": "previous", "files": [\n'  # an earlier output, padded
        out.write_bytes(head + b" " * (256 * 1024 - MIN_FREE_BYTES - 8192 - len(head)))
        before = out.read_bytes()
        result = run_tag(lib, "--out", out, "--bag", "1", "--timeline")  # ~250 bags: too big
        assert result.exit_code == 2, result.output
        assert "cannot write" in result.output and "Traceback" not in result.output
        assert out.read_bytes() == before
        assert [p.name for p in small.iterdir()] == ["tags.json"]
