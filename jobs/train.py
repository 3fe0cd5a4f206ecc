"""Train a detector on the prepared Delta tables and write the model artifact.

    .venv/bin/python -m jobs.train --data out/prepared --out out/model --arch cnn_lstm [--set k=v]
    .venv/bin/python -m jobs.train --data out/prepared --out out/model --dry-run  # one tiny batch, end to end

`--data` is the batch preparation's output folder: Delta tables train/, validation/, test/ with the
PREPARED_SAMPLE schema, normalization.json and prep_report.json. The model (architecture and sizes from
[model]) is fitted with Adam on batches of [train].batch_size, with early stopping on the validation loss; the
best epoch's weights are evaluated on the validation and test splits and saved with everything needed to
score (see models/artifact.py).

Memory: Spark reads the tables and hands them to numpy through Arrow. A split whose arrays fit in
[train].memory_budget_mb is collected in one Arrow batch; a bigger one is range-partitioned by
(source_file, source_row) and fetched one partition at a time into a disk-backed numpy array (np.memmap under
--out), so the driver holds one partition at once. The full CICIDS2017 (about 2.5M rows after de-duplication)
at T=1 with the 13 paper features is 2.5M x 13 x 4 B = 130 MB; with all 77 features and T=8 it is about
6 GB and takes the disk-backed path.

One module of about 550 lines on purpose: loading the prepared splits, the epoch loop, the threshold choice and
writing the artifact are the one training job; the models live in models/.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from jobs.lib.config import Config, ConfigError, add_config_args, load_config
from jobs.lib.outputs import OutputFolderError, check_replaceable, local_entries
from models.artifact import (
    ARCHITECTURES,
    MANIFEST,
    ModelSpec,
    build_model,
    canonical_attack_types,
    choose_device,
    save_artifact,
    score,
)
from models.common import fit_input_encoding
from models.metrics import detection_report

SPLITS = ("train", "validation", "test")
CLASS_WEIGHTING = ("none", "sqrt", "balanced")
# Columns of PREPARED_SAMPLE the trainer needs; key/event_time stay in the tables for auditing.
_COLUMNS = ["features", "mask", "is_attack", "attack_type", "source_file", "source_row"]


@dataclass
class SplitArrays:
    features: np.ndarray  # (N, T, F) float32, z-scored
    mask: np.ndarray  # (N, T) bool, True for real flows
    is_attack: np.ndarray  # (N,) int8
    attack_type: np.ndarray  # (N,) int64 index into the label map
    sha256: str  # content hash of the four arrays, in (source_file, source_row) order

    def __len__(self) -> int:
        return int(self.is_attack.shape[0])


@dataclass
class PreparedData:
    splits: dict[str, SplitArrays]
    features: list[str]
    label_map: list[str]
    normalization_json: str
    sequence: dict[str, Any]
    fingerprint: dict[str, Any]


def arrow_to_numpy(table: Any, label_index: dict[str, int]) -> tuple[np.ndarray, ...]:
    """Arrow PREPARED_SAMPLE rows -> features (N, T, F), mask (N, T), is_attack (N,), attack-type index (N,).

    Flattens the nested list columns without a Python loop; every row must have the same T and F.
    """
    n = table.num_rows
    feats = table.column("features").combine_chunks()
    if n == 0:
        return (np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), bool), np.zeros(0, np.int8),
                np.zeros(0, np.int64))
    steps = feats.flatten()  # one list per timestep
    values = steps.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if not values.flags.writeable:  # a zero-copy view of Arrow's buffer; torch wants memory it may own
        values = values.copy()
    n_steps = len(steps) // n
    n_feats = len(values) // max(len(steps), 1)
    lengths_t = feats.value_lengths().to_numpy(zero_copy_only=False)
    lengths_f = steps.value_lengths().to_numpy(zero_copy_only=False)
    if len(steps) != n * n_steps or (lengths_t != n_steps).any() or (lengths_f != n_feats).any():
        raise ValueError("prepared features are ragged: every row must be a (T, F) array of the same shape")
    mask_col = table.column("mask").combine_chunks()
    mask = mask_col.flatten().to_numpy(zero_copy_only=False).astype(bool)
    if mask.shape[0] != n * n_steps:
        raise ValueError(f"prepared mask does not have T={n_steps} entries per row")
    is_attack = table.column("is_attack").to_numpy(zero_copy_only=False)
    if np.isnan(is_attack.astype(np.float64)).any():
        raise ValueError("prepared rows with a null is_attack")
    names = table.column("attack_type").to_pylist()
    unknown = sorted({t for t in names if t not in label_index}, key=str)
    if unknown:
        raise ValueError(f"attack type {unknown[0]!r} in the prepared data is not in the label map "
                         f"(schemas/labels.py)")
    types = np.fromiter((label_index[t] for t in names), dtype=np.int64, count=n)
    return values.reshape(n, n_steps, n_feats), mask.reshape(n, n_steps), is_attack.astype(np.int8), types


def arrow_chunks(df: Any, n_chunks: int) -> Iterator[Any]:
    """Arrow tables of `df` in (source_file, source_row) order, one range partition at a time."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as sf

    ordered = df.orderBy("source_file", "source_row")
    if n_chunks <= 1:
        yield ordered.toArrow()
        return
    parts = (df.repartitionByRange(n_chunks, "source_file", "source_row")
             .sortWithinPartitions("source_file", "source_row")
             .persist(StorageLevel.DISK_ONLY))
    try:
        for i in range(n_chunks):
            yield parts.where(sf.spark_partition_id() == i).toArrow()
    finally:
        parts.unpersist()


