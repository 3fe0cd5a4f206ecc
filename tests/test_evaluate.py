"""jobs.evaluate end to end on raw CSV: the report, its counts, the plots, and a missing column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.test_artifact import save_small_model


def _rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [next(reader) for _ in range(n)]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])


@pytest.fixture(scope="module")
def raw_input(shared_data, tmp_path_factory) -> Path:
    """12 DDoS rows (85-column layout) and 12 benign rows (79-column layout), two of them unscorable."""
    folder = tmp_path_factory.mktemp("raw")
    header, rows = _rows(shared_data / "friday-afternoon-ddos.csv", 12)
    _write(folder / "ddos.csv", header, rows)
    header, rows = _rows(shared_data / "friday-afternoon-benign.csv", 12)
    names = [h.strip() for h in header]
    rows[3][names.index("Flow IAT Mean")] = "Infinity"  # not a rate column: never imputed, rejected
    rows[7][names.index("Total Fwd Packets")] = "-4"  # a negative counter
    _write(folder / "benign.csv", header, rows)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_small_model(tmp_path_factory.mktemp("model") / "m", "cnn_lstm", seq_len=3)


def test_report_counts_every_row(spark, raw_input, model_dir, tmp_path):
    from jobs.evaluate import main

    report_path = tmp_path / "eval" / "report.json"
    rc = main(["--input", str(raw_input), "--model", str(model_dir), "--report", str(report_path),
               "--set", "model.device=cpu"])
    assert rc == 0
    report = json.loads(report_path.read_text())
    required = {"n", "accuracy", "precision", "recall", "f1", "false_positive_rate", "roc_auc",
                "confusion_matrix", "per_type", "macro_f1"}
    assert required <= set(report)
    assert report["rows_in"] == 24
    assert report["unscored"] == {"total": 2, "by_reason": {"negative_counter: total_fwd_packets": 1,
                                                            "nonfinite_value: flow_iat_mean": 1}}
    assert report["n"] == 22
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    assert (tn + fp, fn + tp) == (10, 12)  # true benign rows, true DDoS rows
    assert set(report["per_type"]) == {"BENIGN", "DDoS"}
    assert report["accuracy"] == pytest.approx((tn + tp) / 22)
    for suffix in ("_confusion_matrix.png", "_roc.png"):
        assert (tmp_path / "eval" / f"report{suffix}").stat().st_size > 0


def test_missing_column_fails_naming_it(spark, raw_input, model_dir, tmp_path, capsys):
    from jobs.evaluate import main

    header, rows = _rows(raw_input / "benign.csv", 3)
    drop = [h.strip() for h in header].index("Flow IAT Max")
    bad = tmp_path / "bad.csv"
    _write(bad, [h for i, h in enumerate(header) if i != drop], [[c for i, c in enumerate(r) if i != drop]
                                                                  for r in rows])
    rc = main(["--input", str(bad), "--model", str(model_dir), "--report", str(tmp_path / "r.json")])
    assert rc == 2
    assert "flow_iat_max" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_refuses_a_broken_model(raw_input, model_dir, tmp_path, capsys):
    from jobs.evaluate import main

    rc = main(["--input", str(raw_input), "--model", str(tmp_path / "absent"), "--report",
               str(tmp_path / "r.json")])
    assert rc == 2
    assert "is missing" in capsys.readouterr().err


def _flag(names: list[str], row: list[str], flagged: bool, type_index: int) -> list[str]:
    """Encode the fake model's answer in two features: fwd_psh_flags (flagged) and urg_flag_count (type)."""
    row = list(row)
    row[names.index("Fwd PSH Flags")] = "1" if flagged else "0"
    row[names.index("URG Flag Count")] = str(type_index)
    return row


