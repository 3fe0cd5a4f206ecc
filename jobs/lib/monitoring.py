"""Streaming query progress, kept: one row per micro-batch in a Delta table, and one log line per batch.

Spark reports each micro-batch's progress (input rows and rate, processing rate, durations, state rows, source
offsets) to StreamingQueryListeners on the driver; the UI forgets it when the driver goes. :func:`attach`
registers a listener that keeps it:

    from jobs.lib.monitoring import attach
    listener = attach(spark, tables / "stream_progress", query_name="stream_detect")   # before writeStream.start()

Rows are buffered and appended every `flush_every` batches and when the query ends, so a 1-second trigger does
not make a Delta commit per second. Query with SQL: ``SELECT * FROM delta.`OUT/tables/stream_progress```.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.types import (
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

log = logging.getLogger("flowsentinel.progress")

STREAM_PROGRESS = StructType([
    StructField("query_name", StringType()),
    StructField("query_id", StringType()),
    StructField("run_id", StringType()),
    StructField("batch_id", LongType()),
    StructField("timestamp", TimestampType()),  # when the trigger started
    StructField("num_input_rows", LongType()),
    StructField("input_rows_per_s", DoubleType()),
    StructField("processed_rows_per_s", DoubleType()),
    StructField("batch_duration_ms", LongType()),  # durationMs.triggerExecution
    StructField("add_batch_ms", LongType()),  # time in the sink (foreachBatch: scoring and the Delta writes)
    StructField("get_batch_ms", LongType()),
    StructField("state_rows_total", LongType()),  # summed over stateful operators
    StructField("state_rows_updated", LongType()),
    StructField("state_memory_bytes", LongType()),
    StructField("sources", StringType()),  # JSON: per source, start/end/latest offsets
    # input rows a stateful operator dropped as behind the watermark: in neither flows_scored nor quarantine
    StructField("rows_dropped_by_watermark", LongType()),
])


def _number(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


def progress_row(progress: Any) -> dict[str, Any]:
    """One StreamingQueryProgress (the object or its JSON dict) as a STREAM_PROGRESS row."""
    p: dict[str, Any] = json.loads(progress.json) if hasattr(progress, "json") else dict(progress)
    durations = p.get("durationMs") or {}
    state = p.get("stateOperators") or []
    stamp = p.get("timestamp")
    return {
        "query_name": p.get("name"),
        "query_id": p.get("id"),
        "run_id": p.get("runId"),
        "batch_id": _number(p.get("batchId"), int),
        # Spark writes e.g. 2026-01-01T10:00:00.123Z: UTC.
        "timestamp": datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None,
        "num_input_rows": _number(p.get("numInputRows"), int),
        "input_rows_per_s": _number(p.get("inputRowsPerSecond"), float),
        "processed_rows_per_s": _number(p.get("processedRowsPerSecond"), float),
        "batch_duration_ms": _number(durations.get("triggerExecution"), int),
        "add_batch_ms": _number(durations.get("addBatch"), int),
        "get_batch_ms": _number(durations.get("getBatch"), int),
        "state_rows_total": sum(int(op.get("numRowsTotal", 0)) for op in state),
        "state_rows_updated": sum(int(op.get("numRowsUpdated", 0)) for op in state),
        "state_memory_bytes": sum(int(op.get("memoryUsedBytes", 0)) for op in state),
        "sources": json.dumps([{k: s.get(k) for k in ("description", "startOffset", "endOffset", "latestOffset")}
                               for s in p.get("sources") or []]),
        "rows_dropped_by_watermark": sum(int(op.get("numRowsDroppedByWatermark", 0)) for op in state),
    }


def log_line(row: dict[str, Any]) -> str:
    return (f"progress {row['query_name'] or row['query_id']} batch {row['batch_id']}: "
            f"{row['num_input_rows']} rows, in {row['input_rows_per_s'] or 0:.0f}/s, "
            f"processed {row['processed_rows_per_s'] or 0:.0f}/s, {row['batch_duration_ms']} ms, "
            f"state {row['state_rows_total']} rows")


class ProgressToDelta(StreamingQueryListener):
    """Appends the progress of one query run to a Delta table.

    Attached before ``start()``, it claims the first query that starts with `query_name` (any name when None)
    and follows that run only, so a session that starts the job several times (tests, a restart) gets one
    listener per run, each writing its own run's rows; after the run ends the listener stays inert.
    """

    def __init__(self, spark: SparkSession, path: str | Path, query_name: str | None = None,
                 flush_every: int = 10) -> None:
        self.spark = spark
        self.path = str(path)
        self.query_name = query_name
        self.flush_every = flush_every
        self.query_id: str | None = None  # the run this listener follows, set when it starts
        self.received = 0  # progress events kept (tests and health checks read it)
        self.finished = False
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()

    def onQueryStarted(self, event: Any) -> None:
        with self._lock:
            if self.query_id is None and (self.query_name is None or event.name == self.query_name):
                self.query_id = str(event.id)

    def onQueryProgress(self, event: Any) -> None:
        row = progress_row(event.progress)
        if self.finished or row["query_id"] != self.query_id:
            return
        log.info(log_line(row))
        with self._lock:
            self._rows.append(row)
            self.received += 1
            due = len(self._rows) >= self.flush_every
        if due:
            self.flush()

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if str(event.id) == self.query_id and not self.finished:
            self.flush()
            self.finished = True
            self._done.set()

    def wait_finished(self, timeout_s: float) -> bool:
        """Block until the followed run's last rows are written (listener events arrive asynchronously: a driver
        that exits right after its query stops would otherwise lose them); False on timeout."""
        return self._done.wait(timeout_s)

    def flush(self) -> int:
        """Append the buffered rows; returns how many. Never raises: monitoring must not stop the job."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            df = self.spark.createDataFrame([tuple(r[f] for f in STREAM_PROGRESS.fieldNames()) for r in rows],
                                            STREAM_PROGRESS)
            # mergeSchema: a table written before rows_dropped_by_watermark existed takes the new column
            df.write.format("delta").mode("append").option("mergeSchema", "true").save(self.path)
        except Exception as exc:  # logged, and the rows go back for the next flush
            log.warning("could not write %d progress rows to %s: %s", len(rows), self.path, exc)
            with self._lock:
                self._rows = rows + self._rows
            return 0
        return len(rows)


def attach(spark: SparkSession, path: str | Path, query_name: str | None = None,
           flush_every: int = 10) -> ProgressToDelta:
    """Register a :class:`ProgressToDelta` listener on this session and return it."""
    listener = ProgressToDelta(spark, path, query_name, flush_every)
    spark.streams.addListener(listener)
    return listener
