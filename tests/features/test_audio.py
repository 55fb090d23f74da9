import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from instag.features import decode as audio
from instag.features.decode import AudioError, open_audio
from instag.features.resample import load_16k, stream_16k


def tone(seconds, sr, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x, sr=16000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("resampler", ["soxr", "resampy"])
def test_a_440_hz_tone_at_44k1_is_a_440_hz_tone_at_16k(tmp_path, resampler):
    sf.write(tmp_path / "a.wav", tone(3, 44100), 44100)
    y = load_16k(tmp_path / "a.wav", resampler)
    assert len(y) == 3 * 16000
    assert peak_hz(y) == pytest.approx(440, abs=1)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("subtype, tol", [("PCM_U8", 1e-2), ("PCM_16", 1e-4), ("PCM_24", 1e-6),
                                          ("FLOAT", 1e-7)])
def test_every_sample_format_and_stereo_decode_to_the_same_mono_signal(tmp_path, subtype, tol):
    x = tone(1, 16000, 300)
    sf.write(tmp_path / "mono.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "stereo.wav", np.stack([x * 1.5, x * 0.5], axis=1), 16000,
             subtype=subtype)
    np.testing.assert_allclose(load_16k(tmp_path / "stereo.wav"), load_16k(tmp_path / "mono.wav"),
                               atol=tol)


@pytest.mark.parametrize("resampler", ["soxr", "resampy"])
@pytest.mark.slow
def test_blocks_equal_whole_file_resampling(tmp_path, resampler):
    rng = np.random.default_rng(0)
    x = (tone(47.3, 44100) + 0.1 * rng.standard_normal(int(47.3 * 44100))).astype(np.float32)
    sf.write(tmp_path / "long.flac", np.clip(x, -1, 1), 44100)
    whole = np.concatenate(list(stream_16k(tmp_path / "long.flac", resampler, block_seconds=1e4)))
    blocks = list(stream_16k(tmp_path / "long.flac", resampler, block_seconds=5))
    assert len(blocks) > 8
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-6)


def test_the_openmic_clip_decodes_to_ten_seconds(shared_audio):
    y = load_16k(shared_audio / "000046_3840.ogg")
    assert len(y) == 160000 and y.dtype == np.float32 and 0 < np.abs(y).max() <= 1


def test_the_mp3_decodes(shared_audio):
    assert open_audio(shared_audio / "6457__dobroide__sunday-02.mp3")[0] == 44100
    assert len(load_16k(shared_audio / "6457__dobroide__sunday-02.mp3")) == pytest.approx(
        17.7 * 16000, rel=0.01)


def test_the_empty_wav_decodes_to_nothing(shared_audio):
    assert len(load_16k(shared_audio / "empty.wav")) == 0


def test_a_text_file_named_mp3_is_a_per_file_error(tmp_path):
    (tmp_path / "notes.mp3").write_text("this is not audio\n" * 50)
    with pytest.raises(AudioError) as e:
        load_16k(tmp_path / "notes.mp3")
    assert "notes.mp3" in str(e.value)


def test_a_truncated_file_is_a_per_file_error(tmp_path):
    sf.write(tmp_path / "whole.flac", tone(5, 44100), 44100)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:200])
    with pytest.raises(AudioError):
        load_16k(tmp_path / "cut.flac")


def test_a_missing_file_is_a_per_file_error(tmp_path):
    with pytest.raises(AudioError) as e:
        load_16k(tmp_path / "gone.wav")
    assert e.value.status in ("missing", "error")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path):
    sf.write(tmp_path / "a.wav", np.stack([tone(2, 44100)] * 2, axis=1), 44100)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "aac",
                    "-b:a", "192k", str(tmp_path / "a.m4a")], check=True)
    y = load_16k(tmp_path / "a.m4a")
    assert len(y) == pytest.approx(32000, abs=2000)
    assert peak_hz(y) == pytest.approx(440, abs=2)


def test_without_ffmpeg_the_error_names_the_missing_decoder(tmp_path, monkeypatch):
    (tmp_path / "song.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="ffmpeg is not on PATH") as e:
        load_16k(tmp_path / "song.m4a")
    assert e.value.status == "unsupported"


def test_a_file_that_cannot_be_read_is_unreadable_not_corrupt(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", tone(1, 16000), 16000)

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(audio, "_ensure_readable", denied)
    with pytest.raises(AudioError) as e:
        load_16k(tmp_path / "a.wav")
    assert e.value.status == "unreadable" and "permission denied" in e.value.reason


@pytest.mark.parametrize("name, kwargs", [
    ("a.flac", {}), ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}),
    ("a.opus", {"format": "OGG", "subtype": "OPUS"}), ("a.mp3", {"format": "MP3"}),
    ("a.aiff", {"format": "AIFF", "subtype": "PCM_16"}),
])
def test_libsndfile_formats_decode_to_the_same_tone(tmp_path, name, kwargs):
    sr = 48000 if "OPUS" in kwargs.values() else 44100  # opus only runs at 48 kHz and below
    with sf.SoundFile(str(tmp_path / name), "w", sr, 1, **kwargs) as f:
        f.write(tone(2, sr))
    y = load_16k(tmp_path / name)
    assert len(y) == pytest.approx(32000, abs=1200)  # codecs pad or trim a few ms
    assert peak_hz(y) == pytest.approx(440, abs=2)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg not installed")
def test_a_decoder_reporting_a_sample_rate_of_0_is_a_per_file_error(tmp_path):
    (tmp_path / "notes.flac").write_text("not audio\n" * 100)  # ffprobe: sample_rate=0
    with pytest.raises(AudioError, match="sample rate of 0 Hz") as e:
        load_16k(tmp_path / "notes.flac")
    assert e.value.status == "error"


def test_a_text_file_named_mp3_is_said_to_be_not_audio(tmp_path):
    (tmp_path / "notes.mp3").write_text("this is not audio\n" * 50)
    with pytest.raises(AudioError) as e:
        load_16k(tmp_path / "notes.mp3")
    assert "not audio" in e.value.reason or "not a format" in e.value.reason
    assert "does not exist" not in e.value.reason


def test_a_fifo_is_unsupported_and_never_opened(tmp_path):
    os.mkfifo(tmp_path / "x.wav")  # opening it for reading would block forever
    with pytest.raises(AudioError, match="not a regular file") as e:
        load_16k(tmp_path / "x.wav")
    assert e.value.status == "unsupported"


@pytest.mark.parametrize("where", [0, 20000])
def test_non_finite_samples_are_a_per_file_error_not_silence(tmp_path, where):
    x = tone(2, 16000)
    x[where:] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite samples") as e:
        load_16k(tmp_path / "nan.wav")
    assert f"from {where / 16000:.2f} s" in e.value.reason


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_mixing_to_mono_gives_the_channels_mean_exactly(channels):
    """The fast stereo mix (decoding's hot spot) changes no feature: the same float32 numbers
    as numpy's mean, for any channel count."""
    from instag.features.decode import to_mono

    frames = np.random.default_rng(channels).standard_normal((48000, channels)) * 0.3
    frames = frames.astype(np.float32)
    mixed = to_mono(frames)
    assert mixed.dtype == np.float32 and mixed.flags.c_contiguous
    assert np.array_equal(mixed, frames.mean(axis=1, dtype=np.float32))
