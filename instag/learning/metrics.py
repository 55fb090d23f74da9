"""The paper's evaluation (instrument-wise macro P/R/F1) and mAP, over observed labels, and the
per-instrument thresholds tagging uses.

Per instrument, over its observed labels, a prediction is positive at >= its threshold (0.5 is
the paper's rule); precision, recall and F1 of the positive and the negative class are
macro-averaged, as scikit-learn's ``classification_report`` does, with ``labels=[0, 1]`` and
``zero_division=0``: an instrument whose observed labels are all of one class is still scored,
the same way whatever the predictions. Average precision is undefined without a positive label:
such instruments are left out of mAP, and the number left out is reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instag.common.extras import require

THRESHOLD = 0.5


def evaluate_predictions(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, classes: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> dict:
    """Per-class and overall metrics for bag probabilities [N, C] against observed labels, at
    `thresholds` (one per class; default 0.5 for every class)."""
    sk = require("sklearn.metrics")
    per_class = {}
    for c, name in enumerate(classes):
        observed = mask[:, c].astype(bool)
        y = labels[observed, c].astype(int)
        p = probs[observed, c]
        t = THRESHOLD if thresholds is None else float(thresholds[c])
        row = {"n_observed": int(observed.sum()), "n_positive": int(y.sum()), "threshold": t}
        if len(y):
            prec, rec, f1, _ = sk.precision_recall_fscore_support(
                y, (p >= t).astype(int), labels=[0, 1], average=None, zero_division=0)
            row.update(precision=float(prec.mean()), recall=float(rec.mean()),
                       f1=float(f1.mean()), f1_positive=float(f1[1]))
        if y.any():
            row["ap"] = float(sk.average_precision_score(y, p))
        per_class[name] = row

    def mean(key: str) -> float:
        values = [r[key] for r in per_class.values() if key in r]
        return float(np.mean(values)) if values else float("nan")

    overall = {k: mean(k) for k in ("precision", "recall", "f1", "f1_positive")}
    overall["map"] = mean("ap")
    overall["map_left_out"] = sum("ap" not in r for r in per_class.values())
    return {"overall": overall, "per_class": per_class}


MIN_TUNING_POSITIVES = 10  # validation positives below which a class keeps THRESHOLD
SHRINK_POSITIVES = 30  # positives at which the F1-best cut and THRESHOLD weigh equally


def tune_thresholds(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray
                    ) -> tuple[list[float], list[int]]:
    """Per class, a threshold and the observed positives it rests on. The cut that maximises
    the F1 of the positive class (what a tag user feels: tags that are there and right) is
    noise when few positives decide it (0.029 from 6 validation clips tagged every file of a
    trial, white noise included): below MIN_TUNING_POSITIVES a class keeps THRESHOLD (0.5, the
    paper's rule); above, the cut is shrunk towards 0.5 by its evidence, n / (n +
    SHRINK_POSITIVES) - half-way at 30 positives, 94 % of the cut at 500 (OpenMIC's classes
    have hundreds)."""
    sk = require("sklearn.metrics")
    thresholds, positives = [], []
    for c in range(probs.shape[1]):
        observed = mask[:, c].astype(bool) & np.isfinite(probs[:, c])
        y, p = labels[observed, c].astype(int), probs[observed, c]
        n = int(y.sum())
        positives.append(n)
        if n < MIN_TUNING_POSITIVES:
            thresholds.append(THRESHOLD)
            continue
        precision, recall, cuts = sk.precision_recall_curve(y, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = float(np.clip(cuts[int(np.argmax(f1))], 0.0, 1.0))
        weight = n / (n + SHRINK_POSITIVES)
        thresholds.append(weight * best + (1 - weight) * THRESHOLD)
    return thresholds, positives
