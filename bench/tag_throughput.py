"""End-to-end tagging speed on a generated library, against VGGish alone and a naive loop.

Builds a library of generated music (default 40 files of 30 s to 6 min; wav, flac, ogg, mp3),
a VGGish stand-in with the real architecture (random weights, the same FLOPs; converted to ONNX
once first, as `instag setup` does, so every run uses the runtime tagging uses) and an attention
model, then prints audio seconds processed per wall second and peak RSS for:
  - VGGish alone (the network on 16 kHz audio already in memory),
  - `instag tag` (decode pool + batching + cache), with each resampler (fast = the default),
  - a re-run over the unchanged library (everything from the cache),
  - a naive loop (one file at a time: decode, resample, embed, score).
Each measured run is a fresh process, so peak RSS is its own.

    python bench/tag_throughput.py [--files 40] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

FORMATS = [("wav", {"subtype": "PCM_16"}), ("flac", {}), ("ogg", {"format": "OGG"}),
           ("mp3", {"format": "MP3"})]


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def child(mode: str, cfg: dict) -> None:
    """One measured run in this fresh process; prints a JSON line."""
    import numpy as np

    from instag.features.embed import Embedder

    t0 = time.perf_counter()
    if mode == "convert":  # once, before anything is measured: VGGish to ONNX, as setup does
        emb = Embedder(cfg["vggish"], cfg["pca"])
        emb.model  # noqa: B018
        print(json.dumps({"runtime": emb.runtime, "seconds": time.perf_counter() - t0}))
        return
    if mode == "vggish":
        from instag.features.instances import Chunker

        emb = Embedder(cfg["vggish"], cfg["pca"])
        wave = np.random.default_rng(1).uniform(-0.3, 0.3, 16000 * 900).astype(np.float32)
        chunker = Chunker()
        chunks = chunker.push(wave) + chunker.finish()
        emb.embed_chunks(chunks[:2])  # load, and warm up on the shapes measured below
        t0 = time.perf_counter()
        for i in range(0, len(chunks), 2):  # 128 instances a call, as the tagger batches
            emb.embed_chunks(chunks[i : i + 2])
        audio = 900.0
    elif mode == "naive":
        from instag.tagging.bags import make_bags
        from instag.tagging.scoring import Scorer

        emb, scorer = Embedder(cfg["vggish"], cfg["pca"], cfg["resampler"]), Scorer(cfg["model"])
        audio = 0.0
        for path in sorted(Path(cfg["library"]).iterdir()):
            feats = emb.embed_file(path)
            scorer.score([feats.values[b.first : b.stop] for b in make_bags(len(feats.values))])
            audio += feats.duration
    else:
        from instag.tagging.run import TagOptions, tag

        opts = TagOptions(model=Path(cfg["model"]), vggish=cfg["vggish"], pca=cfg["pca"],
                          resampler=cfg["resampler"], jobs=cfg["jobs"], cache=Path(cfg["cache"]))
        run = tag([cfg["library"]], opts)
        for _ in run:
            pass
        audio = run.summary.audio_s
    wall = time.perf_counter() - t0
    print(json.dumps({"audio_s": audio, "wall_s": wall, "rss_mb": peak_rss_mb()}))


def measure(mode: str, cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(cfg)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    import numpy as np
    from music import write_music
    from standins import build_standin_vggish, write_standin_pca

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lib = tmp / "library"
        lib.mkdir()
        lengths = np.random.default_rng(0).uniform(30, 360, args.files)
        t = time.perf_counter()
        for i, seconds in enumerate(lengths):
            ext, kw = FORMATS[i % len(FORMATS)]
            write_music(lib / f"{i:03d}.{ext}", float(seconds), 44100, seed=i, **kw)
        print(f"library: {args.files} files, {lengths.sum() / 60:.0f} min of audio "
              f"(wav/flac/ogg/mp3), written in {time.perf_counter() - t:.0f} s; jobs={args.jobs}")
        cfg = {"library": str(lib), "jobs": args.jobs,
               "vggish": str(build_standin_vggish(tmp / "vggish", "vggish")),
               "pca": str(write_standin_pca(tmp / "pca.npz")),
               "model": str(export_model(build_model("att").eval(),
                                         {"model": "att", "in_dim": 128,
                                          "classes": [f"c{i}" for i in range(20)]},
                                         tmp / "att.onnx"))}
        os.environ["TFHUB_CACHE_DIR"] = str(tmp / "hub")  # the children's: converted once here
        converted = measure("convert", cfg)
        print(f"VGGish runs on {converted['runtime']} (converted in {converted['seconds']:.0f} s)")
        rows = [("VGGish alone (audio in memory)", measure("vggish", cfg))]
        for resampler in ("fast", "resampy", "soxr"):
            run_cfg = {**cfg, "resampler": resampler, "cache": str(tmp / f"{resampler}.sqlite")}
            rows.append((f"instag tag, {resampler}", measure("tag", run_cfg)))
            rows.append(("  re-run, unchanged library", measure("tag", run_cfg)))
            rows.append((f"naive loop, {resampler}", measure("naive", run_cfg)))
        base = rows[0][1]["audio_s"] / rows[0][1]["wall_s"]
        print(f"{'':34s} {'x real time':>11s} {'of VGGish':>9s} {'wall s':>8s} {'peak RSS':>9s}")
        for name, r in rows:
            speed = r["audio_s"] / r["wall_s"]
            print(f"{name:34s} {speed:11.1f} {speed / base:9.0%} {r['wall_s']:8.1f} "
                  f"{r['rss_mb']:7.0f} MB")
        for i in range(1, len(rows), 3):  # each resampler: first run, re-run, naive loop
            print(f"re-run took {rows[i + 1][1]['wall_s'] / rows[i][1]['wall_s']:.1%} of the "
                  f"first run ({rows[i][0].split(', ')[1]})")


if __name__ == "__main__":
    main()
