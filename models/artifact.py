"""The model artifact: one folder that holds everything needed to score flows, checked on load.

Layout::

    manifest.json        what the model is: architecture and its config, feature list, T and sequence key
                         settings, label map, decision threshold, sha256 of the scoring files, a fingerprint
                         of the training data, metrics, training settings
    weights.pt           the state_dict, written by torch.save and read with weights_only=True: tensors only,
                         a crafted pickle cannot run code on load
    normalization.json   the z-score statistics (NormStats JSON from the batch preparation), verbatim
    MODEL_CARD.md        generated: intended use, data, metrics, limitations
    training_curves.png  loss and accuracy per epoch, train and validation
    history.json         the numbers behind the curves

:func:`load_model` validates the folder against :mod:`schemas` (feature names, label map), the weights against
the config (names and shapes), and the files against their recorded sha256, and raises :class:`ArtifactError`
naming the problem. It returns a :class:`Detector` in eval mode on the chosen device, ready to score; the
stream job's pandas UDF calls it once per Python worker.

One module of about 450 lines on purpose: saving, verifying and loading are one contract (the manifest's hashes,
shapes and settings); splitting them would let writer and reader drift apart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import pickle
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jobs.lib.outputs import check_replaceable, local_entries
from models.bilstm import BiLSTM, BiLSTMConfig
from models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from schemas.flows import FEATURE_COLUMNS

FORMAT = "flowsentinel-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
NORMALIZATION = "normalization.json"
CARD = "MODEL_CARD.md"
CURVES = "training_curves.png"
HISTORY = "history.json"
DEFAULT_DIR = Path(__file__).resolve().parent / "default"

ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "cnn_lstm": (CNNLSTMConfig, CNNLSTM),
    "bilstm": (BiLSTMConfig, BiLSTM),
}


class ArtifactError(ValueError):
    """A model folder is missing, tampered with, or does not match the schema; the message says which."""


def canonical_attack_types() -> list[str]:
    """The canonical attack types of schemas/labels.py, BENIGN first: the label map every model uses."""
    from schemas.labels import ATTACK_TYPES

    return list(ATTACK_TYPES)


def build_model(arch: str, config: Mapping[str, Any]) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ArtifactError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[arch]
    try:
        return model_cls(config_cls(**config))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"model config does not fit architecture {arch!r}: {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelSpec:
    """What save_artifact needs besides the trained module."""

    arch: str
    features: list[str]
    label_map: list[str]
    normalization_json: str  # NormStats.to_json() text, stored verbatim
    sequence: dict[str, Any]  # T and key settings of the batch preparation (seq_len, key, ...)
    threshold: float = 0.5
    training_data: dict[str, Any] = field(default_factory=dict)  # fingerprint
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, epochs, seconds, device
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch


def save_artifact(model: nn.Module, spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write the model folder and return its path. An existing folder is replaced only if it is empty or a
    model folder (its manifest is this function's marker); otherwise OutputFolderError names it."""
    out = Path(out_dir)
    check_replaceable(out, local_entries(out), markers=(MANIFEST,))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS)
    (out / NORMALIZATION).write_text(spec.normalization_json)
    (out / HISTORY).write_text(json.dumps(spec.history, indent=1))
    files = {name: sha256_file(out / name) for name in (WEIGHTS, NORMALIZATION)}
    config = asdict(model.config)  # type: ignore[call-overload]  # nn.Module types attributes loosely
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": f"{spec.arch}-{files[WEIGHTS][:12]}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "arch": spec.arch,
        "config": config,
        "features": list(spec.features),
        "seq_len": int(config["seq_len"]),
        "sequence": spec.sequence,
        "label_map": list(spec.label_map),
        "threshold": float(spec.threshold),
        "files": files,
        "training_data": spec.training_data,
        "metrics": spec.metrics,
        "training": spec.training,
        "torch_version": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    if spec.history:
        plot_training_curves(spec.history, out / CURVES)
    (out / CARD).write_text(model_card(manifest, has_curves=bool(spec.history)))
    return out


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ArtifactError(f"model folder {folder} is missing")
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: not a model folder")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON (tampered or truncated): {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {manifest.get('format_version')!r} is not supported "
                            f"(this code reads {FORMAT_VERSION})")
    required = ["arch", "config", "features", "seq_len", "sequence", "label_map", "threshold", "files"]
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ArtifactError(f"{path}: missing key {missing[0]!r}")
    return manifest


