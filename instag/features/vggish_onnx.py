"""VGGish on onnxruntime: the hub model converted once (tf2onnx), and kept only if it reproduces
the hub model.

The conversion runs at `instag setup`, or on first use when only the SavedModel is there. It is
checked against the hub model on generated audio before it is kept: raw embeddings within
1e-4, and uint8 features (after ReLU, PCA, quantisation) identical on at least 99.9 % of values.
A conversion that fails either way is not kept, and VGGish stays on TensorFlow (one line says
why). The converted file lives beside the hub cache, named by the handle and a digest of the
SavedModel, so a new hub model version is converted anew. A run with a converted VGGish never
imports TensorFlow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.atomic import atomic_path, temp_dir
from instag.common.devices import Device
from instag.common.downloads import folder_digest
from instag.common.errors import InstagError
from instag.common.extras import installed, require
from instag.common.onnxsession import choose_providers, open_session
from instag.common.quiet import native_stderr_silenced
from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
from instag.features.pca import postprocess
from instag.features.tfconversion import to_onnx
from instag.features.vggish import load_vggish

MAX_RAW_DIFF = 1e-4
MIN_UINT8_EQUAL = 0.999
INPUT = "waveform"
# the converter pair the tests convert VGGish with (tf2onnx has broken on new TensorFlows
# before): the `setup` extra pins exactly these, and `instag doctor` says whether they are here
TESTED_CONVERTERS = {"tensorflow": "2.21.0", "tf2onnx": "1.17.0"}


@dataclass(frozen=True)
class Parity:
    raw_max_diff: float
    uint8_equal: float

    @property
    def passed(self) -> bool:
        return self.raw_max_diff <= MAX_RAW_DIFF and self.uint8_equal >= MIN_UINT8_EQUAL


def converted_path(handle: str) -> Path | None:
    """Where the ONNX form of this handle's current SavedModel is (or would be) kept; None
    while the SavedModel itself is not on this machine."""
    saved = locations.hub_cached(handle)
    if saved is None:
        return None
    key = hashlib.sha1(locations.fetched_as(handle).encode()).hexdigest()[:16]
    digest = saved_model_digest(saved)[:16]  # the whole SavedModel: new variables, new file
    return locations.tfhub_cache_dir() / "onnx" / f"vggish-{key}-{digest}.onnx"


@functools.cache
def _digest(saved: Path, stats: tuple) -> str:
    """Remembered beside the hub cache, by the files' names, sizes and mtimes: hashing the
    290 MB SavedModel on every run would cost each cron run a quarter second."""
    key = hashlib.sha256(repr(stats).encode()).hexdigest()
    memo = locations.tfhub_cache_dir() / "onnx" / f"digest-{key[:32]}.txt"
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = folder_digest(saved)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(memo) as tmp:
            tmp.write_text(digest)
    except OSError:
        pass  # a read-only hub cache: hashed again next run
    return digest


def saved_model_digest(saved: Path) -> str:
    """The SavedModel's content digest, computed once while its files' names, sizes and mtimes
    stay as they were."""
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in sorted(saved.rglob("*")) if p.is_file())
    return _digest(saved, stats)


def find(handle: str) -> Path | None:
    """The kept ONNX VGGish for `handle`, if it was converted and passed its parity check."""
    path = converted_path(handle)
    return path if path is not None and path.is_file() else None


def probe_audio(seconds: float = 12.0) -> np.ndarray:
    """Audio to compare the two runtimes on: tones across VGGish's bands, noise, silence."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * 16000)) / 16000
    x = sum(np.sin(2 * np.pi * f * t) * a for f, a in ((110, .3), (880, .2), (3500, .1),
                                                        (7200, .05)))
    x = x * (t % 3 < 2) + 0.05 * rng.standard_normal(len(t))  # with gaps of near silence
    n = (len(x) - LOOKAHEAD_SAMPLES) // INSTANCE_SAMPLES * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES
    return x[:n].astype(np.float32)


def refused(handle: str) -> str | None:
    """Why this SavedModel's conversion was refused before (it is not tried on every run;
    `instag setup --force` tries again)."""
    path = converted_path(handle)
    marker = path.with_suffix(".refused") if path is not None else None
    return marker.read_text() if marker is not None and marker.is_file() else None


def convert(handle: str, eigen_vectors: np.ndarray, means: np.ndarray) -> tuple[Path, Parity]:
    """Convert the hub model to ONNX and check it; raises InstagError (saying why) when the
    converter cannot handle the graph or the result does not reproduce the hub model, and
    remembers the refusal."""
    path = converted_path(handle)
    if path is None:
        raise InstagError(f"VGGish ({handle}) is not on this machine", "run `instag setup`")
    path.with_suffix(".refused").unlink(missing_ok=True)
    try:
        return _convert(handle, eigen_vectors, means, path)
    except InstagError as e:
        with atomic_path(path.with_suffix(".refused")) as tmp:
            tmp.write_text(e.message)
        raise


