"""bench.compare_models: the cross-validation folds and one run of each model on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest

from bench.compare_models import (
    _subset,
    conflicts_text,
    fold_indices,
    label_conflicts,
    markdown_tables,
    run_forest,
    run_neural,
    vector_groups,
)


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


def test_label_conflicts_count_the_minority_of_groups_equal_but_for_timing():
    names = ["flow_duration", "total_fwd_packets", "flow_iat_mean", "init_win_bytes_forward"]
    rows = [  # (duration, packets, iat, window): timing columns differ inside each group
        ((1.0, 3, 0.1, 8192), 1, "Bot"), ((1.1, 3, 0.2, 8192), 1, "Bot"), ((0.9, 3, 0.3, 8192), 1, "Bot"),
        ((1.0, 3, 0.4, 8192), 0, "BENIGN"),  # group A: 3 attacks, 1 benign -> 1 benign false-positive floor
        ((5.0, 1, 0.0, 256), 0, "BENIGN"), ((6.0, 1, 0.5, 256), 1, "DoS"),  # group B: a tie counts as benign
        ((7.0, 1, 0.0, 256.5), 1, "DoS"),  # its own group (window differs): no conflict
        ((1.0, 2, 0.1, 8192), 0, "BENIGN"), ((1.0, 2, 0.9, 8192), 0, "BENIGN"),  # one label only
    ]
    features = np.asarray([r[0] for r in rows], dtype=np.float32).reshape(len(rows), 1, 4)
    is_attack = np.asarray([r[1] for r in rows])
    types = np.asarray([r[2] for r in rows], dtype=object)
    c = label_conflicts(features, is_attack, types, names)
    assert c == {"exact_features": 2, "mixed_groups": 2, "rows_in_mixed_groups": 6, "benign": 4,
                 "benign_in_attack_groups": 1, "attacks_in_benign_groups": 1,
                 "attacks_in_benign_groups_by_type": {"DoS": 1}}
    assert "1 benign flows (25.00% of 4) sit in groups that are mostly attacks" in conflicts_text(c)


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