CHUNK_BYTES = 256 * 2**20  # features fetched from Spark per range partition on the disk-backed path


def load_split(spark: Any, path: str | Path, label_index: dict[str, int], memory_budget_mb: int,
               scratch: Path, limit: int | None = None, chunk_bytes: int = CHUNK_BYTES) -> SplitArrays:
    """Read one prepared Delta table into numpy arrays (disk-backed when bigger than the budget)."""
    from pyspark.sql import functions as sf

    df = spark.read.format("delta").load(str(path)).select(*_COLUMNS)
    if limit is not None:
        df = df.orderBy("source_file", "source_row").limit(limit)
    # Row count and (T, F) in one pass; the arrays are checked to be all of that shape when they arrive.
    shape = df.agg(sf.count(sf.lit(1)).alias("n"), sf.first(sf.size("features")).alias("t"),
                   sf.first(sf.size(sf.col("features")[0])).alias("f")).first()
    n = int(shape["n"]) if shape else 0
    if n == 0:
        raise ValueError(f"{path}: the prepared table is empty")
    n_steps, n_feats = int(shape["t"]), int(shape["f"])
    nbytes = n * n_steps * n_feats * 4
    in_memory = nbytes <= memory_budget_mb * 2**20
    n_chunks = 1 if in_memory else math.ceil(nbytes / chunk_bytes)
    if in_memory:
        features = np.empty((n, n_steps, n_feats), np.float32)
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        features = np.lib.format.open_memmap(scratch / f"{Path(path).name}_features.npy", mode="w+",
                                             dtype=np.float32, shape=(n, n_steps, n_feats))
    mask = np.empty((n, n_steps), bool)
    is_attack = np.empty(n, np.int8)
    attack_type = np.empty(n, np.int64)
    at = 0
    for table in arrow_chunks(df, n_chunks):
        x, m, y, t = arrow_to_numpy(table, label_index)
        k = len(y)
        if k and x.shape[1:] != (n_steps, n_feats):
            raise ValueError(f"{path}: rows of shape {x.shape[1:]} beside rows of shape {(n_steps, n_feats)}")
        features[at:at + k], mask[at:at + k], is_attack[at:at + k], attack_type[at:at + k] = x, m, y, t
        at += k
    if at != n:
        raise RuntimeError(f"{path}: read {at} rows, expected {n}")
    return SplitArrays(features, mask, is_attack, attack_type, content_sha256(features, mask, is_attack,
                                                                               attack_type))


