"""Golden values: one short clip through the whole pipeline (decode, resample, stand-in VGGish,
ReLU, PCA, uint8, bags, the ONNX attention model) must give the committed features and
probabilities, so that a silent change anywhere on the way is caught.

The model is committed (tests/golden/att.onnx: an att model of 3 instruments with seeded
weights); the stand-in VGGish and PCA are rebuilt from their seeds. After an intended change,
regenerate with ``INSTAG_WRITE_GOLDEN=1 python -m pytest tests/jobs/test_golden.py`` and say why in
the commit.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import instag

GOLDEN = Path(__file__).parents[1] / "golden"


def clip(path: Path) -> Path:
    """3.5 s of a chord with noise at 44.1 kHz, 16-bit stereo: decoding and resampling matter."""
    rng = np.random.default_rng(42)
    t = np.arange(int(3.5 * 44100)) / 44100
    x = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((220, 277.2, 329.6, 7100)))
    x = 0.2 * x + 0.01 * rng.standard_normal(len(t))
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 44100, subtype="PCM_16")
    return path


@pytest.fixture
def result(standin_vggish, standin_pca, tmp_path):
    opts = instag.TagOptions(model=GOLDEN / "att.onnx", vggish=str(standin_vggish),
                             pca=standin_pca, cache=tmp_path / "c.sqlite", jobs=1)
    (r,) = instag.tag([clip(tmp_path / "clip.wav")], opts)
    assert r.ok, r.reason
    return r


def test_the_pipeline_gives_the_golden_features_and_probabilities(result):
    got = {"features": result.features.values,
           "bag": np.array(list(result.bags[0].probabilities.values()), np.float32),
           "attention": result.bags[0].attention}
    if os.environ.get("INSTAG_WRITE_GOLDEN"):
        np.savez(GOLDEN / "clip.npz", **got)
    with np.load(GOLDEN / "clip.npz") as golden:
        assert got["features"].shape == golden["features"].shape == (3, 128)
        steps = np.abs(got["features"].astype(int) - golden["features"].astype(int))
        assert steps.max() <= 1 and (steps == 0).mean() >= 0.99  # float summation order only
        np.testing.assert_allclose(got["bag"], golden["bag"], atol=1e-3)
        np.testing.assert_allclose(got["attention"], golden["attention"], atol=1e-3)
