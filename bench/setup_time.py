"""How long `instag setup --offline` takes on stand-ins, stage by stage, the code before and
after side by side (legs alternated, each in a fresh data and cache directory).

The real set-up cannot run here (OpenMIC is not downloadable offline, VGGish's real weights are
not in the repository): the stand-ins are the tests' — a VGGish SavedModel (`--arch vggish`: the
real architecture with random weights, the FLOPs of the real model; `small`: the tests' three
layers), its PCA file, and a random OpenMIC-layout folder of `--clips` clips (OpenMIC has
20,000). What it measures is what setup spends: training (`--epochs`, the paper's 250), the ONNX
conversion, the feature check and the INT8 step. With random weights the INT8 decision (and so
whether the layer fallback runs) is the stand-in's, not a real VGGish's.

    python bench/setup_time.py [--before /path/to/worktree-of-base] [--arch vggish] [--clips 20000]
        [--epochs 250] [--rounds 1]

Prints, per leg, the seconds of each stage ([1/6] ... [6/6]; [4/6] is training, [5/6] VGGish's
conversion and the feature check, [6/6] the INT8 step), the whole run and its peak
memory (the set-up process's maximum RSS), then the whole runs beside the issue's limits (5
minutes with --skip-int8, 7 with the INT8 step) and beside BEFORE_S, a new user's offline set-up
before this round.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "tests")]

from builders import random_openmic  # noqa: E402
from standins import build_standin_vggish, write_standin_pca  # noqa: E402

STAGE = re.compile(r"^\[(\d)/6\]")
INSTALLED = "[4/6] model: installed"
BEFORE_S = 805.0  # a new user's `instag setup --offline` before this round (real VGGish, two cores)
LIMITS_S = {"after": 7 * 60.0, "after --skip-int8": 5 * 60.0}


def leg(code: Path, inputs: dict, extra: list[str], work: Path) -> dict[str, float]:
    """One `instag setup --offline` with `code` first on the path; seconds per stage (from
    the first line a stage prints to the first line of the next) and in all."""
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code), "INSTAG_DATA_DIR": str(work / "data"),
           "INSTAG_CACHE_DIR": str(work / "cache"), "TFHUB_CACHE_DIR": str(work / "hub")}
    for name in ("INSTAG_VGGISH", "INSTAG_PCA", "INSTAG_MODEL", "INSTAG_PRECISION"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "instag", "setup", "--offline", "--device", "cpu",
           "--vggish", str(inputs["vggish"]), "--pca", str(inputs["pca"]),
           "--openmic", str(inputs["openmic"]), "--epochs", str(inputs["epochs"]), *extra]
    started = time.perf_counter()
    firsts: dict[str, float] = {}
    tail: list[str] = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=work) as proc:  # (`-m` puts the cwd before PYTHONPATH)
        for line in proc.stdout:
            tail = [*tail[-4:], line.rstrip()]
            if (m := STAGE.match(line)) and m.group(1) not in firsts:
                firsts[m.group(1)] = time.perf_counter() - started
            if INSTALLED in line:  # training ends: VGGish's loading and conversion are [5/6]'s
                firsts.setdefault("5", time.perf_counter() - started)
        _, status, usage = os.wait4(proc.pid, 0)  # this leg's own peak, not the largest yet
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print("\n".join(f"    | {x}" for x in tail), file=sys.stderr)
    total = time.perf_counter() - started
    marks = sorted(firsts.items()) + [("end", total)]
    out = {f"[{k}/6]": b - a for (k, a), (_, b) in zip(marks, marks[1:], strict=False)}
    # a leg that dies (the OOM killer: -9) is shown, with the stage it died in, not hidden
    return {**out, "total": total, "peak_mb": usage.ru_maxrss / 1024, "exit": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="a worktree of the code before (without it, "
                    "the after legs only, beside the 805 s measured before this round)")
    ap.add_argument("--after", type=Path, default=Path(__file__).parents[1])
    ap.add_argument("--arch", default="vggish",
                    help="the stand-in VGGish: vggish, or the tests' small, fragile, brittle")
    ap.add_argument("--clips", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-int8-only", action="store_true",
                    help="the after leg with --skip-int8 alone")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="instag-setup-bench-") as tmp:
        root = Path(tmp)
        inputs = {"vggish": build_standin_vggish(root / "vggish", args.arch),
                  "pca": write_standin_pca(root / "pca.npz"),
                  "openmic": random_openmic(root / "openmic", n=args.clips), "epochs": args.epochs}
        legs = [("before", args.before, [])] if args.before else []
        legs += [("after", args.after, [])] if not args.skip_int8_only else []
        legs += [("after --skip-int8", args.after, ["--skip-int8"])]
        print(f"instag setup --offline, stand-ins: {args.arch} VGGish, {args.clips} clips, "
              f"{args.epochs} epochs, {os.cpu_count()} CPUs")
        print(f"{'leg':20s}" + "".join(f"{s:>9s}" for s in
                                       [f"[{k}/6]" for k in range(1, 7)] + ["total"])
              + f"{'peak MB':>9s}")
        totals: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, code, extra in legs:
                secs = leg(code, inputs, extra, root / f"{r}-{name.replace(' ', '')}")
                totals.setdefault(name, []).append(secs["total"])
                print(f"{name:20s}" + "".join(
                    f"{secs.get(s, 0.0):9.1f}" for s in [f"[{k}/6]" for k in range(1, 7)]
                    + ["total"]) + f"{secs['peak_mb']:9.0f}"
                    + (f"  exit {secs['exit']}" if secs["exit"] else ""), flush=True)
        print(f"before this round (a new user, real VGGish and OpenMIC): {BEFORE_S:.0f} s")
        for name, limit in LIMITS_S.items():
            if name not in totals:
                continue
            best = min(totals[name])
            print(f"{name}: {best:.0f} s (limit {limit:.0f} s: "
                  f"{'within' if best <= limit else 'over'}; {BEFORE_S / best:.1f}x faster "
                  f"than {BEFORE_S:.0f} s)")


if __name__ == "__main__":
    main()
