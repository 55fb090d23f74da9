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
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.atomic import atomic_path
from instag.common.devices import Device
from instag.common.downloads import folder_digest
from instag.common.errors import InstagError
from instag.common.extras import installed, require
from instag.common.onnxsession import choose_providers, open_session
from instag.common.quiet import native_stderr_silenced
from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
from instag.features.pca import postprocess
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
            import tf2onnx

            spec = [tf.TensorSpec([None], tf.float32, name=INPUT)]
            wrapped = tf.function(lambda waveform: hub_model(waveform), input_signature=spec)
            proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=spec, opset=17)
    except Exception as e:  # the converter's own failures come in many types
        raise InstagError(f"tf2onnx could not convert VGGish ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})",
                          "VGGish runs on TensorFlow instead") from e
    wave = probe_audio()
    want = np.asarray(hub_model(wave))
    got = OnnxVggish(proto.SerializeToString())(wave)
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
        tmp.write_bytes(proto.SerializeToString())
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"handle": handle, **asdict(parity)}, indent=2))
    halves_beside(path)  # cut now, in the process that converts: no run pays for it
    return path, parity


def parity_of(path: Path) -> Parity | None:
    try:
        doc = json.loads(path.with_suffix(".json").read_text())
        return Parity(doc["raw_max_diff"], doc["uint8_equal"])
    except (OSError, ValueError, KeyError):
        return None


def halves(model: Path | bytes) -> tuple[bytes, bytes] | None:
    """The graph cut where the network starts (the first Conv's input: the log-mel patches):
    the front end (16 kHz samples -> patches, one per window) and the network (patches -> raw
    [N, 128]). None where the cut does not part the graph in two (a model of another shape),
    or where onnx (the `train` extra) is not installed: a base install runs the whole graph."""
    if not installed("onnx"):
        return None
    onnx = require("onnx")
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    conv = next((n for n in proto.graph.node if n.op_type == "Conv"), None)
    if conv is None:
        return None
    cut, out = conv.input[0], proto.graph.output[0].name
    if cut not in {v.name for v in proto.graph.value_info}:  # the extractor wants its type
        proto.graph.value_info.append(onnx.helper.make_tensor_value_info(
            cut, onnx.TensorProto.FLOAT, None))
    try:
        extractor = onnx.utils.Extractor(proto)
        front = extractor.extract_model([INPUT], [cut])
        network = extractor.extract_model([cut], [out])
    except Exception:  # noqa: BLE001 - onnx's own errors come in many types: no split
        return None
    if {i.name for i in network.graph.input} != {cut}:
        return None  # the network would need the samples too: no clean cut
    return front.SerializeToString(), network.SerializeToString()


def halves_beside(path: Path) -> tuple[Path | bytes, Path | bytes] | None:
    """`halves` of a model file, cut once and kept beside it (cutting a 290 MB graph takes
    seconds and a gigabyte), named by the file's size and mtime so that a model made anew is
    cut anew; None where it does not cut (or the folder is read-only: then in memory)."""
    stat = path.stat()
    key = f"{stat.st_size}-{stat.st_mtime_ns}"
    front, network = (path.with_name(f"{path.stem}.{key}.{part}.onnx")
                      for part in ("front", "network"))
    if front.is_file() and network.is_file():
        return front, network
    parts = halves(path)
    if parts is None:
        return None
    try:
        for old in path.parent.glob(f"{path.stem}.*.*.onnx"):  # an earlier model's halves
            old.unlink(missing_ok=True)
        for target, data in zip((front, network), parts, strict=True):
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
    except OSError:
        return parts  # in memory: bytes serve as well
    return front, network


class OnnxVggish:
    """The converted model, called like the hub model: 16 kHz samples -> raw [N, 128]; `many`
    embeds chunks of several files in one network call. It runs as two sessions, front end and
    network (`halves`), so that the patches of many chunks fill one call with nothing wasted
    (the whole graph on the chunks end to end would compute a window across each joint)."""

    def __init__(self, model: Path | bytes, device: Device | str = Device.AUTO,
                 threads: int | None = None) -> None:
        providers = choose_providers(device)
        parts = halves(model) if isinstance(model, bytes) else halves_beside(Path(model))
        self.front = open_session(parts[0], providers, threads) if parts else None
        self.session = open_session(parts[1] if parts else model, providers, threads)
        self.provider = self.session.get_providers()[0]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return self.many([wave])[0]

    def many(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Raw embeddings of each chunk (whole windows and the lookahead each)."""
        if self.front is None:  # one graph: a call per chunk
            return [self.session.run(None, {INPUT: np.asarray(c, np.float32)})[0]
                    for c in chunks]
        patches = [self.front.run(None, {INPUT: np.asarray(c, np.float32)})[0] for c in chunks]
        name = self.session.get_inputs()[0].name
        raw = self.session.run(None, {name: np.concatenate(patches)})[0]
        return np.split(raw, np.cumsum([len(p) for p in patches])[:-1])
