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
