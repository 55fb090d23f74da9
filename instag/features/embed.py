"""VGGish embeddings in OpenMIC-2018's feature space: hub model -> ReLU -> PCA -> uint8.

The hub model maps a 16 kHz waveform to one raw 128-d embedding per non-overlapping 0.96 s
window, *before* the final ReLU; OpenMIC's features were made with the ReLU, then PCA-whitened,
clipped to [-2, 2] and quantised to 8 bits. ``Embedder`` does all of that on chunks of whole
instances (see ``instances``), several files' chunks in one VGGish call.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.features.instances import (
    INSTANCE_SAMPLES,
    LOOKAHEAD_SAMPLES,
    Chunker,
    Features,
    check_features,
    chunk_instances,
)
from instag.features.resample import DEFAULT_RESAMPLER, Resampler, stream_16k
from instag.features.vggish import load_vggish

QUANT_MIN, QUANT_MAX = -2.0, 2.0
# What a scoring model's input is; exported into every model's metadata.
FEATURE_SPEC = "VGGish (tfhub google/vggish/1) + ReLU + PCA (vggish_pca_params) + uint8, 0.96 s"


def postprocess(raw: np.ndarray, eigen_vectors: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Raw hub embeddings [N, 128] -> OpenMIC features: ReLU, PCA, clip to [-2, 2], uint8.

    Quantisation truncates (astype) as the reference postprocessor does; it does not round.
    """
    x = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    pca = (eigen_vectors @ (x.T - means.reshape(-1, 1))).T
    clipped = np.clip(pca, QUANT_MIN, QUANT_MAX)
    return ((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)


def load_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise InstagError(f"{path}: not a VGGish PCA file (not an .npz archive)",
                          "pass vggish_pca_params.npz")
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


class Embedder:
    """VGGish + PCA: turns files, blocks or chunks of 16 kHz audio into OpenMIC features. The
    hub model is loaded on first use (once per process), so a run that finds everything cached
    never imports TensorFlow. `identity` names everything the features depend on (the cache's
    key)."""

    def __init__(self, vggish: str | None = None, pca: str | Path | None = None,
                 resampler: Resampler | str = DEFAULT_RESAMPLER) -> None:
        self.handle = locations.vggish_handle(vggish)
        self.pca_path = locations.pca_params(pca)
        self.eigen_vectors, self.means = load_pca(self.pca_path)
        self.resampler = Resampler(resampler)
        self.identity = "|".join([self.handle, file_digest(self.pca_path),
                                  self.resampler.identity])
        self._model = None

    def fetch_if_missing(self) -> None:
        """VGGish loads on first use (a cached re-run never needs it), but one that is not on
        this machine is fetched now: a run that cannot get it fails before it starts."""
        if locations.hub_cached(self.handle) is None:
            self.model  # noqa: B018 - loads it

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
        """Features of consecutive 16 kHz blocks (a waveform is one block)."""
        chunker = Chunker()
        feats = []
        for block in blocks:
            feats += self.embed_chunks(chunker.push(np.asarray(block, np.float32)))
        feats += self.embed_chunks(chunker.finish())
        return Features.from_parts(feats, chunker.samples)

    def embed_file(self, path: str | Path) -> Features:
        """Decode, resample and embed one file in this process. A bad, empty or too short file
        raises AudioError with its status, for the caller to report and move on."""
        return check_features(path, self.embed_blocks(stream_16k(path, self.resampler)))