def content_sha256(*arrays: np.ndarray, rows_per_block: int = 1 << 16) -> str:
    """sha256 of the arrays' bytes, array after array, in row blocks (a disk-backed array stays on disk)."""
    digest = hashlib.sha256()
    for arr in arrays:
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        for start in range(0, max(len(arr), 1), rows_per_block):
            digest.update(np.ascontiguousarray(arr[start:start + rows_per_block]).tobytes())
    return digest.hexdigest()


def _sequence_settings(data_dir: Path, seq_len: int) -> dict[str, Any]:
    """T and the key settings the preparation used (prep_report.json's "sequence", from
    jobs.lib.prep.sequence_settings); scoring must rebuild sequences the same way."""
    settings: dict[str, Any] = {}
    report_path = data_dir / "prep_report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if isinstance(report.get("sequence"), dict):
            settings = dict(report["sequence"])
    if not settings:
        print(f"warning: {report_path} records no sequence settings; the model will be scored with the "
              f"configured prep.sequence_key", file=sys.stderr)
    if settings.get("seq_len", seq_len) != seq_len:
        raise ValueError(f"{report_path} says seq_len={settings['seq_len']} but the tables hold T={seq_len}")
    settings["seq_len"] = seq_len
    return settings


def load_prepared(spark: Any, data_dir: str | Path, cfg: Config, scratch: Path,
                  limit: int | None = None) -> PreparedData:
    """The three splits as numpy arrays plus the normalization statistics and a fingerprint of the data."""
    from schemas.normalization import NormStats

    data = Path(data_dir)
    norm_path = data / "normalization.json"
    if not norm_path.is_file():
        raise FileNotFoundError(f"{norm_path} is missing: --data must be the preparation job's output folder")
    normalization_json = norm_path.read_text()
    stats = NormStats.from_json(normalization_json)
    label_map = canonical_attack_types()
    label_index = {name: i for i, name in enumerate(label_map)}
    splits: dict[str, SplitArrays] = {}
    for split in SPLITS:
        path = data / split
        if not (path / "_delta_log").is_dir():
            raise FileNotFoundError(f"{path} is not a Delta table (missing _delta_log)")
        splits[split] = load_split(spark, path, label_index, cfg.train.memory_budget_mb, scratch, limit)
    shapes = {s: a.features.shape[1:] for s, a in splits.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"splits disagree on (T, F): {shapes}")
    n_steps, n_feats = shapes["train"]
    if len(stats.features) != n_feats:
        raise ValueError(f"prepared features have F={n_feats} but normalization.json lists "
                         f"{len(stats.features)}")
    combined = hashlib.sha256(normalization_json.encode())
    for split in SPLITS:
        combined.update(splits[split].sha256.encode())
    fingerprint = {
        "source": str(data),
        "sha256": combined.hexdigest(),
        "split_sha256": {s: a.sha256 for s, a in splits.items()},
        "rows": {s: len(a) for s, a in splits.items()},
        "types": {s: {label_map[i]: int(c) for i, c in enumerate(np.bincount(a.attack_type,
                                                                             minlength=len(label_map))) if c}
                  for s, a in splits.items()},
    }
    return PreparedData(splits, list(stats.features), label_map, normalization_json,
                        _sequence_settings(data, int(n_steps)), fingerprint)


