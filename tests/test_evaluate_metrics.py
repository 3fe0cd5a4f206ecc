"""Detection metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import binary_metrics, detection_report, roc_auc, roc_curve, type_metrics

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
