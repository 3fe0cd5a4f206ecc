"""Z-score statistics fitted on a training split: the normalization.json that travels with a model.

Batch preparation writes it (jobs.lib.prep.normalize.fit_zscore), the model artifact stores it, the stream job and
evaluation apply it. Plain Python and numpy, so models/ reads it without importing jobs/.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORM_STATS_VERSION = 1


TRANSFORMS = ("signed_log1p", "none")


MIN_STD = 1e-9  # below this a feature counts as constant: std 1, so it is only centred


@dataclass(frozen=True)
class NormStats:
    """Per-feature z-score statistics fitted on the training split; the artifact that travels with the model.

    ``z = clip((t(x) - mean) / std, -clip, clip)`` with ``t`` the transform: ``signed_log1p`` =
    ``sign(x) * log1p(|x|)`` (default; CICFlowMeter's byte counts, rates and durations span ten orders of
    magnitude, and without it a handful of huge flows set the scale for all) or ``none``. ``mean`` and ``std``
    are of ``t(x)`` (population std). A feature constant on the training split gets ``std = 1``. Clipping to
    +-clip bounds what an unseen extreme value can do to the network.
    """

    features: list[str]
    mean: list[float]
    std: list[float]
    clip: float = 10.0
    transform: str = "signed_log1p"
    count: int = 0  # training rows the statistics were computed on
    version: int = NORM_STATS_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"NormStats: {n} features but {len(self.mean)} means and {len(self.std)} stds")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"NormStats: unknown transform {self.transform!r}; known {TRANSFORMS}")
        if not self.clip > 0:
            raise ValueError(f"NormStats: clip must be > 0, got {self.clip}")
        if any(not (math.isfinite(s) and s > 0) for s in self.std) or not all(map(math.isfinite, self.mean)):
            raise ValueError("NormStats: means must be finite and stds finite and > 0")

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "features": list(self.features), "mean": list(self.mean),
                           "std": list(self.std), "clip": self.clip, "transform": self.transform,
                           "count": self.count, "extra": self.extra}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> NormStats:
        data = json.loads(text)
        version = data.get("version")
        if version != NORM_STATS_VERSION:
            raise ValueError(f"NormStats: version {version!r} is not the supported {NORM_STATS_VERSION}")
        return cls(features=list(data["features"]), mean=[float(x) for x in data["mean"]],
                   std=[float(x) for x in data["std"]], clip=float(data["clip"]), transform=data["transform"],
                   count=int(data.get("count", 0)), extra=dict(data.get("extra", {})))

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        """(n, F) raw features in ``self.features`` order -> (n, F) float32 z-scores; the twin of apply_zscore."""
        x = transform_numpy(np.asarray(x, dtype=np.float64), self.transform)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)


def transform_numpy(x: np.ndarray, transform: str) -> np.ndarray:
    """The numpy twin of :func:`_transform`: ``signed_log1p`` or ``none`` before the z-score."""
    return np.sign(x) * np.log1p(np.abs(x)) if transform == "signed_log1p" else x
