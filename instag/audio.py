"""Decode audio files to 16 kHz mono float32, in bounded-memory blocks.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, opus, mp3 and aiff; anything else goes through
``ffmpeg`` when it is on PATH. Channels are averaged to mono, every sample format becomes float32
in [-1, 1], and the signal is resampled to 16 kHz block by block: each block is resampled with
enough real neighbouring samples on both sides that the output equals resampling the whole file
at once (block starts fall on the input/output rate's common grid, so sample times line up).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag.quiet import native_stderr_silenced

TARGET_SR = 16000
RESAMPLERS = ("resampy", "soxr")
# resampy (kaiser_best) is what VGGish's reference, and so OpenMIC, used. soxr is ~85x faster but
# rolls off later (resampy is -2 dB at 7.2 kHz, -14 dB at 7.5 kHz relative to it), moving VGGish's
# top two mel bands by ~3 dB (99.9th pct) where 16-bit requantisation moves them 0.1-0.6 dB: not
# small enough to be the default (bench/resampler_fidelity.py).
DEFAULT_RESAMPLER = "resampy"
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".m4a", ".mp4", ".aac", ".wma", ".webm", ".mka", ".alac", ".ape", ".wv",
)
BLOCK_SECONDS = 30.0  # input decoded and resampled per step: memory ~ a few MB, not the file
CONTEXT_SECONDS = 0.05  # neighbours on each side; both filters reach < 5 ms at 16 kHz


class AudioError(Exception):
    """A per-file failure (unreadable, empty, unsupported): reported for that file, run goes on."""

    def __init__(self, path: Path | str, reason: str, status: str = "error") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class AudioInfo:
    samplerate: int
    channels: int
    frames: int | None  # None when the container does not say

    @property
    def duration(self) -> float | None:
        return None if self.frames is None else self.frames / self.samplerate


class _Source:
    """Mono float32 blocks at the file's own rate, from soundfile or ffmpeg."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _ensure_readable(path)  # a permission problem is transient: say so, don't call it corrupt
        if path.stat().st_size == 0:
            raise AudioError(path, "empty file (0 bytes)", status="empty")
        opened = _open_soundfile(path)
        if isinstance(opened, str):
            opened = _open_ffmpeg(path, opened)
        self.info, self._blocks = opened

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        return self._blocks(frames)


def _ensure_readable(path: Path) -> None:
    """Raises FileNotFoundError / PermissionError (as the OS says) before any decoder sees it."""
    os.close(os.open(path, os.O_RDONLY))


def _open_soundfile(path: Path):
    import soundfile as sf

    try:
        with native_stderr_silenced():  # mpg123 prints "Note: ..." lines while it probes
            f = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except sf.LibsndfileError as e:
        return e.error_string  # not a format libsndfile knows: ffmpeg may
    info = AudioInfo(f.samplerate, f.channels, f.frames if f.frames > 0 else 0)

    def blocks(n: int) -> Iterator[np.ndarray]:
        with f:
            while True:
                try:
                    data = f.read(n, dtype="float32", always_2d=True)
                except sf.LibsndfileError as e:
                    raise AudioError(path, f"corrupt or truncated audio ({e})") from e
                if len(data) == 0:
                    return
                yield data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]

    return info, blocks


def _open_ffmpeg(path: Path, sndfile_error: str):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            path, f"libsndfile cannot read it ({sndfile_error}) and ffmpeg is not on PATH "
            "(install ffmpeg to decode m4a/aac, wma and other formats)", status="unsupported",
        )
    rate = _ffmpeg_rate(path, ffmpeg)  # None: no audio stream ffmpeg can read
    if rate is None:
        raise AudioError(path, "not audio that libsndfile or ffmpeg can read "
                               f"(libsndfile says: {sndfile_error})")
    info = AudioInfo(rate, 1, None)

    def blocks(n: int) -> Iterator[np.ndarray]:
        # ffmpeg mixes to mono itself (-ac 1 averages channels) and converts to float32.
        cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1",
               "-f", "f32le", "-acodec", "pcm_f32le", "-"]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            while chunk := proc.stdout.read(4 * n):
                yield np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype="<f4").astype(np.float32)
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise AudioError(path, f"ffmpeg failed to decode ({err.splitlines()[-1:]})")

    return info, blocks


def _ffmpeg_rate(path: Path, ffmpeg: str) -> int | None:
    ffprobe = shutil.which("ffprobe") or str(Path(ffmpeg).with_name("ffprobe"))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
         "-of", "default=nw=1:nk=1", str(path)], capture_output=True, text=True,
    )
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def probe(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of a file, without decoding it."""
    return _checked_source(Path(path)).info


def _checked_source(path: Path) -> _Source:
    try:
        return _Source(path)
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(path, "file vanished", status="missing") from None
    except PermissionError:
        raise AudioError(path, "permission denied", status="unreadable") from None
    except OSError as e:
        raise AudioError(path, f"cannot open ({e})", status="unreadable") from e


def _resample(x: np.ndarray, sr_in: int, resampler: str) -> np.ndarray:
    if resampler == "soxr":
        import soxr

        return soxr.resample(x, sr_in, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
    if resampler == "resampy":
        import resampy

        return resampy.resample(x, sr_in, TARGET_SR, filter="kaiser_best").astype(np.float32)
    raise ValueError(f"unknown resampler {resampler!r}; choose from {', '.join(RESAMPLERS)}")


def stream_16k(
    path: str | Path, resampler: str = DEFAULT_RESAMPLER, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 blocks of a file; memory stays O(block)."""
    path = Path(path)
    src = _checked_source(path)
    sr = src.info.samplerate
    if sr == TARGET_SR:
        yield from src.blocks(int(block_seconds * sr))
        return
    # Input blocks of `unit` samples map to exactly `unit_out` output samples.
    g = math.gcd(sr, TARGET_SR)
    unit, unit_out = sr // g, TARGET_SR // g
    step = unit * max(1, round(block_seconds * sr / unit))
    ctx = unit * max(1, math.ceil(CONTEXT_SECONDS * sr / unit))
    ctx_out = ctx // unit * unit_out

    # buf holds input samples [buf_start, buf_start + len(buf)); the signal is zero before 0.
    buf = np.zeros(ctx, np.float32)
    buf_start = -ctx
    pos = 0  # next input sample whose output is still owed
    for block in src.blocks(step):
        buf = np.concatenate([buf, block])
        while buf_start + len(buf) >= pos + step + ctx:
            seg = buf[pos - ctx - buf_start : pos + step + ctx - buf_start]
            yield _resample(seg, sr, resampler)[ctx_out : ctx_out + step // unit * unit_out]
            pos += step
            buf, buf_start = buf[pos - ctx - buf_start :], pos - ctx
    end = buf_start + len(buf)  # total input samples
    if end > pos:
        seg = np.concatenate([buf[pos - ctx - buf_start :], np.zeros(ctx, np.float32)])
        n_out = end * TARGET_SR // sr - pos // unit * unit_out
        yield _resample(seg, sr, resampler)[ctx_out : ctx_out + n_out]


def load_16k(path: str | Path, resampler: str = DEFAULT_RESAMPLER) -> np.ndarray:
    """The whole file at 16 kHz mono (for short files and tests; tagging streams blocks)."""
    blocks = list(stream_16k(path, resampler))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
