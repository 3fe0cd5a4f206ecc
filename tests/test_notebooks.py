"""Each notebook runs top to bottom on small inputs (nbclient, this venv's kernel), so none of them rots; and
they are committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from models.artifact import ModelSpec, build_model, save_artifact
from schemas.flows import FEATURE_COLUMNS
from schemas.labels import ATTACK_TYPES
from schemas.normalization import NormStats
from schemas.records import ALERTS, FLOWS_SCORED, QUARANTINE
from tests import test_sql

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_data_exploration.ipynb", "02_model_report.ipynb", "03_alerts_dashboard.ipynb"]


def run(name: str, env: dict[str, str], monkeypatch) -> str:
    """Execute a notebook in notebooks/ with `env` set; returns all its text outputs joined."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # "python3" is ipykernel's kernel spec; jupyter_client starts it with the interpreter running this test
    # (the venv's), so the notebooks see pyspark, torch and the project.
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_notebooks_are_committed_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), name


def test_data_exploration(shared_data, monkeypatch):
    text = run("01_data_exploration.ipynb", {"FLOWSENTINEL_NB_DATA": str(shared_data / "friday-afternoon-ddos.csv"),
                                             "FLOWSENTINEL_NB_SAMPLE": "300"}, monkeypatch)
    assert "friday-afternoon-ddos.csv" in text and "DDoS" in text


@pytest.fixture
def trained_like_artifact(tmp_path) -> Path:
    """models/default when it exists; else an artifact shaped like a trained one (history, test metrics)."""
    default = Path(__file__).resolve().parents[1] / "models" / "default"
    if (default / "manifest.json").is_file():
        return default
    torch.manual_seed(0)
    features = [c for c in FEATURE_COLUMNS if c != "fwd_header_length_dup"]
    model = build_model("cnn_lstm", {"n_features": len(features), "seq_len": 2, "n_types": len(ATTACK_TYPES)})
    stats = NormStats(features, [0.0] * len(features), [1.0] * len(features), clip=10.0)
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 1 - 0.1 / e,
                "val_accuracy": 1 - 0.12 / e} for e in (1, 2, 3)]
    metrics = {"test": {"n": 200, "accuracy": 0.925, "precision": 0.905, "recall": 0.95, "f1": 0.927,
                        "confusion_matrix": [[90, 10], [5, 95]]}}
    spec = ModelSpec(arch="cnn_lstm", features=features, label_map=list(ATTACK_TYPES),
                     normalization_json=stats.to_json(),
                     sequence={"seq_len": 2, "key": "src_ip", "cicids_12h_clock": True, "nonfinite_policy": "impute"},
                     metrics=metrics, history=history)
    return save_artifact(model, spec, tmp_path / "model")


def test_model_report(trained_like_artifact, monkeypatch):
    text = run("02_model_report.ipynb", {"FLOWSENTINEL_NB_MODEL": str(trained_like_artifact)}, monkeypatch)
    assert "'accuracy'" in text and "cnn_lstm" in text


def test_alerts_dashboard(spark, tmp_path, monkeypatch):
    tables = tmp_path / "tables"
    for name, schema, data in (("flows_scored", FLOWS_SCORED, test_sql.FLOWS + test_sql.SCANS),
                               ("alerts", ALERTS, test_sql.ALERT_ROWS),
                               ("quarantine", QUARANTINE, test_sql.QUARANTINE_ROWS)):
        spark.createDataFrame(test_sql.rows(schema, *data), schema).write.format("delta").save(str(tables / name))
    text = run("03_alerts_dashboard.ipynb", {"FLOWSENTINEL_NB_TABLES": str(tables)}, monkeypatch)
    # The registered tables, the one false positive (a4), the top host and a quarantine reason all show.
    assert "'alerts': True" in text and "a4" in text and "10.0.0.1" in text and "missing_field" in text
