"""The detection job: Kafka flows -> parse and validate -> z-score -> per-host sequences (Spark state) ->
CNN+LSTM pandas UDF -> Delta tables (flows_scored, alerts, quarantine) and the alerts topic.

    python -m jobs.stream_detect [--out DIR] [--model DIR] [--available-now] [--set section.key=value]
    spark-submit ... jobs/stream_detect.py --out s3://bucket/flowsentinel

One streaming query, one checkpoint: every Kafka record ends in exactly one row of flows_scored or quarantine.
Each micro-batch is written with foreachBatch: its alerts are published first, then the tables are committed
concurrently, every commit's userMetadata naming the query, the writer and the batch id, so a batch replayed
after a crash is skipped instead of written twice. Per-host window totals are a query over flows_scored
(jobs.sql.host_windows), not a table of the job. The alerts topic is at-least-once (a replayed batch
publishes its alerts again); consumers dedupe on alert_id, the message key.

One module of about 500 lines on purpose: the query, its foreachBatch writer and its start-up checks form the job a
user runs; the transforms it calls live in jobs/lib/.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.errors import StreamingQueryException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from jobs.lib.config import Config, ConfigError, add_config_args, load_config
from jobs.lib.inference import alert_score_udf, keep_spark_archive_listings, proto_name, severity
from jobs.lib.messages import parse_messages, raw_text
from jobs.lib.monitoring import ProgressToDelta
from jobs.lib.monitoring import attach as attach_progress
from jobs.lib.preflight import PreflightError, check_broker, check_checkpoint, check_writable
from jobs.lib.prep import (
    NormStats,
    apply_zscore,
    assemble_sequences,
    sequence_config_overrides,
    with_checks,
)
from jobs.lib.spark import AVRO_LIMITS, AVRO_STRING_LIMIT, build_session
from schemas.flows import IDENTIFIER_COLUMNS
from schemas.records import (
    ALERTS,
    FLOWS_SCORED,
    FLOWS_SCORED_STATS_COLUMNS,
    KEY_FEATURES,
    QUARANTINE,
    TABLE_SCHEMAS,
)

TABLES = tuple(TABLE_SCHEMAS)
APP_ID = "flowsentinel-stream-detect"
# How many of a table's latest commits a restarted query reads to find the last batch it committed there. Only the
# first batch of a run can be a replay, and the query's own commits are the latest unless other writers committed
# more than this many times in between.
HISTORY_SCAN = 1000
CHECKPOINT_INTERVAL = 100  # commits between two Delta checkpoints of each table (create_tables)
# One line per micro-batch: where its time went (score: the pass from Kafka to scores; publish; commit), seconds.
log = logging.getLogger("flowsentinel.stream")

# What travels through the stateful operator besides the vector: everything the sinks need.
_CARRIED = [*IDENTIFIER_COLUMNS, *KEY_FEATURES, "label", "attack_type", "key", "event_time", "source_file",
            "source_row", "topic", "partition", "offset", "kafka_timestamp", "reason", "raw"]
_ORDER = ["event_time", "source_file", "source_row", "partition", "offset"]
FLOW_TUPLE = ["src_ip", "dst_ip", "protocol", "src_port", "dst_port"]  # what an alert's Community ID hashes
_ARRIVAL = "_arrival"  # the micro-batch's start time: the stateful path's watermark column
SCORING_ERROR = "scoring_error"  # why a valid row could not be scored or enriched; its quarantine reason category
# The batch's own values (its id, the time it was scored) travel as text until the tables' projections cast them:
# Spark writes a number or a time literal into the generated Java source, so a new value each batch made new source,
# new classes to compile on the driver (4 per batch) and new methods for the JVM to run interpreted until compiled
# again; a text literal is passed to the same code by reference.
_SCORED_AT = "_scored_at_us"


def state_output_schema(df: DataFrame) -> str:
    fields = [f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields if f.name in _CARRIED]
    return ", ".join([*fields, "features array<float>", "mask array<boolean>"])


def session_conf(cfg: Config) -> dict[str, str]:
    """Static Spark settings the detection job's session is built with (build_session's extra_conf).

    Spark's cache of compiled classes (default 100 entries) is smaller than what one micro-batch uses (~110:
    parse, validation, scoring, four Delta writes and Delta's own log queries), so at the default every batch
    evicted and recompiled its classes and the JVM ran them interpreted again. Batch jobs keep the default: the
    batch preparation at 1/4 size measured 83-106 s with it and 140-145 s with 1000 entries."""
    return {"spark.sql.codegen.cache.maxEntries": str(cfg.stream.codegen_cache_entries)}  # >= 1: config RULES


def read_kafka(spark: SparkSession, cfg: Config, starting_offsets: str) -> DataFrame:
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
              .option("subscribe", cfg.kafka.flows_topic)
              .option("startingOffsets", starting_offsets)
              .option("maxOffsetsPerTrigger", cfg.stream.max_offsets_per_trigger)
              .option("failOnDataLoss", "true"))
    # How long the broker holds a fetch that has too little data: Kafka's 500 ms default showed as ~0.5 s of
    # waiting in every task of a small micro-batch. A user's kafka.options value wins.
    reader = reader.option("kafka.fetch.max.wait.ms", "20")
    for key, value in cfg.kafka.options.items():
        reader = reader.option(f"kafka.{key}", value)
    return reader.load()


def validated_flows(kafka: DataFrame, model_cfg: Config, stats: NormStats) -> DataFrame:
    """Kafka rows -> typed flows with `reason` (null = valid), labels, key, event time and z-scored vector.

    The same preprocessing functions as the batch preparation, configured with the model's own settings; the
    messages in the wire format of kafka.flows_format."""
    wire_format = model_cfg.kafka.flows_format
    flows = with_checks(parse_messages(kafka, wire_format), model_cfg)
    # A batch file always names its source, so a batch row always has a key; a message may lack both the key
    # column and source_file. Such a flow has no sequence to join: quarantined, never handed to the model.
    no_key = F.when(F.col("key").isNull(), F.lit(f"missing_key: {model_cfg.prep.sequence_key}"))
    reason = F.coalesce(F.col("message_error"), F.col("reject_reason"), no_key)
    raw = F.when(reason.isNotNull(), raw_text(F.col("value"), wire_format))
    flows = flows.withColumns({"reason": reason, "raw": raw})
    return apply_zscore(flows, stats)


def sequence_state_fn(seq_len: int, n_features: int, idle_timeout_ms: int) -> Any:
    """applyInPandasWithState function: per key, the last T-1 vectors survive between micro-batches."""

    def update(key: tuple[Any, ...], batches: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
        keep_spark_archive_listings()
        if state.hasTimedOut:  # the host has been quiet for state_idle_timeout_ms of event time
            state.remove()
            return
        pdf = pd.concat(list(batches), ignore_index=True)
        pdf = pdf.sort_values(_ORDER, na_position="first", kind="stable", ignore_index=True)
        valid = pdf["reason"].isna().to_numpy()
        features = np.full(len(pdf), None, dtype=object)
        masks = np.full(len(pdf), None, dtype=object)
        if valid.any() and key[0] is not None:
            history = (np.asarray(state.get[0], dtype=np.float32).reshape(-1, n_features) if state.exists
                       else np.zeros((0, n_features), np.float32))
            vectors = np.stack(pdf.loc[valid, "vector"].to_numpy()).astype(np.float32)
            feats, mask, history = assemble_sequences(history, vectors, seq_len)
            flat = feats.reshape(len(feats), -1)
            for j, i in enumerate(np.flatnonzero(valid)):  # object arrays take one array per cell
                features[i], masks[i] = flat[j], mask[j]
            state.update((history.reshape(-1).tolist(),))
            state.setTimeoutTimestamp(state.getCurrentWatermarkMs() + idle_timeout_ms)
        out = pdf.drop(columns=["vector", _ARRIVAL], errors="ignore")
        out["features"] = features
        out["mask"] = masks
        yield out

    return update


def detection_stream(spark: SparkSession, cfg: Config, model_cfg: Config, detector: Any,
                     starting_offsets: str) -> DataFrame:
    """Validated flows with their model inputs (``features``, ``mask``; null for rejected rows).

    With T > 1 the per-host state needs an event-time watermark (its idle timeout), and Spark's state operator
    silently drops every input row behind the watermark: such a row reached neither flows_scored nor quarantine.
    So the watermark is on the micro-batch's own clock (``current_timestamp()``, the batch start time), which
    no row can fall behind: no row is ever late. A flow whose Kafka timestamp lags the others (a slow or
    replaying producer) is scored in arrival order with the history its host has when it arrives, and without
    history when the host's state has expired (``stream.state_idle_timeout_ms`` after its last flow). The
    progress table's ``rows_dropped_by_watermark`` stays 0; it is recorded so that any drop would show."""
    return model_inputs(validated_flows(read_kafka(spark, cfg, starting_offsets), model_cfg, detector.norm_stats),
                        cfg, detector)


