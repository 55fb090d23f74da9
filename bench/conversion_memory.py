"""Peak memory of VGGish's ONNX conversion, stage by stage: the code before and after side by
side, legs alternated.

Each leg converts the stand-in VGGish (`--arch vggish`: the real architecture, 288 MB of
weights, random) as `instag setup` does (`vggish_onnx.convert`: the conversion, the parity check,
the parts cut beside the file) in a fresh process, with its code first on the path and a fresh
hub cache. A thread samples the process's RSS (/proc/self/status, every 10 ms) and charges it to
the stage running: the functions of TensorFlow's, tf2onnx's and instag's that each stage is,
wrapped by name where the leg's code calls them (a stage a leg does not have is blank).
Linux only.

    python bench/conversion_memory.py --before /path/to/worktree-of-base [--arch vggish]
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "tests")]

from standins import build_standin_vggish, write_standin_pca  # noqa: E402

# (module, attribute, stage): the innermost wrapped call running is the stage charged
STAGES = [
    ("instag.features.vggish_onnx", "load_vggish", "load the SavedModel"),
    ("tf2onnx.tf_loader", "convert_variables_to_constants_v2", "freeze the variables"),
    ("tf2onnx.tf_loader", "convert_variables_to_constants_large_model", "freeze the variables"),
    ("tf2onnx.tf_loader", "tf_optimize", "grappler (TensorFlow's optimiser)"),
    ("tf2onnx.convert", "process_tf_graph", "tf2onnx: TF ops to ONNX ops"),
    ("tf2onnx.tfonnx", "process_tf_graph", "tf2onnx: TF ops to ONNX ops"),
    ("tf2onnx.optimizer", "optimize_graph", "tf2onnx: its optimiser (24 passes)"),
    ("tf2onnx.graph.Graph", "make_model", "tf2onnx: the model proto"),
    ("instag.features.vggish_onnx.OnnxVggish", "__init__", "parity check: sessions of the parts"),
    ("instag.features.vggish_onnx.OnnxVggish", "many", "parity check: run"),
    ("instag.features.vggish_onnx", "parts_beside", "parts cut beside the file"),
]

CHILD = r"""
import functools, importlib, json, resource, sys, threading, time
stack, peaks = ["other (in convert)"], {}
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
def sample():
    while True:
        peaks[stack[-1]] = max(peaks.get(stack[-1], 0), rss()); time.sleep(0.01)
def wrap(owner, attr, stage):
    f = getattr(owner, attr)
    @functools.wraps(f)
    def g(*a, **k):
        stack.append(stage)
        try:
            return f(*a, **k)
        finally:
            stack.pop()
    setattr(owner, attr, g)
def owner_of(path):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
import numpy as np, tf2onnx.convert, tf2onnx.tfonnx, tf2onnx.optimizer, tf2onnx.graph
from instag.features import vggish_onnx
for module, attr, stage in json.loads(sys.argv[1]):
    owner = owner_of(module)
    if hasattr(owner, attr):
        wrap(owner, attr, stage)
threading.Thread(target=sample, daemon=True).start()
pca = np.load(sys.argv[3])
started = time.perf_counter()
vggish_onnx.convert(sys.argv[2], pca[pca.files[0]], pca[pca.files[1]])
print(json.dumps({"peaks": peaks, "seconds": time.perf_counter() - started,
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def leg(code: Path, vggish: Path, pca: Path, hub: Path) -> dict:
    """One conversion in a fresh process: peak MB per stage, seconds, the process's peak."""
    hub.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code), "TFHUB_CACHE_DIR": str(hub),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(STAGES), str(vggish), str(pca)],
                         env=env, capture_output=True, text=True, cwd=hub.parent)
    if out.returncode:
        sys.exit(f"the leg with {code} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="a worktree of the code before")
    ap.add_argument("--after", type=Path, default=Path(__file__).parents[1])
    ap.add_argument("--arch", default="vggish", help="the stand-in VGGish (see tests/standins)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="instag-conversion-bench-") as tmp:
        root = Path(tmp)
        vggish = build_standin_vggish(root / "vggish", args.arch)
        pca = write_standin_pca(root / "pca.npz")
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(args.rounds):
            for name, code in (("before", args.before), ("after", args.after)):
                results[name].append(leg(code, vggish, pca, root / f"{r}-{name}" / "hub"))
    stages = list(dict.fromkeys(["other (in convert)", *(s for _, _, s in STAGES)]))
    print(f"vggish_onnx.convert on the {args.arch} stand-in: peak RSS (MB) per stage, "
          f"best of {args.rounds}")
    print(f"{'stage':40s}{'before':>10s}{'after':>10s}")
    for stage in stages:
        cells = [min((r["peaks"][stage] for r in results[n] if stage in r["peaks"]), default=None)
                 for n in ("before", "after")]
        if any(c is not None for c in cells):
            print(f"{stage:40s}" + "".join(f"{c:10.0f}" if c is not None else f"{'-':>10s}"
                                           for c in cells))
    for key, label in (("max_rss", "whole process (max RSS, MB)"), ("seconds", "seconds")):
        print(f"{label:40s}" + "".join(f"{min(r[key] for r in results[n]):10.0f}"
                                       for n in ("before", "after")))


if __name__ == "__main__":
    main()