def model_config(cfg: Config, arch: str, n_features: int, seq_len: int, n_types: int) -> dict[str, Any]:
    """The architecture's dataclass config from [model] (the keys that architecture declares)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"config key model.arch: unknown architecture {arch!r}; "
                          f"known {sorted(ARCHITECTURES)}")
    config_cls = ARCHITECTURES[arch][0]
    names = {f.name for f in fields(config_cls)}
    sizes = {k: v for k, v in cfg.model.items() if k in names}
    return {**sizes, "n_features": n_features, "seq_len": seq_len, "n_types": n_types}


def class_weights(train: SplitArrays, n_types: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos_weight for the binary loss, per-type weights for the type loss) from train-split frequencies.

    balanced: inverse frequency (each class contributes equally); sqrt: its square root, a milder push that
    protects the false-positive rate; none: ones. Types absent from the train split get weight 0.
    """
    if mode not in CLASS_WEIGHTING:
        raise ConfigError(f"config key train.class_weighting: expected one of {CLASS_WEIGHTING}, "
                          f"got {mode!r}")
    counts = np.bincount(train.attack_type, minlength=n_types).astype(np.float64)
    present = counts > 0
    n_pos = float(train.is_attack.sum())
    n_neg = float(len(train) - n_pos)
    if mode == "none":
        type_w = present.astype(np.float64)
        pos_w = 1.0
    else:
        type_w = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
        pos_w = n_neg / max(n_pos, 1.0)
        if mode == "sqrt":
            type_w, pos_w = np.sqrt(type_w), math.sqrt(pos_w)
    return torch.tensor(pos_w, dtype=torch.float32), torch.tensor(type_w, dtype=torch.float32)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield np.sort(idx)  # sorted indices read a disk-backed array sequentially


def _tensors(split: SplitArrays, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(np.ascontiguousarray(split.features[idx])).to(device, non_blocking=True),
            torch.from_numpy(np.ascontiguousarray(split.mask[idx])).to(device, non_blocking=True),
            torch.from_numpy(split.is_attack[idx].astype(np.float32)).to(device, non_blocking=True),
            torch.from_numpy(split.attack_type[idx]).to(device, non_blocking=True))


def _loss(model: nn.Module, batch: tuple[torch.Tensor, ...], pos_w: torch.Tensor, type_w: torch.Tensor,
          type_loss_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, m, y, t = batch
    attack_logit, type_logits = model(x, m)  # (b,), (b, K)
    loss = F.binary_cross_entropy_with_logits(attack_logit.float(), y, pos_weight=pos_w)
    if type_loss_weight:
        loss = loss + type_loss_weight * F.cross_entropy(type_logits.float(), t, weight=type_w)
    correct = ((attack_logit.float() >= 0) == (y >= 0.5)).sum()
    return loss, correct


def evaluate_loss(model: nn.Module, split: SplitArrays, device: torch.device, batch_size: int,
                  pos_w: torch.Tensor, type_w: torch.Tensor, type_loss_weight: float,
                  use_amp: bool) -> tuple[float, float]:
    """Mean loss and binary accuracy of `model` (eval mode) over a split."""
    model.eval()
    total, correct = 0.0, 0
    with torch.inference_mode():
        for idx in _batches(len(split), max(batch_size, 1024), None):
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss, ok = _loss(model, _tensors(split, idx, device), pos_w, type_w, type_loss_weight)
            total += float(loss) * len(idx)
            correct += int(ok)
    return total / len(split), correct / len(split)


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    seconds: float
    stopped_by: str
    device: str


def fit(model: nn.Module, train: SplitArrays, validation: SplitArrays, cfg: Config,
        device: torch.device, max_epochs: int | None = None, max_batches: int | None = None) -> FitResult:
    """Adam with early stopping on the validation loss; returns the model holding the best epoch's weights.

    A model with an input encoding (model.input_bins) first gets its bin edges from the train split."""
    tc = cfg.train
    fit_input_encoding(model, train.features, tc.seed)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    use_amp = bool(tc.amp) and device.type == "cuda"
    model.to(device)
    n_types: int = model.config.n_types  # type: ignore[union-attr,assignment]
    pos_w, type_w = (w.to(device) for w in class_weights(train, n_types, tc.class_weighting))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    # Halving the step size when the validation loss stalls lets the late epochs settle the fine decision
    # boundaries (a few web-attack flows differ from benign ones by one timing feature) instead of
    # oscillating around them; early stopping still decides when to end.
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=tc.lr_decay_factor,
                                                          patience=tc.lr_decay_patience)
               if tc.lr_decay_patience > 0 else None)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    from tqdm import tqdm

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    stale, stopped_by = 0, "max_epochs"
    start = time.monotonic()
    epochs = max_epochs or tc.max_epochs
    n_batches = math.ceil(len(train) / tc.batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for epoch in range(1, epochs + 1):
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not tc.progress, file=sys.stderr, dynamic_ncols=True)
        for i, idx in enumerate(_batches(len(train), tc.batch_size, rng)):
            if i >= n_batches:
                break
            batch = _tensors(train, idx, device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss, ok = _loss(model, batch, pos_w, type_w, tc.type_loss_weight)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int(ok)
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        bar.close()
        val_loss, val_acc = evaluate_loss(model, validation, device, tc.batch_size, pos_w, type_w,
                                          tc.type_loss_weight, use_amp)
        history.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "val_loss": val_loss, "val_accuracy": val_acc,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.monotonic() - start, 2)})
        if plateau is not None:
            plateau.step(val_loss)
        improved = val_loss < best_loss - tc.min_delta
        if improved:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if tc.progress:
            print(f"epoch {epoch:3d}  train loss {loss_sum / seen:.4f} acc {correct / seen:.4f}  "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f}{'  *' if improved else ''}", file=sys.stderr)
        if stale >= tc.patience:
            stopped_by = f"early stopping (no val-loss improvement for {tc.patience} epochs)"
            break
        if time.monotonic() - start > tc.max_minutes * 60:
            stopped_by = f"time budget of {tc.max_minutes} minutes"
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model, history, best_epoch, len(history), time.monotonic() - start, stopped_by,
                     str(device))


