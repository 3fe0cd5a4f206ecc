"""Streaming query progress, kept: one row per micro-batch in a Delta table, and one log line per batch.

Spark reports each micro-batch's progress (input rows and rate, processing rate, durations, state rows, source
offsets) to StreamingQueryListeners on the driver; the UI forgets it when the driver goes. :func:`attach`
registers a listener that keeps it:

    from jobs.lib.monitoring import attach
    listener = attach(spark, tables / "stream_progress", query_name="stream_detect")   # before writeStream.start()

Rows are buffered and appended every `flush_every` batches and when the query ends, so a 1-second trigger does not
make a Delta commit per second; a thread of the listener's own writes them, so no batch waits for them. Query with
SQL: ``SELECT * FROM delta.`OUT/tables/stream_progress```.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
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


def processing_rate(progress: DataFrame) -> float | None:
    """A job's own processing rate from its progress rows: input rows over the time its micro-batches with rows
    took (flows/s; None before any such batch). Idle time between batches, e.g. waiting for input, is not in it."""
    busy = (progress.where("num_input_rows > 0")
            .agg(F.sum("num_input_rows").alias("n"), F.sum("batch_duration_ms").alias("ms")).first())
    if busy is None or not busy["ms"]:
        return None
    return round(busy["n"] * 1000 / busy["ms"], 1)


def log_line(row: dict[str, Any]) -> str:
    return (f"progress {row['query_name'] or row['query_id']} batch {row['batch_id']}: "
            f"{row['num_input_rows']} rows, in {row['input_rows_per_s'] or 0:.0f}/s, "
            f"processed {row['processed_rows_per_s'] or 0:.0f}/s, {row['batch_duration_ms']} ms, "
            f"state {row['state_rows_total']} rows")


class ProgressToDelta(StreamingQueryListener):
    """Appends the progress of a named query to a Delta table, run after run.

    One per session and query name (:func:`attach` returns the one already registered): it follows every run
    of the query that starts with `query_name` (any name when None), one run at a time, so a job that restarts
    its query keeps one listener. Rows are written by a thread of its own, never by the listener bus or the
    query's thread, so a slow or failing write never delays a batch; a write that fails is retried with the next
    flush, and rows that failed `max_attempts` times are dropped with a warning that names their batches.
    """

    def __init__(self, spark: SparkSession, path: str | Path, query_name: str | None = None,
                 flush_every: int = 10, max_attempts: int = 3, retry_after_s: float = 2.0) -> None:
        self.session = spark  # not self.spark: StreamingQueryListener's own, Optional, attribute
        self.path = str(path)
        self.query_name = query_name
        self.flush_every = flush_every
        self.max_attempts = max_attempts
        self.retry_after_s = retry_after_s
        self.query_id: str | None = None  # the query of the run this listener follows, set when it starts
        self.run_id: str | None = None
        self.received = 0  # progress events kept (tests and health checks read it)
        self.dropped = 0  # rows given up on after max_attempts failed writes
        self.finished = False  # the followed run has ended and its rows are written (or given up on)
        self._rows: list[tuple[int, str, dict[str, Any]]] = []  # (failed attempts, table path, row)
        self._run_paths: dict[str, str] = {}  # run id -> the table its rows go to (late events included)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending_end: set[str] = set()  # runs that ended, whose rows the writer has not flushed yet
        self._ended: set[str] = set()  # runs that ended and whose rows are flushed
        self._writer = threading.Thread(target=self._write_loop, name="progress-to-delta", daemon=True)
        self._writer.start()

    def follow(self, path: str | Path) -> None:
        """Write the rows of the runs that start from now on to `path` (earlier runs' rows keep theirs)."""
        with self._lock:
            self.path = str(path)

    def onQueryStarted(self, event: Any) -> None:
        with self._lock:
            if self.query_name is None or event.name == self.query_name:
                self.query_id, self.run_id = str(event.id), str(event.runId)
                self._run_paths[self.run_id] = self.path
                self.finished = False

    def onQueryProgress(self, event: Any) -> None:
        row = progress_row(event.progress)
        path = self._run_paths.get(row["run_id"])
        if path is None:
            return
        log.info(log_line(row))
        with self._lock:
            self._rows.append((0, path, row))
            self.received += 1
            if len(self._rows) >= self.flush_every:
                self._wake.notify()

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        with self._lock:
            if str(event.runId) in self._run_paths:
                self._pending_end.add(str(event.runId))
                self._wake.notify()

    def wait_finished(self, timeout_s: float, run_id: str | None = None) -> bool:
        """Block until the run's last rows are written (`run_id`, default the run followed now; listener events
        arrive asynchronously: a driver that exits right after its query stops would otherwise lose them);
        False on timeout."""
        with self._lock:
            run = run_id or self.run_id
            return self._wake.wait_for(lambda: run in self._ended, timeout_s)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: len(self._rows) >= self.flush_every or bool(self._pending_end))
                ended, self._pending_end = self._pending_end, set()
            written = self.flush()
            while ended and self._rows:  # the run is over: retry soon; flush drops a row after max_attempts
                time.sleep(self.retry_after_s)
                written = self.flush()
            if not ended and self._rows and not written:
                time.sleep(self.retry_after_s)  # a failed write: not again at once
            if ended:
                with self._lock:
                    self._ended |= ended
                    self.finished = self.finished or self.run_id in ended
                    self._wake.notify_all()

    def flush(self) -> int:
        """Append the buffered rows; returns how many. Never raises: monitoring must not stop the job."""
        with self._lock:
            rows, self._rows = self._rows, []
        written = 0
        for path in dict.fromkeys(p for _, p, _ in rows):
            batch = [(n, r) for n, p, r in rows if p == path]
            try:
                # One task and one file per flush: a few rows spread over every core would take as many task
                # slots from the stream's own jobs, and leave as many small files.
                df = self.session.createDataFrame([tuple(r[f] for f in STREAM_PROGRESS.fieldNames()) for _, r in batch],
                                                STREAM_PROGRESS).coalesce(1)
                # mergeSchema: a table written before rows_dropped_by_watermark existed takes the new column
                df.write.format("delta").mode("append").option("mergeSchema", "true").save(path)
                written += len(batch)
            except Exception as exc:  # the rows go back for the next flush, up to max_attempts writes each
                kept = [(n + 1, path, r) for n, r in batch if n + 1 < self.max_attempts]
                lost = [r["batch_id"] for n, r in batch if n + 1 >= self.max_attempts]
                log.warning("could not write %d progress rows to %s: %s", len(batch), path,
                            str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc))
                if lost:
                    log.warning("gave up on the progress rows of batches %s (%s) after %d attempts", lost, path,
                                self.max_attempts)
                with self._lock:
                    self._rows = kept + self._rows
                    self.dropped += len(lost)
        return written


_LISTENERS: dict[tuple[int, str | None], ProgressToDelta] = {}
_LISTENERS_LOCK = threading.Lock()


def attach(spark: SparkSession, path: str | Path, query_name: str | None = None,
           flush_every: int = 10) -> ProgressToDelta:
    """The session's :class:`ProgressToDelta` for `query_name`, registered on first use; runs that start after
    this call write to `path`."""
    key = (id(spark), query_name)
    with _LISTENERS_LOCK:
        listener = _LISTENERS.get(key)
        if listener is None:
            listener = _LISTENERS[key] = ProgressToDelta(spark, path, query_name, flush_every)
            spark.streams.addListener(listener)
            return listener
    listener.follow(path)
    listener.flush_every = flush_every
    return listener


def detach(spark: SparkSession, listener: ProgressToDelta) -> None:
    """Remove the listener from the session (a later :func:`attach` registers a new one)."""
    with _LISTENERS_LOCK:
        for key, known in list(_LISTENERS.items()):
            if known is listener:
                del _LISTENERS[key]
    spark.streams.removeListener(listener)
