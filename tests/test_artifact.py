"""The model artifact: round trip, and refusal of tampered or mismatched folders."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import (
    MANIFEST,
    NORMALIZATION,
    WEIGHTS,
    ArtifactError,
    ModelSpec,
    build_model,
    canonical_attack_types,
    load_model,
    save_artifact,
    score,
    sha256_file,
)

torch.set_num_threads(1)

FEATURES = ["flow_duration", "total_fwd_packets", "flow_bytes_per_s", "syn_flag_count"]


def norm_stats_json(features: list[str]) -> str:
    from schemas.normalization import NormStats

    n = len(features)
    stats = NormStats(features=list(features), mean=[float(i) for i in range(n)],
                      std=[1.0 + i for i in range(n)], clip=10.0)
    return stats.to_json()


def small_model(arch: str = "cnn_lstm", seq_len: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, {"n_features": len(FEATURES), "seq_len": seq_len,
                              "n_types": len(canonical_attack_types())}).eval()


def save_small_model(folder: Path, arch: str = "cnn_lstm", seq_len: int = 3,
                     model: torch.nn.Module | None = None) -> Path:
    labels = canonical_attack_types()
    model = model if model is not None else small_model(arch, seq_len)
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.9, "val_loss": 1.1 / e,
                "val_accuracy": 0.88, "seconds": float(e)} for e in (1, 2, 3)]
    spec = ModelSpec(arch=arch, features=FEATURES, label_map=labels,
                     normalization_json=norm_stats_json(FEATURES),
                     sequence={"seq_len": seq_len, "key": "src_ip"}, threshold=0.5,
                     training_data={"sha256": "abc", "rows": {"train": 3}}, metrics={"test": {"n": 3}},
                     history=history)
    return save_artifact(model, spec, folder)


def _inputs(n: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, len(FEATURES))).astype(np.float32)
    mask = np.ones((n, t), bool)
    mask[: n // 2, 0] = False
    x[~mask] = 0.0
    return x, mask


@pytest.mark.parametrize("arch", ["cnn_lstm", "bilstm"])
def test_round_trip_gives_identical_predictions(tmp_path, arch):
    original = small_model(arch)
    x, mask = _inputs(50, 3)
    p0, t0 = score(original, x, mask, 0.5, torch.device("cpu"), batch_size=16)
    folder = save_small_model(tmp_path / "m", arch, model=original)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, WEIGHTS, NORMALIZATION, "MODEL_CARD.md", "training_curves.png", "history.json"])
    first = load_model(folder, device="cpu", batch_size=16)
    assert not first.model.training
    p1, t1 = first.predict(x, mask)
    np.testing.assert_array_equal(p1, p0)  # the loaded model is the saved one, bit for bit
    np.testing.assert_array_equal(t1, t0)
    # Another batch size changes only the float rounding of the kernels, not the decisions.
    p2, t2 = first.predict(x, mask, batch_size=7)
    np.testing.assert_allclose(p2, p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(t2, t1)
    # Type indices follow the binary decision: BENIGN below the threshold, an attack type at or above it.
    assert ((t1 == 0) == (p1 < first.threshold)).all()
    assert first.features == FEATURES and first.seq_len == 3
    assert first.label_map[0] == "BENIGN"
    assert list(first.norm_stats.features) == FEATURES
    card = (folder / "MODEL_CARD.md").read_text()
    assert first.model_version in card and "flow_bytes_per_s" in card


@pytest.mark.parametrize("embed_width", [0, 8])
def test_round_trip_keeps_fitted_bin_edges(tmp_path, embed_width):
    """The BinEncoding edges are fitted on training data, not learned by the optimizer: they must travel in the
    weights file, or a loaded model would score on the unfitted default grid."""
    from models.common import fit_input_encoding

    torch.manual_seed(0)
    model = build_model("cnn_lstm", {"n_features": len(FEATURES), "seq_len": 3,
                                     "n_types": len(canonical_attack_types()), "input_bins": 4,
                                     "embed_width": embed_width}).eval()
    x, mask = _inputs(50, 3)
    fit_input_encoding(model, x * 7.0 + 2.0)
    edges = model.encode.edges.clone()
    assert not torch.equal(edges, torch.linspace(-3.0, 3.0, 5).repeat(len(FEATURES), 1))
    p0, t0 = score(model, x, mask, 0.5, torch.device("cpu"))
    loaded = load_model(save_small_model(tmp_path / "m", model=model), device="cpu")
    assert loaded.manifest["config"]["input_bins"] == 4
    assert loaded.manifest["config"]["embed_width"] == embed_width
    assert torch.equal(loaded.model.encode.edges, edges)
    p1, t1 = loaded.predict(x, mask)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(t1, t0)


def test_predict_checks_input_shape(tmp_path):
    detector = load_model(save_small_model(tmp_path / "m"), device="cpu")
    x, mask = _inputs(4, 2)
    with pytest.raises(ValueError, match=r"features must be \(N, 3, 4\)"):
        detector.predict(x, mask)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the crafted file, on purpose
def test_refuses_pickle_payload_without_running_it(tmp_path):
    """A weights file crafted to run code on unpickling is refused, and its code never runs."""
    folder = save_small_model(tmp_path / "m")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / WEIGHTS).write_bytes(pickle.dumps({"w": Payload()}))
    # The payload is live: a plain unpickler would run it (checked on a copy, then the marker is removed).
    pickle.loads((folder / WEIGHTS).read_bytes())
    assert marker.exists()
    marker.unlink()

    # A naive tamperer: the sha256 no longer matches, refused before unpickling.
    with pytest.raises(ArtifactError, match=r"weights\.pt was modified after saving \(tampered\)"):
        load_model(folder, device="cpu")
    # A careful one updates the manifest too: torch.load(weights_only=True) still refuses to run the code.
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = sha256_file(folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"weights\.pt is not a plain tensor file; refused"):
        load_model(folder, device="cpu")
    assert not marker.exists()


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_small_model(tmp_path / "m")


def test_refuses_unknown_feature(saved):
    _edit_manifest(saved, features=["flow_duration", "total_fwd_packets", "src_ip", "syn_flag_count"])
    with pytest.raises(ArtifactError, match=r"feature 'src_ip' is not a CICFlowMeter feature"):
        load_model(saved, device="cpu")


def test_refuses_features_that_differ_from_the_statistics(saved):
    _edit_manifest(saved, features=["flow_duration", "total_fwd_packets", "flow_iat_max", "syn_flag_count"])
    with pytest.raises(ArtifactError, match=r"statistics are for features .* \(mismatched\)"):
        load_model(saved, device="cpu")


def test_refuses_label_map_unlike_schema(saved):
    labels = canonical_attack_types()
    _edit_manifest(saved, label_map=[labels[0], labels[2], labels[1], *labels[3:]])
    with pytest.raises(ArtifactError, match=r"label map .* differs from schemas/labels.py"):
        load_model(saved, device="cpu")
    _edit_manifest(saved, label_map=[*labels[:-1], "Zero Day"])
    with pytest.raises(ArtifactError, match=r"type 'Zero Day' is not in schemas/labels.py"):
        load_model(saved, device="cpu")


def test_refuses_weights_that_do_not_fit_the_config(saved):
    manifest = json.loads((saved / MANIFEST).read_text())
    _edit_manifest(saved, config={**manifest["config"], "lstm_hidden": 32})
    with pytest.raises(ArtifactError, match=r"weight lstm\.weight_ih_l0 has shape \(256, 64\), the config "
                                            r"needs \(128, 64\) \(mismatched\)"):
        load_model(saved, device="cpu")


def test_refuses_missing_and_modified_files(saved, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(saved, other)
    (other / NORMALIZATION).unlink()
    with pytest.raises(ArtifactError, match=r"normalization\.json is missing"):
        load_model(other, device="cpu")
    stats = json.loads((saved / NORMALIZATION).read_text())
    (saved / NORMALIZATION).write_text(json.dumps(stats).replace("10.0", "11.0"))
    with pytest.raises(ArtifactError, match=r"normalization\.json was modified after saving \(tampered\)"):
        load_model(saved, device="cpu")
    with pytest.raises(ArtifactError, match=r"model folder .*nowhere is missing"):
        load_model(tmp_path / "nowhere", device="cpu")
    (other / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest\.json is not valid JSON"):
        load_model(other, device="cpu")
