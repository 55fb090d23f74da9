"""Decode audio files to mono float32 blocks at their own sample rate.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, opus, mp3 and aiff; anything else goes through
``ffmpeg`` when it is on PATH. Channels are averaged to mono and every sample format becomes
float32 in [-1, 1]. A file that cannot be decoded raises ``AudioError`` with its status, for the
caller to report for that file alone.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import struct
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

MIN_RATE, MAX_RATE = 1_000, 768_000  # what real audio uses: a header claiming more is damaged
READ_BYTES = 8 << 20  # one read of all channels: memory bounded whatever the channel count
# a header whose duration leaves fewer bytes than this per second is not believed (no real
# encoding is that small): its duration is then counted while decoding, not trusted
PLAUSIBLE_BYTES_PER_SECOND = 16
SF_ERR_SYSTEM = 2  # libsndfile's "System error": the operating system's, not the file's
# a file that decodes this much less than its header says is damaged (a cut download or copy):
# more than half a second and more than 1 %, so that encoders' rounding never counts
SHORTFALL_SECONDS, SHORTFALL_SHARE = 0.5, 0.01
MAX_SAMPLE = 1e8  # |sample| beyond this is not audio (full scale is 1.0; 24-bit ints 8.4e6)
Blocks = Callable[[int], Iterator[np.ndarray]]  # frames per block -> mono float32 blocks
Opened = tuple[int, Blocks, int | None]  # rate, blocks, frames the decoder claims (None: unknown)


class AudioError(Exception):
    """A per-file failure (unreadable, empty, unsupported): reported for that file, run goes on."""

    def __init__(self, path: Path | str, reason: str, status: Status = Status.ERROR) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.status = status


def to_mono(frames: np.ndarray) -> np.ndarray:
    """[n, channels] float32 to mono: the channels' mean. Stereo as one add and a halving,
    the same numbers as `mean(axis=1)` (a sum of two, halved exactly) at a thirtieth of its
    time (a mean over a short axis is numpy's slow case; decoding spent half its time there)."""
    if frames.shape[1] == 2:
        return (frames[:, 0] + frames[:, 1]) * np.float32(0.5)
    if frames.shape[1] == 1:
        return frames[:, 0].copy()
    return frames.mean(axis=1, dtype=np.float32)


def open_audio(path: Path, max_seconds: float | None = None) -> tuple[int, Blocks]:
    """(sample rate, block reader) of a file; OS problems become statuses, not tracebacks.
    Nothing a decoder reports is trusted unchecked: a rate outside what audio uses, a channel
    count that is not positive, samples that are not finite or absurdly large are per-file
    errors; a file longer than `max_seconds` is `too_long` (from a plausible header at once,
    else when its decoded samples pass the limit); one that decodes less than a plausible
    header promises is damaged, with both durations (an `error`: its part is not tagged)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO or a device would block forever
            raise AudioError(path, "not a regular file (a pipe, socket or device)",
                             status=Status.UNSUPPORTED)
        _ensure_readable(path)  # a permission problem is transient: say so, not "corrupt"
        if st.st_size == 0:
            raise AudioError(path, "empty file (0 bytes)", status=Status.EMPTY)
        rate, blocks, frames = _open_soundfile(path) or _open_ffmpeg(path)
        frames = max(frames or 0, header_frames(path)) or frames  # libsndfile's is what is
    except FileNotFoundError:                                      # there, not what was
        raise AudioError(path, "file vanished", status=Status.MISSING) from None
    except PermissionError:
        raise AudioError(path, "permission denied", status=Status.UNREADABLE) from None
    except OSError as e:
        raise AudioError(path, f"cannot open ({e})", status=Status.UNREADABLE) from e
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(path, f"the decoder reports a sample rate of {rate} Hz, outside what "
                         f"audio uses ({MIN_RATE // 1000} kHz to {MAX_RATE // 1000} kHz): not "
                         "audio, or a damaged header")
    if not (frames and st.st_size / (frames / rate) >= PLAUSIBLE_BYTES_PER_SECOND):
        frames = None  # no claim, or one not to believe: counted while decoding instead
    if max_seconds is not None and frames and frames / rate > max_seconds:
        raise _too_long(path, frames / rate, max_seconds)
    return rate, _checked(path, rate, blocks, max_seconds, frames)


def header_frames(path: Path) -> int:
    """The frames a WAV or AIFF header promises (its data chunk's size; AIFF's frame count):
    libsndfile reports the frames a cut file still holds, so a cut WAV would pass for a short
    song. 0 where there is no such header, or it promises nothing definite."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        chunks, order = _chunks(head, 12, "<"), "<"
        fmt, data = chunks.get(b"fmt "), chunks.get(b"data")
        if fmt is None or data is None or len(fmt[1]) < 14:
            return 0
        align = struct.unpack(order + "H", fmt[1][12:14])[0]
        return data[0] // align if align and data[0] not in (0, 0xFFFFFFFF) else 0
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        comm = _chunks(head, 12, ">").get(b"COMM")
        return struct.unpack(">I", comm[1][2:6])[0] if comm and len(comm[1]) >= 6 else 0
    return 0


def _chunks(head: bytes, at: int, order: str) -> dict[bytes, tuple[int, bytes]]:
    """The chunks of a RIFF or IFF header: id -> (declared size, the bytes read of it)."""
    found: dict[bytes, tuple[int, bytes]] = {}
    while at + 8 <= len(head):
        cid, size = head[at:at + 4], struct.unpack(order + "I", head[at + 4:at + 8])[0]
        found.setdefault(cid, (size, head[at + 8:at + 8 + min(size, 64)]))
        if cid == b"data" or cid == b"SSND":
            break
        at += 8 + size + (size & 1)
    return found


def check_waveform(path: Path, x: np.ndarray, rate: int) -> np.ndarray:
    """A waveform given in memory, checked as a decoded file is: its rate and its samples."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(path, f"a sample rate of {rate} Hz, outside what audio uses "
                         f"({MIN_RATE // 1000} kHz to {MAX_RATE // 1000} kHz)")
    if x.ndim != 1:
        raise AudioError(path, f"samples of shape {x.shape}: expected [n] or [n, channels]")
    return next(_checked(path, rate, lambda n: iter([x]), None, None)(len(x)), x)


def _too_long(path: Path, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(path, f"{seconds / 3600:.2f} h long, over --max-duration "
                      f"({max_seconds / 3600:g} h)", status=Status.TOO_LONG)


def _checked(path: Path, rate: int, blocks: Blocks, max_seconds: float | None,
             promised: int | None) -> Blocks:
    """The same blocks, or an AudioError at the first NaN, infinite or absurdly large sample
    (beyond even a float file written at 24-bit integer scale: such a file has no meaningful
    features, and must not get confident tags from overflowed ones), once more than
    `max_seconds` have been decoded, or when fewer frames than the `promised` ones decode
    (at the end, or where the decoder fails: a cut file must pass neither for a short song nor
    for a whole one, nor for a corrupt one)."""

    def checked(n: int) -> Iterator[np.ndarray]:
        done = 0
        decoded = iter(blocks(n))
        while True:
            try:
                block = next(decoded, None)
            except AudioError as e:
                if e.status is not Status.ERROR or not _cut(promised, done, rate):
                    raise
                raise _damaged(path, promised, done, rate) from e
            if block is None:
                break
            if max_seconds is not None and done + len(block) > max_seconds * rate:
                raise _too_long(path, (done + len(block)) / rate, max_seconds)
            bad = np.flatnonzero(~(np.abs(block) <= MAX_SAMPLE))  # NaN compares False
            if bad.size:
                x = block[bad[0]]
                what = "non-finite samples (NaN or infinity)" if not np.isfinite(x) else \
                    f"samples out of range ({x:.3g})"
                raise AudioError(path, f"{what} from {(done + bad[0]) / rate:.2f} s: a "
                                 "damaged float file")
            done += len(block)
            yield block
        if _cut(promised, done, rate):
            raise _damaged(path, promised, done, rate)

    return checked


def _cut(promised: int | None, done: int, rate: int) -> bool:
    """Fewer frames decoded than promised, by more than an encoder's rounding."""
    return bool(promised) and promised - done > max(SHORTFALL_SECONDS * rate,
                                                    SHORTFALL_SHARE * promised)


def _damaged(path: Path, promised: int, done: int, rate: int) -> AudioError:
    return AudioError(path, f"damaged: the header says {promised / rate:.1f} s, "
                      f"{done / rate:.1f} s decodes")


def _ensure_readable(path: Path) -> None:
    """Raises FileNotFoundError / PermissionError (as the OS says) before any decoder sees it."""
    os.close(os.open(path, os.O_RDONLY))


def _open_soundfile(path: Path) -> Opened | None:
    """libsndfile's reader, or None when the format is not one it knows. A file it opens but
    cannot read from the start (a FLAC whose header claims 2**36 samples fails a seek) is
    given to ffmpeg, where ffmpeg is installed."""
    import soundfile as sf

    try:
        with native_stderr_silenced():  # mpg123 prints "Note: ..." lines while it probes
            f = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except sf.LibsndfileError:
        return None  # not a format libsndfile knows: ffmpeg may
    if f.channels < 1:
        f.close()
        raise AudioError(path, f"the decoder reports {f.channels} channels: a damaged header")
    estimated = f.format == "MP3" and not _mp3_length_in_header(path)
    if estimated and _ffmpeg_here():
        f.close()  # libsndfile would stop where its estimate ends: ffmpeg reads to the end
        rate, blocks, _ = _open_ffmpeg(path)  # ffprobe's duration is that estimate: no promise
        return rate, blocks, None
    per_read = max(1, READ_BYTES // (4 * f.channels))

    def mono(n: int) -> np.ndarray:
        """Up to `n` frames mixed to mono, read a bounded number of frames at a time."""
        parts, got = [], 0
        while got < n:
            data = f.read(min(per_read, n - got), dtype="float32", always_2d=True)
            if len(data) == 0:
                break
            parts.append(to_mono(data))
            got += len(data)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def blocks(n: int) -> Iterator[np.ndarray]:
        with f:
            started = False
            while True:
                try:
                    data = mono(n)
                except sf.LibsndfileError as e:
                    if not started and (other := _ffmpeg_instead(path, f.samplerate)):
                        yield from other(n)
                        return
                    if e.code == SF_ERR_SYSTEM:  # the disk said no (EIO on a NAS): not the file
                        raise AudioError(path, f"I/O error while reading ({e}); retried next "
                                         "run", status=Status.UNREADABLE) from e
                    raise AudioError(path, f"corrupt or truncated audio ({e})") from e
                if len(data) == 0:
                    return
                started = True
                yield data

    return f.samplerate, blocks, None if estimated else f.frames  # an estimate is no promise


def _mp3_length_in_header(path: Path) -> bool:
    """Whether an MP3 states its length as libsndfile reads it: a Xing or Info header with a
    frame count (libsndfile ignores a VBRI header). Without one, its length is estimated from
    its first frame's bitrate, and libsndfile stops decoding there: a VBR file is cut (a 30 s
    song decoded as 8.6 s)."""
    from mutagen import MutagenError
    from mutagen.mp3 import MPEGInfo

    # mutagen's reader of the header (its own MPEGInfo reads it; not exported)
    from mutagen.mp3._util import XingHeader, XingHeaderError

    try:
        with open(path, "rb") as fh:
            info = MPEGInfo(fh)  # the stream's first frames: its tags are skipped, not read
            if info.layer != 3:
                return False  # no such header in layers 1 and 2
            fh.seek(info.frame_offset + XingHeader.get_offset(info))
            try:
                return XingHeader(fh).frames > 0
            except XingHeaderError:
                return False
    except MutagenError:
        return True  # mutagen finds no MPEG frame: libsndfile's reading, and its checks, stand


def _ffmpeg_here() -> bool:
    return bool((ffmpeg := shutil.which("ffmpeg")) and _ffprobe_beside(ffmpeg))


def _ffprobe_beside(ffmpeg: str) -> str | None:
    return shutil.which("ffprobe") or shutil.which(str(Path(ffmpeg).with_name("ffprobe")))


def _ffmpeg_instead(path: Path, rate: int) -> Blocks | None:
    """ffmpeg's reader of a file libsndfile could not read, if ffmpeg is here and reads it at
    the rate libsndfile reported (that rate was already checked and given out)."""
    try:
        other_rate, blocks, _ = _open_ffmpeg(path)
    except AudioError as e:
        if e.status is Status.CRASHED:  # its prober was killed: the machine's, not the file's
            raise
        return None
    return blocks if other_rate == rate else None


def _open_ffmpeg(path: Path) -> Opened:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        # libsndfile says "File does not exist or is not a regular file" of a format it does
        # not know; the file exists (checked above), so say what is really the matter.
        raise AudioError(
            path, "not a format libsndfile reads, and ffmpeg is not on PATH (install ffmpeg "
            "to decode m4a/aac, wma and other formats)", status=Status.UNSUPPORTED,
        )
    rate, seconds = _ffprobe(path, ffmpeg)  # None: no audio stream ffmpeg can read
    if rate is None:
        path.stat()  # gone meanwhile: `missing`, not "not audio"
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
            if (code := proc.wait()) != 0:
                raise _ffmpeg_failure(path, code, list(last))

    return rate, blocks, None if seconds is None else int(seconds * rate)


def _ffmpeg_failure(path: Path, code: int, last: list[str]) -> AudioError:
    """What an ffmpeg that did not finish says of the file: killed by a signal (the OOM killer)
    or an I/O error is not the file's fault and is retried; anything else is the file's."""
    if code < 0:
        return AudioError(path, f"ffmpeg was killed by signal {-code}; retried next run",
                          status=Status.CRASHED)
    if any("Input/output error" in line for line in last):
        return AudioError(path, f"I/O error while reading ({last[-1]}); retried next run",
                          status=Status.UNREADABLE)
    if not os.path.lexists(path):
        return AudioError(path, "file vanished", status=Status.MISSING)
    return AudioError(path, f"ffmpeg failed to decode ({'; '.join(last[-1:])})")


def _keep_last_lines(stream, last: deque[str]) -> None:
    for line in stream:
        if text := line.decode(errors="replace").strip():
            last.append(text)


def ffmpeg_url(path: Path) -> str:
    """A path as ffmpeg and ffprobe take it, never as an option or a protocol: `-dash.m4a`,
    `-` and `pipe:x.mp3` are file names (`file:` and an absolute path; a path after `--` would
    be ffmpeg's output)."""
    return "file:" + os.path.abspath(path)


def _ffprobe(path: Path, ffmpeg: str) -> tuple[int | None, float | None]:
    """The first audio stream's sample rate and the file's duration, as ffprobe reports them
    (None where it reports none): one value a line, the rate first. An ffprobe killed by a
    signal is `crashed`, never taken for "not audio"."""
    ffprobe = _ffprobe_beside(ffmpeg)
    if ffprobe is None:
        raise AudioError(path, "ffmpeg is on PATH without its ffprobe (install ffmpeg whole)",
                         status=Status.UNSUPPORTED)
    out = subprocess.run(
        [ffprobe, "-v", "warning", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate:format=duration", "-of", "default=nw=1:nk=1", ffmpeg_url(path)],
        capture_output=True, text=True,
    )
    if out.returncode < 0:  # killed (the OOM killer): says nothing of the file
        raise AudioError(path, f"ffprobe was killed by signal {-out.returncode}; retried next "
                         "run", status=Status.CRASHED)
    values = out.stdout.split()
    try:
        rate = int(values[0])
    except (IndexError, ValueError):
        return None, None
    try:
        seconds = float(values[1])
    except (IndexError, ValueError):
        seconds = None
    if "Estimating duration from bitrate" in out.stderr:
        seconds = None  # a guess (an MP3 that does not state its length): no promise
    return rate, seconds if seconds is not None and math.isfinite(seconds) else None
