"""VGGish's front end alone (`features.logmel`): the spectrogram the page's file view and
`instag plot` draw is the one the model heard, frame for frame, bounded for any length."""

import shutil

import numpy as np
import pytest
from standins import COMMITTED, VGGISH_ONNX

from instag.common.errors import SetupError
from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
from instag.features.logmel import LogMel, log_mel_beside


@pytest.fixture
def model(tmp_path):
    """The committed tiny VGGish's ONNX form, in a folder of its own (its part is cut beside)."""
    path = tmp_path / "vggish.onnx"
    shutil.copyfile(COMMITTED / VGGISH_ONNX, path)
    return path


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, round(seconds * 16000)).astype(np.float32)


def test_the_front_end_gives_96_frames_per_instance_aligned_with_the_instances(model):
    wave = noise(10 * 0.96 + 0.5)  # ten whole instances and half a window
    frames = np.concatenate(list(LogMel(model).frames([wave[:40000], wave[40000:]])))
    assert frames.shape == (960, 64)
    # blocks cut anywhere give the same frames as the waveform in one piece
    whole = np.concatenate(list(LogMel(model).frames([wave])))
    np.testing.assert_allclose(frames, whole, atol=1e-5)


def test_the_front_end_is_cut_once_and_kept_beside_the_model(model):
    part = log_mel_beside(model)
    assert part is not None and part.parent == model.parent and "logmel" in part.name
    made = part.stat().st_mtime_ns
    LogMel(model)
    assert log_mel_beside(model) == part and part.stat().st_mtime_ns == made


def test_a_long_file_is_drawn_from_at_most_max_columns(model, tmp_path):
    import soundfile as sf

    path = tmp_path / "ten-minutes.wav"
    sf.write(path, np.zeros(16000 * 600, np.float32), 16000)
    spectrogram = LogMel(model).spectrogram(path, 600.0, max_columns=100)
    assert 90 <= len(spectrogram.values) <= 100 and spectrogram.values.shape[1] == 64
    assert spectrogram.column_s * len(spectrogram.values) == pytest.approx(600, abs=2 * 0.96)


def test_a_graph_without_a_log_mel_is_refused_with_the_fix(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def vector(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None])

    graph = helper.make_graph([helper.make_node("Identity", ["waveform"], ["out"])], "g",
                              [vector("waveform")], [vector("out")])
    path = tmp_path / "not-vggish.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(SetupError, match="front end"):
        LogMel(path)


@pytest.mark.tensorflow
def test_the_frames_are_the_tensorflow_models_own_log_mel(model):
    """The part is the graph the stand-in was converted from (its TensorFlow front end)."""
    pytest.importorskip("tensorflow")
    from standins import log_mel_patches

    wave = noise(5 * 0.96, seed=1)
    wave = np.concatenate([wave, np.zeros(LOOKAHEAD_SAMPLES, np.float32)])
    want = np.asarray(log_mel_patches(wave)).reshape(-1, 64)
    got = np.concatenate(list(LogMel(model).frames([wave[:-LOOKAHEAD_SAMPLES]])))
    assert len(wave) - LOOKAHEAD_SAMPLES == 5 * INSTANCE_SAMPLES
    np.testing.assert_allclose(got, want[:len(got)], atol=1e-4)


def test_a_model_in_a_read_only_folder_has_its_front_end_cut_in_memory(model, monkeypatch):
    from instag.features import vggish_onnx

    def refused(target, proto):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(vggish_onnx, "write_part", refused)
    part = log_mel_beside(model)
    assert isinstance(part, bytes)
    frames = np.concatenate(list(LogMel(model).frames([noise(2 * 0.96)])))
    assert frames.shape == (192, 64)
