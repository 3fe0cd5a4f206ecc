"""Duplicates and splits: fingerprints, the leakage-aware split by feature-vector hash."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from jobs.lib.config import Config, ConfigError
from jobs.lib.prep.normalize import _transform, feature_columns
from schemas.records import FLOW_RECORD

SPLITS = ("train", "validation", "test")


_FP1, _FP2 = "_fp1", "_fp2"


def with_fingerprint(df: DataFrame) -> DataFrame:
    """Adds ``_fp1``, ``_fp2``: a 128-bit hash of every FLOW_RECORD column but the provenance (the raw label
    included). Two rows are duplicates when both halves match: for 10^9 rows the chance that any two different
    rows collide is below 10^-20."""
    columns = [F.col(c.name) for c in FLOW_RECORD.fields if c.name not in ("source_file", "source_row")]
    # A constant first argument changes the starting state of the chained hash: a second, independent 64 bits.
    return df.withColumns({_FP1: F.xxhash64(*columns), _FP2: F.xxhash64(F.lit("flowsentinel:fp2"), *columns)})


def mark_duplicates(df: DataFrame) -> DataFrame:
    """Adds ``duplicate_of`` ('<file> row <n>' of the first identical row in file order; null for the first).

    Shuffles by fingerprint only: pass just the columns you need (fingerprints and provenance) when the rows are
    wide.
    """
    if _FP1 not in df.columns:
        df = with_fingerprint(df)
    group = Window.partitionBy(_FP1, _FP2)
    order = group.orderBy("source_file", "source_row")
    first = F.first(F.concat(F.col("source_file"), F.lit(" row "), F.col("source_row").cast("string"))).over(
        order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return df.withColumn("duplicate_of", F.when(F.row_number().over(order) > 1, first))


def _uniform(*columns: Column, seed: int) -> Column:
    """A deterministic pseudo-random number in [0, 1) from the columns' values."""
    h = F.xxhash64(F.lit(seed), *columns)
    return (h.bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF))).cast(DoubleType()) / float(2**63)


SPLIT_VECTOR_DECIMALS = 5


VECTOR_HASH = "_vh"  # vector_hash of the prep.feature_set columns, when a job staged it (with_split reuses it)


def vector_hash(features: Sequence[str]) -> Column:
    """Hash of a feature vector as the model can tell it apart: each value as signed_log1p rounded to
    SPLIT_VECTOR_DECIMALS places, so flows differing only beyond about the sixth significant digit (e.g. a
    duration of 64068604 vs 64068608 us, which become the same float32 z-score) count as one vector; -0.0 and
    0.0 hash alike.

    Rounds as numpy's ``np.round`` does (``rint(x * 10^d) / 10^d``), not with Spark's ``round``, which goes
    through a BigDecimal per value and took most of the split's time at CICIDS2017 size; the two differ only
    for a value within a rounding error of a tie."""
    scale = float(10**SPLIT_VECTOR_DECIMALS)
    return F.xxhash64(*[F.rint(_transform(F.col(c), "signed_log1p") * scale) / scale + F.lit(0.0)
                        for c in features])


def _split_fractions(cfg: Config) -> tuple[float, float]:
    train, validation = float(cfg.prep.train_fraction), float(cfg.prep.validation_fraction)
    if not (0 < train < 1 and 0 <= validation < 1 and train + validation < 1):
        raise ConfigError("config keys prep.train_fraction and prep.validation_fraction: need 0 < train < 1, "
                          f"0 <= validation and train + validation < 1, got {train} and {validation}")
    return train, train + validation


