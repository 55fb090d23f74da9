"""The paper's evaluation (instrument-wise macro P/R/F1 at 0.5) and mAP, over observed labels."""

from __future__ import annotations

import numpy as np

from instag.common.extras import require

THRESHOLD = 0.5


def evaluate_predictions(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, classes: tuple[str, ...] | list[str]
) -> dict:
    """Per-class and overall metrics for bag probabilities [N, C] against observed labels.

    Per class, over its observed labels, a prediction is positive at >= 0.5; precision, recall
    and F1 are computed for the positive and the negative class and macro-averaged (the paper's
    "instrument-wise" figures). ``f1_positive`` is the positive class alone, ``ap`` the average
    precision. Overall figures are means over the classes that have observed labels of both kinds.
    """
    sk = require("sklearn.metrics")
    average_precision_score = sk.average_precision_score
    precision_recall_fscore_support = sk.precision_recall_fscore_support

    per_class = {}
    for c, name in enumerate(classes):
        observed = mask[:, c].astype(bool)
        y = labels[observed, c].astype(int)
        p = probs[observed, c]
        row = {"n_observed": int(observed.sum()), "n_positive": int(y.sum())}
        if len(np.unique(y)) == 2:
            pred = (p >= THRESHOLD).astype(int)
            prec, rec, f1, _ = precision_recall_fscore_support(
                y, pred, labels=[0, 1], average=None, zero_division=0
            )
            row.update(
                precision=float(prec.mean()), recall=float(rec.mean()), f1=float(f1.mean()),
                f1_positive=float(f1[1]), ap=float(average_precision_score(y, p)),
            )
        per_class[name] = row
    scored = [r for r in per_class.values() if "f1" in r]
    overall = {
        key: float(np.mean([r[key] for r in scored])) if scored else float("nan")
        for key in ("precision", "recall", "f1", "f1_positive", "ap")
    }
    overall["map"] = overall.pop("ap")
    return {"overall": overall, "per_class": per_class}
