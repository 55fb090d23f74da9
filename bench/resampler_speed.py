"""Speed and exactness of the default resampler (resampy's kaiser_best as a polyphase filter
bank) against resampy itself, side by side in one run, on one core, 44.1 kHz -> 16 kHz.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/resampler_speed.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import resampy

sys.path.insert(0, str(Path(__file__).parent))

from music import generate_music  # noqa: E402

from instag.features import polyphase  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    print(f"{'rate':>7s} {'resampy x rt':>13s} {'fast x rt':>10s} {'speed-up':>9s} "
          f"{'max |diff|':>11s}")
    for sr in (44100, 48000, 22050, 96000):
        x = generate_music(args.seconds, sr, seed=1, channels=1)[:, 0].astype(np.float32)
        resampy.resample(x[:sr], sr, 16000)  # numba compiles once, outside the timing
        polyphase.resample(x[:sr], sr)
        slow = best_of(lambda x=x, sr=sr: resampy.resample(x, sr, 16000, filter="kaiser_best"))
        fast = best_of(lambda x=x, sr=sr: polyphase.resample(x, sr))
        diff = np.abs(polyphase.resample(x, sr) -
                      resampy.resample(x, sr, 16000, filter="kaiser_best")).max()
        print(f"{sr:7d} {args.seconds / slow:13.0f} {args.seconds / fast:10.0f} "
              f"{slow / fast:8.1f}x {diff:11.1e}")


if __name__ == "__main__":
    main()
