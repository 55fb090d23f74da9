"""VGGish in reduced precision: INT8 for CPUs (onnxruntime's static QDQ quantisation, INT8
weights per output channel, activations calibrated on real or music-like audio) and FP16 for
CUDA (onnxruntime's float16 conversion). The log-mel front end stays FP32 in both (a log is
taken of what its MatMuls give, which INT8 would ruin near silence), and in INT8 any network
layer that breaks parity stays FP32 too.

This module makes the models and measures them; whether one is kept (judged by the tags a user
sees, with the installed scoring model) is `provision.int8`'s decision, made by `instag setup`
on the user's machine, since stand-in weights say nothing of the real model's. A kept
model lives beside the FP32 one (`vggish-...-int8.onnx`, its figures in `.json`); a refused one
leaves `.int8-refused` (its figures), remembered like a refused conversion.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
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
# The rule a reduced model is kept by: what a user sees when tagging. Its features are reported,
# not judged (they carry their own identity in the cache, and never train or verify).
MIN_TAG_AGREEMENT = 0.995  # share of (clip, instrument) decisions equal to FP32's
MIN_PRESENT_AGREEMENT = 0.99  # the same, over the pairs FP32 calls present
MAX_PROBABILITY_DIFF = 0.02  # a bag probability this close to FP32's is "the same"
MIN_PROBABILITIES_CLOSE = 0.99  # share of (clip, instrument) probabilities that close
RULE = {"tags_agree": MIN_TAG_AGREEMENT, "present_agree": MIN_PRESENT_AGREEMENT,
        "probabilities_close": MIN_PROBABILITIES_CLOSE,
        "probability_diff": MAX_PROBABILITY_DIFF}
MIN_HELD_OUT_CLIPS = 200
CALIBRATION_BATCH = 2  # clips whose activations calibration holds at once


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
    `instag setup --only-int8 --force` judges again)."""
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
        why = "; ".join(doc.get("failed") or ["it missed the parity rule"])
        raise InstagError(
            f"--precision {precision}: setup refused the {precision.upper()} VGGish here ({why})",
            "tag in FP32 (the default), or `instag setup --only-int8 --force` to judge again")
    where = "" if precision is Precision.INT8 else " (made on a machine with CUDA)"
    raise InstagError(f"--precision {precision}: no {precision.upper()} VGGish on this machine",
                      f"run `instag setup --only-int8`{where}: it makes one and keeps it only "
                      "where its tags are FP32's")


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


def layer_words(model) -> dict[str, str]:
    """Each network layer's name in words ("conv layer 5", "fully connected layer 2"), by its
    place in the network: a graph node's path (`StatefulPartitionedCall/.../convolution`) says
    nothing to a user."""
    kinds = {n.name: n.op_type for n in model.graph.node}
    counts: dict[str, int] = {}
    words = {}
    for name in network_layers(model):
        kind = "conv" if kinds[name] == "Conv" else "fully connected"
        counts[kind] = counts.get(kind, 0) + 1
        words[name] = f"{kind} layer {counts[kind]}"
    return words


class _Calibration:
    """onnxruntime's calibration reader over waveforms, read a range at a time (strided
    calibration: see `quantize`)."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self.all = list(waves)
        self.waves = iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.waves = iter(self.all[start_index:end_index])

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


def quantize(fp32: Path, calibration: Sequence[np.ndarray], layers: Sequence[str],
             ranges: Path | None = None) -> bytes:
    """The model with `layers` in INT8 (static QDQ, per-channel weights, MinMax activations
    calibrated on `calibration`), the rest FP32. With `ranges` (a file path), the activation
    ranges are measured once and kept there, so a second call with other layers quantises
    without calibrating again (the bulk of the time; onnxruntime >= 1.24; older ones
    calibrate each time)."""
    q = require("onnxruntime.quantization")
    cache = {"calibration_cache_path": str(ranges)} if ranges is not None and \
        "calibration_cache_path" in inspect.signature(q.quantize_static).parameters else {}
    with tempfile.TemporaryDirectory(prefix="instag-int8-") as tmp, native_stderr_silenced(), \
            _quiet_logging():
        out = Path(tmp) / "int8.onnx"
        q.quantize_static(str(fp32), str(out), _Calibration(calibration),
                          quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_quantize=list(layers), op_types_to_quantize=list(LAYER_OPS),
                          calibrate_method=q.CalibrationMethod.MinMax, **cache,
                          # ranges merged every few clips (exact for MinMax), so calibration
                          # never holds the outputs of all its clips at once
                          extra_options={"CalibStridedMinMax": math.gcd(len(calibration),
                                                                        CALIBRATION_BATCH)})
        return out.read_bytes()


def _dequantised_twins(model) -> dict[str, str]:
    """Each activation a QDQ model quantises -> the tensor its consumers see instead
    (T -> QuantizeLinear -> DequantizeLinear -> T'); weights (initialisers) are not listed."""
    nodes = model.graph.node
    produced = {o for n in nodes for o in n.output}
    dq = {n.input[0]: n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    return {n.input[0]: dq[n.output[0]] for n in nodes
            if n.op_type == "QuantizeLinear" and n.input[0] in produced and n.output[0] in dq}


def _by_channel(x: np.ndarray) -> np.ndarray:
    """[values, channels], channels on axis 1 (NCHW and [N, features] alike)."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if x.ndim > 1 else x.reshape(-1, 1)


def _channel_error(exact: np.ndarray, rounded: np.ndarray) -> float:
    """Mean over channels (axis 1) of the RMS rounding error relative to the channel's RMS: a
    tensor whose range one channel stretches loses the others whole (error ~1 each)."""
    a, b = _by_channel(exact), _by_channel(rounded)
    rms = np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=0))
    err = np.sqrt(np.mean(np.square(a - b, dtype=np.float64), axis=0))
    return float(np.mean(err / np.maximum(rms, 1e-6)))


def layer_errors(model: bytes, layers: Sequence[str], waves: Sequence[np.ndarray]
                 ) -> dict[str, float]:
    """Each INT8 layer's own rounding error, from one run of the QDQ model (onnxruntime's
    `qdq_loss_debug` idea): of each activation the layer quantises (its inputs and output),
    how far the dequantised values are from the float ones they stand for; a layer's figure is
    its worst. Upstream error does not count against a layer, so one run ranks them all, where
    quantising and judging each layer alone would cost a model and a judgement per layer."""
    onnx, ort = require("onnx"), require("onnxruntime")
    qdq = onnx.load_from_string(model)
    twins = _dequantised_twins(qdq)
    exact = {v: k for k, v in twins.items()}
    watched = {n.name: [exact[i] for i in n.input if i in exact] +
               [o for o in n.output if o in twins] for n in qdq.graph.node if n.name in layers}
    tensors = sorted({t for ts in watched.values() for t in ts})
    names = [*tensors, *(twins[t] for t in tensors)]
    qdq.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names)
    with native_stderr_silenced():
        session = ort.InferenceSession(qdq.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    errors: dict[str, list[float]] = {t: [] for t in tensors}
    for wave in waves:
        out = dict(zip(names, session.run(names, {vggish_onnx.INPUT: wave}), strict=True))
        for t in tensors:
            errors[t].append(_channel_error(out[t], out[twins[t]]))
    return {layer: max((float(np.mean(errors[t])) for t in ts), default=0.0)
            for layer, ts in watched.items()}


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