def split_metrics(model: nn.Module, split: SplitArrays, label_map: list[str], threshold: float,
                  device: torch.device, batch_size: int) -> dict[str, Any]:
    prob, type_idx = score(model, split.features, split.mask, threshold, device, batch_size)
    names = np.asarray(label_map, dtype=object)
    return detection_report(split.is_attack, prob, names[split.attack_type], names[type_idx], threshold)


def choose_threshold(model: nn.Module, validation: SplitArrays, cfg: Config,
                     device: torch.device) -> tuple[float, dict[str, Any]]:
    """The decision threshold: the lowest whose false-positive rate on the validation split's benign flows is
    within train.fpr_budget (models.metrics.threshold_for_fpr); train.fpr_budget = 0 keeps model.threshold.

    Chosen on validation only, so the test split measures what the budget costs. Returns the threshold and a
    record for the manifest: the budget, the validation benign count, and the validation FPR and recall at the
    chosen threshold and at model.threshold (what the choice gained or cost).
    """
    from models.metrics import binary_metrics, threshold_for_fpr

    budget = float(cfg.train.fpr_budget)
    prob, _ = score(model, validation.features, validation.mask, cfg.model.threshold, device,
                    cfg.model.batch_size)
    benign = prob[validation.is_attack == 0]
    threshold = threshold_for_fpr(benign, budget) if budget > 0 and len(benign) else float(cfg.model.threshold)
    at = {t: binary_metrics(validation.is_attack, prob, t) for t in (threshold, float(cfg.model.threshold))}
    return threshold, {
        "fpr_budget": budget, "validation_benign": int(len(benign)), "threshold": threshold,
        "validation_fpr": at[threshold]["false_positive_rate"], "validation_recall": at[threshold]["recall"],
        "default_threshold": float(cfg.model.threshold),
        "validation_fpr_at_default": at[float(cfg.model.threshold)]["false_positive_rate"],
        "validation_recall_at_default": at[float(cfg.model.threshold)]["recall"],
    }


