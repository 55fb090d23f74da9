"""End-to-end tagging speed on a generated library, against VGGish alone and a naive loop.

Builds a library of generated music (default 40 files of 30 s to 6 min; wav, flac, ogg, mp3),
a VGGish stand-in with the real architecture (random weights, the same FLOPs; converted to ONNX
once first, as `instag setup` does, so every run uses the runtime tagging uses) and an attention
model, then prints audio seconds processed per wall second and peak RSS for:
  - VGGish alone (the network on 16 kHz audio already in memory),
  - `instag tag` (decode pool + batching + cache), with each resampler (fast = the default),
  - a re-run over the unchanged library (everything from the cache),
  - a naive loop (one file at a time: decode, resample, embed, score),
  - the INT8 VGGish against FP32, same run: the network alone and `instag tag` end to end,
    with the parity figures beside (setup's rule; on random weights they say nothing of the
    real model, which `instag setup` judges on the user's machine),
  - a library of many short files (default 500 one-second clips): files per second and the
    share of the cores kept busy (CPU seconds of the run and its workers / wall / cores).
Each measured run is a fresh process; peak RSS is that of the run and its decode workers together.

    python bench/tag_throughput.py [--files 40] [--short 500] [--jobs 2] [--no-int8]
                                   [--resamplers fast,resampy,soxr]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

FORMATS = [("wav", {"subtype": "PCM_16"}), ("flac", {}), ("ogg", {"format": "OGG"}),
           ("mp3", {"format": "MP3"})]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers)."""
    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class PeakRss:
    """Peak resident memory of this process and its children (the decode workers) together,
    sampled every 50 ms. (getrusage's ru_maxrss would not do: a child started by fork+exec
    inherits its parent's peak, here the bench's own, TensorFlow included.)"""

    def __init__(self) -> None:
        self.peak_kb = 0
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        kids = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids += [int(k) for k in task.read_text().split()]
        return [pid] + [p for k in kids for p in PeakRss._tree(k)]

    @staticmethod
    def _rss_kb(pid: int) -> int:
        with contextlib.suppress(OSError, StopIteration):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            return int(next(x for x in status if x.startswith("VmRSS:")).split()[1])
        return 0

    def _sample(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, sum(map(self._rss_kb, self._tree(os.getpid()))))
            time.sleep(0.05)

    @property
    def mb(self) -> float:
        return self.peak_kb / 1024

    @staticmethod
    def main_mb() -> float:
        """This process's own peak (VmHWM starts afresh at exec)."""
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(x for x in status if x.startswith("VmHWM:")).split()[1]) / 1024