def _convert(handle: str, eigen_vectors: np.ndarray, means: np.ndarray,
             path: Path) -> tuple[Path, Parity]:
    hub_model = load_vggish(handle)
    require("tf2onnx")
    try:
        with native_stderr_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow as tf

            spec = [tf.TensorSpec([None], tf.float32, name=INPUT)]
            wrapped = tf.function(lambda waveform: hub_model(waveform), input_signature=spec)
            proto = to_onnx(wrapped, spec, opset=17)
    except Exception as e:  # the converter's own failures come in many types
        raise InstagError(f"tf2onnx could not convert VGGish ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})",
                          "VGGish runs on TensorFlow instead") from e
    with temp_dir(path.parent) as folder:  # checked as runs will run it: from its file
        staged = folder / path.name
        staged.write_bytes(proto.SerializeToString())
        del proto
        wave = probe_audio()
        want = np.asarray(hub_model(wave))
        got = OnnxVggish(staged)(wave)
        if got.shape != want.shape:
            raise InstagError(f"the converted VGGish returns {got.shape}, the hub model "
                              f"{want.shape}", "VGGish runs on TensorFlow instead")
        parity = Parity(float(np.abs(got - want).max()), float(np.mean(
            postprocess(got, eigen_vectors, means) == postprocess(want, eigen_vectors, means))))
        if not parity.passed:
            raise InstagError(f"the converted VGGish does not reproduce the hub model (raw max "
                              f"|diff| {parity.raw_max_diff:.1e}, uint8 equal "
                              f"{parity.uint8_equal:.2%})", "VGGish runs on TensorFlow instead")
        with atomic_path(path) as tmp:
            os.replace(staged, tmp)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"handle": handle, **asdict(parity)}, indent=2))
    parts_beside(path)  # cut now, in the process that converts: no run pays for it
    return path, parity


def parity_of(path: Path) -> Parity | None:
    try:
        doc = json.loads(path.with_suffix(".json").read_text())
        return Parity(doc["raw_max_diff"], doc["uint8_equal"])
    except (OSError, ValueError, KeyError):
        return None


# the network's conv layers run this many windows a call: their activations (~3 MB a window)
# are most of a run's working memory, and a conv costs the same per window at any batch
# size; the dense layers after them take a whole call's windows at once, since they read
# their 270 MB of weights once a call (bench/memory.py: 4 windows kept a whole FP32 run at
# 592-598 MB against 607 with 8, at the same speed)
CONV_BATCH_WINDOWS = 4
EXTERNAL_BYTES = 1 << 16  # weights this large live in a file beside their part, mapped
ALIGN = 1 << 16  # ... each at an offset onnxruntime maps without copying (any page size)
PARTS = ("front", "convs", "dense")  # ("front", "network") where the dense cut fails
PARTS_LAYOUT = "p3"  # in the parts' names: the two-part cut of earlier releases is cut anew


def _source_of(proto, name: str) -> str:
    """The tensor a quantised graph's Quantize/DequantizeLinear chain starts from: a cut there
    leaves each quantised layer whole with its input's chain (else it runs unquantised)."""
    producers = {out: n for n in proto.graph.node for out in n.output}
    while (node := producers.get(name)) is not None and node.op_type in (
            "QuantizeLinear", "DequantizeLinear"):
        name = node.input[0]
    return name


def cut(model: Path | bytes) -> list | None:
    """The graph as parts (onnx protos): the front end (16 kHz samples -> log-mel patches, cut
    at the first Conv's input), the conv layers (patches -> their flattened output) and the
    dense layers (-> raw [N, 128]), cut at the input of the first MatMul/Gemm after that;
    [front, network] where the second cut does not part the network; None where the first
    does not part the graph (a model of another shape) or where onnx (the `train` extra) is
    not installed: a base install runs the whole graph."""
    if not installed("onnx"):
        return None
    onnx = require("onnx")
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    nodes = list(proto.graph.node)  # in topological order
    first = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), None)
    if first is None:
        return None
    conv = _source_of(proto, nodes[first].input[0])
    dense = next((_source_of(proto, n.input[0]) for n in nodes[first:]
                  if n.op_type in ("MatMul", "Gemm")), None)
    known = {v.name for v in proto.graph.value_info}
    for name in {conv, dense} - known - {None}:  # the extractor wants their types
        proto.graph.value_info.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    out = proto.graph.output[0].name
    return ((dense is not None and extract(proto, [INPUT, conv, dense, out]))
            or extract(proto, [INPUT, conv, out]))


def extract(proto, ends: list[str]) -> list | None:
    """The graph between each two consecutive tensors of `ends`; None unless each part needs
    only its own start."""
    onnx = require("onnx")
    try:
        extractor = onnx.utils.Extractor(proto)
        parts = [extractor.extract_model([a], [b]) for a, b in zip(ends, ends[1:], strict=False)]
    except Exception:  # noqa: BLE001 - onnx's own errors come in many types: no split
        return None
    if any({i.name for i in p.graph.input} != {a} for p, a in zip(parts, ends, strict=False)):
        return None
    return parts