def _check_files(folder: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest["files"]
    for name in (WEIGHTS, NORMALIZATION):
        if name not in files:
            raise ArtifactError(f"{folder / MANIFEST}: records no sha256 for {name}")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(f"{path} was modified after saving (tampered): sha256 {actual[:12]}... does "
                                f"not match the manifest's {str(expected)[:12]}...")


def _check_schema(folder: Path, manifest: Mapping[str, Any]) -> None:
    features = manifest["features"]
    unknown = [f for f in features if f not in FEATURE_COLUMNS]
    if unknown:
        raise ArtifactError(f"{folder}: feature {unknown[0]!r} is not a CICFlowMeter feature in "
                            "schemas.flows")
    if len(set(features)) != len(features):
        raise ArtifactError(f"{folder}: the feature list repeats a name")
    config = manifest["config"]
    if config.get("n_features") != len(features):
        raise ArtifactError(f"{folder}: config n_features={config.get('n_features')} but the feature list "
                            f"has {len(features)} names (mismatched)")
    if config.get("seq_len") != manifest["seq_len"] or int(manifest["seq_len"]) < 1:
        raise ArtifactError(f"{folder}: seq_len {manifest['seq_len']!r} does not match config seq_len "
                            f"{config.get('seq_len')!r}")
    label_map = manifest["label_map"]
    canonical = canonical_attack_types()
    if list(label_map) != canonical:
        extra = [t for t in label_map if t not in canonical]
        what = (f"type {extra[0]!r} is not in schemas/labels.py" if extra
                else f"it differs from schemas/labels.py ({canonical})")
        raise ArtifactError(f"{folder}: label map {label_map} does not match the canonical attack types: "
                            f"{what}")
    if config.get("n_types") != len(label_map):
        raise ArtifactError(f"{folder}: config n_types={config.get('n_types')} but the label map has "
                            f"{len(label_map)} types")
    threshold = manifest["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < 1.0:
        raise ArtifactError(f"{folder}: threshold {threshold!r} must be in (0, 1)")


def _load_stats(folder: Path, features: list[str]) -> Any:
    from schemas.normalization import NormStats

    text = (folder / NORMALIZATION).read_text()
    try:
        stats = NormStats.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{folder / NORMALIZATION}: not valid normalization statistics: {exc}") from exc
    if list(stats.features) != list(features):
        raise ArtifactError(f"{folder / NORMALIZATION}: statistics are for features {list(stats.features)}, "
                            f"the model for {features} (mismatched)")
    return stats


def _load_weights(folder: Path, model: nn.Module) -> None:
    path = folder / WEIGHTS
    try:
        # weights_only=True: the unpickler accepts tensors and plain containers only; a payload that would
        # import or call anything is refused before it runs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path} is not a plain tensor file; refused to load it (tampered?): "
                            f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path} does not hold a state_dict of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not match the config (mismatched): "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ArtifactError(f"{path}: weight {name} has shape {tuple(state[name].shape)}, the config "
                                f"needs {tuple(tensor.shape)} (mismatched)")
        if state[name].is_floating_point() and not bool(torch.isfinite(state[name]).all()):
            raise ArtifactError(f"{path}: weight {name} holds non-finite values")
    model.load_state_dict(state, strict=True)


def choose_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    return torch.device(requested)


