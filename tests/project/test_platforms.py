"""The base install resolves where music libraries live: Linux x86-64 and ARM (a Raspberry Pi,
an ARM NAS, a Graviton instance), macOS on Apple silicon and Windows x86-64, with
onnxruntime-gpu only where a CUDA GPU can be (and its wheels are) and plain onnxruntime
elsewhere, never both.

uv resolves for the target platform at every level (pip's `--platform` judges environment
markers for the machine it runs on). It needs the package index: without it, these skip."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = {  # uv's name -> whether onnxruntime-gpu belongs there
    "x86_64-manylinux_2_28": True,
    "aarch64-manylinux_2_28": False,
    "aarch64-apple-darwin": False,
    "x86_64-pc-windows-msvc": True,
}
UNREACHABLE = re.compile(r"(?i)(failed to fetch|connect|dns|network|timed out|offline)")


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        pytest.skip("uv is not installed (the dev extra installs it)")
    return found


def resolve(requirements: list[str], platform: str, tmp_path: Path) -> str:
    """The pinned set uv resolves for `platform` (wheels only, Python 3.11)."""
    spec = tmp_path / "base.in"
    spec.write_text("\n".join(requirements) + "\n")
    done = subprocess.run([uv(), "pip", "compile", str(spec), "--python-platform", platform,
                           "--python-version", "3.11", "--only-binary", ":all:", "--quiet",
                           "--no-header", "--no-annotate"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode and UNREACHABLE.search(done.stderr) and "No solution" not in done.stderr:
        pytest.skip(f"the package index is not reachable: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, f"{platform}: {done.stderr}"
    return done.stdout


def base_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_base_install_resolves_with_one_onnx_runtime(platform, tmp_path):
    pinned = {line.split("==")[0] for line in resolve(base_requirements(), platform,
                                                       tmp_path).splitlines() if "==" in line}
    gpu = PLATFORMS[platform]
    assert ("onnxruntime-gpu" in pinned, "onnxruntime" in pinned) == (gpu, not gpu), pinned


@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"])
def test_the_cuda_extra_adds_the_gpu_runtime_only_where_the_base_has_it(platform, tmp_path):
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["cuda"]
    pinned = resolve(base_requirements() + extra, platform, tmp_path)
    assert ("onnxruntime-gpu==" in pinned) == PLATFORMS[platform]
    assert not ("onnxruntime-gpu==" in pinned and re.search(r"(?m)^onnxruntime==", pinned))
