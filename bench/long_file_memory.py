"""Peak memory for embedding a long file, and block-wise features vs whole-file processing.

Writes a 44.1 kHz stereo 16-bit WAV of generated music (default 3 hours, ~1.9 GB) in a temp dir,
embeds it block by block in a fresh process and prints that process's peak RSS, then processes
the same file whole (read at the source rate, mixed, resampled and embedded in one piece) and
counts the uint8 features that differ. VGGish is a stand-in (tiny network by default, or
--architecture vggish for the real architecture with random weights).

    python bench/long_file_memory.py [--hours 3] [--resampler resampy] [--architecture tiny]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]


def embed_blockwise(audio: str, vggish: str, pca: str, resampler: str, out: str) -> None:
    """Child process: embed with the streaming pipeline, report peak RSS."""
    import numpy as np

    from instag.features.embed import Embedder

    embedder = Embedder(vggish, pca, resampler)
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    feats = embedder.embed_file(audio)
    np.save(out, feats.values)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"block-wise: {len(feats.values)} instances, {feats.duration / 3600:.2f} h of audio in "
          f"{time.perf_counter() - t:.0f} s, peak RSS {peak_mb:.0f} MB "
          f"({loaded_mb:.0f} MB of it TensorFlow and the models, before any audio)")


def embed_whole(audio: str, vggish: str, pca: str, resampler: str):
    import numpy as np
    import soundfile as sf

    from instag.features.embed import Embedder
    from instag.features.resample import resample

    x, sr = sf.read(audio, dtype="float32", always_2d=True)
    mono = x.mean(axis=1, dtype=np.float32)
    del x
    wave = resample(mono, sr, resampler)
    del mono
    return Embedder(vggish, pca, resampler).embed_blocks([wave]).values


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--resampler", default="resampy")
    ap.add_argument("--architecture", default="tiny")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        embed_blockwise(*args.child)
        return
    import numpy as np
    from music import write_music
    from standins import build_standin_vggish, write_standin_pca

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = tmp / "long.wav"
        t = time.perf_counter()
        write_music(audio, args.hours * 3600, 44100, subtype="PCM_16")
        print(f"wrote {args.hours} h, {audio.stat().st_size / 1e9:.2f} GB in "
              f"{time.perf_counter() - t:.0f} s")
        vggish = build_standin_vggish(tmp / "vggish", args.architecture)
        pca = write_standin_pca(tmp / "pca.npz")
        subprocess.run([sys.executable, __file__, "--child", str(audio), str(vggish), str(pca),
                        args.resampler, str(tmp / "blocks.npy")], check=True)
        blocks = np.load(tmp / "blocks.npy")
        whole = embed_whole(str(audio), str(vggish), str(pca), args.resampler)
        if blocks.shape != whole.shape:
            print(f"whole-file: {whole.shape} instances vs block-wise {blocks.shape}")
            return
        diff = np.abs(blocks.astype(int) - whole.astype(int))
        print(f"whole-file: {len(whole)} instances; uint8 features that differ from block-wise: "
              f"{int((diff > 0).sum())} of {whole.size}, by at most {int(diff.max())}")


if __name__ == "__main__":
    main()