def with_split(df: DataFrame, cfg: Config) -> DataFrame:
    """Adds ``split`` (train / validation / test), seeded and stratified by attack type.

    Runs two small aggregations (the per-type thresholds, collected; the vectors whose rows would fall into two
    splits) and returns a lazy DataFrame. ``prep.split_mode``:

    - ``hash`` (default, leakage-aware): u = hash(seed, feature vector) in [0, 1); within each attack type the
      cut points are the train_fraction and train+validation quantiles of u, so every type gets its share and
      identical vectors of one type always land together. A vector that appears with several attack types would
      get a split per type: all its rows go to the earliest of them (train before validation before test), so
      no feature vector is ever in two splits.
    - ``temporal``: within each attack type, the earliest flows by event_time train and the latest test; rows
      without a timestamp fall back to ``hash``. Vectors seen at several times go to their earliest split.
    - ``random``: u = hash(seed, source_file, source_row), per row: the leaky baseline, for comparison only.

    Expects validated, de-duplicated rows with ``attack_type``, the feature columns, and for ``temporal``
    ``event_time``; a ``_vh`` column (:data:`VECTOR_HASH`) is taken as the vector hash instead of hashing again.
    """
    mode = cfg.prep.split_mode
    if mode not in ("hash", "temporal", "random"):
        raise ConfigError(f"config key prep.split_mode: expected hash, temporal or random, got {mode!r}")
    seed = int(cfg.prep.split_seed)
    cut1, cut2 = _split_fractions(cfg)
    features = feature_columns(cfg)
    vh = F.col(VECTOR_HASH) if VECTOR_HASH in df.columns else vector_hash(features)
    # random: per row (duplicated vectors may straddle splits); otherwise per feature vector.
    u = _uniform(F.col("source_file"), F.col("source_row"), seed=seed) if mode == "random" else _uniform(vh, seed=seed)
    stratum = F.col("attack_type")
    if mode == "temporal":
        timed = F.col("event_time").isNotNull()
        u = F.when(timed, F.unix_micros(F.col("event_time")).cast(DoubleType())).otherwise(u)
        stratum = F.concat(stratum, F.when(timed, F.lit("|t")).otherwise(F.lit("|h")))
    ranked = df.select(stratum.alias("_stratum"), u.alias("_u"), vh.alias(VECTOR_HASH))
    quantiles = ranked.groupBy("_stratum").agg(
        F.percentile_approx("_u", [cut1, cut2], 100000).alias("_q")).collect()
    first_cut, second_cut = F.lit(None).cast(DoubleType()), F.lit(None).cast(DoubleType())
    for row in quantiles:
        first_cut = F.when(F.col("_stratum") == row["_stratum"], F.lit(float(row["_q"][0]))).otherwise(first_cut)
        second_cut = F.when(F.col("_stratum") == row["_stratum"], F.lit(float(row["_q"][1]))).otherwise(second_cut)
    # percentile_approx returns values of the data: u at the cut itself belongs to the lower split.
    index = (F.when(F.col("_u") <= first_cut, 0).when(F.col("_u") <= second_cut, 1).otherwise(2))
    names = F.array(*[F.lit(s) for s in SPLITS])
    tagged = df.withColumns({"_stratum": stratum, "_u": u, VECTOR_HASH: vh}).withColumn("_split", index)
    if mode == "random":
        return tagged.withColumn("split", F.element_at(names, F.col("_split") + 1)).drop(
            "_stratum", "_u", VECTOR_HASH, "_split")
    spans = (tagged.groupBy(VECTOR_HASH).agg(F.min("_split").alias("_first_split"), F.max("_split").alias("_last"))
             .where(F.col("_first_split") != F.col("_last")).select(VECTOR_HASH, "_first_split"))
    joined = tagged.join(F.broadcast(spans), VECTOR_HASH, "left")
    final = F.coalesce(F.col("_first_split"), F.col("_split"))
    return joined.withColumn("split", F.element_at(names, final + 1)).drop(
        "_stratum", "_u", VECTOR_HASH, "_split", "_first_split")


def split(df: DataFrame, cfg: Config) -> dict[str, DataFrame]:
    """train / validation / test DataFrames by :func:`with_split` (cache its input if it is expensive)."""
    tagged = with_split(df, cfg)
    return {name: tagged.where(F.col("split") == name).drop("split") for name in SPLITS}
