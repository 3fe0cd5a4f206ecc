"""Spark SQL over the stream job's Delta tables, and the operator queries the README documents.

    python -m jobs.sql --tables out/stream/tables "SELECT category, count(*) FROM alerts GROUP BY category"
    python -m jobs.sql --tables out/stream/tables --query top_hosts --param limit=5
    python -m jobs.sql --list                      # the named queries, their parameters and what they answer
    make sql Q="SELECT * FROM quarantine LIMIT 5"  # OUT=... picks the run (tables under OUT/tables)

Each table under ``--tables`` (flows_scored, alerts, quarantine; see schemas/records.py) becomes a temporary view of
that name, and host_windows a view over flows_scored: per host and `stream.host_window` of event time, its flows,
alerts, bytes and destination ports (:func:`host_windows`; the stream job writes no table for it). Named
queries take parameters as named markers (``:host``); each value, cast to its declared type, becomes one typed SQL
literal (:func:`bind_sql`), so a value cannot change the query.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lib.config import ConfigError, add_config_args, load_config
from schemas.records import HOST_WINDOWS, TABLE_SCHEMAS


@dataclass(frozen=True)
class OperatorQuery:
    """A named query: what it answers, its SQL over the table views, and its parameters' defaults."""

    description: str
    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)


# Hosts are the source IP where the layout has one, else the sequence key the stream job grouped by (the
# 79-column CICIDS2017 files carry no IPs). Every ORDER BY ends on a unique column so results are repeatable.
QUERIES: dict[str, OperatorQuery] = {
    "top_hosts": OperatorQuery(
        "Source hosts with the most alerts: alert count, distinct categories, highest score, first and last seen.",
        """
        SELECT coalesce(src_ip, key) AS host, count(*) AS alerts, count(DISTINCT category) AS categories,
               max(score) AS max_score, min(timestamp) AS first_seen, max(timestamp) AS last_seen
        FROM alerts
        GROUP BY coalesce(src_ip, key)
        ORDER BY alerts DESC, host
        LIMIT :limit
        """,
        {"limit": 20},
    ),
    "alerts_per_type_per_hour": OperatorQuery(
        "Alerts per attack category per event-time hour, with the mean score and the high-severity share.",
        """
        SELECT date_trunc('HOUR', timestamp) AS hour, category, count(*) AS alerts,
               round(avg(score), 4) AS avg_score, count_if(severity = 1) AS high_severity
        FROM alerts
        GROUP BY date_trunc('HOUR', timestamp), category
        ORDER BY hour, category
        """,
    ),
    "host_recent_flows": OperatorQuery(
        "A host's most recent scored flows (as source or destination), newest first, with the model's verdict.",
        """
        SELECT event_time, src_ip, src_port, dst_ip, dst_port, protocol, label, attack_prob, is_attack,
               attack_type, model_version, partition, offset
        FROM flows_scored
        WHERE src_ip = :host OR dst_ip = :host OR key = :host
        ORDER BY event_time DESC NULLS LAST, kafka_timestamp DESC, partition, offset DESC
        LIMIT :limit
        """,
        {"host": "", "limit": 50},
    ),
    "false_positive_review": OperatorQuery(
        "Alerts whose replayed label is BENIGN (false positives to review), highest score first.",
        """
        SELECT a.alert_id, a.timestamp, a.src_ip, a.dest_ip, a.dest_port, a.proto, a.category, a.score,
               a.model_version, a.explanation
        FROM alerts a
        JOIN flows_scored f ON a.topic = f.topic AND a.partition = f.partition AND a.offset = f.offset
        WHERE f.true_attack_type = 'BENIGN'
        ORDER BY a.score DESC, a.alert_id
        LIMIT :limit
        """,
        {"limit": 100},
    ),
    "quarantine_reasons": OperatorQuery(
        "Quarantined records per reason category (the part before ':'), with an example reason and last time.",
        """
        SELECT substring_index(reason, ':', 1) AS category, count(*) AS records, min(reason) AS example_reason,
               max(quarantined_at) AS last_quarantined_at
        FROM quarantine
        GROUP BY substring_index(reason, ':', 1)
        ORDER BY records DESC, category
        """,
    ),
    "detection_by_model_version": OperatorQuery(
        "Per model version: flows scored, alerts, and precision/recall against the replayed labels (where known).",
        """
        SELECT model_version, count(*) AS flows, sum(is_attack) AS alerts,
               count_if(is_attack = 1 AND true_attack_type <> 'BENIGN') AS true_positives,
               count_if(is_attack = 1 AND true_attack_type = 'BENIGN') AS false_positives,
               count_if(is_attack = 0 AND true_attack_type <> 'BENIGN') AS false_negatives,
               round(try_divide(count_if(is_attack = 1 AND true_attack_type <> 'BENIGN'),
                                count_if(is_attack = 1 AND true_attack_type IS NOT NULL)), 4) AS precision,
               round(try_divide(count_if(is_attack = 1 AND true_attack_type <> 'BENIGN'),
                                count_if(true_attack_type <> 'BENIGN')), 4) AS recall,
               min(kafka_timestamp) AS first_scored, max(kafka_timestamp) AS last_scored
        FROM flows_scored
        GROUP BY model_version
        ORDER BY first_scored, model_version
        """,
    ),
    "port_scan_suspects": OperatorQuery(
        "Host windows touching the most distinct destination ports (scan-like behaviour), with their alerts.",
        """
        SELECT host, window_start, window_end, flows, alerts, distinct_dst_ports, bytes
        FROM host_windows
        WHERE distinct_dst_ports >= :min_ports
        ORDER BY distinct_dst_ports DESC, flows DESC, host, window_start
        LIMIT :limit
        """,
        {"min_ports": 10, "limit": 20},
    ),
}


