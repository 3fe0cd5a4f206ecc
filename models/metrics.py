"""Detection metrics in plain numpy, shared by training, evaluation and the model comparison.

Binary metrics treat "attack" as the positive class. Attack-type metrics compare type names (BENIGN included:
a benign flow called an attack is a type error too). Every ratio with an empty denominator is 0.0, so a
report is always valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half); None with one class."""
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Average ranks over runs of equal scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y_true = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(score)[order], y_true[order]
    last_of_run = np.r_[np.diff(s) != 0, True]
    tps, fps = np.cumsum(y)[last_of_run], np.cumsum(~y)[last_of_run]
    tpr = np.r_[0.0, tps / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~y).sum()), 1)]
    return fpr, tpr


def binary_metrics(y_true: np.ndarray, attack_prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """accuracy, precision, recall, f1, false_positive_rate, roc_auc and the confusion matrix.

    confusion_matrix is [[TN, FP], [FN, TP]] (rows: true benign, true attack; columns: predicted).
    """
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(attack_prob) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "n": int(len(y)),
        "accuracy": _ratio(tp + tn, len(y)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "false_positive_rate": _ratio(fp, fp + tn),
        "roc_auc": roc_auc(y, attack_prob),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def type_metrics(true_types: Sequence[str], pred_types: Sequence[str]) -> dict[str, Any]:
    """per_type (true type -> recall), per_type_f1, per_type_support and macro_f1 over the true types present.

    The macro average runs over the types that occur in `true_types` (a type the data never names has no
    recall to average); predictions of other types still count against the precision of nobody and the
    recall of the true type.
    """
    t = np.asarray(true_types, dtype=object)
    p = np.asarray(pred_types, dtype=object)
    per_recall: dict[str, float] = {}
    per_f1: dict[str, float] = {}
    support: dict[str, int] = {}
    for name in sorted(set(t.tolist())):
        is_true, is_pred = t == name, p == name
        tp = int((is_true & is_pred).sum())
        precision, recall = _ratio(tp, int(is_pred.sum())), _ratio(tp, int(is_true.sum()))
        per_recall[name] = recall
        per_f1[name] = _ratio(2 * precision * recall, precision + recall)
        support[name] = int(is_true.sum())
    return {
        "per_type": per_recall,
        "per_type_f1": per_f1,
        "per_type_support": support,
        "macro_f1": float(np.mean(list(per_f1.values()))) if per_f1 else 0.0,
        "type_accuracy": _ratio(int((t == p).sum()), len(t)),
    }


def detection_report(is_attack: np.ndarray, attack_prob: np.ndarray, true_types: Sequence[str],
                     pred_types: Sequence[str], threshold: float = 0.5) -> dict[str, Any]:
    """The evaluation report's metric keys: binary metrics plus per-type recall and macro F1."""
    return {**binary_metrics(is_attack, attack_prob, threshold), **type_metrics(true_types, pred_types)}
