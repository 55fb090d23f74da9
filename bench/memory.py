"""Peak memory of a whole `instag tag` run, the code before against this checkout, side by side.

A library of songs (default 12 of 150 s, wav/flac/ogg/mp3), the full-architecture VGGish
stand-in (random weights, 288 MB of FP32 weights; converted to ONNX once, as `instag setup`
does) and an attention model. Prints, for each leg ("before": a `git worktree` of --before;
"after": this checkout):
  - where the main process's memory goes, stage by stage, in a fresh process: Python with
    numpy, onnxruntime and instag imported; VGGish's sessions made (the peak while they are
    made: a model read whole before its weights are copied out); one 64-window VGGish call
    (the runtime's arenas and the call's activations); the scoring model; RSS split into
    anonymous memory and file-backed pages (weights mapped from the model file);
  - `instag tag` end to end (the real command, a fresh cache each run), legs alternated over
    --rounds: × real time, and the peak of the summed RSS of the process tree (as
    bench/tag_throughput.py's PeakRss samples it, every 50 ms), split into the main process
    and its decode workers;
  - for int8 (--precisions), the same with `--precision int8` (the INT8 VGGish made first, as the
    throughput bench makes it; kept whatever its parity figures, speed and memory only).

    python bench/memory.py [--files 12] [--seconds 150] [--jobs 2] [--rounds 2]
                           [--before main] [--precisions fp32,int8]
                           [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
# this checkout's instag for the bench and its helpers (conversion, INT8); a leg's child
# process puts its own first (`leg_path`)
sys.path.insert(2, os.environ["PYTHONPATH"] if "--stages" in sys.argv else str(ROOT))
os.environ.setdefault("PYTHONPATH", str(ROOT))

from tag_throughput import FORMATS, PeakRss, make_models, measure  # noqa: E402


def status_mb() -> dict:
    """This process's RSS (anonymous and file-backed) and its peak since the last reset."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    Path("/proc/self/clear_refs").write_text("5")  # the next stage's peak starts afresh
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"], "file": fields["RssFile"],
            "peak": fields["VmHWM"]}


def stages(cfg: dict) -> None:
    """Child (the leg's code on its path): the main process's memory, stage by stage."""
    import numpy as np
    import onnxruntime  # noqa: F401

    import instag.engines.local.run
    from instag.features.embed import Embedder
    from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
    from instag.tagging.scoring import ScoringModel

    assert instag.engines.local.run.__file__.startswith(os.environ["PYTHONPATH"])  # the leg's
    out = [("python, numpy, onnxruntime, instag imported", status_mb())]
    emb = Embedder(cfg["vggish"], cfg["pca"], device="cpu", precision=cfg["precision"])
    emb.model  # noqa: B018
    out.append(("VGGish sessions made", status_mb()))
    wave = np.random.default_rng(0).uniform(-.3, .3, 64 * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES)
    for _ in range(2):
        emb.embed_chunks([wave.astype(np.float32)])
    out.append(("VGGish, 64-window calls", status_mb()))
    scorer = ScoringModel(cfg["model"], "cpu")
    scorer.score([np.random.default_rng(0).integers(0, 256, (160, 128), np.uint8)] * 12)
    out.append(("scoring model made and called", status_mb()))
    print(json.dumps(out))


