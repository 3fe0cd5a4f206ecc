"""The honest comparison: CNN+LSTM vs Bi-LSTM vs a tree baseline, T=1 vs T>1, paper13 vs all features, and
the leakage-aware split vs a random one, each on the test split of its own preparation.

    .venv/bin/python -m jobs.compare_models --data ../shared/data/cicids2017 --out out/compare \
        --report models/COMPARISON.md

For every variant it runs the batch preparation (jobs.prepare_training_data, a subprocess with the variant's
--set flags), trains the models of that variant with jobs.train's code and the [train]/[model] config, fits a
scikit-learn random forest on the same arrays (the sequence flattened to T*F values plus the mask), and
scores all of them on the variant's test split with models.metrics. Results go to OUT/results.json and into
the generated block of the markdown report (between the results markers; the text around it is kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.lib.config import Config, add_config_args, load_config
from models.metrics import detection_report

START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass
class Variant:
    name: str
    prep: dict[str, Any]  # prep.* overrides
    models: list[str]
    purpose: str
    extra: dict[str, Any] = field(default_factory=dict)  # other config overrides for the neural models


VARIANTS = [
    Variant("all-T1-hash", {"feature_set": "all", "sequence_length": 1, "split_mode": "hash"},
            ["cnn_lstm", "bilstm", "random_forest"], "architectures on the leakage-aware split"),
    Variant("paper13-T1-hash", {"feature_set": "paper13", "sequence_length": 1, "split_mode": "hash"},
            ["cnn_lstm", "random_forest"], "paper13 vs all"),
    Variant("all-T4-hash", {"feature_set": "all", "sequence_length": 4, "split_mode": "hash"},
            ["cnn_lstm", "bilstm", "random_forest"], "T=1 vs T>1 (key src_ip, file order without IPs)"),
    Variant("all-T1-random", {"feature_set": "all", "sequence_length": 1, "split_mode": "random"},
            ["cnn_lstm", "random_forest"], "random vs leakage-aware split"),
    Variant("all-T1-hash-drop", {"feature_set": "all", "sequence_length": 1, "split_mode": "hash",
                                 "nonfinite_policy": "drop"},
            ["cnn_lstm", "random_forest"], "Infinity/NaN rates dropped instead of imputed"),
]


def prepare(variant: Variant, data: str, out: Path, config_file: str | None) -> Path:
    target = out / "prepared" / variant.name
    if (target / "prep_report.json").is_file():
        return target  # prepared by an earlier run with the same name: reuse (delete OUT to redo)
    sets = [f"prep.{k}={v}" for k, v in variant.prep.items()]
    cmd = [sys.executable, "-m", "jobs.prepare_training_data", "--input", data, "--output", str(target)]
    for item in sets:
        cmd += ["--set", item]
    if config_file:
        cmd += ["--config", config_file]
    print(f"[{variant.name}] preparing: {' '.join(cmd[1:])}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    return target


def flatten(split: Any) -> np.ndarray:
    """(N, T, F) + (N, T) -> (N, T*F + T): what a tree sees of a sequence."""
    n = len(split)
    return np.concatenate([np.asarray(split.features).reshape(n, -1), split.mask.astype(np.float32)], axis=1)


def run_forest(data: Any, cfg: Config) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier

    train, test = data.splits["train"], data.splits["test"]
    forest = RandomForestClassifier(n_estimators=200, n_jobs=max(cfg.train.threads, 1),
                                    random_state=cfg.train.seed)
    started = time.monotonic()
    forest.fit(flatten(train), train.attack_type)
    seconds = time.monotonic() - started
    proba = forest.predict_proba(flatten(test))  # (N, classes seen in train)
    classes = list(forest.classes_)
    benign_col = classes.index(0)
    attack_prob = 1.0 - proba[:, benign_col]
    attack_cols = [i for i, c in enumerate(classes) if c != 0]
    best_attack = np.asarray(classes)[attack_cols][proba[:, attack_cols].argmax(axis=1)]
    pred = np.where(attack_prob >= cfg.model.threshold, best_attack, 0)
    names = np.asarray(data.label_map, dtype=object)
    report = detection_report(test.is_attack, attack_prob, names[test.attack_type], names[pred],
                              cfg.model.threshold)
    return {**report, "train_seconds": round(seconds, 1), "epochs": None}


def run_neural(data: Any, cfg: Config, arch: str, out: Path) -> dict[str, Any]:
    from jobs.train import configure_torch, train_and_save

    device = configure_torch(cfg)
    folder, result = train_and_save(data, cfg, arch, out, device)
    manifest = json.loads((folder / "manifest.json").read_text())
    return {**manifest["metrics"]["test"], "train_seconds": round(result.seconds, 1),
            "epochs": f"{result.best_epoch}/{result.epochs_run}", "model_dir": str(folder)}


COLUMNS = [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
           ("false_positive_rate", "FPR"), ("macro_f1", "type macro F1")]


def markdown_table(results: list[dict[str, Any]]) -> str:
    head = ("| variant | features | T | split | model | test n | "
            + " | ".join(label for _, label in COLUMNS) + " | train s | best/run epochs |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        cells = [r["variant"], r["feature_set"], str(r["seq_len"]), r["split_mode"], r["model"], str(r["n"])]
        cells += [f"{100 * r[k]:.2f}%" if k != "macro_f1" else f"{r[k]:.3f}" for k, _ in COLUMNS]
        cells += [str(r["train_seconds"]), str(r["epochs"] or "-")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Per attack type (test recall / F1):")
    lines.append("")
    types = sorted({t for r in results for t in r["per_type"]})
    lines.append("| variant | model | " + " | ".join(types) + " |")
    lines.append("|" + " --- |" * (len(types) + 2))
    for r in results:
        cells = [f"{r['per_type'][t]:.3f} / {r['per_type_f1'][t]:.3f}" if t in r["per_type"] else "-"
                 for t in types]
        lines.append(f"| {r['variant']} | {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(path: Path, results: list[dict[str, Any]], header: str) -> None:
    block = f"{START}\n{header}\n\n{markdown_table(results)}\n{END}"
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
    parser.add_argument("--out", required=True, help="working folder (prepared tables, models, results.json)")
    parser.add_argument("--report", help="markdown report to update (e.g. models/COMPARISON.md)")
    parser.add_argument("--only", action="append", default=[], help="run only these variant names")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from jobs.lib.spark import build_session
    from jobs.train import load_prepared

    results_path = out / "results.json"
    results: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    spark = None
    for variant in VARIANTS:
        if args.only and variant.name not in args.only:
            continue
        prepared = prepare(variant, args.data, out, args.config)
        spark = spark or build_session(cfg, app_name="flowsentinel-compare")
        vcfg = load_config([*args.sets, *(f"prep.{k}={v}" for k, v in variant.prep.items())], args.config)
        data = load_prepared(spark, prepared, vcfg, out / "scratch")
        for model in variant.models:
            print(f"[{variant.name}] {model} on {data.fingerprint['rows']}", file=sys.stderr)
            if model == "random_forest":
                metrics = run_forest(data, vcfg)
            else:
                metrics = run_neural(data, vcfg, model, out / "models" / f"{variant.name}-{model}")
            row = {"variant": variant.name, "model": model, "purpose": variant.purpose,
                   "feature_set": variant.prep["feature_set"], "seq_len": variant.prep["sequence_length"],
                   "split_mode": variant.prep["split_mode"], "rows": data.fingerprint["rows"], **metrics}
            results = [r for r in results if (r["variant"], r["model"]) != (variant.name, model)] + [row]
            results_path.write_text(json.dumps(results, indent=1))
            print(json.dumps({k: row.get(k) for k in ("variant", "model", "accuracy", "false_positive_rate",
                                                      "macro_f1", "train_seconds")}), file=sys.stderr)
    order = {(v.name, m): 10 * i + j for i, v in enumerate(VARIANTS) for j, m in enumerate(v.models)}
    results.sort(key=lambda r: order.get((r["variant"], r["model"]), 1_000))
    if args.report:
        header = (f"Generated by `make compare` (jobs/compare_models.py) on `{args.data}`; each row is "
                  f"scored on the test split of its own preparation. Training: [train] settings of "
                  f"conf/defaults.toml (batch {cfg.train.batch_size}, Adam lr {cfg.train.learning_rate}, "
                  f"patience {cfg.train.patience}, {cfg.train.threads} CPU thread(s)).")
        write_report(Path(args.report), results, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
