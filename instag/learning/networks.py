"""The paper's torch networks (Sect. 4 and its baselines), at module level so that they can be
imported and documented. Only training, export and evaluation import this module (it imports
torch); `models.build_model` builds them by name.

Every network maps instances x [B, T, D] (features scaled to [0, 1]) and an optional padding
mask [B, T] (True = real instance) to (bag probabilities [B, C], instance probabilities
[B, T, C], attention weights [B, T, C]).
"""

from __future__ import annotations

import torch
from torch import nn

from instag.learning.modelspec import ATTENTION_EPS, FC_INSTANCES


def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The padding mask, or every instance real when none is given."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask


def uniform_weights(mask: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Equal weights over each bag's real instances: what pooling models attend with."""
    m = mask.float()
    w = m / m.sum(dim=1, keepdim=True).clamp_min(1.0)
    return w.unsqueeze(-1).expand(-1, -1, n_classes)


class Dropout(nn.Module):
    """Dropout as `nn.Dropout` computes it (each unit zeroed with probability p in training,
    the rest scaled by 1 / (1 - p); nothing in evaluation and in exported models), drawn as a
    uniform number compared with p: torch's CPU Bernoulli draw took 1.9 ms for a 1280 x 128
    batch, against 0.65 ms, and the attention network's three made up 40 % of a training step
    (bench/setup_time.py: set-up's training stage)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1.0 - self.p)


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
                Dropout(dropout),
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
            layers += [nn.Linear(in_dim, in_dim), nn.LeakyReLU(0.01), Dropout(dropout)]
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
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.01), Dropout(dropout)]
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


def uniform_attention(**kwargs) -> Attention:
    """The ablation: `Attention` with its weights replaced by the mean."""
    return Attention(uniform=True, **kwargs)


NETWORKS = {"att": Attention, "att_uniform": uniform_attention, "fc_t": FCT, "fc": FC,
            "rnn": RNN}