class Detector:
    """A loaded model ready to score prepared sequences; built by :func:`load_model`."""

    def __init__(self, folder: Path, manifest: dict[str, Any], model: nn.Module, stats: Any,
                 device: torch.device, batch_size: int) -> None:
        self.folder = folder
        self.manifest = manifest
        self.model = model
        self.norm_stats = stats  # NormStats: what the stream job and evaluation z-score with
        self.device = device
        self.batch_size = batch_size
        self.features: list[str] = list(manifest["features"])
        self.seq_len: int = int(manifest["seq_len"])
        self.sequence: dict[str, Any] = dict(manifest["sequence"])
        self.label_map: list[str] = list(manifest["label_map"])
        self.threshold: float = float(manifest["threshold"])
        self.model_version: str = str(manifest.get("model_version", "unknown"))

    def predict(self, features: np.ndarray, mask: np.ndarray,
                batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score N sequences: features (N, T, F) z-scored, mask (N, T) -> attack_prob (N,), type index (N,).

        The type index points into `label_map`; see :func:`score` for how it follows the binary decision.
        """
        x = np.asarray(features, dtype=np.float32)
        m = np.asarray(mask, dtype=bool)
        T, F = self.seq_len, len(self.features)
        if x.ndim != 3 or x.shape[1:] != (T, F):
            raise ValueError(f"features must be (N, {T}, {F}), got {x.shape}")
        if m.shape != x.shape[:2]:
            raise ValueError(f"mask must be (N, {T}) like features, got {m.shape}")
        return score(self.model, x, m, self.threshold, self.device, batch_size or self.batch_size)

    def type_names(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.label_map, dtype=object)[np.asarray(indices, dtype=np.int64)]


def score(model: nn.Module, features: np.ndarray, mask: np.ndarray, threshold: float, device: torch.device,
          batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` (in eval mode) over (N, T, F) features and (N, T) mask in batches.

    Returns attack_prob (N,) float32 and an attack-type index (N,) consistent with the binary decision:
    BENIGN (0) where attack_prob < threshold, else the most likely attack type with BENIGN excluded, so the
    two heads never disagree about whether a flow is an attack. Under CUDA the forward runs in float16
    autocast; probabilities are computed in float32.
    """
    n = features.shape[0]
    probs = np.empty(n, dtype=np.float32)
    types = np.empty(n, dtype=np.int64)
    use_amp = device.type == "cuda"
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(features[start:start + batch_size], dtype=np.float32))
            mb = torch.from_numpy(np.ascontiguousarray(mask[start:start + batch_size], dtype=bool))
            xb, mb = xb.to(device, non_blocking=True), mb.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                attack_logit, type_logits = model(xb, mb)  # (b,), (b, K)
            p = torch.sigmoid(attack_logit.float())
            attack_type = type_logits.float()[:, 1:].argmax(dim=1) + 1
            attack_type = torch.where(p >= threshold, attack_type, torch.zeros_like(attack_type))
            probs[start:start + batch_size] = p.cpu().numpy()
            types[start:start + batch_size] = attack_type.cpu().numpy()
    return probs, types


def load_model(path: str | Path | None = None, device: str = "auto", batch_size: int = 4096,
               threads: int | None = None) -> Detector:
    """Validate and load a model folder (default: the shipped models/default) for scoring.

    Raises ArtifactError naming the problem: a missing file or key, a file changed since it was saved, a
    feature or attack type unknown to schemas/, weights whose names or shapes do not fit the config.
    """
    folder = Path(path) if path is not None else DEFAULT_DIR
    if threads:
        torch.set_num_threads(threads)
    manifest = _read_manifest(folder)
    _check_files(folder, manifest)
    _check_schema(folder, manifest)
    stats = _load_stats(folder, manifest["features"])
    model = build_model(manifest["arch"], manifest["config"])
    _load_weights(folder, model)
    dev = choose_device(device)
    model.to(dev).eval()
    return Detector(folder, manifest, model, stats, dev, batch_size)