def host_windows(flows_scored: DataFrame, window: str) -> DataFrame:
    """flows_scored -> one row per host (the sequence key) and event-time window of `window` (e.g. "1 minute";
    the Kafka timestamp where a flow has no event time): its flows, alerts (the model's decisions), bytes both
    ways, destination ports, and `updated_batch_id`, the last micro-batch that added to the window."""
    at = F.window(F.coalesce("event_time", "kafka_timestamp"), window)
    flow_bytes = (F.coalesce(F.col("total_length_fwd_packets"), F.lit(0.0))
                  + F.coalesce(F.col("total_length_bwd_packets"), F.lit(0.0)))
    totals = (flows_scored.groupBy(F.col("key").alias("host"), at.alias("w"))
              .agg(F.count(F.lit(1)).alias("flows"), F.sum(F.col("is_attack").cast("long")).alias("alerts"),
                   F.sum(flow_bytes).alias("bytes"), F.array_sort(F.collect_set("dst_port")).alias("dst_ports"),
                   F.max("batch_id").alias("updated_batch_id"))
              .select("*", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
                      F.size("dst_ports").alias("distinct_dst_ports")))
    return totals.select(*[F.col(f.name).cast(f.dataType) for f in HOST_WINDOWS.fields])


def register_tables(spark: SparkSession, tables_dir: str | Path, host_window: str) -> dict[str, bool]:
    """Register each table as a temp view of its name, and host_windows over flows_scored with windows of
    `host_window` (the config's stream.host_window); returns table name -> whether a Delta table was found.

    A table the run never created (e.g. no quarantine yet) is registered empty with its schema, so every named
    query still runs; the returned map says which ones those are.
    """
    found: dict[str, bool] = {}
    base = str(tables_dir).rstrip("/")
    for name, schema in TABLE_SCHEMAS.items():
        path = f"{base}/{name}"
        # Local folders are checked cheaply; remote stores (s3://, abfss://) are asked through Delta itself.
        exists = (Path(path, "_delta_log").is_dir() if "://" not in path
                  else _is_delta(spark, path))
        df = spark.read.format("delta").load(path) if exists else spark.createDataFrame([], schema)
        df.createOrReplaceTempView(name)
        found[name] = exists
    host_windows(spark.table("flows_scored"), host_window).createOrReplaceTempView("host_windows")
    return found


