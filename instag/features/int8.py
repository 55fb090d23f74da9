"""An INT8 VGGish: the converted ONNX VGGish quantised by onnxruntime (static QDQ, INT8 weights
per output channel, activations calibrated on real or music-like audio), its log-mel front end
left in FP32, and any network layer that breaks parity left in FP32 too.

This module makes the model and measures feature parity; whether it is kept (features AND tags,
with the installed scoring model) is `provision.int8`'s decision, made by `instag setup` on the
user's machine, since stand-in weights say nothing of the real model's. A kept model lives
beside the FP32 one (`vggish-...-int8.onnx`, with its figures in `.json`); a refused one
leaves `.int8-refused` (its figures), remembered like a refused conversion.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from instag.common.atomic import atomic_path
from instag.common.downloads import file_digest
from instag.common.enums import TextEnum
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.quiet import native_stderr_silenced
from instag.features import vggish_onnx
from instag.features.pca import postprocess

LAYER_OPS = ("Conv", "MatMul", "Gemm")  # what is quantised; everything else stays FP32
MIN_WITHIN_ONE = 0.99  # share of uint8 feature values within one step of FP32's
MIN_TAG_AGREEMENT = 0.995  # share of (clip, instrument) decisions equal to FP32's
MIN_PRESENT_AGREEMENT = 0.99  # the same, over the pairs FP32 calls present
MIN_HELD_OUT_CLIPS = 200


class Precision(TextEnum):
    FP32 = "fp32"
    INT8 = "int8"


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}-int8.onnx")


def refused_marker(fp32: Path) -> Path:
    return fp32.with_suffix(".int8-refused")


def find(handle: str) -> Path | None:
    """The kept INT8 VGGish for `handle`'s current SavedModel, if setup made and kept one."""
    fp32 = vggish_onnx.find(handle)
    path = int8_path(fp32) if fp32 is not None else None
    return path if path is not None and path.is_file() else None


def refused(handle: str) -> dict | None:
    """The figures of an INT8 model setup refused for this SavedModel (not tried again on each
    run; `instag setup --int8 --force` tries again)."""
    fp32 = vggish_onnx.find(handle)
    try:
        return json.loads(refused_marker(fp32).read_text()) if fp32 is not None else None
    except (OSError, ValueError):
        return None


def figures(handle: str) -> dict | None:
    """The parity figures of the kept INT8 model."""
    path = find(handle)
    try:
        return json.loads(path.with_suffix(".json").read_text()) if path else None
    except (OSError, ValueError):
        return None


def require_kept(handle: str) -> Path:
    """The INT8 model `--precision int8` runs, or one line saying why there is none."""
    path = find(handle)
    if path is not None:
        return path
    if (doc := refused(handle)) is not None:
        raise InstagError(
            f"--precision int8: setup refused the INT8 VGGish here (features within one step "
            f"{doc['features_within_one']:.2%}, tags agree {doc['tags_agree']:.2%}: below the "
            "parity rule)", "tag in FP32 (the default), or `instag setup --int8 --force` to "
            "try again")
    raise InstagError("--precision int8: no INT8 VGGish on this machine",
                      "run `instag setup --int8` (it makes one and keeps it only at parity)")


def digest(path: Path) -> str:
    """The INT8 model's content digest: part of the features' identity."""
    return file_digest(path)


def network_layers(model) -> list[str]:
    """The quantisable layers of the network: Conv/MatMul/Gemm nodes from the first Conv on
    (ONNX lists nodes in topological order). The front end before it (the STFT and mel
    MatMuls: a log is taken of what they give, which INT8 would ruin near silence) is not."""
    nodes = list(model.graph.node)
    first = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), len(nodes))
    return [n.name for n in nodes[first:] if n.op_type in LAYER_OPS]


class _Calibration:
    """onnxruntime's calibration reader over waveforms."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self.waves = iter(waves)

    def get_next(self) -> dict | None:
        wave = next(self.waves, None)
        return None if wave is None else {vggish_onnx.INPUT: np.asarray(wave, np.float32)}


def quantize(fp32: Path, calibration: Sequence[np.ndarray], layers: Sequence[str]) -> bytes:
    """The model with `layers` in INT8 (static QDQ, per-channel weights, MinMax activations
    calibrated on `calibration`), the rest FP32."""
    q = require("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="instag-int8-") as tmp, native_stderr_silenced():
        out = Path(tmp) / "int8.onnx"
        q.quantize_static(str(fp32), str(out), _Calibration(calibration),
                          quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_quantize=list(layers), op_types_to_quantize=list(LAYER_OPS),
                          calibrate_method=q.CalibrationMethod.MinMax,
                          extra_options={"CalibTensorRangeSymmetric": False})
        return out.read_bytes()


def features_of(model: Path | bytes, waves: Sequence[np.ndarray], eigen_vectors: np.ndarray,
                means: np.ndarray) -> list[np.ndarray]:
    """uint8 features [instances, 128] of each waveform through `model`."""
    run = vggish_onnx.OnnxVggish(model, "cpu")
    return [postprocess(run(w), eigen_vectors, means) for w in waves]


def within_one(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Share of uint8 values that differ by at most one step."""
    diff = np.concatenate([np.abs(x.astype(np.int16) - y.astype(np.int16)).ravel()
                           for x, y in zip(a, b, strict=True)])
    return float(np.mean(diff <= 1)) if diff.size else 0.0


def save(fp32: Path, model: bytes, doc: dict) -> Path:
    """Keep an INT8 model that passed, with its figures; forget an earlier refusal."""
    path = int8_path(fp32)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
    refused_marker(fp32).unlink(missing_ok=True)
    return path


def refuse(fp32: Path, doc: dict) -> None:
    """Remember a refusal with its figures; any INT8 model kept before goes."""
    int8_path(fp32).unlink(missing_ok=True)
    int8_path(fp32).with_suffix(".json").unlink(missing_ok=True)
    with atomic_path(refused_marker(fp32)) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
