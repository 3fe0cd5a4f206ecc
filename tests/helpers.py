"""Fixtures built in code: a model artifact from random weights (for plumbing tests that must not depend on the
quality of the shipped model), Kafka message helpers, and the check that readers without a JVM see Spark's rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from models.artifact import ModelSpec, build_model, save_artifact
from schemas.flows import FEATURE_COLUMNS
from schemas.labels import ATTACK_TYPES
from schemas.normalization import NormStats


def random_artifact(out: Path, seq_len: int = 2, threshold: float = 0.5, seed: int = 0) -> Path:
    """A valid artifact (all 76 features, identity z-score) whose weights are random but fixed by `seed`."""
    torch.manual_seed(seed)
    features = [c for c in FEATURE_COLUMNS if c != "fwd_header_length_dup"]
    config = {"n_features": len(features), "seq_len": seq_len, "n_types": len(ATTACK_TYPES)}
    model = build_model("cnn_lstm", config)
    stats = NormStats(features, [0.0] * len(features), [1.0] * len(features), clip=10.0)
    sequence = {"seq_len": seq_len, "key": "src_ip", "cicids_12h_clock": True, "nonfinite_policy": "impute"}
    spec = ModelSpec(arch="cnn_lstm", features=features, label_map=list(ATTACK_TYPES),
                     normalization_json=stats.to_json(), sequence=sequence, threshold=threshold)
    return save_artifact(model, spec, out)


def assert_readable_without_spark(spark, table_dir: Path, group_by: str) -> None:
    """delta-rs (the ``deltalake`` package, no JVM) reads the Delta table with exactly Spark's rows, into pandas,
    and DuckDB, querying that pandas frame, counts the same groups as Spark: a table feature that readers other
    than Spark cannot handle fails here when it is introduced."""
    import duckdb
    from deltalake import DeltaTable

    def value(v: Any) -> Any:
        return v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v

    def canonical(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(repr(sorted((k, value(v)) for k, v in r.items())) for r in rows)

    expected = spark.read.format("delta").load(str(table_dir))
    table = DeltaTable(str(table_dir))
    assert table.to_pyarrow_table().column_names == expected.columns
    assert canonical(table.to_pyarrow_table().to_pylist()) == canonical(expected.toArrow().to_pylist())
    frame = table.to_pandas()  # noqa: F841 (DuckDB finds the frame by its variable name)
    relation = duckdb.sql(f"SELECT {group_by} AS g, count(*) AS n FROM frame GROUP BY 1")
    assert relation is not None  # a SELECT always gives a relation
    counted = relation.fetchall()
    assert len(frame) == expected.count()
    assert sorted(counted, key=repr) == sorted((tuple(r) for r in expected.groupBy(group_by).count().collect()),
                                               key=repr)
