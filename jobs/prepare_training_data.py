"""Batch preparation of training data: CICFlowMeter CSV -> cleaned, labelled, z-scored sequences in Delta.

    .venv/bin/python -m jobs.prepare_training_data --input ../shared/data/cicids2017 --output out/prep \\
        [--config FILE] [--set prep.sequence_length=8 ...]
    spark-submit jobs/prepare_training_data.py --input hdfs:///cicids2017 --output hdfs:///prep

Writes into OUTPUT: Delta tables ``train``, ``validation``, ``test`` (PREPARED_SAMPLE) and ``quarantine``
(QUARANTINE: every dropped row with its reason), ``normalization.json`` (the z-score statistics of the train
split, :class:`schemas.normalization.NormStats`) and ``prep_report.json`` (rows_in, rows_out, dropped, splits,
settings), also printed as a table. Every transform lives in :mod:`jobs.lib.prep`; this file only
orders them and decides what is materialized:

1. Parse each CSV line once, validate, label, fingerprint and vector-hash it (row-level, no shuffle) into a
   staging Parquet folder. Everything after reads narrow columns of it instead of parsing the CSV again.
2. Number the lines, find exact duplicates (a shuffle of fingerprints only) and assign splits (two small
   aggregations); stage the de-duplicated flows with their split.
3. Fit the z-score on the train split; build the sequences of all flows (one shuffle by key) and write them once
   as Parquet partitioned by split; each partition folder becomes a Delta table in place (CONVERT TO DELTA), so
   the window runs once rather than once per table.

Nothing is collected but aggregates (a few rows per attack type, per file split) and the driver never holds the
data. A malformed row never fails the job: it is counted under its reason and kept in the quarantine table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lib import prep as pp
from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.outputs import MARKER, OutputFolderError, check_replaceable
from jobs.lib.spark import build_session
from schemas.labels import ATTACK_TYPES, LABEL_MAP
from schemas.records import PREPARED_SAMPLE, QUARANTINE

REPORT_VERSION = 1


# ----------------------------------------------------------------------------------------- file system helpers

def _is_local(path: str) -> bool:
    return urlparse(path).scheme in ("", "file")


def _local(path: str) -> Path:
    return Path(urlparse(path).path if path.startswith("file:") else path)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark._jvm  # noqa: SLF001  (Hadoop's FileSystem has no Python API; this is its documented entry)
    if jvm is None:
        raise RuntimeError("this SparkSession has no JVM gateway (Spark Connect?); Hadoop's FileSystem needs one")
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath  # noqa: SLF001


def delete_path(spark: SparkSession, path: str) -> None:
    fs, hpath = _hadoop_fs(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def list_names(spark: SparkSession, path: str) -> list[str] | None:
    """Entry names of the folder `path` (a file lists itself); None if nothing is there."""
    fs, hpath = _hadoop_fs(spark, path)
    if not fs.exists(hpath):
        return None
    if not fs.getFileStatus(hpath).isDirectory():
        return [hpath.getName()]
    return [status.getPath().getName() for status in fs.listStatus(hpath)]


def claim_folder(spark: SparkSession, path: str, replace: bool) -> None:
    """Make `path` this job's folder: refuse (OutputFolderError) one that holds files no FlowSentinel job left;
    empty it first if `replace`; leave the marker."""
    check_replaceable(path, list_names(spark, path))
    if replace:
        delete_path(spark, path)
    write_text(spark, _join(path, MARKER), "written by jobs.prepare_training_data\n")


def move_path(spark: SparkSession, source: str, target: str) -> None:
    fs, src = _hadoop_fs(spark, source)
    _, dst = _hadoop_fs(spark, target)
    if not fs.rename(src, dst):
        raise OSError(f"cannot move {source} to {target}")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    if _is_local(path):
        local = _local(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        return
    fs, hpath = _hadoop_fs(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


# ------------------------------------------------------------------------------------------------- stages

STAGED_COLUMNS = ["_group", "_path", "_block", "_line", "source_file", "reject_reason", "raw", "attack_type",
                  "is_attack", "key", "event_time", "_fp1", "_fp2", pp.VECTOR_HASH]


# Parquet's dictionary encoding is tried on every column and abandoned on high-cardinality doubles (most
# features): writing without it takes a third of the time for files a fifth larger.
PARQUET_OPTIONS = {"parquet.enable.dictionary": "false"}
CODEGEN_MAX_FIELDS = 1000


def stage(df: DataFrame, path: str) -> DataFrame:
    """Materialize ``df`` as Parquet at ``path`` and read it back: later passes read narrow columns of it."""
    df.write.mode("overwrite").options(**PARQUET_OPTIONS).parquet(path)
    return df.sparkSession.read.parquet(path)


def stage_lines(spark: SparkSession, cfg: Config, input_path: str, features: list[str]) -> DataFrame:
    """Extract + row-level transforms: one row per CSV line (headers included), ready to stage."""
    lines = pp.read_flow_lines(spark, input_path)
    keyed = pp.with_fingerprint(pp.with_checks(lines, cfg))
    # The split hashes each feature vector: once here, in the pass that parses, rather than in every later pass.
    keyed = keyed.withColumn(pp.VECTOR_HASH, pp.vector_hash(features))
    # The raw line is only worth keeping for rows that go to quarantine.
    keyed = keyed.withColumn("raw", F.when(F.col("reject_reason").isNotNull(), F.col("raw")))
    return keyed.select(*STAGED_COLUMNS, *features)


def duplicates(valid: DataFrame) -> DataFrame:
    """(_group, _line, source_file, source_row, duplicate_of) of every exact duplicate but the first."""
    narrow = valid.select("_group", "_line", "source_file", "source_row", "_fp1", "_fp2")
    return pp.mark_duplicates(narrow).where(F.col("duplicate_of").isNotNull()).drop("_fp1", "_fp2")


def quarantine_rows(rejected: DataFrame, dups: DataFrame) -> DataFrame:
    """Rejected lines and dropped duplicates in the QUARANTINE schema (raw is null for a duplicate: the kept row,
    named in the reason, is identical)."""
    now = F.current_timestamp()
    nothing = {"topic": F.lit(None), "partition": F.lit(None), "offset": F.lit(None), "quarantined_at": now}
    bad = rejected.select(F.col("raw"), F.col("reject_reason").alias("reason"), "source_file", "source_row",
                          *[v.alias(k) for k, v in nothing.items()])
    dup = dups.select(F.lit(None).alias("raw"),
                      F.concat(F.lit(f"{pp.DUPLICATE} of "), F.col("duplicate_of")).alias("reason"),
                      "source_file", "source_row", *[v.alias(k) for k, v in nothing.items()])
    both = bad.unionByName(dup)
    return both.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in QUARANTINE.fields])


def samples(flows: DataFrame, stats: pp.NormStats, seq_len: int) -> DataFrame:
    """PREPARED_SAMPLE rows (plus ``split``) of every flow: z-score, then sequences over all splits.

    Sequences are built over all flows in event order (a test flow's history may hold train flows, as the stream
    would see them); the split is that of the scored flow.
    """
    sequences = pp.build_sequences(pp.apply_zscore(flows, stats), seq_len)
    return sequences.select(*[F.col(f.name).cast(f.dataType) if f.name in ("is_attack", "source_row")
                              else F.col(f.name) for f in PREPARED_SAMPLE.fields], "split")


def prepare(spark: SparkSession, cfg: Config, input_path: str, output: str) -> dict[str, Any]:
    """Run the whole preparation; returns the report (also written to OUTPUT/prep_report.json)."""
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:  # seconds since the previous phase ended, for the report
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    if _is_local(output):
        output = str(_local(output).resolve())
    staging = cfg.prep.staging_dir or _join(output, "_staging")
    # Whole-stage code generation stops at 100 fields by default; the z-score fit (5 aggregation buffer fields
    # per feature) and the 80-odd column stages exceed that and then ran interpreted, 2x slower.
    spark.conf.set("spark.sql.codegen.maxFields", str(CODEGEN_MAX_FIELDS))
    features = pp.feature_columns(cfg)
    seq_len = int(cfg.prep.sequence_length)
    if seq_len < 1:
        raise ValueError(f"config key prep.sequence_length: must be >= 1, got {seq_len}")

    # 1. Parse once (fails here, before any Spark job, on an unreadable file or a missing column).
    staged_lines = stage_lines(spark, cfg, input_path, features)
    # Tables are replaced by name inside OUTPUT and the staging folder is emptied: both only if this job made them.
    claim_folder(spark, output, replace=False)
    claim_folder(spark, staging, replace=True)
    staged = stage(staged_lines, _join(staging, "lines"))
    phase("parse_validate_stage")

    # 2. Row numbers, duplicates, splits.
    blocks = pp.line_blocks(staged)
    rows = pp.number_lines(staged, blocks)
    rows_in = rows.count()
    rejected = rows.where(F.col("reject_reason").isNotNull())
    valid = rows.where(F.col("reject_reason").isNull())
    dups = stage(duplicates(valid), _join(staging, "duplicates"))
    flows = valid.join(F.broadcast(dups.select("_group", "_line")), ["_group", "_line"], "left_anti")
    tagged = pp.with_split(flows, cfg).select(*features, "key", "event_time", "source_file", "source_row",
                                              "attack_type", "is_attack", "split")
    flows = stage(tagged, _join(staging, "flows"))
    phase("number_dedupe_split")

    # 3. Normalization on train only, then the sequences of every flow, written once.
    stats = pp.fit_zscore(flows.where(F.col("split") == "train"), features,
                          clip=float(cfg.prep.zscore_clip), transform=cfg.prep.zscore_transform)
    # One writer per split within a task instead of sorting the large sequence rows by split first.
    spark.conf.set("spark.sql.maxConcurrentOutputFileWriters", str(len(pp.SPLITS)))
    samples(flows, stats, seq_len).write.mode("overwrite").partitionBy("split").options(**PARQUET_OPTIONS).parquet(
        _join(staging, "samples"))
    phase("zscore_sequences")
    for name in pp.SPLITS:
        table = _join(output, name)
        delete_path(spark, table)
        source = _join(staging, f"samples/split={name}")
        fs, src = _hadoop_fs(spark, source)
        if not fs.exists(src):  # a split with no rows: write an empty table of the right schema
            spark.createDataFrame([], PREPARED_SAMPLE).write.format("delta").save(table)
            continue
        move_path(spark, source, table)
        spark.sql(f"CONVERT TO DELTA parquet.`{table}` NO STATISTICS")
    quarantine_rows(rejected, dups).write.format("delta").mode("overwrite").option(
        "overwriteSchema", "true").save(_join(output, "quarantine"))
    phase("delta_tables")

    # Report: aggregates only.
    dropped = {r["reason"]: int(r["count"]) for r in rejected.groupBy(
        pp.reason_category(F.col("reject_reason")).alias("reason")).count().collect()}
    dropped = {reason: dropped[reason] for reason in pp.REJECT_REASONS if reason in dropped}
    dropped[pp.DUPLICATE] = dups.count()
    splits: dict[str, dict[str, int]] = {name: {} for name in pp.SPLITS}
    counts = flows.groupBy("split", "attack_type").count().collect()
    for r in sorted(counts, key=lambda r: LABEL_MAP[r["attack_type"]]):
        splits[r["split"]][r["attack_type"]] = int(r["count"])
    rows_out = sum(sum(by_type.values()) for by_type in splits.values())
    if rows_out + sum(dropped.values()) != rows_in:
        raise RuntimeError(f"rows do not add up: {rows_out} out + {sum(dropped.values())} dropped "
                           f"!= {rows_in} in")
    stats_json = stats.to_json()
    write_text(spark, _join(output, "normalization.json"), stats_json)
    report = {
        "version": REPORT_VERSION,
        "input": str(input_path),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "splits": splits,
        "features": features,
        "label_map": list(ATTACK_TYPES),
        "sequence": pp.sequence_settings(cfg),
        "config": {k: v for k, v in cfg.prep.items() if k != "staging_dir"},
        "seconds": round(time.monotonic() - started, 1),
        "phase_seconds": phases,
    }
    phase("report")
    write_text(spark, _join(output, "prep_report.json"), json.dumps(report, indent=2))
    delete_path(spark, staging)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    lines = [f"rows in   {report['rows_in']:>12,}", f"rows out  {report['rows_out']:>12,}", "dropped"]
    lines += [f"  {reason:<26}{count:>10,}" for reason, count in report["dropped"].items()]
    names = list(report["splits"])
    lines.append(f"{'attack type':<26}" + "".join(f"{n:>12}" for n in names) + f"{'total':>12}")
    for attack_type in ATTACK_TYPES:
        counts = [report["splits"][n].get(attack_type, 0) for n in names]
        if any(counts):
            lines.append(f"{attack_type:<26}" + "".join(f"{c:>12,}" for c in counts) + f"{sum(counts):>12,}")
    totals = [sum(report["splits"][n].values()) for n in names]
    lines.append(f"{'total':<26}" + "".join(f"{c:>12,}" for c in totals) + f"{sum(totals):>12,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="CICFlowMeter CSV file, folder or glob (either layout)")
    parser.add_argument("--output", required=True, help="output folder (Delta tables and JSON artifacts)")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    spark = build_session(cfg, app_name="flowsentinel-prepare")
    try:
        report = prepare(spark, cfg, args.input, args.output)
    except OutputFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"wrote {args.output} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
