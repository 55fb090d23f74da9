"""soxr vs resampy: speed, and how far soxr moves the log-mel patches VGGish sees.

Prints, per input (the real files in ../shared/audio and generated music), the max and 99.9th
percentile absolute difference of VGGish's 96x64 log-mel patches in dB between the two
resamplers, next to a yardstick: the difference that re-quantising the same input to 16 bits
(what every CD-quality file already went through) makes. Also resampling speed, one core.

    python bench/resampler_fidelity.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

import numpy as np  # noqa: E402
import resampy  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from music import generate_music  # noqa: E402
from standins import log_mel_patches  # noqa: E402

DB = 20 / np.log(10)  # natural-log difference -> dB (of magnitude)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "audio"


def patches(x16k: np.ndarray) -> np.ndarray:
    return np.asarray(log_mel_patches(np.asarray(x16k, np.float32)))


def diff_db(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """max and 99.9th percentile over all bands, and max over the 62 lower mel bands."""
    n = min(len(a), len(b))
    d = np.abs(a[:n] - b[:n]) * DB
    return float(d.max()), float(np.percentile(d, 99.9)), float(d[..., :62].max())


def timed(fn, *args) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    inputs = [(p.name, *sf.read(p, dtype="float32", always_2d=True))
              for p in sorted(SHARED.glob("*")) if p.suffix in (".ogg", ".mp3")]
    for seed in range(3):
        inputs.append((f"generated-music-{seed}", generate_music(60, 44100, seed), 44100))
    print(f"{'input':30s} {'soxr vs resampy, dB: max':>25s} {'p99.9':>6s} {'max<62':>7s} | "
          f"{'16-bit requantised, dB: max':>27s} {'p99.9':>6s} {'max<62':>7s}")
    speed = {"soxr": [0.0, 0.0], "resampy": [0.0, 0.0]}
    resampy.resample(np.zeros(44100, np.float32), 44100, 16000)  # compile numba kernels first
    for name, x, sr in inputs:
        mono = x.mean(axis=1).astype(np.float32)
        ref, t_r = timed(lambda y, r=sr: resampy.resample(y, r, 16000, filter="kaiser_best"), mono)
        fast, t_s = timed(lambda y, r=sr: soxr.resample(y, r, 16000, quality="HQ"), mono)
        requant = (np.round(mono * 32767) / 32767).astype(np.float32)
        ref_q = resampy.resample(requant, sr, 16000, filter="kaiser_best")
        for key, t in (("resampy", t_r), ("soxr", t_s)):
            speed[key][0] += len(mono) / sr
            speed[key][1] += t
        p_ref = patches(ref)
        a, b, c = diff_db(patches(fast), p_ref)
        d, e, f = diff_db(patches(ref_q), p_ref)
        print(f"{name:30s} {a:25.3f} {b:6.3f} {c:7.3f} | {d:27.3f} {e:6.3f} {f:7.3f}")
    for key, (audio_s, wall) in speed.items():
        print(f"{key:8s} {audio_s / wall:8.0f}x real time (one call per file, this machine)")
    where_they_differ(inputs[-1][1].mean(axis=1).astype(np.float32), inputs[-1][2])


def where_they_differ(mono: np.ndarray, sr: int) -> None:
    """Power of resampy's output relative to soxr's near the top of the band (Welch PSD)."""
    from scipy.signal import welch

    f, p_ref = welch(resampy.resample(mono, sr, 16000, filter="kaiser_best"), 16000, nperseg=4096)
    _, p_soxr = welch(soxr.resample(mono, sr, 16000, quality="HQ"), 16000, nperseg=4096)
    cells = []
    for hz in (6800, 7000, 7200, 7400, 7500, 7600, 7800):
        i = int(np.argmin(np.abs(f - hz)))
        cells.append(f"{hz / 1000:.1f} kHz {10 * np.log10(p_ref[i] / p_soxr[i]):+.1f} dB")
    print("resampy relative to soxr: " + ", ".join(cells))


if __name__ == "__main__":
    main()
