"""The benchmarks stay runnable: the GPU bench, run for real only where a GPU is lent, goes
through every step on the CPU here (so that it cannot rot between GPU runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_the_gpu_bench_runs_through_on_the_cpu(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_end_to_end.py"),
                           "--dry-run", "--jobs", "2"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "a dry run on the CPU" in out and "x real time" in out and "bound by:" in out
    for stage in ("decode", "resample", "VGGish", "scoring"):
        assert f"\n{stage}" in out, out
