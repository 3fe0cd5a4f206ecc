"""jobs.train: reading prepared Delta tables into numpy, and the --dry-run end to end."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from schemas.flows import FEATURE_COLUMNS
from schemas.labels import ATTACK_TYPES

FEATURES = FEATURE_COLUMNS[:5]
LABEL_INDEX = {name: i for i, name in enumerate(ATTACK_TYPES)}


def prepared_rows(n: int, t: int, f: int, seed: int, source: str) -> list[tuple]:
    """PREPARED_SAMPLE rows: attack rows have their scored flow shifted, as a learnable signal."""
    rng = np.random.default_rng(seed)
    types = ["BENIGN", "DDoS", "PortScan"]
    rows = []
    for i in range(n):
        attack_type = types[i % 3]
        length = int(rng.integers(1, t + 1))
        x = rng.normal(size=(t, f)).astype(np.float32)
        x[: t - length] = 0.0
        if attack_type != "BENIGN":
            x[-1, types.index(attack_type)] += 8.0
        mask = [j >= t - length for j in range(t)]
        rows.append((x.tolist(), mask, int(attack_type != "BENIGN"), attack_type, f"10.0.0.{i % 7}",
                     dt.datetime(2017, 7, 7, 15, 0, i % 60), source, i + 1))
    return rows


def write_prepared(spark, folder: Path, t: int = 3, n: int = 60) -> Path:
    from schemas.normalization import NormStats
    from schemas.records import PREPARED_SAMPLE

    for k, split in enumerate(("train", "validation", "test")):
        rows = prepared_rows(n if split == "train" else n // 2, t, len(FEATURES), k, f"{split}.csv")
        # Written in reverse order, so the reader's (source_file, source_row) sort is exercised.
        spark.createDataFrame(rows[::-1], PREPARED_SAMPLE).write.format("delta").save(str(folder / split))
    stats = NormStats(FEATURES, [0.0] * len(FEATURES), [1.0] * len(FEATURES))
    (folder / "normalization.json").write_text(stats.to_json())
    (folder / "prep_report.json").write_text(json.dumps({"sequence": {"seq_len": t, "key": "src_ip"}}))
    return folder


def test_arrow_to_numpy_exact():
    from jobs.train import arrow_to_numpy

    table = pa.table({
        "features": [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.5, -6.0]]],
        "mask": [[True, True], [False, True]],
        "is_attack": pa.array([0, 1], pa.int32()),
        "attack_type": ["BENIGN", "PortScan"],
    })
    x, m, y, t = arrow_to_numpy(table, LABEL_INDEX)
    np.testing.assert_array_equal(x, np.array([[[1, 2], [3, 4]], [[0, 0], [5.5, -6]]], np.float32))
    np.testing.assert_array_equal(m, [[True, True], [False, True]])
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(t, [0, ATTACK_TYPES.index("PortScan")])
    assert x.dtype == np.float32 and m.dtype == bool


def test_arrow_to_numpy_refuses_ragged_and_unknown_types():
    from jobs.train import arrow_to_numpy

    ragged = pa.table({"features": [[[1.0, 2.0]], [[1.0]]], "mask": [[True], [True]],
                       "is_attack": [0, 0], "attack_type": ["BENIGN", "BENIGN"]})
    with pytest.raises(ValueError, match="ragged"):
        arrow_to_numpy(ragged, LABEL_INDEX)
    unknown = pa.table({"features": [[[1.0]]], "mask": [[True]], "is_attack": [1],
                        "attack_type": ["Zero Day"]})
    with pytest.raises(ValueError, match="attack type 'Zero Day' .* not in the label map"):
        arrow_to_numpy(unknown, LABEL_INDEX)


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory) -> Path:
    return write_prepared(spark, tmp_path_factory.mktemp("prepared"))


def test_load_split_in_memory_and_disk_backed_agree(spark, prepared, tmp_path):
    from jobs.train import load_split

    expected = sorted(prepared_rows(30, 3, len(FEATURES), 1, "validation.csv"), key=lambda r: r[7])
    small = load_split(spark, prepared / "validation", LABEL_INDEX, memory_budget_mb=64, scratch=tmp_path)
    assert isinstance(small.features, np.ndarray) and not isinstance(small.features, np.memmap)
    np.testing.assert_array_equal(small.features, np.array([r[0] for r in expected], np.float32))
    np.testing.assert_array_equal(small.mask, np.array([r[1] for r in expected]))
    np.testing.assert_array_equal(small.is_attack, [r[2] for r in expected])
    np.testing.assert_array_equal(small.attack_type, [LABEL_INDEX[r[3]] for r in expected])
    # A zero budget forces the disk-backed path, fetched in 4 range partitions.
    big = load_split(spark, prepared / "validation", LABEL_INDEX, memory_budget_mb=0, scratch=tmp_path,
                     chunk_bytes=len(FEATURES) * 3 * 4 * 8)
    assert isinstance(big.features, np.memmap)
    np.testing.assert_array_equal(big.features, small.features)
    np.testing.assert_array_equal(big.attack_type, small.attack_type)
    assert big.sha256 == small.sha256


def test_dry_run_end_to_end(spark, prepared, tmp_path):
    from jobs.train import main
    from models.artifact import load_model

    out = tmp_path / "model"
    rc = main(["--data", str(prepared), "--out", str(out), "--arch", "bilstm", "--dry-run",
               "--set", "train.progress=false", "--set", "train.threads=1"])
    assert rc == 0
    detector = load_model(out, device="cpu")
    manifest = detector.manifest
    assert manifest["arch"] == "bilstm"
    assert manifest["features"] == FEATURES
    assert manifest["sequence"] == {"seq_len": 3, "key": "src_ip"}
    assert manifest["training"]["epochs_run"] == 1
    assert manifest["training_data"]["rows"] == {"train": 16, "validation": 16, "test": 16}
    assert set(manifest["metrics"]) == {"validation", "test"}
    assert (out / "training_curves.png").stat().st_size > 0


def test_training_fits_prepared_tables(spark, prepared, tmp_path):
    """A few real epochs on the prepared tables: the loop learns the signal and the artifact records it."""
    from jobs.lib.config import load_config
    from jobs.train import load_prepared, train_and_save

    train_cfg = load_config(["train.progress=false", "train.threads=1", "train.patience=50",
                             "train.batch_size=16", "train.learning_rate=0.005",
                             "train.fpr_budget=0", "model.input_bins=0"], env={})
    # fpr_budget and the bin encoding have their own tests (test_models, test_artifact); 60 rows fit neither
    data = load_prepared(spark, prepared, train_cfg, tmp_path / "scratch")
    import torch

    folder, result = train_and_save(data, train_cfg, "cnn_lstm", tmp_path / "m", torch.device("cpu"),
                                    max_epochs=25)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert result.epochs_run == 25
    # 30 test rows, two thirds attacks: calling everything an attack scores 0.667; learning the signal >= 0.9.
    assert manifest["metrics"]["test"]["accuracy"] >= 0.9, manifest["metrics"]["test"]
    assert manifest["training_data"]["types"]["train"] == {"BENIGN": 20, "DDoS": 20, "PortScan": 20}
