"""Decode audio files to mono float32 blocks at their own sample rate.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, opus, mp3 and aiff; anything else goes through
``ffmpeg`` when it is on PATH. Channels are averaged to mono and every sample format becomes
float32 in [-1, 1]. A file that cannot be decoded raises ``AudioError`` with its status, for the
caller to report for that file alone.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from instag.common.quiet import native_stderr_silenced
from instag.common.status import Status

AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".m4a", ".mp4", ".aac", ".wma", ".webm", ".mka", ".alac", ".ape", ".wv",
)

MAX_RATE = 1_000_000  # above any real audio rate: a header claiming more is damaged
Blocks = Callable[[int], Iterator[np.ndarray]]  # frames per block -> mono float32 blocks


class AudioError(Exception):
    """A per-file failure (unreadable, empty, unsupported): reported for that file, run goes on."""

    def __init__(self, path: Path | str, reason: str, status: Status = Status.ERROR) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.status = status


def open_audio(path: Path) -> tuple[int, Blocks]:
    """(sample rate, block reader) of a file; OS problems become statuses, not tracebacks.
    Nothing a decoder reports is trusted unchecked: a rate or channel count that is not
    positive is a per-file error, never a division by zero further on."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO or a device would block forever
            raise AudioError(path, "not a regular file (a pipe, socket or device)",
                             status=Status.UNSUPPORTED)
        _ensure_readable(path)  # a permission problem is transient: say so, not "corrupt"
        if st.st_size == 0:
            raise AudioError(path, "empty file (0 bytes)", status=Status.EMPTY)
        opened = _open_soundfile(path)
        rate, blocks = opened or _open_ffmpeg(path)
    except FileNotFoundError:
        raise AudioError(path, "file vanished", status=Status.MISSING) from None
    except PermissionError:
        raise AudioError(path, "permission denied", status=Status.UNREADABLE) from None
    except OSError as e:
        raise AudioError(path, f"cannot open ({e})", status=Status.UNREADABLE) from e
    if not 0 < rate <= MAX_RATE:
        raise AudioError(path, f"the decoder reports a sample rate of {rate} Hz: not audio, "
                         "or a damaged header")
    return rate, _finite(path, rate, blocks)


def _finite(path: Path, rate: int, blocks: Blocks) -> Blocks:
    """The same blocks, or an AudioError at the first NaN or infinite sample: such a file has
    no meaningful features, and must not get confident tags from zeroed ones."""

    def checked(n: int) -> Iterator[np.ndarray]:
        done = 0
        for block in blocks(n):
            bad = np.flatnonzero(~np.isfinite(block))
            if bad.size:
                raise AudioError(path, "non-finite samples (NaN or infinity) from "
                                 f"{(done + bad[0]) / rate:.2f} s: a damaged float file")
            done += len(block)
            yield block

    return checked


def _ensure_readable(path: Path) -> None:
    """Raises FileNotFoundError / PermissionError (as the OS says) before any decoder sees it."""
    os.close(os.open(path, os.O_RDONLY))


def _open_soundfile(path: Path) -> tuple[int, Blocks] | None:
    """libsndfile's reader, or None when the format is not one it knows."""
    import soundfile as sf

    try:
        with native_stderr_silenced():  # mpg123 prints "Note: ..." lines while it probes
            f = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except sf.LibsndfileError:
        return None  # not a format libsndfile knows: ffmpeg may
    if f.channels < 1:
        f.close()
        raise AudioError(path, f"the decoder reports {f.channels} channels: a damaged header")

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

    return f.samplerate, blocks


def _open_ffmpeg(path: Path) -> tuple[int, Blocks]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        # libsndfile says "File does not exist or is not a regular file" of a format it does
        # not know; the file exists (checked above), so say what is really the matter.
        raise AudioError(
            path, "not a format libsndfile reads, and ffmpeg is not on PATH (install ffmpeg "
            "to decode m4a/aac, wma and other formats)", status=Status.UNSUPPORTED,
        )
    rate = _ffmpeg_rate(path, ffmpeg)  # None: no audio stream ffmpeg can read
    if rate is None:
        raise AudioError(path, "not audio: neither libsndfile nor ffmpeg recognises it")

    def blocks(n: int) -> Iterator[np.ndarray]:
        # ffmpeg mixes to mono itself (-ac 1 averages channels) and converts to float32.
        cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", ffmpeg_url(path), "-map", "0:a:0",
               "-ac", "1", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            # drained as it comes: a damaged file's errors would otherwise fill the pipe and
            # block ffmpeg until the stall timeout; the last lines are the reason
            last: deque[str] = deque(maxlen=3)
            drain = threading.Thread(target=_keep_last_lines, args=(proc.stderr, last),
                                     daemon=True)
            drain.start()
            try:
                while chunk := proc.stdout.read(4 * n):
                    yield np.frombuffer(chunk[: len(chunk) // 4 * 4],
                                        dtype="<f4").astype(np.float32)
            except BaseException:  # stopped (a stall, an abandoned file): do not wait for it
                proc.kill()
                raise
            drain.join()
            if proc.wait() != 0:
                raise AudioError(path, f"ffmpeg failed to decode ({list(last)[-1:]})")

    return rate, blocks


def _keep_last_lines(stream, last: deque[str]) -> None:
    for line in stream:
        if text := line.decode(errors="replace").strip():
            last.append(text)


def ffmpeg_url(path: Path) -> str:
    """A path as ffmpeg and ffprobe take it, never as an option or a protocol: `-dash.m4a`,
    `-` and `pipe:x.mp3` are file names (`file:` and an absolute path; a path after `--` would
    be ffmpeg's output)."""
    return "file:" + os.path.abspath(path)


def _ffmpeg_rate(path: Path, ffmpeg: str) -> int | None:
    ffprobe = shutil.which("ffprobe") or str(Path(ffmpeg).with_name("ffprobe"))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
         "-of", "default=nw=1:nk=1", ffmpeg_url(path)], capture_output=True, text=True,
    )
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None
