"""The committed stand-ins (tests/golden/standins) are what the code makes: the tiny VGGish
SavedModel and its ONNX form, the PCA file and the scoring model, made again here from
`standins.py` and training, and compared by what they compute. The fast tier tags with them
and needs neither TensorFlow nor torch.

After an intended change (to the stand-ins, the converter or training), regenerate with
``INSTAG_WRITE_STANDINS=1 python -m pytest tests/project/test_standins.py`` and say why in the
commit.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from standins import COMMITTED, PCA_FILE, SCORING, VGGISH_DIR, VGGISH_ONNX

from instag.features.vggish_onnx import probe_audio


def outputs(model, *feeds: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: f for i, f in zip(session.get_inputs(), feeds,
                                                        strict=True)})


@pytest.mark.tensorflow
@pytest.mark.torch
def test_the_committed_standins_are_what_the_code_makes(tmp_path, monkeypatch):
    from standins import write_committed_standins

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    made = write_committed_standins(tmp_path / "made")
    if os.environ.get("INSTAG_WRITE_STANDINS"):
        write_committed_standins(COMMITTED)
    with np.load(made / PCA_FILE) as new, np.load(COMMITTED / PCA_FILE) as old:
        assert all(np.array_equal(new[k], old[k]) for k in ("pca_eigen_vectors", "pca_means"))
    for part in ("variables/variables.data-00000-of-00001", "variables/variables.index"):
        assert (made / VGGISH_DIR / part).read_bytes() == (COMMITTED / VGGISH_DIR
                                                             / part).read_bytes()
    wave = probe_audio()
    np.testing.assert_allclose(outputs(made / VGGISH_ONNX, wave)[0],
                               outputs(COMMITTED / VGGISH_ONNX, wave)[0], atol=1e-5)
    bags = np.random.default_rng(0).integers(0, 256, (4, 10, 128), dtype=np.uint8)
    mask = np.ones((4, 10), bool)
    for new, old in zip(outputs(made / SCORING, bags, mask), outputs(COMMITTED / SCORING, bags,
                                                                     mask), strict=True):
        np.testing.assert_allclose(new, old, atol=1e-5)


def test_a_run_with_the_committed_standins_never_imports_tensorflow_nor_torch(
        standin_vggish, standin_pca, scoring_model, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "song.wav", np.random.default_rng(0).uniform(-.3, .3, 44100 * 3), 44100)
    code = ("import sys, instag; from pathlib import Path; "
            f"opts = instag.TagOptions(model=Path({str(scoring_model)!r}), "
            f"vggish={str(standin_vggish)!r}, pca=Path({str(standin_pca)!r}), "
            f"cache=Path({str(tmp_path / 'c.sqlite')!r}), jobs=1); "
            f"(r,) = instag.tag([Path({str(tmp_path / 'song.wav')!r})], opts); "
            "print(r.status, sorted({'tensorflow', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "ok []"