def model_inputs(flows: DataFrame, cfg: Config, detector: Any) -> DataFrame:
    """:func:`validated_flows` -> the carried columns with the model's inputs (see :func:`detection_stream`)."""
    if detector.seq_len == 1:
        # A sequence of one flow needs no history: the row is its own model input, and no state is kept (the
        # state operator would cost an Arrow round trip and a pandas call per key for nothing).
        return lone_flow_inputs(flows, 1, len(detector.features))
    flows = flows.withColumn(_ARRIVAL, F.current_timestamp()).withWatermark(_ARRIVAL, cfg.stream.watermark_delay)
    carried = flows.select(*_CARRIED, "vector", _ARRIVAL)  # the state operator needs its watermark column
    return carried.groupBy("key").applyInPandasWithState(
        sequence_state_fn(detector.seq_len, len(detector.features), cfg.stream.state_idle_timeout_ms),
        outputStructType=state_output_schema(carried),
        stateStructType="history array<float>",
        outputMode="append",
        timeoutConf=GroupStateTimeout.EventTimeTimeout,
    )


def lone_flow_inputs(flows: DataFrame, seq_len: int, n_features: int) -> DataFrame:
    """Each valid flow as a sequence without history, the input assemble_sequences gives a host's first flow: T-1
    masked steps of zeros, then the flow (for T = 1 its vector and mask [True]); none for a rejected row (a row
    without a key is one: missing_key)."""
    valid = F.col("reason").isNull()
    pad = seq_len - 1
    features, mask = F.col("vector"), F.array(F.lit(True))
    if pad:
        features = F.concat(F.array_repeat(F.lit(0.0).cast("float"), pad * n_features), features)
        mask = F.concat(F.array_repeat(F.lit(False), pad), mask)
    return flows.select(*_CARRIED, F.when(valid, features).alias("features"), F.when(valid, mask).alias("mask"))


