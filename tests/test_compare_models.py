"""bench.compare_models: the cross-validation folds and one run of each model on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest

from bench.compare_models import _subset, fold_indices, markdown_tables, run_forest, run_neural, vector_groups


def test_folds_partition_the_rows_and_never_split_a_vector():
    rng = np.random.default_rng(0)
    features = rng.integers(0, 40, size=(600, 1, 2)).astype(np.float32)  # many repeated vectors
    groups = vector_groups(features)
    assert len(set(groups.tolist())) == len({tuple(r) for r in features.reshape(600, -1).tolist()})
    tests = []
    for fold in range(3):
        idx = fold_indices(groups, seed=0, folds=3, fold=fold)
        together = np.concatenate(list(idx.values()))
        assert sorted(together.tolist()) == list(range(600))  # train, validation and test partition the rows
        sides = {name: set(groups[i].tolist()) for name, i in idx.items()}
        assert not (sides["train"] & sides["test"]) and not (sides["validation"] & sides["test"])
        assert not (sides["train"] & sides["validation"])
        assert 0.05 < len(idx["validation"]) / 600 < 0.25
        tests.append(idx["test"])
    assert sorted(np.concatenate(tests).tolist()) == list(range(600))  # each row is tested exactly once
    other_seed = fold_indices(groups, seed=1, folds=3, fold=0)["test"]
    assert not np.array_equal(other_seed, tests[0])


@pytest.mark.parametrize("model", ["cnn_lstm", "random_forest"])
def test_one_run_scores_the_held_out_fold(model):
    from jobs.lib.config import load_config
    from jobs.lib.synthetic import separable_split

    cfg = load_config(["train.progress=false", "train.threads=1", "train.max_epochs=8", "train.batch_size=128",
                       "model.input_bins=0"], env={})
    data = separable_split(900, 1, 6, seed=0)
    idx = fold_indices(vector_groups(data.features), seed=0, folds=3, fold=0)
    parts = {name: _subset(data, i) for name, i in idx.items()}
    label_map = ["BENIGN", "a", "b", "c"]
    by_rule = (run_forest(parts, label_map, cfg, seed=0) if model == "random_forest"
               else run_neural(parts, label_map, cfg, model))
    assert set(by_rule) == {"budget", "fixed"}
    assert by_rule["fixed"]["threshold"] == 0.5
    for result in by_rule.values():
        assert result["n"] == len(idx["test"])
        assert result["accuracy"] >= 0.97, result
        assert 0.0 < result["threshold"] < 1.0
    rows = [{"model": model, "seed": 0, "fold": 0, "rule": rule, **r} for rule, r in by_rule.items()]
    table = markdown_tables(rows)
    budget, fixed = table.split("**fixed**")
    for part, result in ((budget, by_rule["budget"]), (fixed, by_rule["fixed"])):
        assert f"| {model} | 1 | {len(idx['test'])} | {100 * result['accuracy']:.2f}% ± 0.00 |" in part
