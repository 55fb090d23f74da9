import numpy as np
import pytest

pytest.importorskip("sklearn")  # the train extra

from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from instag.learning.metrics import evaluate_predictions, tune_thresholds


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


def test_an_instrument_with_one_label_kind_is_scored_like_classification_report():
    """All observed labels negative: sklearn's per-class report with zero_division=0 gives the
    positive class 0 and the negative class its own figures; the instrument stays in the means,
    and only mAP (undefined without positives) leaves it out, counting it."""
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.1]])
    labels = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    doc = evaluate_predictions(probs, labels, np.ones((3, 2), bool), ["both", "only_negative"])
    row = doc["per_class"]["only_negative"]
    y, pred = [0, 0, 0], [0, 1, 0]
    assert row["f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro",
                                               zero_division=0))
    assert row["f1"] == pytest.approx(0.4)  # negative class: P 1, R 2/3, F1 0.8; positive: 0
    assert "ap" not in row and doc["overall"]["map_left_out"] == 1
    assert doc["overall"]["f1"] == pytest.approx((doc["per_class"]["both"]["f1"] + 0.4) / 2)
    assert doc["overall"]["map"] == doc["per_class"]["both"]["ap"]


def test_per_class_thresholds_decide_presence():
    probs = np.array([[0.3], [0.6], [0.35], [0.1]])
    labels = np.array([[1.0], [1.0], [1.0], [0.0]])
    mask = np.ones((4, 1), bool)
    assert evaluate_predictions(probs, labels, mask, ["x"])["per_class"]["x"]["f1_positive"] \
        == pytest.approx(f1_score([1, 1, 1, 0], [0, 1, 0, 0]))
    tuned = evaluate_predictions(probs, labels, mask, ["x"], thresholds=[0.3])
    assert tuned["per_class"]["x"]["f1_positive"] == pytest.approx(1.0)


def separable(positives: int, negatives: int = 60, at: float = 0.2):
    """Probabilities where every positive scores `at` and every negative 0.05."""
    probs = np.r_[np.full(positives, at), np.full(negatives, 0.05)][:, None]
    labels = np.r_[np.ones(positives), np.zeros(negatives)][:, None]
    return probs, labels, np.ones_like(labels, bool)


def test_the_f1_best_cut_is_shrunk_towards_0_5_by_the_positives_it_rests_on():
    assert tune_thresholds(*separable(30)) == ([pytest.approx(0.35)], [30])  # half-way at 30
    assert tune_thresholds(*separable(90)) == ([pytest.approx(0.275)], [90])  # 3/4 of the way


def test_a_threshold_resting_on_fewer_than_10_positives_is_0_5():
    assert tune_thresholds(*separable(9)) == ([0.5], [9])


def test_unobserved_labels_are_not_counted_as_positives():
    probs, labels, mask = separable(12)
    mask[:3] = False
    assert tune_thresholds(probs, labels, mask)[1] == [9]


def test_a_class_with_no_observed_positive_keeps_0_5():
    probs = np.array([[0.9], [0.1]])
    assert tune_thresholds(probs, np.zeros((2, 1)), np.ones((2, 1), bool)) == ([0.5], [0])
