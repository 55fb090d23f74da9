"""VGGish in reduced precision: INT8 for CPUs (onnxruntime's static QDQ quantisation, INT8
weights per output channel, activations calibrated on real or music-like audio) and FP16 for
CUDA (onnxruntime's float16 conversion). The log-mel front end stays FP32 in both (a log is
taken of what its MatMuls give, which INT8 would ruin near silence), and in INT8 any network
layer that breaks parity stays FP32 too.

This module makes the models and measures feature parity; whether one is kept (features AND
tags, with the installed scoring model) is `provision.int8`'s decision, made by `instag
setup` on the user's machine, since stand-in weights say nothing of the real model's. A kept
model lives beside the FP32 one (`vggish-...-int8.onnx`, its figures in `.json`); a refused one
leaves `.int8-refused` (its figures), remembered like a refused conversion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from instag.common.atomic import atomic_path
from instag.common.devices import Device
from instag.common.downloads import file_digest
from instag.common.enums import TextEnum
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.quiet import native_stderr_silenced
from instag.features import vggish_onnx
from instag.features.pca import postprocess

LAYER_OPS = ("Conv", "MatMul", "Gemm")  # what INT8 quantises; everything else stays FP32
MIN_WITHIN_ONE = 0.99  # share of uint8 feature values within one step of FP32's
MIN_TAG_AGREEMENT = 0.995  # share of (clip, instrument) decisions equal to FP32's
MIN_PRESENT_AGREEMENT = 0.99  # the same, over the pairs FP32 calls present
MIN_HELD_OUT_CLIPS = 200


class Precision(TextEnum):
    FP32 = "fp32"
    INT8 = "int8"  # CPUs
    FP16 = "fp16"  # CUDA


def model_path(fp32: Path, precision: Precision) -> Path:
    return fp32.with_name(f"{fp32.stem}-{precision}.onnx")


def refused_marker(fp32: Path, precision: Precision) -> Path:
    return fp32.with_suffix(f".{precision}-refused")


def find(handle: str, precision: Precision) -> Path | None:
    """The kept model of this precision for `handle`'s current SavedModel, if setup kept one."""
    fp32 = vggish_onnx.find(handle)
    path = model_path(fp32, precision) if fp32 is not None else None
    return path if path is not None and path.is_file() else None


def _doc(path: Path | None) -> dict | None:
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def refused(handle: str, precision: Precision) -> dict | None:
    """The figures of a model setup refused for this SavedModel (not judged again on each run;
    `instag setup --int8 --force` judges again)."""
    fp32 = vggish_onnx.find(handle)
    return _doc(refused_marker(fp32, precision) if fp32 is not None else None)


def figures(handle: str, precision: Precision) -> dict | None:
    """The parity figures of the kept model."""
    path = find(handle, precision)
    return _doc(path.with_suffix(".json") if path is not None else None)


def require_kept(handle: str, precision: Precision) -> Path:
    """The model `--precision` runs, or one line saying why there is none."""
    path = find(handle, precision)
    if path is not None:
        return path
    if (doc := refused(handle, precision)) is not None:
        raise InstagError(
            f"--precision {precision}: setup refused the {precision.upper()} VGGish here "
            f"(features within one step {doc['features_within_one']:.2%}, tags agree "
            f"{doc['tags_agree']:.2%}: below the parity rule)", "tag in FP32 (the default), "
            "or `instag setup --int8 --force` to judge again")
    where = "" if precision is Precision.INT8 else " (made on a machine with CUDA)"
    raise InstagError(f"--precision {precision}: no {precision.upper()} VGGish on this machine",
                      f"run `instag setup --int8`{where}: it makes one and keeps it only at "
                      "parity")


def digest(path: Path) -> str:
    """A reduced model's content digest: part of the features' identity."""
    return file_digest(path)


def front_end_end(model) -> int:
    """Where the network starts: the first Conv (ONNX lists nodes in topological order)."""
    nodes = list(model.graph.node)
    return next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), len(nodes))


def network_layers(model) -> list[str]:
    """The quantisable layers of the network: Conv/MatMul/Gemm nodes from the first Conv on;
    the front end's STFT and mel MatMuls before it are not."""
    return [n.name for n in list(model.graph.node)[front_end_end(model):]
            if n.op_type in LAYER_OPS]


class _Calibration:
    """onnxruntime's calibration reader over waveforms."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self.waves = iter(waves)

    def get_next(self) -> dict | None:
        wave = next(self.waves, None)
        return None if wave is None else {vggish_onnx.INPUT: np.asarray(wave, np.float32)}


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """onnxruntime's quantiser logs advice as warnings on the root logger: not the user's."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize(fp32: Path, calibration: Sequence[np.ndarray], layers: Sequence[str]) -> bytes:
    """The model with `layers` in INT8 (static QDQ, per-channel weights, MinMax activations
    calibrated on `calibration`), the rest FP32."""
    q = require("onnxruntime.quantization")
    with tempfile.TemporaryDirectory(prefix="instag-int8-") as tmp, native_stderr_silenced(), \
            _quiet_logging():
        out = Path(tmp) / "int8.onnx"
        q.quantize_static(str(fp32), str(out), _Calibration(calibration),
                          quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_quantize=list(layers), op_types_to_quantize=list(LAYER_OPS),
                          calibrate_method=q.CalibrationMethod.MinMax)
        return out.read_bytes()


def fp16(fp32: Path) -> bytes:
    """The network in float16 for CUDA (onnxruntime's converter), the front end kept FP32 and
    the graph's input and output still float32, so callers see no difference."""
    onnx = require("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32))
    front = [n.name for n in list(model.graph.node)[:front_end_end(model)]]
    with native_stderr_silenced():
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=front,
                                        disable_shape_infer=True)
    seen: set[str] = set()
    for node in half.graph.node:  # the converter can name two of its casts alike
        while node.name in seen:
            node.name += "_"
        seen.add(node.name)
    return half.SerializeToString()


def features_of(model: Path | bytes, waves: Sequence[np.ndarray], eigen_vectors: np.ndarray,
                means: np.ndarray, device: Device | str = Device.CPU) -> list[np.ndarray]:
    """uint8 features [instances, 128] of each waveform through `model`."""
    run = vggish_onnx.OnnxVggish(model, device)
    return [postprocess(run(w), eigen_vectors, means) for w in waves]


def within_one(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Share of uint8 values that differ by at most one step."""
    diff = np.concatenate([np.abs(x.astype(np.int16) - y.astype(np.int16)).ravel()
                           for x, y in zip(a, b, strict=True)])
    return float(np.mean(diff <= 1)) if diff.size else 0.0


def keep(fp32: Path, precision: Precision, model: bytes, doc: dict) -> Path:
    """Keep a model that passed, with its figures; forget an earlier refusal."""
    path = model_path(fp32, precision)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
    refused_marker(fp32, precision).unlink(missing_ok=True)
    vggish_onnx.parts_beside(path)  # cut now: no run pays for it
    return path


def refuse(fp32: Path, precision: Precision, doc: dict) -> None:
    """Remember a refusal with its figures; a model kept before goes."""
    model_path(fp32, precision).unlink(missing_ok=True)
    model_path(fp32, precision).with_suffix(".json").unlink(missing_ok=True)
    with atomic_path(refused_marker(fp32, precision)) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
