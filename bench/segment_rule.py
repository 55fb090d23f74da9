"""How instag's segment rule localises instruments, on data whose truth is known: clips of ten
instances where each present instrument sounds in 1-3 of them (planted), or steadily in all ten with
instances nearly alike (a sound that plays throughout, like a held note: attention can only be
spread evenly). Trains the attention model briefly (CPU), then, for every
test clip and present instrument, compares the segment instances with the planted ones.

Prints, for the plain rule (weight >= 1/T) and for each bound of the "evenly spread" rule
(every weight within [1/T / spread, 1/T x spread]: the whole bag), the precision and recall
of the instances marked, and how often a steady instrument gets the whole bag.

    python bench/segment_rule.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def planted_data(root: Path, sounding: tuple[int, int], noise: float = 30.0, n: int = 1600,
                 n_classes: int = 5, seed: int = 0):
    from builders import write_openmic

    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(n_classes, 128))
    patterns *= 150.0 / np.linalg.norm(patterns, axis=1, keepdims=True)
    X = rng.uniform(60, 190, size=128) + rng.normal(0, noise, size=(n, 10, 128))
    present = rng.random((n, n_classes)) < 0.3
    where = np.zeros((n, n_classes, 10), bool)
    for i, k in zip(*np.nonzero(present), strict=True):
        at = rng.choice(10, size=rng.integers(*sounding), replace=False)
        X[i, at] += patterns[k]
        where[i, k, at] = True
    observed = rng.random((n, n_classes)) < 0.8
    y = np.where(observed, present, 0.5).astype(np.float32)
    keys = [f"clip{i:05d}_0" for i in range(n)]
    write_openmic(root, np.clip(X, 0, 255).astype(np.uint8), y, observed, keys,
                  [f"instrument{k}" for k in range(n_classes)], n_train=int(0.75 * n))
    return np.clip(X, 0, 255).astype(np.uint8), present, where, int(0.75 * n)


def attention_of(root: Path, X: np.ndarray) -> np.ndarray:
    from instag.learning.data import load_openmic
    from instag.learning.export import export_run
    from instag.learning.train import Recipe, train_run
    from instag.tagging.scoring import ScoringModel

    train_run(load_openmic(root), Recipe(model="att", epochs=40, batch_size=64, device="cpu"),
              root / "run", False)
    scorer = ScoringModel(export_run(root / "run", root / "att.onnx"))
    return np.stack([s.attention for s in scorer.score(list(X))])  # [N, T, C]


def marked(w: np.ndarray, spread: float | None) -> np.ndarray:
    """Instances the rule marks, for attention `w` [T]: with `spread`, the whole bag when every
    weight lies within [fair / spread, fair x spread] (instag's rule at its EVEN_SPREAD)."""
    fair = 1.0 / len(w)
    if spread is not None and fair / spread <= w.min() and w.max() <= fair * spread:
        return np.ones(len(w), bool)
    return w >= fair * (1 - 1e-6)


def main() -> None:
    spreads = [None, 1.1, 1.2, 1.33, 1.5, 2.0, 3.0]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, sounding, noise in (("planted in 1-3 of 10", (1, 4), 30.0),
                                      ("steady: every instance alike", (10, 11), 1.0)):
            root = Path(tmp) / name.replace(" ", "_").replace(":", "")
            X, present, where, n_train = planted_data(root, sounding, noise)
            att = attention_of(root, X[n_train:])
            runs[name] = (att, present[n_train:], where[n_train:])
        print(f"{'rule':>22} | planted: precision recall whole bag | steady: whole bag  "
              "max*T (median)")
        for spread in spreads:
            row = []
            for att, present, where in runs.values():
                tp = fp = fn = whole = total = 0
                ratios = []
                for i, k in zip(*np.nonzero(present), strict=True):
                    w = att[i, :, k]
                    m = marked(w, spread)
                    tp += (m & where[i, k]).sum()
                    fp += (m & ~where[i, k]).sum()
                    fn += (~m & where[i, k]).sum()
                    whole += m.all()
                    total += 1
                    ratios.append(w.max() * len(w))
                row.append((tp / max(tp + fp, 1), tp / max(tp + fn, 1), whole / total,
                            float(np.median(ratios))))
            (p, r, planted_whole, _), (_, _, whole, ratio) = row
            label = "w >= 1/T" if spread is None else f"even within x{spread:.2f}"
            print(f"{label:>22} | {p:17.3f} {r:6.3f} {planted_whole:9.3f} | {whole:17.3f}  "
                  f"{ratio:.3f}")


if __name__ == "__main__":
    main()