@pytest.fixture(scope="module")
def hand_built(shared_data, tmp_path_factory) -> Path:
    """10 real flows in two layouts with the answers of a fake model written into two of their features.

    79 columns: 4 BENIGN, one flagged (as PortScan). 78 columns, family labels: 3 DoS (2 flagged as DoS Hulk),
    2 BruteForce (1 flagged as SSH-Patator), 1 Bot (flagged as the family DoS: a family error).
    """
    from schemas.labels import LABEL_MAP

    folder = tmp_path_factory.mktemp("hand")
    header, rows = _rows(shared_data / "friday-afternoon-benign.csv", 4)
    names = [h.strip() for h in header]
    benign = [_flag(names, r, i == 0, LABEL_MAP["PortScan"] if i == 0 else 0) for i, r in enumerate(rows)]
    _write(folder / "benign.csv", header, benign)
    header, rows = _rows(shared_data.parent / "cicids2017-grouped" / "mixed-days-grouped-labels.csv", 200)
    names = [h.strip() for h in header]
    by_label: dict[str, list[list[str]]] = {}
    for r in rows:
        by_label.setdefault(r[-1], []).append(r)
    answers = {"DoS": [(True, "DoS Hulk"), (True, "DoS Hulk"), (False, "BENIGN")],
               "BruteForce": [(True, "SSH-Patator"), (False, "BENIGN")], "Bot": [(True, "DoS")]}
    grouped = [_flag(names, by_label[label][i], flagged, LABEL_MAP[kind])
               for label, marks in answers.items() for i, (flagged, kind) in enumerate(marks)]
    _write(folder / "grouped.csv", header, grouped)
    return folder


def test_exact_metrics_on_a_hand_built_fixture(spark, hand_built, tmp_path, monkeypatch):
    """Every metric of the report computed by hand, through the real reading, validation and z-score path."""
    import numpy as np

    from jobs.evaluate import main
    from models.artifact import Detector
    from tests.helpers import random_artifact

    model_dir = random_artifact(tmp_path / "m", seq_len=1)

    def fake_predict(self, features, mask, batch_size=None):
        # Identity z-score of signed_log1p: a count v arrives as log1p(v).
        flagged = features[:, -1, self.features.index("fwd_psh_flags")] > 0.5
        kind = np.rint(np.expm1(features[:, -1, self.features.index("urg_flag_count")])).astype(np.int64)
        return np.where(flagged, 0.9, 0.1).astype(np.float32), np.where(flagged, kind, 0)

    monkeypatch.setattr(Detector, "predict", fake_predict)
    report_path = tmp_path / "report.json"
    rc = main(["--input", str(hand_built), "--model", str(model_dir), "--report", str(report_path),
               "--set", "model.device=cpu"])
    assert rc == 0
    r = json.loads(report_path.read_text())
    assert (r["rows_in"], r["n"], r["unscored"]["total"]) == (10, 10, 0)
    assert r["confusion_matrix"] == [[3, 1], [2, 4]]
    assert r["accuracy"] == pytest.approx(0.7)
    assert r["precision"] == pytest.approx(0.8)
    assert r["recall"] == pytest.approx(4 / 6)
    assert r["false_positive_rate"] == pytest.approx(0.25)
    # 24 attack/benign pairs: 12 won, 4 + 6 tied (half each), 2 lost.
    assert r["roc_auc"] == pytest.approx(17 / 24)
    assert r["per_type_detection"] == pytest.approx({"BENIGN": 0.25, "Bot": 1.0, "Brute Force": 0.5,
                                                     "DoS": 2 / 3})
    # Families: BENIGN P 3/5 R 3/4; DoS P 2/3 R 2/3; Brute Force P 1 R 1/2 (F1 2/3 each); Bot 0.
    assert r["per_family_f1"] == pytest.approx({"BENIGN": 2 / 3, "Bot": 0.0, "Brute Force": 2 / 3, "DoS": 2 / 3})
    assert r["family_macro_f1"] == pytest.approx(0.5)
    # The fine types: a file labelled 'DoS' cannot credit a 'DoS Hulk' answer, hence the family metric.
    assert r["per_type"] == pytest.approx({"BENIGN": 0.75, "Bot": 0.0, "Brute Force": 0.0, "DoS": 0.0})
    assert r["macro_f1"] == pytest.approx((2 / 3) / 4)
