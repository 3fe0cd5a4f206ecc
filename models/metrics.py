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


def per_type_detection(true_types: Sequence[str], flagged: np.ndarray) -> dict[str, float]:
    """True type or family -> share of its flows the binary decision flags as attacks.

    Keys are every true type present and every family present (schemas.labels.FAMILY_OF), so a fine type
    ('SSH-Patator') and its family ('Brute Force') both appear; for BENIGN the value is the false-positive rate.
    This is the detector's recall per attack, whatever the type head says.
    """
    from schemas.labels import FAMILY_OF

    t = np.asarray(true_types, dtype=object)
    hit = np.asarray(flagged).astype(bool)
    families = np.asarray([FAMILY_OF.get(name, name) for name in t.tolist()], dtype=object)
    out: dict[str, float] = {}
    for names in (t, families):
        for name in sorted(set(names.tolist())):
            rows = names == name
            out[str(name)] = _ratio(int((hit & rows).sum()), int(rows.sum()))
    return dict(sorted(out.items()))


def family_metrics(true_types: Sequence[str], pred_types: Sequence[str]) -> dict[str, Any]:
    """The type head judged by family: per_family_f1 and family_macro_f1 over the families the labels name.

    Web Attack Brute Force and XSS (one tool against one form) cannot be told apart from flow features, and a
    file labelled by family only ('DoS') cannot say which DoS tool a flow came from; families are what every
    copy of the data set agrees on.
    """
    from schemas.labels import FAMILY_OF

    true_f = [FAMILY_OF.get(str(name), str(name)) for name in true_types]
    pred_f = [FAMILY_OF.get(str(name), str(name)) for name in pred_types]
    m = type_metrics(true_f, pred_f)
    return {"per_family_f1": m["per_type_f1"], "family_macro_f1": m["macro_f1"]}


def threshold_for_fpr(benign_prob: np.ndarray, budget: float) -> float:
    """The lowest decision threshold whose false-positive rate on these benign flows is at most `budget`.

    With n benign flows at most k = floor(budget * n) may score at or above the threshold: the threshold sits
    just above the (k+1)-th highest benign score (the next float32 up, as the scores are float32 and the
    comparison is ``prob >= threshold``). Ties at that score are all excluded, so the rate may be below the
    budget. Clamped into (0, 1), the range the artifact accepts: benign scores of exactly 1.0 stay false
    positives whatever the threshold.
    """
    scores = np.sort(np.asarray(benign_prob, dtype=np.float32))[::-1]
    if len(scores) == 0:
        raise ValueError("threshold_for_fpr: no benign flows to choose a threshold on")
    if not 0.0 <= budget < 1.0:
        raise ValueError(f"threshold_for_fpr: budget must be in [0, 1), got {budget}")
    k = int(np.floor(budget * len(scores) + 1e-9))
    if k >= len(scores):
        return float(np.nextafter(np.float32(0.0), np.float32(1.0)))
    above = np.nextafter(scores[k], np.float32(np.inf))
    low, high = np.nextafter(np.float32(0.0), np.float32(1.0)), np.nextafter(np.float32(1.0), np.float32(0.0))
    return float(np.clip(above, low, high))


def detection_report(is_attack: np.ndarray, attack_prob: np.ndarray, true_types: Sequence[str],
                     pred_types: Sequence[str], threshold: float = 0.5) -> dict[str, Any]:
    """The evaluation report's metric keys: binary metrics, per-type recall and macro F1 of the type head,
    the same by family, and the binary decision's detection rate per true type and family."""
    flagged = np.asarray(attack_prob) >= threshold
    return {**binary_metrics(is_attack, attack_prob, threshold), **type_metrics(true_types, pred_types),
            **family_metrics(true_types, pred_types),
            "per_type_detection": per_type_detection(true_types, flagged)}
