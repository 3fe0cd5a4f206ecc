"""Evaluate a model on raw, labeled CICFlowMeter CSV: the metrics report and its plots.

    .venv/bin/python -m jobs.evaluate --input ../shared/data/cicids2017 --report out/eval/report.json
    .venv/bin/python -m jobs.evaluate --input 'day/*.csv' --model out/model --report out/eval/report.json

`--input` is a CSV file, a folder or a glob, in any CICIDS2017 layout (85, 79 or 78 columns). The rows go
through the same preprocessing module as training and streaming (jobs/lib/prep/: validation, labels,
z-score with the model's own statistics, sequences with the model's T and key settings); without `--model` the
shipped model in models/default is used.

The report (JSON) has: n (rows scored), accuracy, precision, recall, f1, false_positive_rate, roc_auc,
confusion_matrix ([[TN, FP], [FN, TP]]), per_type (attack type -> recall of the type head), macro_f1 (over the
attack types the labels name), per_type_detection (true type or family -> share of its flows the threshold flags
as attacks; BENIGN: the false-positive rate), per_family_f1 and family_macro_f1 (the type head judged by family:
BENIGN, DDoS, DoS, PortScan, Web Attack, Brute Force, Bot, Infiltration), rows_in, unscored (rows that could not
be scored, by reason: they are counted, never silently lost) and the model's identity. Plots go beside it:
<report stem>_confusion_matrix.png and <stem>_roc.png.
A file lacking a column the model needs stops the job with exit status 2 and a message naming the column.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.lib.config import Config, ConfigError, add_config_args, load_config
from models.artifact import ArtifactError, Detector, load_model
from models.metrics import detection_report, roc_curve

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_model_dir(cfg: Config, model: str | None) -> Path:
    if model:
        return Path(model)
    path = Path(cfg.model.dir)
    return path if path.is_absolute() else REPO_ROOT / path


def prepare_for_model(spark: Any, input_path: str, cfg: Config, detector: Detector) -> tuple[Any, Any, Any]:
    """Raw CSV -> (sequences ready to score, rejected rows, the read DataFrame), via the shared preprocessing.

    Raises SchemaError when a file lacks a column (read_flows names it) or a feature the model needs.
    """
    from pyspark.sql import functions as sf

    from jobs.lib import prep as pp
    from schemas.flows import SchemaError

    flows = pp.read_flows(spark, input_path)
    missing = [c for c in detector.features if c not in flows.columns]
    if missing:
        raise SchemaError(f"{input_path}: missing column {missing[0]!r} that the model needs")
    checked = pp.with_checks(flows, cfg)
    rejected = checked.where(sf.col("reject_reason").isNotNull())
    valid = checked.where(sf.col("reject_reason").isNull())
    sequences = pp.build_sequences(pp.apply_zscore(valid, detector.norm_stats), detector.seq_len)
    return sequences, rejected, flows


def score_sequences(sequences: Any, detector: Detector, label_map: list[str]) -> dict[str, np.ndarray]:
    """Fetch sequences chunk by chunk through Arrow and score them; only labels and scores stay in memory."""
    from jobs.train import arrow_chunks, arrow_to_numpy

    label_index = {name: i for i, name in enumerate(label_map)}
    df = sequences.select("features", "mask", "is_attack", "attack_type", "source_file", "source_row")
    n = df.count()
    row_bytes = max(detector.seq_len * len(detector.features) * 4, 1)
    n_chunks = max(1, -(-n * row_bytes // (256 * 2**20)))
    probs, types, is_attack, true_types = [], [], [], []
    for table in arrow_chunks(df, n_chunks):
        if table.num_rows == 0:
            continue
        x, m, y, t = arrow_to_numpy(table, label_index)
        p, k = detector.predict(x, m)
        probs.append(p)
        types.append(k)
        is_attack.append(y)
        true_types.append(t)
    empty = np.zeros(0, np.int64)
    return {
        "attack_prob": np.concatenate(probs) if probs else np.zeros(0, np.float32),
        "pred_type": np.concatenate(types) if types else empty,
        "is_attack": np.concatenate(is_attack) if is_attack else empty,
        "true_type": np.concatenate(true_types) if true_types else empty,
    }


def write_plots(report: dict[str, Any], scores: dict[str, np.ndarray], stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    cm = np.asarray(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, f"{value:,}", ha="center", va="center",
                color="white" if value > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], ["benign", "attack"])
    ax.set_yticks([0, 1], ["benign", "attack"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (n={report['n']:,})")
    fig.tight_layout()
    path = stem.with_name(stem.name + "_confusion_matrix.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(str(path))

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    if report["roc_auc"] is not None:
        fpr, tpr = roc_curve(scores["is_attack"], scores["attack_prob"])
        ax.plot(fpr, tpr, label=f"AUC {report['roc_auc']:.4f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC curve" + ("" if report["roc_auc"] is not None else " (one class only: undefined)"))
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = stem.with_name(stem.name + "_roc.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(str(path))
    return paths


def evaluate(spark: Any, input_path: str, cfg: Config, detector: Detector) -> tuple[dict[str, Any], dict]:
    sequences, rejected, flows = prepare_for_model(spark, input_path, cfg, detector)
    rows_in = flows.count()
    by_reason = rejected.groupBy("reject_reason").count().collect()  # one row per reason: small
    unscored = {r["reject_reason"]: int(r["count"]) for r in by_reason}
    scores = score_sequences(sequences, detector, detector.label_map)
    names = np.asarray(detector.label_map, dtype=object)
    report = detection_report(scores["is_attack"], scores["attack_prob"], names[scores["true_type"]],
                              names[scores["pred_type"]], detector.threshold)
    n_unscored = sum(unscored.values())
    lost = rows_in - report["n"] - n_unscored
    if lost:
        # Every row is either scored or counted as unscored; anything else is a bug, never a silent loss.
        raise RuntimeError(f"{lost} rows were neither scored nor counted as unscored")
    report.update({
        "rows_in": rows_in,
        "unscored": {"total": n_unscored, "by_reason": dict(sorted(unscored.items()))},
        "threshold": detector.threshold,
        "model_version": detector.model_version,
        "model_dir": str(detector.folder),
        "input": input_path,
    })
    return report, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="CICFlowMeter CSV file, folder or glob (labeled)")
    parser.add_argument("--model", help="model folder (default: model.dir, the shipped models/default)")
    parser.add_argument("--report", required=True, help="report JSON to write; plots go beside it")
    add_config_args(parser)
    args = parser.parse_args(argv)
    from schemas.flows import SchemaError

    try:
        base = load_config(args.sets, args.config)
        detector = load_model(resolve_model_dir(base, args.model), device=base.model.device,
                              batch_size=base.model.batch_size, threads=base.model.threads or None)
        # The sequence settings come from the model: scoring with another key or T than it was trained
        # with would silently change its inputs.
        cfg = load_config([*args.sets, *sequence_overrides(detector)], args.config)
    except (ConfigError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from jobs.lib.spark import build_session

    spark = build_session(cfg, app_name="flowsentinel-evaluate")
    started = time.monotonic()
    try:
        report, scores = evaluate(spark, args.input, cfg, detector)
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, scores, out.with_suffix(""))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("n", "accuracy", "precision", "recall", "f1",
                                              "false_positive_rate", "roc_auc", "macro_f1", "family_macro_f1",
                                              "per_type_detection", "unscored")},
                     indent=2))
    return 0


def sequence_overrides(detector: Detector) -> list[str]:
    """--set flags that make the preprocessing build the sequences the model was trained on."""
    from jobs.lib.prep import sequence_config_overrides

    return sequence_config_overrides(detector.sequence)


if __name__ == "__main__":
    sys.exit(main())
