"""Instance timing: a file's 16 kHz audio as VGGish's non-overlapping 0.96 s windows.

Instance i covers [0.96 i, 0.96 (i+1)) s. VGGish's last 25 ms log-mel frame of a window reaches
15 ms (240 samples) past it, so audio is handed to VGGish in chunks of whole instances plus that
lookahead, and the end of a file is padded with 15 ms of silence: every complete 0.96 s window
yields an instance (the bare hub model would drop a last window the file ends within 15 ms of),
a trailing partial window none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag.common.status import Status
from instag.features.decode import AudioError
from instag.features.resample import TARGET_SR

INSTANCE_SECONDS = 0.96
INSTANCE_SAMPLES = 15360  # 0.96 s at 16 kHz
LOOKAHEAD_SAMPLES = 240  # the last log-mel frame's window beyond the instance
CHUNK_INSTANCES = 64  # instances per VGGish call: ~1 M samples, a few MB


def instance_span(i: int) -> tuple[float, float]:
    """Instance i covers [0.96 i, 0.96 (i+1)) seconds from the start of the file."""
    return round(i * INSTANCE_SECONDS, 6), round((i + 1) * INSTANCE_SECONDS, 6)


@dataclass(frozen=True)
class Features:
    """One file's instances: uint8 features [N, 128] and the decoded duration in seconds."""

    values: np.ndarray
    duration: float

    @property
    def starts(self) -> np.ndarray:
        return np.arange(len(self.values)) * INSTANCE_SECONDS

    @classmethod
    def from_parts(cls, parts: list[np.ndarray], samples: int) -> Features:
        """A file's features from its chunks' features and its count of 16 kHz samples."""
        values = np.concatenate(parts) if parts else np.zeros((0, 128), np.uint8)
        return cls(values, samples / TARGET_SR)


def check_features(path: str | Path, feats: Features) -> Features:
    """A file with no samples or less than one instance is a per-file result, not features."""
    if feats.duration == 0:
        raise AudioError(path, "no audio (zero samples)", status=Status.EMPTY)
    if len(feats.values) == 0:
        raise AudioError(path, f"too short: {feats.duration:.2f} s, one instance needs "
                         f"{INSTANCE_SECONDS} s", status=Status.TOO_SHORT)
    return feats


class Chunker:
    """Regroup pushed 16 kHz blocks into VGGish calls of whole instances plus the 240-sample
    lookahead; `finish` pads the end with silence and leaves a partial window out."""

    def __init__(self, chunk_instances: int = CHUNK_INSTANCES) -> None:
        self.step = chunk_instances * INSTANCE_SAMPLES
        self.buf = np.zeros(0, np.float32)
        self.samples = 0

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        self.samples += len(block)
        self.buf = np.concatenate([self.buf, block])
        out = []
        while len(self.buf) >= self.step + LOOKAHEAD_SAMPLES:
            out.append(self.buf[: self.step + LOOKAHEAD_SAMPLES])
            self.buf = self.buf[self.step :]
        return out

    def finish(self) -> list[np.ndarray]:
        n = len(self.buf) // INSTANCE_SAMPLES
        if not n:
            return []
        tail = self.buf[: n * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES]
        return [np.pad(tail, (0, n * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES - len(tail)))]


def chunk_instances(chunk: np.ndarray) -> int:
    return (len(chunk) - LOOKAHEAD_SAMPLES) // INSTANCE_SAMPLES
