"""Feature selection and the z-score: fitted on the train split in one aggregation, applied per row."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.lib.config import Config, ConfigError
from schemas.flows import (
    FEATURE_COLUMNS,
    IDENTIFIER_COLUMNS,
)
from schemas.normalization import MIN_STD, TRANSFORMS, NormStats


def feature_columns(cfg: Config) -> list[str]:
    """The model's input columns, in order: the ``[features]`` set named by ``prep.feature_set``.

    ``all`` (empty in the conf) is every CICFlowMeter feature of schemas.flows except the second
    ``Fwd Header Length``, a byte-for-byte copy of the first. Identifiers (IPs, ports, flow id, timestamp) are
    refused: in CICIDS2017 they name the testbed's machines, not attack behaviour.
    """
    name = cfg.prep.feature_set
    sets = cfg.features
    if name not in sets:
        raise ConfigError(f"config key prep.feature_set: unknown set {name!r}; known {sorted(sets)}")
    columns = list(sets[name]) or [c for c in FEATURE_COLUMNS if c != "fwd_header_length_dup"]
    for c in columns:
        if c in IDENTIFIER_COLUMNS:
            raise ConfigError(f"config key features.{name}: {c!r} is an identifier, never a model input")
        if c not in FEATURE_COLUMNS:
            raise ConfigError(f"config key features.{name}: unknown column {c!r} (see schemas/flows.py)")
    if len(set(columns)) != len(columns):
        raise ConfigError(f"config key features.{name}: a column is listed twice")
    return columns


def _transform(c: Column, transform: str) -> Column:
    return F.signum(c) * F.log1p(F.abs(c)) if transform == "signed_log1p" else c


def fit_zscore(df: DataFrame, features: Sequence[str], *, clip: float = 10.0,
               transform: str = "signed_log1p") -> NormStats:
    """Mean and std of each transformed feature in one distributed aggregation (run it on the training split)."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"config key prep.zscore_transform: expected one of {TRANSFORMS}, got {transform!r}")
    values = [_transform(F.col(c), transform) for c in features]
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 *[F.avg(v).alias(f"m{i}") for i, v in enumerate(values)],
                 *[F.stddev_pop(v).alias(f"s{i}") for i, v in enumerate(values)]).collect()[0]  # one row
    n = int(row["n"])
    if n == 0:
        raise ValueError("fit_zscore: no rows to fit on (is the training split empty?)")
    mean = [float(row[f"m{i}"]) for i in range(len(values))]
    std = [float(row[f"s{i}"]) for i in range(len(values))]
    std = [s if math.isfinite(s) and s >= MIN_STD else 1.0 for s in std]
    return NormStats(list(features), mean, std, clip=float(clip), transform=transform, count=n)


def apply_zscore(df: DataFrame, stats: NormStats) -> DataFrame:
    """Adds ``vector``: array<float> of z-scores in ``stats.features`` order (row-level, stream-safe).

    Expects validated rows (no nulls, finite values); each element is coalesced to 0 only so that Spark types the
    array as holding no nulls, as PREPARED_SAMPLE declares.
    """
    zero = F.lit(0.0).cast("float")
    elements = []
    for c, mean, std in zip(stats.features, stats.mean, stats.std, strict=True):
        z = (_transform(F.col(c), stats.transform) - F.lit(mean)) / F.lit(std)
        z = F.least(F.greatest(z, F.lit(-stats.clip)), F.lit(stats.clip))
        elements.append(F.coalesce(z.cast("float"), zero))
    return df.withColumn("vector", F.array(*elements))
