"""Decoding what a library really holds, in bounded time and memory: hostile headers, odd rates
and channel counts, chatty or hanging decoders, names that look like options; a file that
cannot be decoded sensibly is its own error, never a wrong "ok"."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv, statuses
from typer.testing import CliRunner

from instag.cli import app

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


# -- 2. ffmpeg's stderr never fills its pipe ----------------------------------------------------
@pytest.fixture
def chatty_ffmpeg(tmp_path, monkeypatch):
    """An ffmpeg that writes 400 kB of errors before its audio (a damaged 10-minute m4a)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffprobe").write_text("#!/bin/sh\necho 16000\n")
    (bin_dir / "ffmpeg").write_text(
        f"#!{sys.executable}\nimport sys, numpy as np\n"
        "for i in range(4000):\n"
        "    sys.stderr.write(f'[aac @ 0x55] Number of bands ({i}) exceeds limit.' + 'x' * 50)\n"
        "    sys.stderr.write('\\n')\n"
        "sys.stderr.flush()\n"
        "t = np.arange(16000 * 5) / 16000\n"
        "sys.stdout.buffer.write((0.3 * np.sin(2 * np.pi * 440 * t)).astype('<f4').tobytes())\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_an_ffmpeg_that_writes_many_errors_is_not_a_timeout(chatty_ffmpeg, run_tag, tmp_path):
    song = tmp_path / "damaged.m4a"
    song.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    t = time.monotonic()
    result = run_tag(song, "--out", tmp_path / "t.csv", "--file-timeout", "3")
    assert time.monotonic() - t < 60
    assert statuses(tmp_path / "t.csv") == {"damaged.m4a": "ok"}, result.output


# -- 11. names that ffmpeg would take for options or protocols -----------------------------------
@needs_ffmpeg
@pytest.mark.parametrize("name", ["-dash.m4a", "-", "pipe:x.mp3"])
def test_a_name_that_looks_like_an_option_or_a_protocol_is_a_file_to_ffmpeg(
        tmp_path, monkeypatch, name):
    from instag.features.resample import load_16k

    sf.write(tmp_path / "src.wav", music(2, 1), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "src.wav"), "-c:a", "aac",
                    "-f", "mp4", str(tmp_path / "plain.m4a")], check=True)
    shutil.copy(tmp_path / "plain.m4a", tmp_path / name)
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(load_16k(Path(name)), load_16k(tmp_path / "plain.m4a"))


# -- 3. memory bounded per worker, whatever the channel count -----------------------------------
def sparse_wav(path: Path, channels: int, rate: int, seconds: float) -> Path:
    """A WAV whose header says `channels` x `seconds` of 16-bit audio at `rate`: the data are
    a hole in the file (a few kB on disk, gigabytes to decode)."""
    sf.write(path, np.zeros((1, channels), np.int16), rate, subtype="PCM_16")
    head = bytearray(path.read_bytes())
    data = head.index(b"data")
    size = int(seconds * rate) * channels * 2
    head[data + 4 : data + 8] = size.to_bytes(4, "little")
    head[4:8] = (data + 8 + size - 8).to_bytes(4, "little")
    path.write_bytes(bytes(head[: data + 8]))
    os.truncate(path, data + 8 + size)
    return path


