import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from instag.learning.metrics import evaluate_predictions


def test_metrics_equal_scikit_learn_over_observed_labels():
    rng = np.random.default_rng(1)
    probs = rng.random((200, 4))
    labels = (rng.random((200, 4)) < 0.4).astype(float)
    mask = rng.random((200, 4)) < 0.6
    doc = evaluate_predictions(probs, labels, mask, ["a", "b", "c", "d"])
    for c, name in enumerate("abcd"):
        y, p = labels[mask[:, c], c], probs[mask[:, c], c]
        pred = p >= 0.5
        row = doc["per_class"][name]
        assert row["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
        assert row["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
        assert row["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
        assert row["f1_positive"] == pytest.approx(f1_score(y, pred))
        assert row["ap"] == pytest.approx(average_precision_score(y, p))
    rows = doc["per_class"].values()
    assert doc["overall"]["f1"] == pytest.approx(np.mean([r["f1"] for r in rows]))
    assert doc["overall"]["map"] == pytest.approx(np.mean([r["ap"] for r in rows]))


def test_unobserved_labels_do_not_change_metrics():
    rng = np.random.default_rng(2)
    probs, labels = rng.random((50, 1)), (rng.random((50, 1)) < 0.5).astype(float)
    mask = np.ones((50, 1), bool)
    mask[:10] = False
    flipped = labels.copy()
    flipped[:10] = 1 - flipped[:10]
    assert evaluate_predictions(probs, labels, mask, ["x"]) == \
        evaluate_predictions(probs, flipped, mask, ["x"])


def test_class_without_both_label_kinds_is_left_out_of_the_means():
    probs = np.array([[0.9, 0.2], [0.1, 0.8]])
    doc = evaluate_predictions(probs, np.array([[1.0, 1.0], [0.0, 1.0]]), np.ones((2, 2), bool),
                               ["both", "only_positive"])
    assert "f1" not in doc["per_class"]["only_positive"]
    assert doc["overall"]["f1"] == doc["per_class"]["both"]["f1"]
