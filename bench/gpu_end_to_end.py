"""End-to-end tagging on a GPU machine: × real time, GPU utilisation, and where the time goes.

The same generated library and real-architecture VGGish stand-in as bench/tag_throughput.py
(converted to ONNX first, so both networks run on onnxruntime's CUDA provider); decode workers =
cores. Prints:
  - `instag tag` end to end: × real time, wall, CPU busy, mean and peak GPU utilisation (from
    `nvidia-smi`, sampled every 0.5 s, when it exists);
  - each stage measured alone (decode, resampling, VGGish, scoring) as audio seconds per
    second, with decode and resampling scaled by the number of workers, and each stage's share
    of the serial time: the stage with the lowest capacity bounds the run;
  - on CUDA, the FP16 VGGish beside FP32 (the network alone and end to end), with its parity
    figures by setup's rule.
Without a usable CUDA provider it runs on the CPU and says so. `--dry-run`: two files, the
tiny stand-in, on the CPU: every step of the script in seconds, so that it cannot rot between
the rare runs on a GPU (tests/project/test_benches.py runs it so in CI).

    python bench/gpu_end_to_end.py [--files 200] [--jobs CORES] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

from tag_throughput import int8_legs, make_library, make_models, measure  # noqa: E402


class GpuSampler:
    """`nvidia-smi`'s utilisation of GPU 0 every 0.5 s while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def describe(self) -> str:
        if not self.samples:
            return "n/a (no nvidia-smi)"
        return f"mean {sum(self.samples) / len(self.samples):.0f} %, peak {max(self.samples):.0f} %"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dry-run", action="store_true",
                    help="two files, the tiny VGGish stand-in, on the CPU")
    args = ap.parse_args()
    if args.dry_run:
        args.files = 2
    from instag.common.errors import InstagError
    from instag.tagging.scoring import ScoringModel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = {**make_library(tmp / "library", args.files),
               **make_models(tmp, "tiny" if args.dry_run else "vggish"),
               "jobs": args.jobs, "resampler": "fast", "cache": str(tmp / "cache.sqlite")}
        try:  # loading a model on CUDA is the only sure test that CUDA is usable
            if args.dry_run:
                raise InstagError("--dry-run", "")
            ScoringModel(cfg["model"], "cuda")
            cfg["device"] = "cuda"
        except InstagError as e:
            cfg["device"] = "cpu"
            print(f"no usable CUDA here ({e.message}): a dry run on the CPU")
        device = cfg["device"]
        with GpuSampler() as gpu:
            run = measure("tag", cfg)
        speed = run["audio_s"] / run["wall_s"]
        print(f"\ninstag tag, {args.jobs} decode workers, {device}: {speed:.0f}x real time, "
              f"{run['wall_s']:.1f} s wall, CPU busy {run['cpu']:.0%}, GPU {gpu.describe()}")

        stages = {"decode": measure("decode", cfg), "decode+resample":
                  measure("decode+resample", cfg), "VGGish": measure("vggish", cfg),
                  "scoring": measure("score", cfg)}
        cost = {k: r["wall_s"] / r["audio_s"] for k, r in stages.items()}  # s per audio s
        per_stage = {"decode": cost["decode"] / args.jobs,
                     "resample": max(cost["decode+resample"] - cost["decode"], 0) / args.jobs,
                     "VGGish": cost["VGGish"], "scoring": cost["scoring"]}
        serial = sum(per_stage.values())
        print(f"\n{'stage':10s} {'x real time':>12s} {'share':>7s}   (decode and resampling "
              f"over {args.jobs} workers)")
        for name, c in per_stage.items():
            print(f"{name:10s} {1 / c if c else float('inf'):12.0f} {c / serial:7.0%}")
        bound = max(per_stage, key=per_stage.get)
        print(f"bound by: {bound}")
        if device == "cuda":  # FP16 beside FP32, the same parity rule as setup's
            int8_legs(tmp, cfg, "fp16")


if __name__ == "__main__":
    main()