def plot_training_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, side by side (the paper's figures 5/6, 8/9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def model_card(manifest: Mapping[str, Any], has_curves: bool = True) -> str:
    """Markdown model card generated from the manifest, so it can never disagree with it."""
    metrics = manifest.get("metrics", {})
    data = manifest.get("training_data", {})
    train = manifest.get("training", {})
    seq = manifest.get("sequence", {})
    lines = [
        f"# Model card: {manifest['model_version']}",
        "",
        "Generated by `jobs/train.py` from `manifest.json`; do not edit by hand.",
        "",
        "## What it is",
        f"- Architecture: `{manifest['arch']}` "
        + ("(the paper's hybrid: 2 x Conv1d(64) + max pooling, LSTM, dropout, dense layers)"
           if manifest["arch"] == "cnn_lstm" else "(Bi-LSTM baseline)"),
        f"- Config: `{json.dumps(manifest['config'])}`",
        f"- Parameters: {train.get('parameters', 'n/a')}",
        f"- Input: (T={manifest['seq_len']}, F={len(manifest['features'])}) z-scored CICFlowMeter features "
        f"per sequence; sequence settings `{json.dumps(seq)}`",
        f"- Features ({len(manifest['features'])}): {', '.join(manifest['features'])}",
        f"- Outputs: attack probability (alert at >= {manifest['threshold']}) and attack type "
        f"({', '.join(manifest['label_map'])})",
        "",
        "## Intended use",
        "Scoring CICFlowMeter flow records in the FlowSentinel stream job and `jobs/evaluate.py`. Inputs "
        "must go through `jobs/lib/prep/` with the statistics in `normalization.json`. It detects "
        "the attack types it was trained on; other attack families are out of scope until trained on.",
        "",
        "## Training data",
        f"- Source: `{data.get('source', 'n/a')}`",
        f"- Rows per split: `{json.dumps(data.get('rows', {}))}`",
        f"- Attack types per split: `{json.dumps(data.get('types', {}))}`",
        f"- Fingerprint (sha256 of the loaded arrays): `{data.get('sha256', 'n/a')}`",
        f"- Training: {train.get('epochs_run', 'n/a')} epochs (best {train.get('best_epoch', 'n/a')}), "
        f"{_fmt(train.get('seconds'))} s on {train.get('device', 'n/a')}, settings "
        f"`{json.dumps(train.get('settings', {}))}`",
        "",
        "## Metrics",
        "| split | n | accuracy | precision | recall | F1 | FPR | ROC AUC | type macro F1 | family macro F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, m in metrics.items():
        cells = [m.get("n"), *(_fmt(m.get(k)) for k in ("accuracy", "precision", "recall", "f1",
                                                        "false_positive_rate", "roc_auc", "macro_f1",
                                                        "family_macro_f1"))]
        lines.append(f"| {split} | " + " | ".join(str(c) for c in cells) + " |")
    choice = train.get("threshold_choice")
    if choice:
        lines += ["", "## Decision threshold",
                  f"{_fmt(choice['threshold'])}: the lowest whose false-positive rate on the "
                  f"{choice['validation_benign']} validation benign flows is within the budget of "
                  f"{_fmt(choice['fpr_budget'])} (train.fpr_budget). On validation it gives FPR "
                  f"{_fmt(choice['validation_fpr'])} and recall {_fmt(choice['validation_recall'])}, against FPR "
                  f"{_fmt(choice['validation_fpr_at_default'])} and recall "
                  f"{_fmt(choice['validation_recall_at_default'])} at {_fmt(choice['default_threshold'])}."]
    test = metrics.get("test", {})
    if test.get("per_type"):
        detection = test.get("per_type_detection", {})
        lines += ["", "Per attack type on the test split (recall and F1 of the type head; detected: share "
                  "flagged as attacks by the threshold):", "", "| type | support | recall | F1 | detected |",
                  "| --- | --- | --- | --- | --- |"]
        for name, recall in test["per_type"].items():
            lines.append(f"| {name} | {test.get('per_type_support', {}).get(name)} | {_fmt(recall)} | "
                         f"{_fmt(test.get('per_type_f1', {}).get(name))} | {_fmt(detection.get(name))} |")
        families = test.get("per_family_f1", {})
        if families:
            lines += ["", "Per family on the test split:", "", "| family | F1 | detected |", "| --- | --- | --- |"]
            for name, f1 in families.items():
                lines.append(f"| {name} | {_fmt(f1)} | {_fmt(detection.get(name))} |")
    lines += [
        "",
        "## Limitations",
        "- Trained on a small sample of CICIDS2017 (one testbed, 2017 traffic); expect drift on other "
        "networks.",
        "- Flow-level features cannot fully separate the web attacks Brute Force and XSS (the same tool "
        "against the same form); the binary decision is reliable where the type is not, and the type head "
        "is judged by family (family macro F1).",
        "- Files labelled by family only ('DoS', 'BruteForce') train the family as a type of its own.",
        "- IP addresses, ports, flow ids and timestamps are never inputs: in CICIDS2017 they identify the "
        "testbed's machines, not attack behaviour.",
        "",
    ]
    if has_curves:
        lines += ["## Training curves", "", f"![training curves]({CURVES})", ""]
    return "\n".join(lines)
