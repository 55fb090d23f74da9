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

from typing import TYPE_CHECKING

import numpy as np

from instag.common.devices import Device, cuda_unavailable
from instag.common.extras import require

if TYPE_CHECKING:
    import torch

TORCH_MODELS = ("att", "att_uniform", "fc_t", "fc", "rnn")
MASKED_MODELS = ("att", "att_uniform", "fc_t")  # those that take bags of any length, padded
MODEL_NAMES = (*TORCH_MODELS, "rf")
ATTENTION_EPS = 1e-7
FC_INSTANCES = 10  # the fc baseline flattens OpenMIC's fixed 10-instance clips

# Learning rates of the paper's recipe; fc follows the authors' code.
DEFAULT_LR = {"att": 5e-4, "att_uniform": 5e-4, "fc_t": 5e-4, "rnn": 5e-4, "fc": 1e-4}


def _modules():
    """Define the torch modules on first use, so importing this file does not import torch."""
    torch = require("torch")
    from torch import nn

    def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return mask

    def uniform_weights(mask: torch.Tensor, n_classes: int) -> torch.Tensor:
        m = mask.float()
        w = m / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return w.unsqueeze(-1).expand(-1, -1, n_classes)

    class Attention(nn.Module):
        """Decision-level attention (Eqs. 2-3): parallel instance and attention heads."""

        def __init__(self, n_classes: int = 20, in_dim: int = 128, dropout: float = 0.6,
                     uniform: bool = False):
            super().__init__()
            self.uniform = uniform  # the ablation: the same network, attention replaced by mean
            self.bn0 = nn.BatchNorm1d(in_dim)
            layers = []
            for _ in range(3):
                layers += [
                    nn.Linear(in_dim, in_dim, bias=False),
                    nn.BatchNorm1d(in_dim),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                ]
            self.embedding = nn.Sequential(*layers)
            self.instance_head = nn.Linear(in_dim, n_classes)
            self.attention_head = nn.Linear(in_dim, n_classes)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
            b, t, d = x.shape
            flat = x.reshape(b * t, d)
            emb = self.embedding(self.bn0(flat)) + flat  # skip connection from the raw input
            inst = torch.sigmoid(self.instance_head(emb)).reshape(b, t, -1)
            att = torch.sigmoid(self.attention_head(emb)).reshape(b, t, -1)
            if self.uniform:
                att = torch.ones_like(att)
            att = att.clamp(ATTENTION_EPS, 1.0 - ATTENTION_EPS)
            att = att * full_mask(x, mask).unsqueeze(-1).to(att.dtype)  # padding gets no weight
            weights = att / att.sum(dim=1, keepdim=True)
            bag = (weights * inst).sum(dim=1).clamp(0.0, 1.0)
            return bag, inst, weights

    class FCT(nn.Module):
        """The ablation: the same kind of shared instance embedding, mean pooling, classifier."""

        def __init__(self, n_classes: int = 20, in_dim: int = 128, dropout: float = 0.5):
            super().__init__()
            layers = []
            for _ in range(3):
                layers += [nn.Linear(in_dim, in_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout)]
            self.embedding = nn.Sequential(*layers)
            self.classifier = nn.Linear(in_dim, n_classes)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
            emb = self.embedding(x) + x
            weights = uniform_weights(full_mask(x, mask), self.classifier.out_features)
            pooled = (emb * weights[..., :1]).sum(dim=1)
            bag = torch.sigmoid(self.classifier(pooled))
            inst = torch.sigmoid(self.classifier(emb))
            return bag, inst, weights

    class FC(nn.Module):
        """Flattened 10x128 clip through 512-512-128 fully connected layers."""

        def __init__(self, n_classes: int = 20, in_dim: int = 128, dropout: float = 0.5):
            super().__init__()
            sizes = [FC_INSTANCES * in_dim, 512, 512, 128]
            layers = []
            for a, b in zip(sizes, sizes[1:], strict=False):
                layers += [nn.Linear(a, b), nn.LeakyReLU(0.01), nn.Dropout(dropout)]
            self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], n_classes))

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
            if x.shape[1] != FC_INSTANCES:
                raise ValueError(f"fc takes bags of exactly {FC_INSTANCES} instances")
            bag = torch.sigmoid(self.net(x.flatten(1)))
            weights = uniform_weights(full_mask(x, mask), bag.shape[1])
            return bag, bag.unsqueeze(1).expand(-1, x.shape[1], -1), weights

    class RNN(nn.Module):
        """3-layer bidirectional GRU; the output at the last time step is classified."""

        def __init__(self, n_classes: int = 20, in_dim: int = 128, dropout: float = 0.5):
            super().__init__()
            self.gru = nn.GRU(
                in_dim, 64, num_layers=3, bidirectional=True, batch_first=True, dropout=dropout
            )
            self.classifier = nn.Linear(128, n_classes)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
            out, _ = self.gru(x)
            bag = torch.sigmoid(self.classifier(out[:, -1]))
            weights = uniform_weights(full_mask(x, mask), bag.shape[1])
            return bag, bag.unsqueeze(1).expand(-1, x.shape[1], -1), weights

    return {"att": Attention, "att_uniform": lambda **kw: Attention(uniform=True, **kw),
            "fc_t": FCT, "fc": FC, "rnn": RNN}


def build_model(name: str, n_classes: int = 20, in_dim: int = 128):
    """A fresh model by the paper's name: att, fc_t, fc, rnn (torch) or rf (scikit-learn)."""
    if name == "rf":
        return RandomForest(n_classes)
    if name not in TORCH_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return _modules()[name](n_classes=n_classes, in_dim=in_dim)


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