def configure_torch(cfg: Config) -> torch.device:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = choose_device(cfg.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def train_and_save(data: PreparedData, cfg: Config, arch: str, out_dir: Path, device: torch.device,
                   max_epochs: int | None = None, max_batches: int | None = None) -> tuple[Path, FitResult]:
    """Fit one model on prepared arrays, evaluate it on validation and test, write the artifact."""
    n_steps = data.splits["train"].features.shape[1]
    config = model_config(cfg, arch, len(data.features), n_steps, len(data.label_map))
    torch.manual_seed(cfg.train.seed)
    model = build_model(arch, config)
    result = fit(model, data.splits["train"], data.splits["validation"], cfg, device, max_epochs, max_batches)
    threshold, threshold_choice = choose_threshold(result.model, data.splits["validation"], cfg, device)
    metrics = {s: split_metrics(result.model, data.splits[s], data.label_map, threshold, device,
                                cfg.model.batch_size)
               for s in ("validation", "test")}
    settings = {k: cfg.train[k] for k in ("seed", "batch_size", "learning_rate", "weight_decay", "max_epochs",
                                          "patience", "min_delta", "lr_decay_factor", "lr_decay_patience",
                                          "class_weighting", "type_loss_weight", "fpr_budget",
                                          "threads", "amp")}
    spec = ModelSpec(
        arch=arch, features=data.features, label_map=data.label_map,
        normalization_json=data.normalization_json, sequence=data.sequence, threshold=threshold,
        training_data=data.fingerprint, metrics=metrics,
        training={"settings": settings, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                  "stopped_by": result.stopped_by, "seconds": round(result.seconds, 1),
                  "threshold_choice": threshold_choice,
                  "device": result.device, "torch_threads": torch.get_num_threads(),
                  "parameters": sum(p.numel() for p in result.model.parameters())},
        history=result.history,
    )
    return save_artifact(result.model.to("cpu"), spec, out_dir), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the preparation job's output folder")
    parser.add_argument("--out", required=True, help="model folder to write (replaced if empty or a model folder)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), help="overrides model.arch")
    parser.add_argument("--dry-run", action="store_true",
                        help="one tiny batch end to end: load, one step, evaluate, save, reload")
    add_config_args(parser)
    args = parser.parse_args(argv)
    sets = list(args.sets) + ([f"model.arch={args.arch}"] if args.arch else [])
    try:
        cfg = load_config(sets, args.config)
        if cfg.train.class_weighting not in CLASS_WEIGHTING:
            raise ConfigError(f"config key train.class_weighting: expected one of {CLASS_WEIGHTING}, "
                              f"got {cfg.train.class_weighting!r}")
        model_config(cfg, cfg.model.arch, 1, 1, 1)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:  # before hours of training, not at the end: --out must be new, empty or a model folder
        check_replaceable(out, local_entries(out), markers=(MANIFEST,))
    except OutputFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = configure_torch(cfg)

    from jobs.lib.spark import build_session

    spark = build_session(cfg, app_name="flowsentinel-train")
    t0 = time.monotonic()
    try:
        data = load_prepared(spark, args.data, cfg, out.parent / f".{out.name}-scratch",
                             limit=16 if args.dry_run else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {data.fingerprint['rows']} rows (T={data.sequence['seq_len']}, F={len(data.features)}) "
          f"in {time.monotonic() - t0:.1f} s; training {cfg.model.arch} on {device}", file=sys.stderr)
    folder, result = train_and_save(data, cfg, cfg.model.arch, out, device,
                                    max_epochs=1 if args.dry_run else None,
                                    max_batches=1 if args.dry_run else None)
    if args.dry_run:
        from models.artifact import load_model

        detector = load_model(folder, device=str(device))
        test = data.splits["test"]
        detector.predict(test.features, test.mask)
    manifest = json.loads((folder / "manifest.json").read_text())
    test_metrics = manifest["metrics"]["test"]
    print(json.dumps({"model": str(folder), "model_version": manifest["model_version"],
                      "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                      "stopped_by": result.stopped_by, "seconds": round(result.seconds, 1),
                      "threshold": manifest["threshold"],
                      "test": {k: test_metrics[k] for k in ("n", "accuracy", "precision", "recall", "f1",
                                                             "false_positive_rate", "roc_auc", "macro_f1",
                                                             "family_macro_f1", "per_type_detection")}},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