def child(mode: str, cfg: dict) -> None:
    """One measured run in this fresh process; prints a JSON line."""
    import numpy as np

    from instag.features.embed import Embedder

    rss = PeakRss()
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    files = 0  # counted by tagging runs
    if mode == "convert":  # once, before anything is measured: VGGish to ONNX, as setup does
        emb = Embedder(cfg["vggish"], cfg["pca"])
        emb.model  # noqa: B018
        print(json.dumps({"runtime": emb.runtime, "seconds": time.perf_counter() - t0}))
        return
    if mode == "reduced":  # once: the INT8 (or FP16) model, judged as setup judges it
        from instag.features import precision as at_precision
        from instag.features import vggish_onnx
        from instag.provision.int8 import clips, parity
        try:
            from instag.tagging.scoring import Scoring
        except ImportError:  # the code before
            from instag.tagging.job import Scoring
        from instag.tagging.options import TagOptions

        emb = Embedder(cfg["vggish"], cfg["pca"])
        fp32 = vggish_onnx.find(emb.handle)
        calibration, held, _ = clips(None, emb.resampler, at_precision.MIN_HELD_OUT_CLIPS)
        import onnx

        layers = at_precision.network_layers(onnx.load(str(fp32), load_external_data=False))
        precision = at_precision.Precision(cfg["precision"])
        device = "cuda" if precision is at_precision.Precision.FP16 else "cpu"
        model = at_precision.quantize(fp32, calibration, layers) if precision == "int8" else \
            at_precision.fp16(fp32)
        ev, mn = emb.eigen_vectors, emb.means
        doc = parity(at_precision.features_of(fp32, held, ev, mn, device),
                     at_precision.features_of(model, held, ev, mn, device),
                     Scoring(TagOptions(model=Path(cfg["model"]), vggish=cfg["vggish"],
                                        pca=cfg["pca"])))
        # kept whatever the figures, in this bench's own hub cache: speed is measured here;
        # whether a real VGGish's is kept is setup's decision on the user's machine
        at_precision.keep(fp32, precision, model, {**doc, "kept": True})
        print(json.dumps({**doc, "layers": len(layers)}))
        return
    if mode == "vggish":
        from instag.features.instances import Chunker

        emb = Embedder(cfg["vggish"], cfg["pca"], device=cfg.get("device", "auto"),
                       precision=cfg.get("precision", "fp32"))
        wave = np.random.default_rng(1).uniform(-0.3, 0.3, 16000 * 900).astype(np.float32)
        chunker = Chunker()
        chunks = chunker.push(wave) + chunker.finish()
        emb.embed_chunks(chunks[:1])  # load, and warm up on the shape measured below
        t0 = time.perf_counter()
        for chunk in chunks:  # 64 instances a call, as the tagger batches
            emb.embed_chunks([chunk])
        audio = 900.0
    elif mode in ("decode", "decode+resample"):  # one process: CPU cost per audio second
        from instag.features.decode import open_audio
        from instag.features.resample import stream_16k

        audio = 0.0
        for path in sorted(Path(cfg["library"]).iterdir()):
            if mode == "decode":
                sr, blocks = open_audio(path)
                audio += sum(len(b) for b in blocks(sr * 30)) / sr
            else:
                audio += sum(len(b) for b in stream_16k(path, cfg["resampler"])) / 16000
    elif mode == "score":
        from instag.tagging.scoring import ScoringModel

        scorer = ScoringModel(cfg["model"], cfg.get("device", "auto"))
        bags = [np.random.default_rng(0).integers(0, 256, (250, 128), np.uint8)] * 16
        scorer.score(bags)
        t0 = time.perf_counter()
        for _ in range(20):
            scorer.score(bags)
        audio = 20 * 16 * 250 * 0.96
    elif mode == "naive":
        from instag.tagging.bags import make_bags
        from instag.tagging.scoring import ScoringModel

        emb = Embedder(cfg["vggish"], cfg["pca"], cfg["resampler"])
        scorer = ScoringModel(cfg["model"])
        audio = 0.0
        for path in sorted(Path(cfg["library"]).iterdir()):
            feats = emb.embed_file(path)
            scorer.score([feats.values[b.first : b.stop] for b in make_bags(len(feats.values))])
            audio += feats.duration
    elif mode == "ray":
        from instag.engines.ray.pipeline import tag_on_ray
        from instag.tagging.options import TagOptions

        opts = TagOptions(model=Path(cfg["model"]), vggish=cfg["vggish"], pca=cfg["pca"],
                          resampler=cfg["resampler"], device=cfg.get("device", "auto"))
        run = tag_on_ray([cfg["library"]], opts)
        for _ in run:
            pass
        counts = getattr(run, "counts", None) or run.summary  # the code before: .summary
        audio, files = counts.audio_s, counts.done
    else:
        from instag.engines.local.run import tag
        from instag.tagging.options import TagOptions

        opts = TagOptions(model=Path(cfg["model"]), vggish=cfg["vggish"], pca=cfg["pca"],
                          resampler=cfg["resampler"], jobs=cfg["jobs"], cache=Path(cfg["cache"]),
                          device=cfg.get("device", "auto"), precision=cfg.get("precision"))
        run = tag([cfg["library"]], opts)
        for _ in run:
            pass
        counts = getattr(run, "counts", None) or run.summary  # the code before: .summary
        audio, files = counts.audio_s, counts.done
    wall = time.perf_counter() - t0
    print(json.dumps({"audio_s": audio, "wall_s": wall, "rss_mb": rss.mb,
                      "main_mb": rss.main_mb(),
                      "files": files,
                      "cpu": (cpu_seconds() - cpu0) / wall / (os.cpu_count() or 1)}))