def write_part(target: Path, proto) -> None:
    """A part, its large weights in a file beside it (`target` + .data, written first, each
    tensor at an aligned offset): onnxruntime then maps them from the file instead of reading
    a copy of the model and copying each tensor out of it (twice the weights, while a session
    is made)."""
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data

    data, offset = target.with_name(target.name + ".data"), 0
    with atomic_path(data) as tmp, open(tmp, "wb") as f:
        for tensor in proto.graph.initializer:
            if len(tensor.raw_data) < EXTERNAL_BYTES:
                continue
            f.write(bytes(-offset % ALIGN))
            offset += -offset % ALIGN
            f.write(tensor.raw_data)
            set_external_data(tensor, data.name, offset, len(tensor.raw_data))
            offset += len(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
    with atomic_path(target) as tmp:
        tmp.write_bytes(proto.SerializeToString())


def part_path(path: Path, part: str) -> Path:
    """Where part `part` of the model file `path` is kept: named by the file's size and mtime,
    so that a model made anew is cut anew, and by PARTS_LAYOUT."""
    stat = path.stat()
    return path.with_name(f"{path.stem}.{stat.st_size}-{stat.st_mtime_ns}-{PARTS_LAYOUT}."
                          f"{part}.onnx")


def parts_beside(path: Path) -> list[Path | bytes] | None:
    """`cut` of a model file, made once and kept beside it (cutting a 290 MB graph takes
    seconds and a gigabyte), named by the file's size and mtime so that a model made anew is
    cut anew, and by PARTS_LAYOUT; None where it does not cut (or the folder is read-only:
    then in memory)."""
    named = {part: part_path(path, part) for part in (*PARTS, "network")}
    for kept in (PARTS, ("front", "network")):
        if all(named[part].is_file() for part in kept):
            return [named[part] for part in kept]
    parts = cut(path)
    if parts is None:
        return None
    kept = PARTS if len(parts) == 3 else ("front", "network")
    try:
        for old in (*path.parent.glob(f"{path.stem}.*.*.onnx"),  # an earlier model's parts
                    *path.parent.glob(f"{path.stem}.*.*.onnx.data")):
            old.unlink(missing_ok=True)
        for part, proto in zip(kept, parts, strict=True):
            write_part(named[part], proto)
    except OSError:  # in memory: bytes serve as well (cut again: the writing moved weights out)
        return [p.SerializeToString() for p in cut(path)]
    return [named[part] for part in kept]


def _quantised(part: Path | bytes) -> bool:
    """Whether a part runs quantised layers (QDQ: INT8), read without its weights."""
    onnx = require("onnx")
    proto = (onnx.load_from_string(part) if isinstance(part, bytes)
             else onnx.load(str(part), load_external_data=False))
    return any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


class OnnxVggish:
    """The converted model, called like the hub model: 16 kHz samples -> raw [N, 128]; `many`
    embeds chunks of several files in one network call. It runs as sessions of its parts
    (`cut`): the front end per chunk, so that the patches of many chunks fill one call with
    nothing wasted (the whole graph on the chunks end to end would compute a window across
    each joint); the conv layers CONV_BATCH_WINDOWS windows at a time, and the dense layers
    (`session`) on the whole call. Every session is memory-lean (`open_session`); an INT8 model's
    conv layers keep their weights pre-packed (its kernels want them so)."""

    def __init__(self, model: Path | bytes, device: Device | str = Device.AUTO,
                 threads: int | None = None) -> None:
        providers = choose_providers(device)
        if isinstance(model, bytes):
            parts = cut(model)
            parts = parts and [p.SerializeToString() for p in parts]
        else:
            parts = parts_beside(Path(model))
        sessions = [open_session(p, providers, threads, lean=True,
                                 prepack=i == 1 and len(parts) == 3 and _quantised(p))
                    for i, p in enumerate(parts or [model])]
        self.front = sessions[0] if parts else None
        self.convs = sessions[1] if len(sessions) == 3 else None
        self.session = sessions[-1]
        self.provider = self.session.get_providers()[0]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return self.many([wave])[0]

    def many(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Raw embeddings of each chunk (whole windows and the lookahead each)."""
        if self.front is None:  # one graph: a call per chunk
            return [self.session.run(None, {INPUT: np.asarray(c, np.float32)})[0]
                    for c in chunks]
        patches = [self.front.run(None, {INPUT: np.asarray(c, np.float32)})[0] for c in chunks]
        x = np.concatenate(patches)
        if self.convs is not None:
            name = self.convs.get_inputs()[0].name
            x = np.concatenate([self.convs.run(None, {name: x[i:i + CONV_BATCH_WINDOWS]})[0]
                                for i in range(0, max(len(x), 1), CONV_BATCH_WINDOWS)])
        raw = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return np.split(raw, np.cumsum([len(p) for p in patches])[:-1])
