"""VGGish embeddings in OpenMIC-2018's feature space: hub model -> ReLU -> PCA -> uint8.

The hub model (``https://tfhub.dev/google/vggish/1``) maps a 16 kHz waveform to one raw 128-d
embedding per non-overlapping 0.96 s window, *before* the final ReLU; OpenMIC's features were made
with the ReLU, then PCA-whitened, clipped to [-2, 2] and quantised to 8 bits. This module does
all of that, block by block, so a 3-hour file never sits in memory whole.

Instance i covers [0.96 i, 0.96 (i+1)) s. VGGish's last 25 ms log-mel frame of a window reaches
15 ms (240 samples) past it, so every block is handed over with that lookahead, and the end of the
file is padded with 15 ms of silence: every complete 0.96 s window yields an instance (the bare
hub model would drop a last window the file ends within 15 ms of), a trailing partial window none.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag import assets
from instag.audio import DEFAULT_RESAMPLER, TARGET_SR, AudioError, stream_16k
from instag.errors import InstagError
from instag.quiet import native_stderr_silenced

DEFAULT_VGGISH = "https://tfhub.dev/google/vggish/1"
INSTANCE_SECONDS = 0.96
INSTANCE_SAMPLES = 15360  # 0.96 s at 16 kHz
LOOKAHEAD_SAMPLES = 240  # the last log-mel frame's window beyond the instance
CHUNK_INSTANCES = 64  # instances per VGGish call: ~1 M samples, a few MB
QUANT_MIN, QUANT_MAX = -2.0, 2.0


@dataclass(frozen=True)
class Features:
    """One file's instances: uint8 features [N, 128] and the decoded duration in seconds."""

    values: np.ndarray
    duration: float

    @property
    def starts(self) -> np.ndarray:
        return np.arange(len(self.values)) * INSTANCE_SECONDS

    @classmethod
    def from_parts(cls, parts: list[np.ndarray], samples: int) -> Features:
        """A file's features from its chunks' features and its count of 16 kHz samples."""
        values = np.concatenate(parts) if parts else np.zeros((0, 128), np.uint8)
        return cls(values, samples / TARGET_SR)


