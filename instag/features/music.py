"""Generated music-like audio: notes with harmonics and vibrato, chords, noise-burst drums.
What the INT8 VGGish is calibrated and judged on where no OpenMIC audio is kept, and what the
benchmarks play."""

from __future__ import annotations

import numpy as np


def generate_music(seconds: float, sr: int = 44100, seed: int = 0, channels: int = 2) -> np.ndarray:
    """float32 [n, channels] in [-1, 1]: a few voices of plucked/bowed notes plus percussion."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, np.float64)
    t_note = 0.0
    while t_note < seconds:
        dur = rng.uniform(0.15, 1.2)
        start, stop = int(t_note * sr), min(n, int((t_note + dur) * sr))
        t = np.arange(stop - start) / sr
        for f0 in 110 * 2 ** (rng.integers(0, 36, size=rng.integers(1, 4)) / 12):
            vib = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * t)
            tone = sum(np.sin(2 * np.pi * k * f0 * vib * t) / k**1.3 for k in range(1, 9)
                       if k * f0 < sr / 2)
            out[start:stop] += 0.15 * tone * np.exp(-t * rng.uniform(0.5, 6))
        if rng.random() < 0.5:  # a drum hit: decaying noise burst
            m = min(stop - start, int(0.12 * sr))
            decay = np.exp(-np.arange(m) / (0.02 * sr))
            out[start : start + m] += 0.3 * rng.standard_normal(m) * decay
        t_note += dur * rng.uniform(0.5, 1.0)
    out /= max(1.0, np.abs(out).max() / 0.9)
    stereo = np.stack([out * (0.6 + 0.4 * c / max(1, channels - 1)) for c in range(channels)], 1)
    return stereo.astype(np.float32)
