"""VGGish embeddings in OpenMIC-2018's feature space: hub model -> ReLU -> PCA -> uint8.

The hub model maps a 16 kHz waveform to one raw 128-d embedding per non-overlapping 0.96 s
window, *before* the final ReLU; OpenMIC's features were made with the ReLU, then PCA-whitened,
clipped to [-2, 2] and quantised to 8 bits. ``Embedder`` does all of that on chunks of whole
instances (see ``instances``), several files' chunks in one VGGish call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.devices import Device
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.features import FEATURES_VERSION, vggish_onnx
from instag.features import precision as at_precision
from instag.features.decode import AudioError
from instag.features.instances import (
    INSTANCE_SAMPLES,
    LOOKAHEAD_SAMPLES,
    Chunker,
    Features,
    check_features,
    chunk_instances,
)
from instag.features.pca import load_pca, postprocess
from instag.features.precision import Precision
from instag.features.resample import DEFAULT_RESAMPLER, Resampler, stream_16k
from instag.features.vggish import load_vggish, tensorflow_installed

# What a scoring model's input is; exported into every model's metadata.
FEATURE_SPEC = "VGGish (tfhub google/vggish/1) + ReLU + PCA (vggish_pca_params) + uint8, 0.96 s"


class Embedder:
    """VGGish + PCA: turns files, blocks or chunks of 16 kHz audio into OpenMIC features.

    VGGish is loaded on first use (once per process), so a run that finds everything cached
    loads nothing. It runs on onnxruntime when its converted form is kept (converted now, on
    first use, if only the SavedModel is here), else on TensorFlow; `runtime` says which, and
    `note` hears why. `identity` names everything the features depend on (the cache's key): the
    runtime is not part of it, since a converted model is kept only if it reproduces the hub
    model's features."""

    def __init__(self, vggish: str | None = None, pca: str | Path | None = None,
                 resampler: Resampler | str = DEFAULT_RESAMPLER, device: Device | str =
                 Device.AUTO, note: Callable[[str], None] | None = None,
                 precision: Precision | str = Precision.FP32) -> None:
        self.handle = locations.vggish_handle(vggish)
        self.pca_path = locations.pca_params(pca)
        self.eigen_vectors, self.means = load_pca(self.pca_path)
        self.resampler = Resampler(resampler)
        self._pca_digest = file_digest(self.pca_path)
        self._identity: str | None = None
        self.device = device
        self.note = note or (lambda message: None)
        self.runtime = ""  # which VGGish runs, once loaded
        self._model = None
        self._loading: threading.Thread | None = None
        self._loaded = threading.Event()  # set when the thread's load has ended, either way
        self._load_error: BaseException | None = None
        self.precision = Precision(precision)  # INT8, FP16: the model setup made and kept

    @property
    def identity(self) -> str:
        """What the features are of: VGGish's content (the SavedModel's digest: the handle
        names it, the bytes are it), the PCA file's sha256, the resampler, instag's feature
        code version, and the reduced model's digest when it runs in INT8 or FP16. Known once
        VGGish is on this machine (`fetch_if_missing`)."""
        if self._identity is None:
            saved = locations.hub_cached(self.handle)
            if saved is None:
                raise InstagError(f"VGGish ({self.handle}) is not on this machine yet",
                                  "run `instag setup`")
            parts = [f"vggish:{vggish_onnx.saved_model_digest(saved)[:16]}", self._pca_digest,
                     self.resampler.identity, f"features:{FEATURES_VERSION}"]
            if self.precision is not Precision.FP32:  # its features are its own: never mixed
                model = at_precision.require_kept(self.handle, self.precision)
                parts.append(f"{self.precision}:{at_precision.digest(model)[:16]}")
            self._identity = "|".join(parts)
        return self._identity

    def fetch_if_missing(self) -> None:
        """VGGish loads on first use (a cached re-run never needs it), but one that cannot be
        had is known now: one not on this machine is fetched, and a run that cannot load it
        (not converted to ONNX, and no TensorFlow to convert it) fails before it starts."""
        if vggish_onnx.find(self.handle) is None and not tensorflow_installed():
            raise InstagError(
                f"VGGish ({self.handle}) has not been converted to ONNX on this machine, and "
                "TensorFlow, which fetches and converts it, is not installed",
                "pip install 'instag[setup]' and run `instag setup`, or copy the hub cache "
                f"(with its onnx/ folder) of a set-up machine to {locations.tfhub_cache_dir()}")
        if locations.hub_cached(self.handle) is None:
            self.model  # noqa: B018 - loads it
        if self.precision is not Precision.FP32:
            at_precision.require_kept(self.handle, self.precision)

    def load_soon(self) -> None:
        """Start loading VGGish in a thread: a run that has files to embed needs it, and the
        load (a second for the full network) then overlaps its decode workers' start. `model`
        waits for it, and raises what it raised; `settle` waits for it without using it. Both
        wait on an Event, never in `Thread.join`: on Python 3.11 a Ctrl-C that interrupts a
        join marks the still running thread as stopped, and the process would then exit under
        it."""
        if self._model is None and self._loading is None:
            self._loaded.clear()
            self._loading = threading.Thread(target=self._load_aside, name="instag-vggish-load")
            self._loading.start()

    def settle(self) -> None:
        """Wait for a load in progress (what it raised is kept for `model`). A run stopped
        meanwhile (Ctrl-C) ends only then: a thread still inside onnxruntime while the process
        exits ends it by SIGABRT. (Not a daemon either, for a caller that never settles.)"""
        if self._loading is not None:
            self._loaded.wait()

    def _load_aside(self) -> None:
        try:
            self._model = self._load()
        except BaseException as e:  # noqa: BLE001 - raised where the model is asked for
            self._load_error = e
        finally:
            self._loaded.set()

    @property
    def model(self):
        if self._loading is not None:
            self._loaded.wait()
            self._loading.join()  # (ending: its load has)
            self._loading = None
            if (error := self._load_error) is not None:
                self._load_error = None
                raise error
        if self._model is None:
            self._model = self._load()
        return self._model

    def onnx_file(self) -> Path | None:
        """The ONNX VGGish this embedder runs (INT8, FP16 where asked), None if none is kept."""
        if self.precision is not Precision.FP32:
            return at_precision.require_kept(self.handle, self.precision)
        return vggish_onnx.find(self.handle)

    def _load(self):
        if self.precision is not Precision.FP32:
            model = vggish_onnx.OnnxVggish(at_precision.require_kept(self.handle, self.precision),
                                           self.device)
            self.runtime = f"onnxruntime {self.precision.upper()} ({model.provider})"
            return model
        path = vggish_onnx.find(self.handle)
        if path is None and (why := vggish_onnx.refused(self.handle)):
            self.note(f"VGGish stays on TensorFlow: {why} (`instag setup --force` tries again)")
        elif path is None and locations.hub_cached(self.handle) is not None:
            try:
                path, parity = vggish_onnx.convert(self.handle, self.eigen_vectors, self.means)
                self.note(f"VGGish converted to ONNX once, {path}: raw max |diff| "
                          f"{parity.raw_max_diff:.1e}, uint8 equal {parity.uint8_equal:.2%}")
            except InstagError as e:
                self.note(f"VGGish stays on TensorFlow: {e.message}")
        if path is None:
            self.runtime = "tensorflow"
            return load_vggish(self.handle)
        model = vggish_onnx.OnnxVggish(path, self.device)
        self.runtime = f"onnxruntime ({model.provider})"
        return model

    def raw(self, wave: np.ndarray) -> np.ndarray:
        """The hub model's raw embeddings [N, 128] for 16 kHz samples."""
        out = np.asarray(self.model(np.asarray(wave, np.float32)))
        if out.ndim != 2 or out.shape[1] != 128:
            raise InstagError(f"{self.handle}: returned shape {out.shape}, expected [N, 128]",
                              "pass the VGGish hub model")
        return out

    def embed_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray | None]:
        """Features of several chunks (from any files) in one VGGish call."""
        model = self.model if isinstance(self.model, vggish_onnx.OnnxVggish) else self.raw
        return embed_chunks(model, chunks, self.eigen_vectors, self.means) if chunks else []

    def embed_blocks(self, blocks: Iterable[np.ndarray]) -> Features:
        """Features of consecutive 16 kHz blocks (a waveform is one block)."""
        chunker = Chunker()
        feats = []
        for block in blocks:
            feats += self.embed_chunks(chunker.push(np.asarray(block, np.float32)))
        feats += self.embed_chunks(chunker.finish())
        if any(f is None for f in feats):
            raise AudioError("audio", NON_FINITE)
        return Features.from_parts(feats, chunker.samples)

    def embed_file(self, path: str | Path) -> Features:
        """Decode, resample and embed one file in this process. A bad, empty or too short file
        raises AudioError with its status, for the caller to report and move on."""
        try:
            feats = self.embed_blocks(stream_16k(path, self.resampler))
        except AudioError as e:
            raise AudioError(path, e.reason, e.status) from None
        return check_features(path, feats)