def measure(mode: str, cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(cfg)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_library(lib: Path, count: int) -> dict:
    """`count` generated songs of 30 s to 6 min in four formats."""
    import numpy as np
    from music import write_music

    lib.mkdir()
    lengths = np.random.default_rng(0).uniform(30, 360, count)
    t = time.perf_counter()
    for i, seconds in enumerate(lengths):
        ext, kw = FORMATS[i % len(FORMATS)]
        write_music(lib / f"{i:03d}.{ext}", float(seconds), 44100, seed=i, **kw)
    print(f"library: {count} files, {lengths.sum() / 60:.0f} min of audio (wav/flac/ogg/mp3), "
          f"written in {time.perf_counter() - t:.0f} s")
    return {"library": str(lib)}


def make_models(tmp: Path, architecture: str = "vggish") -> dict:
    """The real-architecture VGGish stand-in (`architecture`: "tiny" for a dry run), converted
    to ONNX once (the children find it in the hub cache set here), its PCA, and an attention
    model."""
    from standins import build_standin_vggish, write_standin_pca

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    cfg = {"vggish": str(build_standin_vggish(tmp / "vggish", architecture)),
           "pca": str(write_standin_pca(tmp / "pca.npz")),
           "model": str(export_model(build_model("att").eval(),
                                     {"model": "att", "in_dim": 128,
                                      "classes": [f"c{i}" for i in range(20)]},
                                     tmp / "att.onnx"))}
    os.environ["TFHUB_CACHE_DIR"] = str(tmp / "hub")
    converted = measure("convert", cfg)
    print(f"VGGish runs on {converted['runtime']} (converted in {converted['seconds']:.0f} s)")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--short", type=int, default=500, help="one-second files (0: skip)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="the INT8 legs: VGGish alone and end to end, FP32 against INT8")
    ap.add_argument("--resamplers", default="fast,resampy,soxr")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = {**make_library(tmp / "library", args.files), **make_models(tmp),
               "jobs": args.jobs}
        print(f"jobs={args.jobs}")
        rows = [("VGGish alone (audio in memory)", measure("vggish", cfg))]
        for resampler in args.resamplers.split(","):
            run_cfg = {**cfg, "resampler": resampler, "cache": str(tmp / f"{resampler}.sqlite")}
            rows.append((f"instag tag, {resampler}", measure("tag", run_cfg)))
            rows.append(("  re-run, unchanged library", measure("tag", run_cfg)))
            rows.append((f"naive loop, {resampler}", measure("naive", run_cfg)))
        base = rows[0][1]["audio_s"] / rows[0][1]["wall_s"]
        print(f"{'':34s} {'x real time':>11s} {'of VGGish':>9s} {'wall s':>8s} {'peak RSS':>9s} "
              f"{'of which main':>13s}")
        for name, r in rows:
            speed = r["audio_s"] / r["wall_s"]
            print(f"{name:34s} {speed:11.1f} {speed / base:9.0%} {r['wall_s']:8.1f} "
                  f"{r['rss_mb']:7.0f} MB {r['main_mb']:10.0f} MB")
        for i in range(1, len(rows), 3):  # each resampler: first run, re-run, naive loop
            print(f"re-run took {rows[i + 1][1]['wall_s'] / rows[i][1]['wall_s']:.1%} of the "
                  f"first run ({rows[i][0].split(', ')[1]})")
        if args.int8:
            int8_legs(tmp, cfg)
        if args.short:
            short_files(tmp, cfg, args.short)


def int8_legs(tmp: Path, cfg: dict, precision: str = "int8") -> None:
    """FP32 against INT8 (or FP16 on CUDA) in the same run: VGGish alone, then `instag tag`
    end to end, with the parity figures (setup's rule) beside the speed."""
    doc = measure("reduced", {**cfg, "precision": precision})
    present, close = doc["present_agree"], doc.get("probabilities_close")
    print(f"\n{precision.upper()} VGGish on {doc['clips']} held-out clips: tags agree "
          f"{doc['tags_agree']:.2%}, present tags agree "
          f"{'-' if present is None else f'{present:.2%}'} of {doc['present_pairs']}, "
          f"probabilities within 0.02 on {'-' if close is None else f'{close:.2%}'} "
          f"({'meets' if doc['passed'] else 'misses'} setup's rule on these random weights; a "
          "real VGGish is judged by `instag setup` on the user's machine); features within one "
          f"step {doc['features_within_one']:.2%} (the old rule's figure, reported)")
    print(f"{'':34s} {'x real time':>11s} {'vs FP32':>9s} {'wall s':>8s}")
    for name, mode, extra in (("VGGish alone", "vggish", {}),
                              ("instag tag, fast", "tag", {"resampler": "fast"})):
        base = None
        for p in ("fp32", precision):
            r = measure(mode, {**cfg, **extra, "precision": p,
                               "cache": str(tmp / f"{mode}-{p}.sqlite")})
            speed = r["audio_s"] / r["wall_s"]
            base = base or speed
            print(f"{f'{name}, {p}':34s} {speed:11.1f} {speed / base:8.2f}x {r['wall_s']:8.1f}")


def short_files(tmp: Path, cfg: dict, count: int) -> None:
    """Many one-second files: per-file overheads, not the network, set the pace here."""
    from music import write_music

    lib = tmp / "short"
    lib.mkdir()
    for i in range(count):
        write_music(lib / f"{i:04d}.wav", 1.0, 44100, seed=i, subtype="PCM_16")
    print(f"\n{count} one-second wav files")
    print(f"{'':34s} {'files/s':>11s} {'CPU busy':>9s} {'wall s':>8s} {'peak RSS':>9s}")
    for jobs in (cfg["jobs"], 4 * cfg["jobs"]):
        run_cfg = {**cfg, "library": str(lib), "resampler": "fast", "jobs": jobs,
                   "cache": str(tmp / f"short-{jobs}.sqlite")}
        r = measure("tag", run_cfg)
        print(f"{f'instag tag, --jobs {jobs}':34s} {r['files'] / r['wall_s']:11.1f} "
              f"{r['cpu']:9.0%} {r['wall_s']:8.1f} {r['rss_mb']:7.0f} MB")


if __name__ == "__main__":
    main()