class TreePeak(PeakRss):
    """PeakRss of another process's tree (the `instag tag` command), with the split at the
    peak and each side's own peak: the main process, and its decode workers together."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self.main_kb, self.workers_kb, self.split = pid, 0, 0, 0, (0, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            main, *workers = map(self._rss_kb, self._tree(self.pid))
            if main + sum(workers) > self.peak_kb:
                self.peak_kb, self.split = main + sum(workers), (main, sum(workers))
            self.main_kb, self.workers_kb = max(self.main_kb, main), max(self.workers_kb,
                                                                          sum(workers))


def tag_run(leg: Path, hub: Path, cfg: dict, out: Path, precision: str) -> dict:
    """`instag tag` over the library with the leg's code, in a fresh cache; its peak and
    speed."""
    cmd = [sys.executable, "-m", "instag", "tag", cfg["library"], "--out", str(out / "t.csv"),
           "--cache", str(out / "c.sqlite"), "--vggish", cfg["vggish"], "--pca", cfg["pca"],
           "--model", cfg["model"], "--jobs", str(cfg["jobs"]), "--device", "cpu",
           "--precision", precision, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(leg), "TFHUB_CACHE_DIR": str(hub)}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=leg, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # -m: the cwd's instag
    peak = TreePeak(proc.pid)
    err = proc.communicate()[1]
    wall = time.perf_counter() - t
    peak.done.set()
    peak.thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"instag tag failed ({leg}):\n{err}")
    return {"wall": wall, "speed": cfg["audio_s"] / wall, "peak": peak.peak_kb / 1024,
            "at_peak": [x / 1024 for x in peak.split], "main": peak.main_kb / 1024,
            "workers": peak.workers_kb / 1024}


def make_library(lib: Path, files: int, seconds: float) -> None:
    from music import write_music

    lib.mkdir(parents=True)
    for i in range(files):
        ext, kw = FORMATS[i % len(FORMATS)]
        write_music(lib / f"{i:03d}.{ext}", seconds, 44100, seed=i, **kw)


def prepare(work: Path, args) -> dict:
    """The library, the models and (for int8) the INT8 VGGish, made once in `work` (kept
    there with --workdir, for the next run)."""
    marker = work / "cfg.json"
    os.environ["TFHUB_CACHE_DIR"] = str(work / "hub")
    cfg = json.loads(marker.read_text()) if marker.is_file() else {}
    if cfg.get("library_of") != [args.files, args.seconds]:
        shutil.rmtree(work / "library", ignore_errors=True)
        make_library(work / "library", args.files, args.seconds)
        cfg.update(library=str(work / "library"), library_of=[args.files, args.seconds])
    if "vggish" not in cfg:
        cfg.update(make_models(work))
    if "int8" in args.precisions and not cfg.get("int8"):
        doc = measure("reduced", {**cfg, "precision": "int8"})
        cfg["int8"] = f"kept ({doc['layers']} layers quantised)"
    marker.write_text(json.dumps(cfg))
    return {**cfg, "jobs": args.jobs, "audio_s": args.files * args.seconds}


def leg_stages(leg: Path, hub: Path, cfg: dict, precision: str) -> list:
    """The stage profile of a leg's code, run twice: the first cuts the model's parts the
    leg's way where they are not yet beside it (once per install, not what a run costs)."""
    env = {**os.environ, "PYTHONPATH": str(leg), "TFHUB_CACHE_DIR": str(hub)}
    for _ in range(2):
        out = subprocess.run([sys.executable, __file__, "--stages",
                              json.dumps({**cfg, "precision": precision})],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the stage profile failed ({leg}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(legs: dict, cfg: dict, work: Path, rounds: int, precision: str) -> None:
    """The stage profile of each leg, then `instag tag` with the legs alternated."""
    profiles = {name: leg_stages(root, hub, cfg, precision) for name, (root, hub) in legs.items()}
    print(f"\n{precision.upper()}: the main process, stage by stage (MB: RSS = anonymous + "
          "file-backed; peak = the most while the stage ran)")
    print(f"{'':46s}" + "".join(f"{n + ': RSS':>12s} {'anon':>6s} {'file':>6s} {'peak':>6s}"
                                for n in legs))
    for i, (stage, _) in enumerate(profiles["after"]):
        print(f"{stage:46s}" + "".join(
            f"{s['rss']:12.0f} {s['anon']:6.0f} {s['file']:6.0f} {s['peak']:6.0f}"
            for s in (profiles[n][i][1] for n in legs)))
    runs: dict[str, list[dict]] = {name: [] for name in legs}
    print(f"\n{precision.upper()}: instag tag, {cfg['jobs']} decode workers, "
          f"{cfg['audio_s'] / 60:.0f} min of audio ({rounds} rounds, legs alternated)")
    print(f"{'':14s} {'x real time':>11s} {'wall s':>7s} {'peak MB':>8s} "
          f"{'main+workers at peak':>21s} {'main peak':>9s} {'workers peak':>12s}")
    for r in range(rounds):
        for name, (root, hub) in legs.items():
            out = work / f"out-{precision}-{name}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            x = tag_run(root, hub, cfg, out, precision)
            runs[name].append(x)
            print(f"{f'{name}, round {r + 1}':14s} {x['speed']:11.1f} {x['wall']:7.1f} "
                  f"{x['peak']:8.0f} {x['at_peak'][0]:12.0f} + {x['at_peak'][1]:6.0f} "
                  f"{x['main']:9.0f} {x['workers']:12.0f}")
    speed = {n: sum(x["speed"] for x in v) / len(v) for n, v in runs.items()}
    peak = {n: max(x["peak"] for x in v) for n, v in runs.items()}
    print(f"{precision.upper()} summary: peak {peak['before']:.0f} MB -> {peak['after']:.0f} MB;"
          f" speed {speed['before']:.1f} -> {speed['after']:.1f} x real time "
          f"({speed['after'] / speed['before']:.0%} of before)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", default="main", help="the commit of the 'before' leg")
    ap.add_argument("--precisions", default="fp32,int8", help="fp32, int8 or both")
    ap.add_argument("--workdir", type=Path, help="keep the library and models here")
    ap.add_argument("--stages", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stages:
        stages(json.loads(args.stages))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cfg = prepare(work, args)
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                        str(before), args.before], check=True)
        try:
            # each leg its own hub cache (hard links): the model files each code cuts and
            # names its own way stay out of the other's way
            hubs = {n: Path(tmp) / f"hub-{n}" for n in ("before", "after")}
            for hub in hubs.values():
                subprocess.run(["cp", "-al", str(work / "hub"), str(hub)], check=True)
            legs = {"before": (before, hubs["before"]), "after": (ROOT, hubs["after"])}
            commit = subprocess.run(["git", "-C", str(before), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            print(f"library: {args.files} files of {args.seconds:.0f} s; before = {args.before}"
                  f" ({commit}), after = {ROOT}")
            for precision in args.precisions.split(","):
                compare(legs, cfg, work, args.rounds, precision)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(before)], check=False)


if __name__ == "__main__":
    main()
