"""The honest comparison: CNN+LSTM vs Bi-LSTM vs a random forest, cross-validated over seeds and folds of the
leakage-aware split, on every shared flow.

    .venv/bin/python -m bench.compare_models --data '../shared/data/cicids2017*/*.csv' --out out/compare \
        --report models/COMPARISON.md [--seeds 3] [--folds 3] [--set train.max_epochs=40]

The batch preparation (jobs.prepare_training_data, a subprocess) runs once; its three splits are pooled and
cut again into `--folds` folds per seed by the hash of the feature vector (rounded z-scores), so identical
vectors always share a fold, as in the preparation's own split. For each seed and fold the held-out fold is the
test set; of the other folds' vector groups 15% (by a second hash) are the validation set, on which the neural
models stop early, and the rest train. Nothing about a test fold is seen before it is scored. The neural models
use jobs.train's code and the [train]/[model] config (the seed also sets their initialisation); the forest (200
trees, scikit-learn) fits the same train part. Every model of one seed and fold sees the same rows, and each is
reported at two decision rules: `budget`, the threshold chosen on the run's validation benign flows for
train.fpr_budget (what jobs.train ships), and `fixed`, model.threshold (0.5).

Results go to OUT/results.json (one row per model, seed, fold and rule, a network's with the validation loss and
accuracy of the epoch it keeps, which is what settings are chosen on; a rerun skips runs already there) and, as
means and spreads, into the generated block of the markdown report (between the results markers; the text
around it is kept). Size: 3 seeds x 3 folds on the 18,778 shared flows train 18 networks; on 2 idle CPU cores a
network at the shipped settings takes 25-75 s (OUT/results.json records each run's seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.lib.config import Config, add_config_args, load_config
from models.metrics import detection_report

START, END = "<!-- results:start -->", "<!-- results:end -->"
MODELS = ("cnn_lstm", "bilstm", "random_forest")
VALIDATION_SHARE = 0.15
# Detection rates the issue sets targets on, beside the family macro F1 of the type head.
WATCHED = ("Web Attack Brute Force", "DoS", "Brute Force", "Bot")


def prepare(data: str, out: Path, config_file: str | None, sets: list[str]) -> Path:
    target = out / "prepared"
    if (target / "prep_report.json").is_file():
        return target  # prepared by an earlier run: reuse (delete OUT to redo)
    cmd = [sys.executable, "-m", "jobs.prepare_training_data", "--input", data, "--output", str(target)]
    for item in sets:
        if item.startswith("prep."):
            cmd += ["--set", item]
    if config_file:
        cmd += ["--config", config_file]
    print(f"preparing: {' '.join(cmd[1:])}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    return target


def vector_groups(features: np.ndarray) -> np.ndarray:
    """(N,) uint64 id per row: a hash of its (T, F) features rounded to 5 decimals (equal vectors, equal id)."""
    rounded = np.round(np.asarray(features, dtype=np.float64).reshape(len(features), -1), 5) + 0.0
    return np.asarray([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                       for row in rounded], dtype=np.uint64)


def _uniform(groups: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A pseudo-random number in [0, 1) per group id, fixed by (seed, salt)."""
    mixed = groups ^ np.uint64((seed * 1_000_003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF)
    mixed = (mixed * np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    mixed ^= mixed >> np.uint64(29)
    mixed = (mixed * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    mixed ^= mixed >> np.uint64(32)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


def fold_indices(groups: np.ndarray, seed: int, folds: int, fold: int) -> dict[str, np.ndarray]:
    """Row indices of train / validation / test for one seed and fold; a vector group never straddles two."""
    fold_of = np.minimum((_uniform(groups, seed, 0) * folds).astype(np.int64), folds - 1)
    in_validation = _uniform(groups, seed, 1) < VALIDATION_SHARE
    test = fold_of == fold
    return {"train": np.flatnonzero(~test & ~in_validation), "validation": np.flatnonzero(~test & in_validation),
            "test": np.flatnonzero(test)}


def _subset(split: Any, idx: np.ndarray) -> Any:
    from jobs.train import SplitArrays

    return SplitArrays(np.asarray(split.features[idx]), split.mask[idx], split.is_attack[idx],
                       split.attack_type[idx], "")


def flatten(split: Any) -> np.ndarray:
    """(N, T, F) + (N, T) -> (N, T*F + T): what a tree sees of a sequence."""
    n = len(split)
    return np.concatenate([np.asarray(split.features).reshape(n, -1), split.mask.astype(np.float32)], axis=1)


def run_forest(parts: dict[str, Any], label_map: list[str], cfg: Config, seed: int) -> dict[str, dict[str, Any]]:
    """200 trees fitted on the train part; its decision rules as for the networks (see :func:`at_rules`)."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=200, n_jobs=max(cfg.train.threads, 1), random_state=seed)
    started = time.monotonic()
    forest.fit(flatten(parts["train"]), parts["train"].attack_type)
    seconds = time.monotonic() - started
    classes = list(forest.classes_)
    attack_cols = [i for i, c in enumerate(classes) if c != 0]

    def scored(split: Any) -> tuple[np.ndarray, np.ndarray]:
        proba = forest.predict_proba(flatten(split))  # (N, classes seen in train)
        return 1.0 - proba[:, classes.index(0)], np.asarray(classes)[attack_cols][proba[:, attack_cols].argmax(1)]

    from models.metrics import threshold_for_fpr

    validation_prob, _ = scored(parts["validation"])
    benign = validation_prob[parts["validation"].is_attack == 0]
    budget = (threshold_for_fpr(benign, float(cfg.train.fpr_budget)) if cfg.train.fpr_budget > 0 and len(benign)
              else float(cfg.model.threshold))  # the rule of jobs.train.choose_threshold, on the forest's scores
    test_prob, best_attack = scored(parts["test"])
    names = np.asarray(label_map, dtype=object)
    test = parts["test"]

    def report(threshold: float) -> dict[str, Any]:
        pred = np.where(test_prob >= threshold, best_attack, 0)
        return detection_report(test.is_attack, test_prob, names[test.attack_type], names[pred], threshold)

    return at_rules(report, budget, cfg, {"train_seconds": round(seconds, 1), "epochs": None})


def at_rules(report: Any, budget: float, cfg: Config, extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The test report under both decision rules, every model alike: ``budget`` (the threshold at which at most
    train.fpr_budget of the run's validation benign flows score at or above it, what jobs.train ships) and
    ``fixed`` (model.threshold, 0.5)."""
    fixed = float(cfg.model.threshold)
    return {rule: {**report(t), "threshold": t, **extra} for rule, t in (("budget", budget), ("fixed", fixed))}


def run_neural(parts: dict[str, Any], label_map: list[str], cfg: Config, arch: str) -> dict[str, dict[str, Any]]:
    import torch

    from jobs.train import build_model, choose_threshold, configure_torch, fit, model_config, split_metrics

    device = configure_torch(cfg)
    train = parts["train"]
    config = model_config(cfg, arch, train.features.shape[2], train.features.shape[1], len(label_map))
    torch.manual_seed(cfg.train.seed)
    result = fit(build_model(arch, config), train, parts["validation"], cfg, device)
    budget, _ = choose_threshold(result.model, parts["validation"], cfg, device)  # as jobs.train ships it

    def report(threshold: float) -> dict[str, Any]:
        return split_metrics(result.model, parts["test"], label_map, threshold, device, cfg.model.batch_size)

    best = result.history[result.best_epoch - 1]  # the epoch whose weights are kept: what selection may read
    return at_rules(report, budget, cfg,
                    {"train_seconds": round(result.seconds, 1), "epochs": f"{result.best_epoch}/{result.epochs_run}",
                     "validation_loss": round(best["val_loss"], 6),
                     "validation_accuracy": round(best["val_accuracy"], 6)})


# Features that time a flow (durations, inter-arrival times, rates, active/idle periods): what is left when they
# are set aside are the exact values (packet counts and lengths, flags, header lengths, TCP windows).
TIMING = ("duration", "iat", "per_s", "active", "idle")


def label_conflicts(features: np.ndarray, is_attack: np.ndarray, types: np.ndarray,
                    names: list[str]) -> dict[str, Any]:
    """Flows whose exact values (every feature but the timing ones, rounded to 5 decimals) equal those of flows
    with the other binary label: the floor every model shares unless it separates them by timing alone.

    Per signature group holding both labels, its minority are counted: benign flows in a group that is mostly
    attacks (``benign_in_attack_groups``: what a model that flags the group pays in false positives) and attack
    flows in a group that is mostly (or half) benign (``attacks_in_benign_groups``), the latter by true type."""
    keep = [i for i, n in enumerate(names) if not any(k in n for k in TIMING)]
    n = len(features)
    rows = np.round(np.asarray(features, dtype=np.float64).reshape(n, -1, len(names))[:, :, keep].reshape(n, -1), 5)
    _, group = np.unique(rows + 0.0, axis=0, return_inverse=True)
    group = group.reshape(-1)
    attacks = np.bincount(group, weights=is_attack.astype(np.float64)).astype(np.int64)
    sizes = np.bincount(group)
    mixed = (attacks > 0) & (attacks < sizes)
    attack_major = attacks * 2 > sizes
    benign_fp = mixed[group] & attack_major[group] & (is_attack == 0)
    attack_fn = mixed[group] & ~attack_major[group] & (is_attack == 1)
    missed_types, counts = np.unique(types[attack_fn], return_counts=True)
    return {"exact_features": len(keep), "mixed_groups": int(mixed.sum()), "rows_in_mixed_groups":
            int(mixed[group].sum()), "benign": int((is_attack == 0).sum()),
            "benign_in_attack_groups": int(benign_fp.sum()), "attacks_in_benign_groups": int(attack_fn.sum()),
            "attacks_in_benign_groups_by_type": {str(t): int(c) for t, c in zip(missed_types, counts, strict=True)}}


def conflicts_text(c: dict[str, Any]) -> str:
    by_type = ", ".join(f"{t} {k}" for t, k in c["attacks_in_benign_groups_by_type"].items()) or "none"
    return (f"**Label conflicts in the data** (the floor every model shares): on the {c['exact_features']} features "
            f"that are not timings (counts, lengths, flags, windows), {c['mixed_groups']} groups of identical flows "
            f"hold both labels ({c['rows_in_mixed_groups']:,} flows). {c['benign_in_attack_groups']} benign flows "
            f"({c['benign_in_attack_groups'] / max(c['benign'], 1):.2%} of {c['benign']:,}) sit in groups that are "
            f"mostly attacks, {c['attacks_in_benign_groups']} attack flows in groups that are mostly benign "
            f"({by_type}). A model that does not tell them apart by timing alone pays the first as false positives "
            f"at any threshold that flags the group.")


def _errors(r: dict[str, Any]) -> tuple[int, int]:
    (_, fp), (fn, _) = r["confusion_matrix"]
    return fp, fn


def _spread(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    a = np.asarray(values, dtype=np.float64) * scale
    return f"{a.mean():.{digits}f}{unit} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


RULES = {"budget": "at the false-positive budget: the threshold at which at most train.fpr_budget of the run's "
                    "validation benign flows score at or above it (what jobs.train ships)",
         "fixed": "at the fixed threshold model.threshold"}


def markdown_tables(results: list[dict[str, Any]]) -> str:
    """Per decision rule: one summary row per model (mean ± standard deviation over the runs), then detection per
    true type and family."""
    lines: list[str] = []
    for rule, what in RULES.items():
        lines += [f"**{rule}**: {what}.", "", *_rule_tables([r for r in results if r["rule"] == rule]), ""]
    return "\n".join(lines).rstrip()


def _rule_tables(results: list[dict[str, Any]]) -> list[str]:
    models = [m for m in MODELS if any(r["model"] == m for r in results)]
    head = ["model", "runs", "test n", "accuracy", "FPR", "FP + FN", *(f"detected: {t}" for t in WATCHED),
            "family macro F1", "threshold", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model in models:
        rows = [r for r in results if r["model"] == model]
        fp, fn = zip(*(_errors(r) for r in rows), strict=True)
        cells = [model, str(len(rows)), f"{np.mean([r['n'] for r in rows]):.0f}",
                 _spread([r["accuracy"] for r in rows], 100, 2, "%"),
                 _spread([r["false_positive_rate"] for r in rows], 100, 3, "%"),
                 f"{np.mean(fp):.1f} + {np.mean(fn):.1f}"]
        cells += [_spread([r["per_type_detection"].get(t, float("nan")) for r in rows], 100, 1, "%")
                  for t in WATCHED]
        cells += [_spread([r["family_macro_f1"] for r in rows], 1, 3),
                  f"{np.median([r['threshold'] for r in rows]):.4g}",
                  f"{np.mean([r['train_seconds'] for r in rows]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Detection per true type and family (share flagged as attacks; mean over runs):", ""]
    names = sorted({t for r in results for t in r["per_type_detection"]})
    lines.append("| model | " + " | ".join(names) + " |")
    lines.append("|" + " --- |" * (len(names) + 1))
    for model in models:
        rows = [r for r in results if r["model"] == model]
        cells = [f"{100 * np.mean([r['per_type_detection'][t] for r in rows if t in r['per_type_detection']]):.1f}%"
                 for t in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_report(path: Path, results: list[dict[str, Any]], header: str, footer: str = "") -> None:
    block = f"{START}\n{header}\n\n{markdown_tables(results)}\n" + (f"\n{footer}\n" if footer else "") + END
    if path.is_file() and START in (text := path.read_text()) and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        path.write_text(before + block + after)
    else:
        path.write_text(f"# Model comparison\n\n{block}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="raw CICFlowMeter CSV folder/file/glob")
    parser.add_argument("--out", required=True, help="working folder (prepared tables, results.json)")
    parser.add_argument("--report", help="markdown report to update (e.g. models/COMPARISON.md)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare(args.data, out, args.config, list(args.sets))

    from jobs.lib.spark import build_session
    from jobs.train import SPLITS, load_prepared

    spark = build_session(cfg, app_name="flowsentinel-compare")
    data = load_prepared(spark, prepared, cfg, out / "scratch")
    pooled = _subset(data.splits["train"], np.arange(len(data.splits["train"])))
    for name in SPLITS[1:]:
        s = data.splits[name]
        pooled.features = np.concatenate([pooled.features, np.asarray(s.features)])
        pooled.mask = np.concatenate([pooled.mask, s.mask])
        pooled.is_attack = np.concatenate([pooled.is_attack, s.is_attack])
        pooled.attack_type = np.concatenate([pooled.attack_type, s.attack_type])
    groups = vector_groups(pooled.features)
    conflicts = label_conflicts(pooled.features, pooled.is_attack,
                                np.asarray(data.label_map, dtype=object)[pooled.attack_type], data.features)
    print(json.dumps({"label_conflicts": conflicts}), file=sys.stderr)
    results_path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    results = [r for r in results if "rule" in r]  # rows of the format before the two decision rules: rerun
    done = {(r["model"], r["seed"], r["fold"]) for r in results}
    models = [m for m in args.models.split(",") if m]
    for seed in range(args.seeds):
        run_cfg = load_config([*args.sets, f"train.seed={cfg.train.seed + seed}"], args.config)
        for fold in range(args.folds):
            idx = fold_indices(groups, seed, args.folds, fold)
            parts = {name: _subset(pooled, i) for name, i in idx.items()}
            for model in models:
                if (model, seed, fold) in done:
                    continue
                print(f"[seed {seed} fold {fold}] {model}: {', '.join(f'{k} {len(v)}' for k, v in idx.items())}",
                      file=sys.stderr)
                by_rule = (run_forest(parts, data.label_map, run_cfg, cfg.train.seed + seed)
                           if model == "random_forest" else run_neural(parts, data.label_map, run_cfg, model))
                for rule, metrics in by_rule.items():
                    results.append({"model": model, "seed": seed, "fold": fold, "rule": rule, **metrics})
                    print(json.dumps({"rule": rule, **{k: metrics.get(k) for k in (
                        "accuracy", "false_positive_rate", "family_macro_f1", "threshold", "train_seconds",
                        "epochs")}}), file=sys.stderr)
                results_path.write_text(json.dumps(results, indent=1))
    if args.report:
        settings = ", ".join(args.sets) or "none"
        header = (f"Generated by `make compare` (bench/compare_models.py) on `{args.data}` "
                  f"({sum(len(s) for s in data.splits.values()):,} flows after the preparation): "
                  f"{args.seeds} seeds x {args.folds} folds of the vector-hash split, mean ± standard deviation "
                  f"over the runs. Networks: [train]/[model] of conf/defaults.toml with overrides: {settings}. "
                  f"Forest: 200 trees on the same train part. Every model is reported at two decision rules: "
                  f"`budget` (train.fpr_budget {cfg.train.fpr_budget}, chosen on the run's validation benign "
                  f"flows) and `fixed` (model.threshold {cfg.model.threshold}).")
        write_report(Path(args.report), [r for r in results if r["seed"] < args.seeds and r["fold"] < args.folds
                                         and r["model"] in models], header, conflicts_text(conflicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
