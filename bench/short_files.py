"""Many one-second files, this checkout against another, runs alternated (this machine's speed
drifts between minutes: alternating and taking medians compares like with like).

Each run is a fresh process tagging the same 500 generated one-second WAVs into its own cache
with the full-architecture VGGish stand-in (converted to ONNX first) and prints files/s.

    git worktree add /tmp/before <commit>
    python bench/short_files.py --before /tmp/before [--files 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

CHILD = """
import json, sys, time
from pathlib import Path
from instag.engines.local.run import tag
from instag.tagging.options import TagOptions
if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    opts = TagOptions(model=Path(cfg["model"]), vggish=cfg["vggish"], pca=Path(cfg["pca"]),
                      jobs=cfg["jobs"], cache=Path(cfg["cache"]))
    t = time.perf_counter()
    run = tag([cfg["library"]], opts)
    for _ in run:
        pass
    counts = getattr(run, "counts", None) or run.summary  # the code before: .summary
    print(json.dumps({"files": counts.done, "wall": time.perf_counter() - t}))
"""


def run(code_dir: Path | None, cfg: dict, script: Path) -> float:
    env = {**os.environ}
    if code_dir is not None:  # the other checkout's instag, ahead of this one's
        env["PYTHONPATH"] = str(code_dir)
    out = subprocess.run([sys.executable, str(script), json.dumps(cfg)], capture_output=True,
                         text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["files"] / r["wall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    from music import write_music
    from tag_throughput import make_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lib = tmp / "short"
        lib.mkdir()
        for i in range(args.files):
            write_music(lib / f"{i:04d}.wav", 1.0, 44100, seed=i, subtype="PCM_16")
        cfg = {**make_models(tmp), "library": str(lib), "jobs": args.jobs}
        script = tmp / "child.py"
        script.write_text(CHILD)
        speeds: dict[str, list[float]] = {"before": [], "this checkout": []}
        for i in range(args.rounds):
            for name, code in (("before", args.before), ("this checkout", None)):
                speeds[name].append(run(code, {**cfg, "cache": str(tmp / f"{name}-{i}.db")},
                                        script))
                time.sleep(1)
        print(f"{args.files} one-second WAVs, --jobs {args.jobs}, {args.rounds} rounds "
              "alternated (files/s)")
        for name, values in speeds.items():
            print(f"{name:14s} median {statistics.median(values):6.1f}   runs "
                  + " ".join(f"{v:.1f}" for v in values))
        ratio = statistics.median(speeds["this checkout"]) / statistics.median(speeds["before"])
        print(f"this checkout / before: {ratio:.2f}x")


if __name__ == "__main__":
    main()