def postprocess(raw: np.ndarray, eigen_vectors: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Raw hub embeddings [N, 128] -> OpenMIC features: ReLU, PCA, clip to [-2, 2], uint8.

    Quantisation truncates (astype) as the reference postprocessor does; it does not round.
    """
    x = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    pca = (eigen_vectors @ (x.T - means.reshape(-1, 1))).T
    clipped = np.clip(pca, QUANT_MIN, QUANT_MAX)
    return ((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)


def load_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as npz:
            vectors, means = npz["pca_eigen_vectors"], npz["pca_means"]
    except Exception as e:
        raise InstagError(f"{path}: not a VGGish PCA file ({e})",
                          "expected vggish_pca_params.npz with pca_eigen_vectors and pca_means"
                          ) from e
    if vectors.shape != (128, 128) or means.size != 128:
        raise InstagError(f"{path}: PCA shapes {vectors.shape}, {means.shape}; expected "
                          "(128, 128) and 128 values")
    return vectors.astype(np.float64), means.astype(np.float64).reshape(-1)


def vggish_handle(option: str | None = None) -> str:
    """--vggish, else INSTAG_VGGISH, else the official hub URL."""
    return option or os.environ.get("INSTAG_VGGISH") or DEFAULT_VGGISH


def load_vggish(handle: str):
    """Load the hub model once (callers keep it). TensorFlow is told to grow GPU memory on
    demand so that onnxruntime can share the card. TensorFlow's native CUDA probing chatter is
    kept off stderr while it starts; failures still arrive as exceptions."""
    assets.tfhub_cache_dir()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    local = Path(handle).expanduser()
    try:
        with native_stderr_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tensorflow_hub 0.16 warns about pkg_resources
            import tensorflow as tf
            import tensorflow_hub as hub

            for gpu in tf.config.list_physical_devices("GPU"):
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # already initialised by an earlier load in this process
                    pass
            return hub.load(str(local) if local.exists() else handle)
    except Exception as e:
        raise InstagError(
            f"cannot load VGGish from {handle} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
            "run `instag setup` once on a machine with internet (it fills the cache in "
            f"{assets.tfhub_cache_dir()}), or pass --vggish DIR with a local SavedModel",
        ) from e


class Chunker:
    """Regroup pushed 16 kHz blocks into VGGish calls of whole instances plus the 240-sample
    lookahead; `finish` pads the end with silence and leaves a partial window out."""

    def __init__(self, chunk_instances: int = CHUNK_INSTANCES) -> None:
        self.step = chunk_instances * INSTANCE_SAMPLES
        self.buf = np.zeros(0, np.float32)
        self.samples = 0

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        self.samples += len(block)
        self.buf = np.concatenate([self.buf, block])
        out = []
        while len(self.buf) >= self.step + LOOKAHEAD_SAMPLES:
            out.append(self.buf[: self.step + LOOKAHEAD_SAMPLES])
            self.buf = self.buf[self.step :]
        return out

    def finish(self) -> list[np.ndarray]:
        n = len(self.buf) // INSTANCE_SAMPLES
        if not n:
            return []
        tail = self.buf[: n * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES]
        return [np.pad(tail, (0, n * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES - len(tail)))]


def chunk_instances(chunk: np.ndarray) -> int:
    return (len(chunk) - LOOKAHEAD_SAMPLES) // INSTANCE_SAMPLES


class Embedder:
    """VGGish + PCA: turns files, waveforms or chunks into OpenMIC features. The hub model is
    loaded on first use (once per process), so a run that finds everything cached never
    imports TensorFlow."""

    def __init__(self, vggish: str | None = None, pca: str | Path | None = None,
                 resampler: str = DEFAULT_RESAMPLER) -> None:
        self.handle = vggish_handle(vggish)
        self.pca_path = assets.pca_params(pca)
        self.eigen_vectors, self.means = load_pca(self.pca_path)
        self.resampler = resampler
        self.identity = "|".join([self.handle, assets.file_digest(self.pca_path), resampler])
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_vggish(self.handle)
        return self._model

    def raw(self, wave: np.ndarray) -> np.ndarray:
        """The hub model's raw embeddings [N, 128] for 16 kHz samples."""
        out = np.asarray(self.model(np.asarray(wave, np.float32)))
        if out.ndim != 2 or out.shape[1] != 128:
            raise InstagError(f"{self.handle}: returned shape {out.shape}, expected [N, 128]",
                              "pass the VGGish hub model")
        return out

    def embed_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Features of several chunks (from any files) in one VGGish call. Each chunk is padded
        to whole windows so the next one starts on a window boundary; the one window per chunk
        that straddles the padding is computed and dropped."""
        if not chunks:
            return []
        counts = [chunk_instances(c) for c in chunks]
        if len(chunks) == 1:
            raw = self.raw(chunks[0])
        else:
            pad = INSTANCE_SAMPLES - LOOKAHEAD_SAMPLES
            wave = np.concatenate([np.pad(c, (0, pad)) for c in chunks] +
                                  [np.zeros(LOOKAHEAD_SAMPLES, np.float32)])
            raw = self.raw(wave)
        feats, row = [], 0
        for n in counts:
            feats.append(postprocess(raw[row : row + n], self.eigen_vectors, self.means))
            row += n + (len(chunks) > 1)
        return feats

    def embed_blocks(self, blocks: Iterable[np.ndarray]) -> Features:
        chunker = Chunker()
        feats = []
        for block in blocks:
            feats += self.embed_chunks(chunker.push(block))
        feats += self.embed_chunks(chunker.finish())
        return Features.from_parts(feats, chunker.samples)

    def embed_waveform(self, wave: np.ndarray) -> Features:
        return self.embed_blocks([np.asarray(wave, np.float32)])

    def embed_file(self, path: str | Path) -> Features:
        """Decode, resample and embed one file. A bad, empty or too short file raises
        audio.AudioError with its status, for the caller to report and move on."""
        return check_features(path, self.embed_blocks(stream_16k(path, self.resampler)))


def check_features(path: str | Path, feats: Features) -> Features:
    """A file with no samples or less than one instance is a per-file result, not features."""
    if feats.duration == 0:
        raise AudioError(path, "no audio (zero samples)", status="empty")
    if len(feats.values) == 0:
        raise AudioError(path, f"too short: {feats.duration:.2f} s, one instance needs "
                         f"{INSTANCE_SECONDS} s", status="too_short")
    return feats
