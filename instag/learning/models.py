"""The paper's models (Sect. 4 and baselines), built by name with the paper's parameter counts.

Every torch model maps instances x [B, T, D] (features scaled to [0, 1]) and an optional padding
mask [B, T] (True = real instance) to a tuple:

- bag probabilities [B, C],
- instance probabilities [B, T, C],
- attention weights [B, T, C] (sum to 1 over the real instances of a bag).

Only ``att`` learns its weights; the others report what they do implicitly: ``fc_t`` mean-pools,
so its weights are uniform and its instance probabilities are its classifier on each instance;
``fc`` and ``rnn`` see the bag as a whole, so every instance carries the bag probabilities.
"""

from __future__ import annotations

import numpy as np

from instag.common.devices import Device, cuda_unavailable
from instag.common.extras import require
from instag.learning.modelspec import (  # noqa: F401 - the models' names, re-exported
    DEFAULT_LR,
    FC_INSTANCES,
    MASKED_MODELS,
    MODEL_NAMES,
    TORCH_MODELS,
)


def build_model(name: str, n_classes: int = 20, in_dim: int = 128):
    """A fresh model by the paper's name: att, fc_t, fc, rnn (torch) or rf (scikit-learn)."""
    if name == "rf":
        return RandomForest(n_classes)
    if name not in TORCH_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    require("torch")  # a missing extra: one line naming it
    from instag.learning.networks import NETWORKS  # torch: only where a model is built

    return NETWORKS[name](n_classes=n_classes, in_dim=in_dim)


def resolve_device(device: Device | str) -> str:
    """The torch device for --device: auto = CUDA when torch sees it, else CPU."""
    torch = require("torch")
    device = Device.parse(device)
    if device is Device.AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is Device.CUDA and not torch.cuda.is_available():
        raise cuda_unavailable("torch", "torch.cuda.is_available() is False")
    return device.value


def predict(model, x: np.ndarray, device: str = "cpu", batch_size: int = 512,
            present: np.ndarray | None = None) -> np.ndarray:
    """Bag probabilities [N, C] of a torch model in eval mode for scaled features [N, T, D]
    (`present` [N, T]: False on padding)."""
    torch = require("torch")
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i : i + batch_size]).to(device)
            mb = None if present is None else torch.from_numpy(present[i : i + batch_size])
            out.append(model(xb, None if mb is None else mb.to(device))[0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class RandomForest:
    """OpenMIC's baseline: one forest per class on time-averaged features, observed labels only."""

    def __init__(self, n_classes: int, n_trees: int = 100, max_depth: int = 8, seed: int = 0):
        self.n_classes = n_classes
        self.n_trees = n_trees
        self.max_depth = max_depth
        self.seed = seed
        self.forests: list = []

    def params(self) -> dict[str, int]:
        """What rebuilds this forest around its fitted `forests`."""
        return {"n_classes": self.n_classes, "n_trees": self.n_trees,
                "max_depth": self.max_depth, "seed": self.seed}

    def fit(self, x, labels, mask) -> np.ndarray:
        """Fit on x: [N, T, D] scaled features, labels and mask [N, C]; return the out-of-bag
        probabilities [N, C] (each clip scored by the trees that did not see it; NaN where
        none, or where the label was not observed), the forest's own validation."""
        RandomForestClassifier = require("sklearn.ensemble").RandomForestClassifier

        feats = x.mean(axis=1)
        self.forests = []
        oob = np.full(labels.shape, np.nan, np.float32)
        for c in range(self.n_classes):
            observed = mask[:, c].astype(bool)
            y = labels[observed, c]
            if len(set(y.tolist())) == 2:
                forest = RandomForestClassifier(
                    n_estimators=self.n_trees, max_depth=self.max_depth, random_state=self.seed,
                    n_jobs=-1, oob_score=True,
                ).fit(feats[observed], y)
                oob[observed, c] = forest.oob_decision_function_[:, 1]
                self.forests.append(forest)
            else:  # one observed value: predict that value's frequency
                self.forests.append(float(y.mean() if len(y) else 0))
        return oob

    def predict_proba(self, x):
        """Bag probabilities [N, C] for scaled features [N, T, D]."""
        feats = x.mean(axis=1)
        cols = [
            f.predict_proba(feats)[:, 1] if not isinstance(f, float) else np.full(len(feats), f)
            for f in self.forests
        ]
        return np.stack(cols, axis=1).astype(np.float32)
