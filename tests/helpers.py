"""Fixtures built in code: a model artifact from random weights (for plumbing tests that must not depend on the
quality of the shipped model) and Kafka message helpers."""

from __future__ import annotations

from pathlib import Path

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
