"""Resample a file's audio to 16 kHz, block by block, exactly as if it were done in one piece.

Each block is resampled with enough real neighbouring samples on both sides that the output
equals resampling the whole file at once (block starts fall on the input/output rates' common
grid, so sample times line up); memory stays that of one block, whatever the file's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instag.common.enums import TextEnum
from instag.features import polyphase
from instag.features.decode import open_audio

TARGET_SR = 16000
BLOCK_SECONDS = 30.0  # input decoded and resampled per step: memory ~ a few MB, not the file
MAX_BLOCK_FRAMES = 1_500_000  # ... and at most this many frames (6 MB; 30 s up to 48 kHz)
CONTEXT_SECONDS = 0.05  # neighbours on each side; both filters reach < 5 ms at 16 kHz


class Resampler(TextEnum):
    # resampy (kaiser_best) is what VGGish's reference, and so OpenMIC, used: `fast` computes
    # that same function as a polyphase filter bank (features.polyphase; 1e-6 from resampy,
    # ~50x faster), `resampy` calls the library. soxr is faster still but rolls off later
    # (resampy is -2 dB at 7.2 kHz, -14 dB at 7.5 kHz relative to it), moving VGGish's top two
    # mel bands by ~3 dB (99.9th pct) where 16-bit requantisation moves them 0.1-0.6 dB
    # (bench/resampler_fidelity.py): a choice, not the default.
    FAST = "fast"
    RESAMPY = "resampy"
    SOXR = "soxr"


    @property
    def identity(self) -> str:
        """The function computed, for the cache: `fast` is resampy's, so features made with
        either are the same features (an upgrade re-decodes nothing)."""
        return Resampler.RESAMPY.value if self is Resampler.FAST else self.value


DEFAULT_RESAMPLER = Resampler.FAST


def resample(x: np.ndarray, sr_in: int, resampler: Resampler | str) -> np.ndarray:
    """One signal from `sr_in` to 16 kHz, float32."""
    resampler = Resampler(resampler)
    if resampler is Resampler.SOXR:
        import soxr

        return soxr.resample(x, sr_in, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
    if resampler is Resampler.FAST and sr_in in polyphase.RATES:
        return polyphase.resample(np.asarray(x, np.float32), sr_in, TARGET_SR)
    import resampy  # any other rate: resampy itself

    return resampy.resample(x, sr_in, TARGET_SR, filter="kaiser_best").astype(np.float32)


def stream_16k(
    path: str | Path, resampler: Resampler | str = DEFAULT_RESAMPLER,
    block_seconds: float = BLOCK_SECONDS, max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 blocks of a file; memory stays O(block), a block
    being at most MAX_BLOCK_FRAMES at the file's rate. A file longer than `max_seconds` ends
    in AudioError (`too_long`)."""
    path = Path(path)
    sr, blocks = open_audio(path, max_seconds)
    block_seconds = min(block_seconds, MAX_BLOCK_FRAMES / sr)
    if sr == TARGET_SR:
        yield from blocks(int(block_seconds * sr))
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
    for block in blocks(step):
        buf = np.concatenate([buf, block])
        while buf_start + len(buf) >= pos + step + ctx:
            seg = buf[pos - ctx - buf_start : pos + step + ctx - buf_start]
            yield resample(seg, sr, resampler)[ctx_out : ctx_out + step // unit * unit_out]
            pos += step
            buf, buf_start = buf[pos - ctx - buf_start :], pos - ctx
    end = buf_start + len(buf)  # total input samples
    if end > pos:
        seg = np.concatenate([buf[pos - ctx - buf_start :], np.zeros(ctx, np.float32)])
        n_out = end * TARGET_SR // sr - pos // unit * unit_out
        yield resample(seg, sr, resampler)[ctx_out : ctx_out + n_out]


def load_16k(path: str | Path, resampler: Resampler | str = DEFAULT_RESAMPLER) -> np.ndarray:
    """The whole file at 16 kHz mono (for short files and tests; tagging streams blocks)."""
    blocks = list(stream_16k(path, resampler))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
