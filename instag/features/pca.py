"""From raw VGGish embeddings to OpenMIC's features: ReLU, PCA whitening, uint8.

The hub model returns embeddings *before* the final ReLU; OpenMIC's features were made with it,
then PCA-whitened with Google's ``vggish_pca_params.npz``, clipped to [-2, 2] and quantised to
8 bits (truncating, as the reference postprocessor does).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from instag.common.errors import InstagError

QUANT_MIN, QUANT_MAX = -2.0, 2.0


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