@pytest.mark.slow
def test_a_255_channel_96_khz_file_decodes_in_bounded_memory(tmp_path):
    path = sparse_wav(tmp_path / "many.wav", 255, 96000, 20)  # 1.96 GB as float32 at once
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its forking parent's peak
    code = ("import sys; from instag.features.resample import stream_16k; "
            "n = sum(len(b) for b in stream_16k(sys.argv[1])); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print(n, int(hwm.split()[1]) // 1024)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=600, check=True)
    samples, peak_mb = map(int, done.stdout.split())
    assert samples == 20 * 16000
    assert peak_mb < 250, f"peak {peak_mb} MB"


# -- 4. claims the file cannot back --------------------------------------------------------------
def test_a_sample_rate_outside_what_audio_uses_is_an_error(tmp_path):
    from instag.features.decode import AudioError
    from instag.features.resample import load_16k

    sf.write(tmp_path / "one-hz.wav", np.zeros(1800, np.int16), 1, subtype="PCM_16")
    with pytest.raises(AudioError, match="sample rate of 1 Hz, outside what audio uses") as e:
        load_16k(tmp_path / "one-hz.wav")
    assert e.value.status == "error"


def test_a_file_over_max_duration_is_too_long_and_not_remembered(run_tag, tmp_path):
    sf.write(tmp_path / "long.wav", music(20, 1), SR)
    first = run_tag(tmp_path / "long.wav", "--out", tmp_path / "t.csv", "--max-duration", "10")
    assert first.exit_code == 1
    (row,) = read_csv(tmp_path / "t.csv")
    assert row["status"] == "too_long" and "over --max-duration" in row["reason"]
    again = run_tag(tmp_path / "long.wav", "--out", tmp_path / "t.csv", "--max-duration", "1m")
    assert again.exit_code == 0 and statuses(tmp_path / "t.csv") == {"long.wav": "ok"}


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nanh"])
def test_a_bad_max_duration_is_one_line(run_tag, tmp_path, bad):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--max-duration", bad)
    assert result.exit_code == 2 and "not a duration" in result.output


@needs_ffmpeg
def test_a_flac_whose_header_claims_2_to_the_36_samples_is_decoded_by_ffmpeg(tmp_path):
    from instag.features.resample import load_16k

    sf.write(tmp_path / "ok.flac", music(3, 1), SR)
    data = bytearray((tmp_path / "ok.flac").read_bytes())
    fields = int.from_bytes(data[18:26], "big")  # STREAMINFO: ..., total samples (36 bits)
    data[18:26] = (fields | (1 << 36) - 1).to_bytes(8, "big")
    (tmp_path / "huge.flac").write_bytes(bytes(data))
    assert sf.info(tmp_path / "huge.flac").frames == (1 << 36) - 1
    audio = load_16k(tmp_path / "huge.flac")
    assert len(audio) == pytest.approx(3 * 16000, abs=16)


def lame(path: Path, seconds: float, quiet: str, *options: str) -> Path:
    """An MP3 of noise, its start made `quiet` (an ffmpeg volume expression of t)."""
    made = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:a=0.3", "-af",
         f"volume='{quiet}':eval=frame", "-ar", "44100", "-c:a", "libmp3lame", *options,
         str(path)], capture_output=True)
    if made.returncode:
        pytest.skip("this ffmpeg has no MP3 encoder (libmp3lame)")
    return path


@needs_ffmpeg
@pytest.mark.parametrize("quiet", ["if(lt(t,15),0.03,1)", "if(lt(t,5),0,1)"],
                         ids=["estimate-short", "estimate-long"])
def test_a_vbr_mp3_that_does_not_state_its_length_is_decoded_to_its_end(tmp_path, quiet):
    """No Xing header: its length is estimated from the first frame's bitrate, and libsndfile
    stopped there (this 30 s song was decoded as 8.6 s); ffprobe's duration is the same guess,
    so it is no promise either (a quiet start made it 62 s: "damaged", 30 s decoding)."""
    from instag.features.resample import load_16k

    path = lame(tmp_path / "vbr.mp3", 30, quiet, "-q:a", "4", "-write_xing", "0")
    assert abs(sf.info(path).duration - 30) > 5  # what libsndfile believes
    assert len(load_16k(path)) == pytest.approx(30 * 16000, abs=1600)


@needs_ffmpeg
def test_a_vbr_mp3_whose_xing_header_has_no_frame_count_is_decoded_to_its_end(tmp_path):
    from instag.features.resample import load_16k

    path = lame(tmp_path / "vbr.mp3", 30, "if(lt(t,15),0.03,1)", "-q:a", "4")
    data = bytearray(path.read_bytes())
    at = data.index(b"Xing") + 7
    data[at] &= 0xFE  # the flag that says a frame count follows
    path.write_bytes(bytes(data))
    assert sf.info(path).duration < 20
    assert len(load_16k(path)) == pytest.approx(30 * 16000, abs=1600)


