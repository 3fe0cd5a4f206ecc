"""Detection metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    binary_metrics,
    detection_report,
    family_metrics,
    per_type_detection,
    roc_auc,
    roc_curve,
    threshold_for_fpr,
    type_metrics,
)

# Ten flows. Threshold 0.5 predicts attack at indices 2, 4, 5, 7, 8.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7, 0.55, 0.05])
TRUE = ["BENIGN"] * 4 + ["DDoS", "DDoS", "PortScan", "PortScan", "Web Attack XSS", "BENIGN"]
PRED = ["BENIGN", "BENIGN", "DDoS", "BENIGN", "DDoS", "PortScan", "BENIGN", "PortScan", "Web Attack XSS",
        "BENIGN"]


def test_binary_metrics_by_hand():
    # TP = {4, 5, 7, 8} = 4, FP = {2} = 1, FN = {6} = 1, TN = {0, 1, 3, 9} = 4.
    m = binary_metrics(Y, P, threshold=0.5)
    assert m["confusion_matrix"] == [[4, 1], [1, 4]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(0.8)
    assert m["recall"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(0.8)
    assert m["false_positive_rate"] == pytest.approx(0.2)
    # Positive/negative pairs ranked correctly: 0.9 -> 5, 0.8 -> 5, 0.3 -> 3, 0.7 -> 5, 0.55 -> 4; 22 of 25.
    assert m["roc_auc"] == pytest.approx(22 / 25)


def test_threshold_moves_the_decision():
    m = binary_metrics(Y, P, threshold=0.65)  # predicts attack at 4, 5, 7 only
    assert m["confusion_matrix"] == [[5, 0], [2, 3]]
    assert m["false_positive_rate"] == 0.0
    assert m["recall"] == pytest.approx(0.6)


def test_roc_auc_ties_and_single_class():
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.9])) is None


def test_roc_curve_points():
    fpr, tpr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])


def test_type_metrics_by_hand():
    m = type_metrics(TRUE, PRED)
    # BENIGN: 5 true, 5 predicted, 4 right -> P = R = F1 = 0.8. DDoS and PortScan: 2 true, 2 predicted,
    # 1 right -> 0.5. XSS: 1 of 1 -> 1.0.
    assert m["per_type"] == pytest.approx({"BENIGN": 0.8, "DDoS": 0.5, "PortScan": 0.5,
                                           "Web Attack XSS": 1.0})
    assert m["per_type_f1"] == pytest.approx({"BENIGN": 0.8, "DDoS": 0.5, "PortScan": 0.5,
                                              "Web Attack XSS": 1.0})
    assert m["per_type_support"] == {"BENIGN": 5, "DDoS": 2, "PortScan": 2, "Web Attack XSS": 1}
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.5 + 1.0) / 4)
    assert m["type_accuracy"] == pytest.approx(0.7)


def test_report_has_the_required_keys():
    report = detection_report(Y, P, TRUE, PRED, 0.5)
    required = {"n", "accuracy", "precision", "recall", "f1", "false_positive_rate", "roc_auc",
                "confusion_matrix", "per_type", "macro_f1"}
    assert required <= set(report)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_agree_with_scikit_learn_on_random_inputs(seed):
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    n = 500
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 2)  # rounded: many ties, which both must rank alike
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    m = binary_metrics(y, p, threshold)
    pred = (p >= threshold).astype(int)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    fpr, tpr = roc_curve(y, p)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)

    names = np.array(["BENIGN", "DDoS", "DoS Hulk", "SSH-Patator", "Bot"], dtype=object)
    true = names[rng.integers(0, 5, n)]
    guess = names[rng.integers(0, 5, n)]
    t = type_metrics(true, guess)
    present = sorted(set(true))
    f1 = skm.f1_score(true, guess, labels=present, average=None, zero_division=0)
    assert t["per_type_f1"] == pytest.approx(dict(zip(present, f1, strict=True)))
    assert t["per_type"] == pytest.approx(dict(zip(present, skm.recall_score(
        true, guess, labels=present, average=None, zero_division=0), strict=True)))
    assert t["macro_f1"] == pytest.approx(skm.f1_score(true, guess, labels=present, average="macro",
                                                       zero_division=0))
    family = {"BENIGN": "BENIGN", "DDoS": "DDoS", "DoS Hulk": "DoS", "SSH-Patator": "Brute Force", "Bot": "Bot"}
    true_f, guess_f = [family[x] for x in true], [family[x] for x in guess]
    fam = family_metrics(true, guess)
    assert fam["family_macro_f1"] == pytest.approx(skm.f1_score(true_f, guess_f, labels=sorted(set(true_f)),
                                                                average="macro", zero_division=0))
    flagged = rng.random(n) < 0.5
    detection = per_type_detection(true, flagged)
    for name in present:
        assert detection[name] == pytest.approx(flagged[true == name].mean())
    assert detection["Brute Force"] == pytest.approx(flagged[true == "SSH-Patator"].mean())


def test_threshold_for_fpr_budget():
    benign = np.array([0.1, 0.2, 0.3, 0.9, 0.95] + [0.05] * 995, dtype=np.float32)  # 1,000 benign flows
    # 0.1% of 1,000 = 1 false positive allowed: the threshold sits just above the second highest score.
    t = threshold_for_fpr(benign, 0.001)
    assert np.float32(0.9) < t and float(np.nextafter(np.float32(0.9), np.float32(1))) == t
    assert (benign >= t).sum() == 1
    t0 = threshold_for_fpr(benign, 0.0)  # no false positive at all
    assert (benign >= t0).sum() == 0 and t0 == float(np.nextafter(np.float32(0.95), np.float32(1)))
    assert (benign >= threshold_for_fpr(benign, 0.003)).sum() == 3
    saturated = np.ones(10, dtype=np.float32)  # scores of exactly 1.0: the threshold stays below 1
    assert 0.0 < threshold_for_fpr(saturated, 0.0) < 1.0
    with pytest.raises(ValueError):
        threshold_for_fpr(np.zeros(0), 0.001)