NON_FINITE = "VGGish gave non-finite embeddings (NaN or infinity) for it"


def embed_chunks(raw: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray],
                 eigen_vectors: np.ndarray, means: np.ndarray) -> list[np.ndarray | None]:
    """uint8 features of each chunk, from one call of `raw` (16 kHz samples -> raw [N, 128]);
    None for a chunk whose embeddings are not finite (quantised, NaN would become confident
    features: the caller fails that chunk's file, only it). An ONNX VGGish embeds the chunks'
    patches in one network call (`OnnxVggish.many`); TensorFlow's takes them end to end, each
    padded to whole windows so the next starts on a window boundary, and the one window per
    chunk that straddles the padding is computed and dropped."""
    if isinstance(raw, vggish_onnx.OnnxVggish):
        raws = raw.many(chunks)
    elif len(chunks) == 1:
        raws = [raw(chunks[0])]
    else:
        pad = INSTANCE_SAMPLES - LOOKAHEAD_SAMPLES
        out = raw(np.concatenate([np.pad(c, (0, pad)) for c in chunks] +
                                 [np.zeros(LOOKAHEAD_SAMPLES, np.float32)]))
        starts = np.cumsum([0] + [chunk_instances(c) + 1 for c in chunks])
        raws = [out[a:a + chunk_instances(c)] for a, c in zip(starts, chunks, strict=False)]
    return [postprocess(r, eigen_vectors, means) if np.isfinite(r).all() else None
            for r in raws]
