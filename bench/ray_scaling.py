"""The Ray engine against the local engine on this machine, and what a catalogue would need.

On the same generated library (bench/tag_throughput.py's: real-architecture VGGish stand-in,
converted to ONNX first), each run a fresh process:
  - the local engine (decode pool + cache) and the Ray engine (a local Ray started for the run,
    its start-up included): × real time, and the Ray engine's overhead;
  - per-stage costs measured alone: decode + resampling (CPU seconds per audio second, one
    process) and VGGish (on all cores here, taken per core assuming linear scaling);
  - an estimate of the nodes needed for `--tracks` tracks of `--track-minutes` in `--hours`:
    CPU-only nodes of `--node-cores` cores, from the measured costs and the Ray engine's measured
    efficiency; GPU nodes only when `--gpu-vggish-x` (VGGish × real time on one GPU, from
    bench/gpu_end_to_end.py on a GPU node) is given: no GPU figure is assumed.

    python bench/ray_scaling.py [--files 24] [--tracks 1000000] [--node-cores 16]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

from tag_throughput import make_library, make_models, measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--tracks", type=int, default=1_000_000)
    ap.add_argument("--track-minutes", type=float, default=4.0)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--gpus-per-node", type=int, default=1)
    ap.add_argument("--gpu-vggish-x", type=float, default=None)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = {**make_library(tmp / "library", args.files), **make_models(tmp),
               "jobs": cores, "resampler": "fast", "cache": str(tmp / "cache.sqlite")}
        local, ray = measure("tag", cfg), measure("ray", cfg)
        decode = measure("decode+resample", cfg)
        vggish = measure("vggish", cfg)
    x = {k: r["audio_s"] / r["wall_s"] for k, r in (("local", local), ("ray", ray))}
    print(f"\n{'engine':8s} {'x real time':>12s} {'wall s':>8s}   ({cores} cores)")
    for k, r in (("local", local), ("ray", ray)):
        print(f"{k:8s} {x[k]:12.1f} {r['wall_s']:8.1f}")
    efficiency = x["ray"] / x["local"]
    print(f"Ray engine: {efficiency:.0%} of the local engine's speed here "
          f"(overhead {1 / efficiency - 1:.0%}, Ray's start-up included)")

    decode_cost = decode["wall_s"] / decode["audio_s"]  # CPU s per audio s, one process
    vggish_cost = cores * vggish["wall_s"] / vggish["audio_s"]  # CPU s per audio s
    print(f"\nper audio second: decode + resample {decode_cost * 1000:.2f} ms of CPU, VGGish "
          f"{vggish_cost * 1000:.1f} ms of CPU ({vggish_cost / (vggish_cost + decode_cost):.0%}"
          " of the work)")
    need = args.tracks * args.track_minutes * 60 / (args.hours * 3600)
    node_cpu = args.node_cores / (decode_cost + vggish_cost) * efficiency
    print(f"\n{args.tracks:,} tracks of {args.track_minutes:g} min in {args.hours:g} h: "
          f"{need:,.0f}x real time")
    print(f"  CPU nodes of {args.node_cores} cores: {node_cpu:,.0f}x each -> "
          f"{math.ceil(need / node_cpu)} nodes")
    if args.gpu_vggish_x is None:
        print(f"  GPU nodes: decode alone allows {args.node_cores / decode_cost:,.0f}x per "
              f"{args.node_cores}-core node; pass --gpu-vggish-x (VGGish x real time on one "
              "GPU, from bench/gpu_end_to_end.py) for the estimate")
    else:
        node_gpu = min(args.node_cores / decode_cost,
                       args.gpus_per_node * args.gpu_vggish_x) * efficiency
        print(f"  GPU nodes ({args.node_cores} cores, {args.gpus_per_node} GPU): "
              f"{node_gpu:,.0f}x each -> {math.ceil(need / node_gpu)} nodes")


if __name__ == "__main__":
    main()
