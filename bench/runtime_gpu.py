"""GPU check for the scoring runtime: CUDA vs CPU provider parity and throughput.

Exports an attention model (random weights, 20 classes) to ONNX, then for the CPU and the CUDA
provider scores the same batches: checks that CUDA's outputs are within 1e-4 of the CPU's and
prints bags per second for B=256, T=10 (OpenMIC-sized bags) and B=16, T=600 (whole ~10 min files).
Without a usable CUDA provider it says so and exits 0.

    python bench/runtime_gpu.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from instag.learning.export import export_model
from instag.learning.models import build_model
from instag.tagging.scoring import CUDA, ScoringModel

SHAPES = [(256, 10), (16, 600)]


def throughput(scorer: ScoringModel, feats: np.ndarray, mask: np.ndarray,
               seconds: float = 3.0) -> float:
    scorer.run(feats, mask)  # warm-up (CUDA kernels, memory arena)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        scorer.run(feats, mask)
        n += 1
    return n * len(feats) / (time.perf_counter() - start)


def main() -> int:
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, providers: {', '.join(ort.get_available_providers())}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model("att").eval()
        meta = {"model": "att", "classes": [f"c{i}" for i in range(20)], "in_dim": 128}
        path = export_model(model, meta, Path(tmp) / "att.onnx")
        cpu = ScoringModel(path, "cpu")
        try:
            gpu = ScoringModel(path, "cuda")
        except Exception as e:  # no CUDA here: nothing to check
            print(f"no usable CUDA provider ({str(e).splitlines()[0]}); skipping the GPU check")
            return 0
        assert gpu.provider == CUDA
        rng = np.random.default_rng(0)
        worst = 0.0
        print(f"{'B':>5} {'T':>5} {'max |cuda-cpu|':>15} {'cpu bags/s':>12} {'cuda bags/s':>12}")
        for b, t in SHAPES:
            feats = rng.integers(0, 256, (b, t, 128), dtype=np.uint8)
            mask = np.ones((b, t), bool)
            mask[: b // 2, t // 2 :] = False  # half the bags padded to half length
            diff = max(float(np.abs(g - c).max()) for g, c in
                       zip(gpu.run(feats, mask), cpu.run(feats, mask), strict=True))
            worst = max(worst, diff)
            print(f"{b:5d} {t:5d} {diff:15.2e} {throughput(cpu, feats, mask):12.0f} "
                  f"{throughput(gpu, feats, mask):12.0f}")
        ok = worst <= 1e-4
        print(f"parity {'OK' if ok else 'FAILED'}: max difference {worst:.2e} (limit 1e-4)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
