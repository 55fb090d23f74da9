"""One mapping from what went wrong to a status: permanent only when the file itself is the
cause, retried by the next run otherwise."""

import errno
import os
import re
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music, read_csv

from instag.common.status import Status
from instag.features.decode import AudioError
from instag.tagging.failures import failure


@pytest.mark.parametrize("error, status", [
    (OSError(errno.EIO, "Input/output error"), Status.UNREADABLE),
    (OSError(errno.ENXIO, "No such device or address"), Status.UNREADABLE),
    (OSError(errno.ESTALE, "Stale file handle"), Status.UNREADABLE),
    (PermissionError(errno.EACCES, "Permission denied"), Status.UNREADABLE),
    (FileNotFoundError(errno.ENOENT, "No such file"), Status.MISSING),
    (TimeoutError("no progress for 3 s"), Status.TIMEOUT),
    (ValueError("a decoder's bug"), Status.CRASHED),
    (AudioError("x.flac", "corrupt or truncated audio"), Status.ERROR),
    (AudioError("x.wav", "no audio", Status.EMPTY), Status.EMPTY),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_each_failure_has_one_status(error, status):
    assert failure(error)[0] is status


def test_only_what_the_file_itself_causes_is_permanent():
    assert {s for s in Status if s.permanent} == {Status.ERROR, Status.EMPTY, Status.TOO_SHORT}


# -- what a decoder's or prober's end says of the file ---------------------------------------------
def only_row(out: Path) -> dict[str, str]:
    (row,) = {r["path"]: r for r in read_csv(out)}.values()
    return row


@pytest.mark.parametrize("kept", [5_000, 200_000])
@pytest.mark.slow
def test_a_flac_cut_short_is_damaged_with_both_durations_never_too_short_or_ok(
        run_tag, tmp_path, kept):
    sf.write(tmp_path / "whole.flac", music(150, 1), SR)
    cut = tmp_path / "Music" / "cut.flac"
    cut.parent.mkdir()
    cut.write_bytes((tmp_path / "whole.flac").read_bytes()[:kept])
    result = run_tag(cut.parent, "--out", tmp_path / "t.csv")
    row = only_row(tmp_path / "t.csv")
    assert result.exit_code == 1, result.output
    assert row["status"] == "error", row
    assert re.fullmatch(r"damaged: the header says 150\.0 s, \d+\.\d s decodes", row["reason"])
    assert row["instrument"] == ""  # its decodable part is not tagged


@pytest.mark.parametrize("suffix", [".wav", ".aiff"])
def test_a_wav_or_aiff_cut_short_is_damaged_though_libsndfile_reads_what_is_left(
        run_tag, tmp_path, suffix):
    """libsndfile reports the frames a cut WAV still holds; the header's data size says
    more."""
    sf.write(tmp_path / f"whole{suffix}", music(30, 1), SR)
    cut = tmp_path / "Music" / f"cut{suffix}"
    cut.parent.mkdir()
    data = (tmp_path / f"whole{suffix}").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    run_tag(cut.parent, "--out", tmp_path / "t.csv")
    row = only_row(tmp_path / "t.csv")
    assert row["status"] == "error" and re.fullmatch(
        r"damaged: the header says 30\.0 s, 1[45]\.\d s decodes", row["reason"]), row


def huge_flac(folder: Path) -> Path:
    """A FLAC whose header claims 2**36 samples: libsndfile opens it, cannot read it, and
    ffmpeg (probed first) is asked instead."""
    sf.write(folder / "ok.flac", music(3, 1), SR)
    data = bytearray((folder / "ok.flac").read_bytes())
    (folder / "ok.flac").unlink()
    fields = int.from_bytes(data[18:26], "big")  # STREAMINFO: ..., total samples (36 bits)
    data[18:26] = (fields | (1 << 36) - 1).to_bytes(8, "big")
    (folder / "huge.flac").write_bytes(bytes(data))
    return folder / "huge.flac"


@pytest.mark.parametrize("make", [
    lambda folder: (folder / "song.m4a").write_bytes(b"\0" * 4096),  # ffmpeg's from the start
    huge_flac,  # libsndfile's, then ffmpeg's
], ids=["m4a", "flac libsndfile cannot read"])
def test_a_prober_killed_by_a_signal_is_crashed_and_retried_by_the_next_run(
        run_tag, tmp_path, monkeypatch, make):
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    (tools / "ffprobe").write_text(f"#!/bin/sh\necho probe >> {calls}\nkill -KILL $$\n")
    (tools / "ffmpeg").write_text("#!/bin/sh\nexit 1\n")  # (never reached)
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(tools / tool, 0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "Music").mkdir()
    make(tmp_path / "Music")
    for run in (1, 2):
        result = run_tag(tmp_path / "Music", "--out", tmp_path / "t.csv")
        row = only_row(tmp_path / "t.csv")
        assert result.exit_code == 1, result.output
        assert (row["status"], row["reason"]) == (
            "crashed", "ffprobe was killed by signal 9; retried next run"), row
        assert calls.read_text().count("probe") == run  # not remembered: probed again


def test_a_failure_remembered_from_an_earlier_run_does_not_fail_a_nightly_run(run_tag, tmp_path):
    import numpy as np

    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), SR)
    first = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert first.exit_code == 1  # computed in this run: news
    again = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert again.exit_code == 0, again.output
    assert "failed: 1 empty (1 known from an earlier run)" in again.output
    assert "empty" in (tmp_path / "t.csv").read_text()  # still listed in the output
    assert run_tag(tmp_path, "--out", tmp_path / "t.csv", "--strict").exit_code == 1


@pytest.mark.slow
def test_a_retryable_failure_fails_every_run(run_tag, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("ffprobe", "echo 44100"), ("ffmpeg", "exec sleep 60")):  # a hung mount
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "a.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    for _ in range(2):  # a timeout is never remembered: each run computes it, and says so
        result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--file-timeout", "1")
        assert result.exit_code == 1 and "failed: 1 timeout." in result.output, result.output


def test_an_unreadable_folder_gets_a_line_of_its_own(run_tag, tmp_path, monkeypatch):
    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    (tmp_path / "shut").mkdir()
    real = os.scandir

    def scandir(folder):
        if Path(folder).name == "shut":
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv")
    assert f"unreadable: {tmp_path / 'shut'}: " in result.output