@needs_ffmpeg
@pytest.mark.parametrize("header", ["vbri", "junk-first"])
def test_a_length_libsndfile_cannot_read_is_no_promise(tmp_path, header):
    """A VBRI header (libsndfile reads only Xing's), or 70 kB before the first frame (libsndfile
    gives up; ffmpeg decodes it): the length either reports is the first frame's guess, and a
    healthy song was "damaged: the header says 39 s, 30 s decodes"."""
    import struct

    from instag.features.resample import load_16k

    path = lame(tmp_path / "vbr.mp3", 30, "if(lt(t,15),0.03,1)", "-q:a", "4")
    data = bytearray(path.read_bytes())
    at = data.index(b"Xing")
    frame = at - 36 if data[at - 36] == 0xFF else at - 21
    if header == "vbri":  # Fraunhofer's header in place of LAME's, the same frame count
        frames, size = struct.unpack(">II", data[at + 8:at + 16])
        data[at:at + 156] = bytes(156)
        vbri = b"VBRI" + struct.pack(">HHHIIHHHH", 1, 1105, 75, size, frames, 0, 1, 2, 1)
        data[frame + 36:frame + 36 + len(vbri)] = vbri
    else:
        data[at:at + 4] = b"None"  # no Xing header, and junk before the first frame
        data[:0] = bytes(70_000)
    path.write_bytes(bytes(data))
    assert len(load_16k(path)) == pytest.approx(30 * 16000, abs=1600)


@needs_ffmpeg
def test_without_ffmpeg_an_mp3s_guessed_length_is_no_promise(tmp_path, monkeypatch):
    """libsndfile alone decodes what the first frame's bitrate predicts (install.md says so);
    the guess is not a length the file promised: a quiet start is not "damaged"."""
    from instag.features.resample import load_16k

    path = lame(tmp_path / "vbr.mp3", 30, "if(lt(t,5),0,1)", "-q:a", "4", "-write_xing", "0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert len(load_16k(path)) > 0


@needs_ffmpeg
def test_ffmpeg_without_its_ffprobe_leaves_mp3s_to_libsndfile(tmp_path, monkeypatch):
    """A constant-bitrate MP3 without a header decodes whole in libsndfile; an ffmpeg without
    ffprobe made it `missing: file vanished`."""
    from instag.features.resample import load_16k

    path = lame(tmp_path / "cbr.mp3", 10, "1", "-b:a", "128k", "-write_xing", "0")
    only = tmp_path / "bin"
    only.mkdir()
    (only / "ffmpeg").symlink_to(shutil.which("ffmpeg"))
    monkeypatch.setenv("PATH", str(only))
    assert len(load_16k(path)) == pytest.approx(10 * 16000, abs=1600)


# -- 5. samples that are not audio ---------------------------------------------------------------
def test_a_float_file_with_absurd_samples_is_an_error_not_ok(run_tag, tmp_path):
    x = music(3, 1)
    x[SR : SR + 10] = 1e19
    sf.write(tmp_path / "loud.wav", x, SR, subtype="FLOAT")
    run_tag(tmp_path / "loud.wav", "--out", tmp_path / "t.csv")
    (row, *_) = read_csv(tmp_path / "t.csv")
    assert row["status"] == "error" and "samples out of range (1e+19)" in row["reason"]


# -- 3. what a decoder reports is checked --------------------------------------------------------
@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg not installed")
def test_a_file_with_sample_rate_0_is_its_own_error_and_embed_keeps_the_rest(
        library, standin_vggish, standin_pca, tmp_path):
    result = CliRunner().invoke(app, [
        "embed", str(library / "notes.flac"), str(library / "other"), "--out",
        str(tmp_path / "f.npz"), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
        "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 1, result.output
    assert "sample rate of 0 Hz" in result.output and "ZeroDivision" not in result.output
    with np.load(tmp_path / "f.npz") as npz:
        assert len(npz["files"]) == 2 and len(npz["failed"]) == 1


# -- 6d. other inputs ----------------------------------------------------------------------------
def test_an_all_nan_file_is_an_error_not_a_confident_tag(run_tag, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "nan.wav", np.full(16000 * 3, np.nan, np.float32), 16000, subtype="FLOAT")
    result = run_tag(lib, "--out", tmp_path / "t.csv")
    (row,) = read_csv(tmp_path / "t.csv")
    assert result.exit_code == 1 and row["status"] == "error"
    assert "non-finite samples" in row["reason"] and row["probability"] == ""