def _is_delta(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def bind_params(name: str, given: Mapping[str, str]) -> dict[str, Any]:
    """The named query's parameters: its defaults overridden by `given` (text, cast to the default's type)."""
    query = QUERIES[name]
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise ValueError(f"query {name} has no parameter {', '.join(unknown)} "
                         f"(it takes: {', '.join(query.params) or 'none'})")
    bound: dict[str, Any] = dict(query.params)
    for key, text in given.items():
        default = query.params[key]
        try:
            bound[key] = type(default)(text)
        except ValueError:
            raise ValueError(f"query {name}: parameter {key} expects {type(default).__name__}, got {text!r}") from None
    return bound


def sql_literal(value: Any) -> str:
    """A parameter value as a Spark SQL literal: numbers as such, text quoted with its quotes and backslashes
    escaped (Spark's default string-literal syntax), so a value is always one literal, never SQL."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float) and math.isfinite(value):
        return f"{float(value)!r}D"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise ValueError(f"cannot use {value!r} as a query parameter")


_MARKER = re.compile(r"(?<![\w:]):([A-Za-z_]\w*)")


def bind_sql(text: str, bound: Mapping[str, Any]) -> str:
    """Replace each :name marker by its value's literal.

    Spark's own binding (``spark.sql(text, args=...)``) would be the natural tool, but with Delta's session
    extension (delta-spark 4.3.1 on Spark 4.1.1) every marker stays unbound (UNBOUND_SQL_PARAMETER), so the
    values are rendered here, each as a single typed literal (:func:`sql_literal`)."""
    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in bound:
            raise ValueError(f"query parameter :{name} has no value")
        return sql_literal(bound[name])

    return _MARKER.sub(literal, text)


def run_query(spark: SparkSession, name: str, params: Mapping[str, str] | None = None) -> DataFrame:
    """A named operator query over the registered views (call :func:`register_tables` first)."""
    if name not in QUERIES:
        raise ValueError(f"unknown query {name!r}; known: {', '.join(QUERIES)}")
    return spark.sql(bind_sql(QUERIES[name].sql, bind_params(name, params or {})))


def _parse_params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects name=value, got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip()] = value
    return params


def describe_queries() -> str:
    lines = []
    for name, query in QUERIES.items():
        params = ", ".join(f"{k}={v!r}" for k, v in query.params.items())
        lines.append(f"{name}{f' ({params})' if params else ''}\n    {query.description}")
    return "\n".join(lines)


def print_result(df: DataFrame, fmt: str, max_rows: int) -> None:
    # Bounded: an operator query can be unbounded (plain SELECT *), the terminal must not be.
    if fmt == "json":
        for row in df.limit(max_rows).toJSON().collect():
            print(row)
    else:
        df.show(max_rows, truncate=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sql", nargs="?", help="a Spark SQL statement over the table views")
    parser.add_argument("--tables", help="folder holding the Delta tables (default: conf stream.out_dir/tables)")
    parser.add_argument("--query", help="run a named operator query instead (see --list)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="parameter of the named query (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the named queries and exit")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--max-rows", type=int, default=100, help="print at most this many rows")
    add_config_args(parser)
    args = parser.parse_args(argv)
    if args.list:
        print(describe_queries())
        return 0
    if bool(args.sql) == bool(args.query):
        parser.error("give either a SQL statement or --query NAME")
    try:
        cfg = load_config(args.sets, args.config)
        params = _parse_params(args.param)
        if args.query:  # validated before Spark starts, so a typo costs no JVM start-up
            if args.query not in QUERIES:
                raise ValueError(f"unknown query {args.query!r}; known: {', '.join(QUERIES)}")
            bind_params(args.query, params)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tables = args.tables or str(Path(cfg.stream.out_dir) / "tables")

    from pyspark.logger import PySparkLogger

    from jobs.lib.spark import build_session

    # PySpark logs each failing statement as a JSON record before raising; the CLI reports it in one line below.
    PySparkLogger.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    spark = build_session(cfg, "flowsentinel-sql")
    found = register_tables(spark, tables, cfg.stream.host_window)
    missing = [name for name, ok in found.items() if not ok]
    if missing:
        print(f"note: no Delta table for {', '.join(missing)} under {tables}; registered empty", file=sys.stderr)
    try:
        df = run_query(spark, args.query, params) if args.query else spark.sql(args.sql)
        print_result(df, args.format, args.max_rows)
    except Exception as exc:  # AnalysisException and parse errors: one line for the operator, not a trace
        print(f"error: {json.dumps(str(exc).splitlines()[0] if str(exc) else repr(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