def materialize(df: DataFrame) -> DataFrame:
    """Compute `df` once into the executors' block stores (memory, disk where short) and return a DataFrame that
    reads the result: its plan is one node, so the writes that follow neither recompute nor re-plan it. Cheaper
    than persist(): no columnar cache to build, and no lookup of a large plan in the cache per action. Unlike a
    cache, the blocks cannot be recomputed: an executor lost mid-batch fails the batch, and the query reruns it
    from its checkpoint (every write is idempotent)."""
    return df.localCheckpoint(eager=True)


def materialize_counting(df: DataFrame, **conditions: Column) -> tuple[DataFrame, dict[str, int]]:
    """:func:`materialize` `df`, counting the rows that meet each condition in the same pass (Dataset.observe),
    instead of a count job of its own afterwards (a job, and the planning of one, per count)."""
    observation = Observation()
    done = materialize(df.observe(observation, *[F.count_if(c).alias(name) for name, c in conditions.items()]))
    metrics = observation.get
    return done, {name: int(metrics.get(name) or 0) for name in conditions}


def release(materialized: DataFrame) -> None:
    """Drop the blocks of a :func:`materialize` result now, rather than when the JVM collects it."""
    materialized._jdf.queryExecution().logical().rdd().unpersist(False)


class BatchWriter:
    """foreachBatch body: score the micro-batch, publish its alerts, then commit every table idempotently.

    Alerts go to the topic as soon as the scores exist, before any Delta commit. The tables are independent
    (appends to different Delta tables never conflict), so they are committed concurrently, each with its marker
    in userMetadata (not Delta's txnAppId/txnVersion: Delta 4.3.1 rebuilt the table state, three Spark jobs, on
    every append to check them). Per-host windows are not written here: jobs.sql.host_windows serves them as a
    query over flows_scored, so a batch commits two tables, not three."""

    def __init__(self, cfg: Config, tables: Path, detector: Any, model_dir: str, publish: bool | None = None,
                 logger: logging.Logger = log) -> None:
        self.cfg = cfg
        self.publish_alerts = cfg.stream.publish_alerts if publish is None else publish
        self.log = logger
        self.tables = tables
        self.model_dir = model_dir
        self.model_version = detector.model_version
        self.threshold = detector.threshold
        self.query_id: str | None = None  # the streaming query's id (kept in its checkpoint), from the first batch
        # writer -> the last batch id it committed, read once per run; each writer is used by one thread at a time
        self.committed: dict[str, int] = {}

    def path(self, table: str) -> str:
        return str(self.tables / table)

    def _marker(self, writer: str, batch_id: int) -> str:
        return json.dumps({"app": APP_ID, "query": self.query_id, "writer": writer, "batch": batch_id},
                          separators=(",", ":"))

    def last_committed(self, spark: SparkSession, table: str, writer: str) -> int:
        """The last batch id `writer` committed to `table` for this query, from the userMetadata of the table's
        latest HISTORY_SCAN commits (read on the driver, once per writer per run); -1 when none is there."""
        if writer in self.committed:
            return self.committed[writer]
        from delta.tables import DeltaTable

        last = -1
        rows = (DeltaTable.forPath(spark, self.path(table)).history(HISTORY_SCAN)
                .where(F.col("userMetadata").isNotNull()).select("userMetadata").collect())
        for row in rows:
            try:
                marker = json.loads(row.userMetadata)
            except ValueError:
                continue  # another writer's metadata
            if (isinstance(marker, dict) and marker.get("app") == APP_ID and marker.get("query") == self.query_id
                    and marker.get("writer") == writer and isinstance(marker.get("batch"), int)):
                last = max(last, marker["batch"])
        self.committed[writer] = last
        return last

    def _append(self, df: DataFrame, table: str, batch_id: int, writer: str = "") -> None:
        """Append `df` to `table` as batch `batch_id`'s commit of `writer` (the table, or the table and a suffix
        that tells apart two appends of one batch to one table), unless that writer already committed it."""
        name = f"{table}{writer}"
        if self.last_committed(df.sparkSession, table, name) >= batch_id:
            self.log.info("batch %d: %s already committed, skipped (a replay)", batch_id, name)
            return
        (df.write.format("delta").mode("append").option("userMetadata", self._marker(name, batch_id))
         .save(self.path(table)))
        self.committed[name] = batch_id

    def _append_all(self, writes: dict[str, DataFrame], batch_id: int) -> None:
        """Commit each table's rows at once, one thread per table; raises the first failure after all ended (a
        replay then skips the tables that did commit)."""
        if len(writes) <= 1:
            for table, df in writes.items():
                self._append(df, table, batch_id)
            return
        with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="delta-commit") as pool:
            futures = [pool.submit(self._append, df, table, batch_id) for table, df in writes.items()]
        for future in futures:
            future.result()

    # The columns of every projection a batch makes, built once per writer and reused by each batch: a Column is an
    # unresolved expression, bound to no DataFrame. Building them in Python is a few Py4J calls per column (a cast to
    # a schema type parses the type's JSON in the JVM): 0.2-0.4 s per projection and batch, on the alert's path.
    @cached_property
    def _scorer(self) -> Any:
        m = self.cfg.model
        return alert_score_udf(self.model_dir, m.device, m.batch_size, m.threads, self.cfg.stream.explain_top_k)

    @cached_property
    def _scorer_call(self) -> Column:
        return self._scorer("features", "mask", *FLOW_TUPLE)

    @cached_property
    def _score_columns(self) -> dict[str, Column]:
        return {"attack_prob": F.col("_s.attack_prob"),
                "pred_type": F.col("_s.attack_type"),
                "explanation": F.col("_s.explanation"),
                "community_id": F.col("_s.community_id"),
                SCORING_ERROR: F.when(F.col("reason").isNull(), F.col("_s.error"))}

    @cached_property
    def _conditions(self) -> dict[str, Column]:
        """The row classes a batch is counted by and split into (see __call__)."""
        valid = F.col("reason").isNull()
        ok = valid & F.col(SCORING_ERROR).isNull()
        return {"ok": ok, "alert": ok & (F.col("attack_prob") >= F.lit(self.threshold)), "error": valid & ~ok,
                "rejected": ~valid}

    @cached_property
    def _flows_scored_columns(self) -> list[Column]:
        is_attack = (F.col("attack_prob") >= F.lit(self.threshold)).cast("int")
        return [(is_attack if f.name == "is_attack"
                 else F.col("pred_type") if f.name == "attack_type"
                 else F.col("attack_type") if f.name == "true_attack_type"
                 else F.lit(self.model_version) if f.name == "model_version"
                 else scored_at() if f.name == "scored_at"
                 else F.col(f.name)).cast(f.dataType).alias(f.name)
                for f in FLOWS_SCORED.fields]

    @cached_property
    def _alerts_columns(self) -> list[Column]:
        columns = {
            "alert_id": F.sha2(F.concat_ws(":", "topic", "partition", "offset"), 256).substr(1, 32),
            "timestamp": F.coalesce("event_time", "kafka_timestamp"),
            "dest_ip": F.col("dst_ip"),
            "dest_port": F.col("dst_port"),
            "proto": proto_name(F.col("protocol")),
            "category": F.col("pred_type"),
            "severity": severity(F.col("attack_prob")),
            "score": F.col("attack_prob"),
            "model_version": F.lit(self.model_version),
        }
        return [(columns.get(f.name, F.col(f.name))).cast(f.dataType).alias(f.name) for f in ALERTS.fields]

    @cached_property
    def _quarantine_columns(self) -> list[Column]:
        columns = {"quarantined_at": scored_at()}
        return [(columns.get(f.name, F.col(f.name)) if f.name != "reason" else F.col("reason"))
                .cast(f.dataType).alias(f.name) for f in QUARANTINE.fields]

    @cached_property
    def _scoring_error_columns(self) -> dict[str, Column]:
        return {"reason": F.concat(F.lit("scoring_error: "), F.col(SCORING_ERROR)),
                "raw": F.to_json(F.struct(*[c for c in _CARRIED if c != "raw"]))}

    @cached_property
    def _message_columns(self) -> list[Column]:
        return [F.col("alert_id").alias("key"), F.to_json(F.struct(*[f.name for f in ALERTS.fields])).alias("value")]

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        self.query_id = self.query_id or batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")
        steps: dict[str, float] = {"started": time.perf_counter()}
        c = self._conditions
        # One pass over the whole batch: Kafka read, parse, validation, z-score and scoring (every partition, so the
        # state store commits each). What follows reads its result through a one-node plan instead of planning
        # the parse and validation again per write. Which tables get rows is counted in the same pass: a table
        # with none gets no commit (idempotence needs increasing batch ids, not every one), and a batch without
        # data (state expiry only) writes nothing.
        batch, counts = materialize_counting(self.scored(batch, batch_id), scored=c["ok"], alerts=c["alert"],
                                             errors=c["error"], rejected=c["rejected"])
        try:
            self._step(steps, "score")
            writes: dict[str, DataFrame] = {}
            good = batch.where(c["ok"])
            if counts["alerts"]:
                writes["alerts"] = self.alerts(good)
                if self.publish_alerts:
                    self.publish(writes["alerts"])  # first: an alert is on the topic before the batch's Delta commits
                    self._step(steps, "publish")
            if counts["scored"]:
                writes["flows_scored"] = self.flows_scored(good)
            if counts["errors"]:
                # A row the scorer or the Community ID fails on goes to quarantine as ``scoring_error: <what>``, in
                # its own idempotent append, and to no other table.
                errors = batch.where(c["error"]).withColumns(self._scoring_error_columns)
                self._append(self.quarantine(errors), "quarantine", batch_id, ":scoring")
            if counts["rejected"]:
                writes["quarantine"] = self.quarantine(batch.where(c["rejected"]))
            self._append_all(writes, batch_id)
            self._step(steps, "commit")
        finally:
            release(batch)
        started = steps.pop("started")
        steps.pop("_last", None)
        rows = counts["scored"] + counts["errors"] + counts["rejected"]
        self.log.info("batch %d: %d rows in %.2f s; %s", batch_id, rows, time.perf_counter() - started,
                 json.dumps({k: round(v, 3) for k, v in steps.items()}))

    @staticmethod
    def _step(steps: dict[str, float], name: str) -> None:
        now = time.perf_counter()
        steps[name] = now - steps.get("_last", steps["started"])
        steps["_last"] = now

    def scored(self, batch: DataFrame, batch_id: int) -> DataFrame:
        """The batch with each valid row's scores and, for an alert, its Community ID (one pandas UDF pass).
        SCORING_ERROR: why a valid row has no score; null for a scored row and for every rejected one (a rejected
        row has no model input: the scorer's error for it is not an error of scoring). ``batch_id`` and the time of
        scoring are text here (_SCORED_AT); the tables' projections cast them."""
        return (batch.withColumn("_s", self._scorer_call)  # first: the score fields below read it
                .withColumns({**self._score_columns,
                              "batch_id": F.lit(str(batch_id)),  # text: see _SCORED_AT
                              _SCORED_AT: F.lit(str(time.time_ns() // 1000))})
                .drop("_s", "features", "mask"))

    def flows_scored(self, scored: DataFrame) -> DataFrame:
        return scored.select(*self._flows_scored_columns)

    def alerts(self, scored: DataFrame) -> DataFrame:
        """The ALERTS rows of scored rows (those at or above the threshold)."""
        return scored.where(self._conditions["alert"]).select(*self._alerts_columns)

    def quarantine(self, rejected: DataFrame) -> DataFrame:
        return rejected.select(*self._quarantine_columns)

    def publish(self, alerts: DataFrame) -> None:
        options = {f"kafka.{k}": v for k, v in self.cfg.kafka.options.items()}
        (alerts.select(*self._message_columns)
         .write.format("kafka")
         .option("kafka.bootstrap.servers", self.cfg.kafka.bootstrap_servers)
         .option("topic", self.cfg.kafka.alerts_topic)
         .options(**options)
         .save())


def scored_at() -> Column:
    """When the row's batch was scored, from the text column BatchWriter.scored adds (see _SCORED_AT)."""
    return F.timestamp_micros(F.col(_SCORED_AT).cast("long"))


def create_tables(spark: SparkSession, tables: Path) -> None:
    """Create the three Delta tables (empty, with their schemas) unless they exist.

    Every table is checkpointed each CHECKPOINT_INTERVAL commits, not Delta's default 10: a checkpoint is written
    by the commit that triggers it, inside the micro-batch, and took 5-6 s on 2 cores, so at the default every
    tenth batch of each table was that much slower (the p99 of time to alert)."""
    from delta.tables import DeltaTable

    every = {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}
    properties = {"flows_scored": {"delta.dataSkippingStatsColumns": ",".join(FLOWS_SCORED_STATS_COLUMNS)}}
    for name, schema in TABLE_SCHEMAS.items():
        builder = DeltaTable.createIfNotExists(spark).location(str(tables / name)).addColumns(schema)
        for key, value in {**every, **properties.get(name, {})}.items():
            builder = builder.property(key, value)
        builder.execute()


def model_config(cfg: Config, detector: Any, sets: list[str], config_file: str | None) -> Config:
    """The run's config with the model's own sequence settings, so inputs match what it was trained on."""
    return load_config([*sets, *sequence_config_overrides(detector.sequence)], config_file)


MODEL_IDENTITY = "flowsentinel-model.json"  # inside the checkpoint: it goes wherever the checkpoint goes


def model_identity(detector: Any) -> dict[str, Any]:
    """What a checkpoint's state and offsets depend on: the model version, its sequence length and features."""
    return {"model_version": detector.model_version, "seq_len": int(detector.seq_len),
            "features": list(detector.features)}


def check_model_identity(checkpoint: str, detector: Any) -> None:
    """Refuse to resume a checkpoint written with another model; record this model's identity in a fresh one.

    Spark would resume it silently: per-host histories of one feature count reshaped into another's, scores of
    two models mixed in one table under one query. A checkpoint with no committed batch is fresh: its identity is
    (re)written. A local path only (like jobs.lib.preflight.check_checkpoint)."""
    if "://" in checkpoint:
        return
    folder = Path(checkpoint)
    identity = model_identity(detector)
    path = folder / MODEL_IDENTITY
    committed = (folder / "commits").is_dir() and any((folder / "commits").iterdir())
    if committed and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PreflightError(f"checkpoint {checkpoint}: {path} is unreadable ({exc})") from None
        changed = [k for k in identity if stored.get(k) != identity[k]]
        if changed:
            def show(d: dict[str, Any], k: str) -> str:
                return f"{len(d[k])} features" if k == "features" and isinstance(d.get(k), list) else repr(d.get(k))

            diff = ", ".join(f"{k} {show(stored, k)} -> {show(identity, k)}" for k in changed)
            raise PreflightError(f"checkpoint {checkpoint} was written with another model ({diff}); use the model "
                                 "it was written with, or another stream.checkpoint_dir (and --starting-offsets) "
                                 "for this one")
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2))


def check_avro_limits(spark: SparkSession, wire_format: str) -> None:
    """With Avro messages, the driver's JVM must carry Avro's length limits (jobs.lib.spark.AVRO_LIMITS): without
    them one record that claims a huge string stops the job. build_session sets them for local runs, and the
    spark-submit options of jobs.package for the driver and the executors."""
    if wire_format != "avro":
        return
    if spark.sparkContext._jvm.java.lang.System.getProperty(AVRO_STRING_LIMIT) is None:  # type: ignore[union-attr]
        raise PreflightError(f"kafka.flows_format = 'avro' needs -D{AVRO_STRING_LIMIT} in the driver's and the "
                             f"executors' extraJavaOptions (spark-submit: see `python -m jobs.package`): "
                             f"{AVRO_LIMITS}")


def check_device(device: str, executors_have_gpus: bool) -> None:
    """``model.device = cuda[:N]`` needs a GPU: refuse at start where none is visible, instead of failing inside
    every micro-batch. With GPU scheduling (spark.executor.resource.gpu.amount) the executors' GPUs are not this
    process's to see, and the executor checks its own (jobs.lib.inference.task_device)."""
    if not device.startswith("cuda") or executors_have_gpus:
        return
    import torch

    if not torch.cuda.is_available():
        raise PreflightError(f"model.device = {device!r} but no CUDA GPU is visible; use model.device = auto or cpu")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise PreflightError(f"model.device = {device!r} but this machine has {torch.cuda.device_count()} GPU(s)")


def warm_up(spark: SparkSession, cfg: Config, model_cfg: Config, detector: Any, model_dir: str, out: Path) -> float:
    """Run ``stream.warmup_flows`` synthetic flows once through the job's batch path, before the query reads its
    first offsets; returns the seconds it took (0 when the key is 0).

    A fresh JVM runs the first micro-batch's planning, generated code and Delta commits interpreted until its JIT has
    compiled them: the first 200,000-flow batch took 3.6x a warm one, and a new job's time to alert stayed above 8 s
    for a minute. Here part of that cost is paid before the first real offset (measured: the first batch 26 ->
    15-16 s, the first minute's p99 to the alerts topic about 1 s lower; a backlog from a cold start drains no
    sooner, docs/benchmarks.md). The flows, in the wire format of kafka.flows_format with the Kafka source's
    columns, go through the same parse, validation, z-score, scoring and BatchWriter (Delta appends to scratch
    tables in a new folder under `out`, deleted afterwards). Nothing is published and nothing the job keeps is
    written; the Python workers keep the model they loaded. With T > 1 the state operator is not warmed (Spark runs
    it in streaming queries only): each flow is scored without history."""
    count = cfg.stream.warmup_flows
    if count <= 0:
        return 0.0
    import shutil
    import tempfile

    from jobs.replay_flows import synthetic_messages

    started = time.perf_counter()
    now = pd.Timestamp.now().to_pydatetime()
    distinct = synthetic_messages(min(count, 1000), 0, model_cfg.kafka.flows_format)
    rows = [(*distinct[i % len(distinct)], "flowsentinel-warm-up", i % 2, i, now, 0) for i in range(count)]
    schema = read_kafka(spark, cfg, "latest").schema  # the source's columns, as each micro-batch has them
    # An RDD, not a local relation: Spark's optimizer would evaluate a projection of local rows itself, interpreted.
    messages = spark.createDataFrame(spark.sparkContext.parallelize(rows, spark.sparkContext.defaultParallelism),
                                     schema)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".warm-up-", dir=out))
    try:
        create_tables(spark, scratch)
        flows = validated_flows(messages, model_cfg, detector.norm_stats)
        # Spark's state operator runs in streaming queries only: with T > 1 each flow goes without history.
        batch = lone_flow_inputs(flows, detector.seq_len, len(detector.features))
        BatchWriter(cfg, scratch, detector, model_dir, publish=False, logger=log.getChild("warm_up"))(batch, 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info("warm-up: %d synthetic flows through the batch path in %.1f s", count, seconds)
    return seconds


def progress_table(out: Path) -> Path:
    """Where the job's progress listener writes one row per micro-batch."""
    return out / "tables" / "stream_progress"


def start(spark: SparkSession, cfg: Config, model_cfg: Config, detector: Any, model_dir: str, out: Path,
          available_now: bool = False, starting_offsets: str | None = None,
          listener: ProgressToDelta | None = None) -> Any:
    """Start the detection query. Its progress goes to `progress_table(out)` through `listener` (the session's,
    attached before this call so it follows this run), or through the session's listener attached here."""
    tables = out / "tables"
    checkpoint = cfg.stream.checkpoint_dir or str(out / "checkpoints" / "stream_detect")
    create_tables(spark, tables)
    offsets = starting_offsets or cfg.stream.starting_offsets
    scored = detection_stream(spark, cfg, model_cfg, detector, offsets)
    writer = (scored.writeStream.queryName("stream_detect")
              .foreachBatch(BatchWriter(cfg, tables, detector, model_dir))
              .option("checkpointLocation", checkpoint))
    if listener is None:  # one row per micro-batch (rates, durations, state rows, offsets)
        attach_progress(spark, progress_table(out), query_name="stream_detect")
    if available_now:
        writer = writer.trigger(availableNow=True)
    elif cfg.stream.trigger_interval:
        writer = writer.trigger(processingTime=cfg.stream.trigger_interval)
    return writer.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: conf stream.out_dir)")
    parser.add_argument("--model", help="model folder (default: conf model.dir, the shipped model)")
    parser.add_argument("--available-now", action="store_true", help="process what is in Kafka, then stop")
    parser.add_argument("--starting-offsets", help="override stream.starting_offsets for a new checkpoint")
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.sets, args.config)
        from models.artifact import DEFAULT_DIR, load_model

        model_dir = str(Path(args.model or cfg.model.dir if (args.model or cfg.model.dir) else DEFAULT_DIR))
        detector = load_model(model_dir, device="cpu")  # validates the artifact before anything starts
        model_cfg = model_config(cfg, detector, args.sets, args.config)
        spark_conf = session_conf(cfg)
        # Fail fast, naming the problem, before Spark retries for minutes or fails inside a Delta commit.
        check_writable(args.out or cfg.stream.out_dir)
        check_broker(cfg.kafka.bootstrap_servers, cfg.kafka.client.to_dict())
        checkpoint = (cfg.stream.checkpoint_dir
                      or str(Path(args.out or cfg.stream.out_dir) / "checkpoints" / "stream_detect"))
        check_checkpoint(checkpoint, cfg.kafka.flows_topic)
        check_device(cfg.model.device, "spark.executor.resource.gpu.amount" in cfg.spark.conf)
        check_model_identity(checkpoint, detector)
    except (ConfigError, ValueError, OSError, PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or cfg.stream.out_dir)
    spark = build_session(cfg, "flowsentinel-stream-detect", extra_conf=spark_conf)
    try:
        check_avro_limits(spark, cfg.kafka.flows_format)
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    failures = 0
    listener = attach_progress(spark, progress_table(out), query_name="stream_detect")  # follows every run
    warmed = warm_up(spark, cfg, model_cfg, detector, model_dir, out)  # once per process, not per restart
    if warmed:
        print(json.dumps({"warm_up": {"flows": cfg.stream.warmup_flows, "seconds": round(warmed, 1)}}), flush=True)
    while True:
        query = start(spark, cfg, model_cfg, detector, model_dir, out, args.available_now, args.starting_offsets,
                      listener)
        print(json.dumps({"query": "stream_detect", "id": str(query.id), "run_id": str(query.runId),
                          "out": str(out)}), flush=True)
        try:
            while query.isActive and not stop.is_set():
                query.awaitTermination(1.0)
        except StreamingQueryException:
            pass  # awaitTermination raises when the query failed: handled below
        if query.isActive:
            query.stop()
        listener.wait_finished(30.0, str(query.runId))  # its last rows are written asynchronously, after the query ends
        error = query.exception()
        if error is None or stop.is_set():
            return 0
        # A query fails on infrastructure, not on input (bad records go to quarantine): e.g. Spark's Kafka source
        # fails when the broker restarts under it. The checkpoint makes a restart exactly-once, so restart it a
        # bounded number of times, then give up with the cause.
        failures = 1 if query.recentProgress else failures + 1  # "in a row": a run that made progress resets
        cause = str(error).strip().splitlines()[0][:300]
        if failures > cfg.stream.query_restarts:
            print(f"error: streaming query failed {failures} times; last: {cause}", file=sys.stderr)
            return 1
        print(f"warning: streaming query failed ({cause}); restarting from the checkpoint in "
              f"{cfg.stream.restart_backoff_s} s ({failures}/{cfg.stream.query_restarts})", file=sys.stderr,
              flush=True)
        if stop.wait(cfg.stream.restart_backoff_s):
            return 0


if __name__ == "__main__":
    sys.exit(main())
