"""Streaming progress kept in a Delta table: the row mapping, and a real query's batches landing as rows."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from jobs.lib import monitoring

PROGRESS = {
    "id": "q-1", "runId": "r-1", "name": "stream_detect", "timestamp": "2026-01-01T10:00:00.500Z", "batchId": 7,
    "numInputRows": 5000, "inputRowsPerSecond": 2500.0, "processedRowsPerSecond": 4000.0,
    "durationMs": {"triggerExecution": 1250, "addBatch": 1100, "getBatch": 3},
    "stateOperators": [{"numRowsTotal": 40, "numRowsUpdated": 12, "memoryUsedBytes": 9000,
                        "numRowsDroppedByWatermark": 3},
                       {"numRowsTotal": 2, "numRowsUpdated": 1, "memoryUsedBytes": 1000,
                        "numRowsDroppedByWatermark": 4}],
    "sources": [{"description": "KafkaV2[Subscribe[flows]]", "startOffset": {"flows": {"0": 10}},
                 "endOffset": {"flows": {"0": 5010}}, "latestOffset": {"flows": {"0": 6000}}, "numInputRows": 5000}],
}


def test_progress_row_maps_every_field():
    row = monitoring.progress_row(PROGRESS)
    assert list(row) == monitoring.STREAM_PROGRESS.fieldNames()
    assert row == {
        "query_name": "stream_detect", "query_id": "q-1", "run_id": "r-1", "batch_id": 7,
        "timestamp": datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC), "num_input_rows": 5000,
        "input_rows_per_s": 2500.0, "processed_rows_per_s": 4000.0, "batch_duration_ms": 1250,
        "add_batch_ms": 1100, "get_batch_ms": 3, "state_rows_total": 42, "state_rows_updated": 13,
        "state_memory_bytes": 10000,
        "sources": json.dumps([{"description": "KafkaV2[Subscribe[flows]]", "startOffset": {"flows": {"0": 10}},
                                "endOffset": {"flows": {"0": 5010}}, "latestOffset": {"flows": {"0": 6000}}}]),
        "rows_dropped_by_watermark": 7,
    }
    assert monitoring.log_line(row) == ("progress stream_detect batch 7: 5000 rows, in 2500/s, processed 4000/s, "
                                        "1250 ms, state 42 rows")


def test_listener_writes_one_row_per_batch(spark, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):  # one file per micro-batch below
        part = source / f"part-{i}.json"
        part.write_text("".join(json.dumps({"n": i * 10 + j}) + "\n" for j in range(i + 1)))
        os.utime(part, (1_700_000_000 + i, 1_700_000_000 + i))  # the file source takes files oldest first
    table = tmp_path / "stream_progress"
    listener = monitoring.attach(spark, table, query_name="progress-test", flush_every=100)
    try:
        query = (spark.readStream.schema("n long").option("maxFilesPerTrigger", 1).json(str(source))
                 .writeStream.queryName("progress-test").format("noop")
                 .option("checkpointLocation", str(tmp_path / "checkpoint"))
                 .trigger(availableNow=True).start())
        query.awaitTermination(300)
        deadline = time.monotonic() + 60
        while not listener.finished and time.monotonic() < deadline:  # listener events arrive asynchronously
            time.sleep(0.2)
    finally:
        monitoring.detach(spark, listener)
    rows = spark.read.format("delta").load(str(table)).orderBy("batch_id").collect()
    assert [(r.query_name, r.batch_id, r.num_input_rows) for r in rows] == [
        ("progress-test", 0, 1), ("progress-test", 1, 2), ("progress-test", 2, 3)]
    assert all(r.query_id == str(query.id) and r.batch_duration_ms >= 0 for r in rows)
    assert (listener.query_id, listener.received) == (str(query.id), 3)
    assert len(list(table.glob("*.parquet"))) == 1  # one flush, one task, one file


def test_one_listener_per_session_follows_each_run_to_its_table(spark, tmp_path):
    first = monitoring.attach(spark, tmp_path / "a", query_name="restarted")
    try:
        assert monitoring.attach(spark, tmp_path / "b", query_name="restarted") is first
        assert first.path == str(tmp_path / "b")
    finally:
        monitoring.detach(spark, first)
    assert monitoring.attach(spark, tmp_path / "c", query_name="restarted") is not first
    monitoring.detach(spark, monitoring.attach(spark, tmp_path / "c", query_name="restarted"))


def test_progress_rows_that_cannot_be_written_are_given_up_after_bounded_retries(spark, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Not registered on the session: the run's events are handed to it directly.
    listener = monitoring.ProgressToDelta(spark, blocker / "stream_progress", "stream_detect", flush_every=1,
                                          max_attempts=2, retry_after_s=0.1)
    caplog.set_level(logging.WARNING, logger="flowsentinel.progress")
    listener.onQueryStarted(SimpleNamespace(name="stream_detect", id="q-1", runId="r-1"))
    listener.onQueryProgress(SimpleNamespace(progress=PROGRESS))
    listener.onQueryTerminated(SimpleNamespace(id="q-1", runId="r-1"))
    assert listener.wait_finished(120)
    assert (listener.received, listener.dropped, listener.finished, listener._rows) == (1, 1, True, [])
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up == [f"gave up on the progress rows of batches [7] ({blocker / 'stream_progress'}) after 2 attempts"]


def test_processing_rate_is_rows_over_busy_batch_time(spark):
    rows = [monitoring.progress_row({**PROGRESS, "batchId": b, "numInputRows": n,
                                     "durationMs": {"triggerExecution": ms}})
            for b, n, ms in ((0, 6000, 4000), (1, 0, 50), (2, 9000, 2000))]
    df = spark.createDataFrame([tuple(r[f] for f in monitoring.STREAM_PROGRESS.fieldNames()) for r in rows],
                               monitoring.STREAM_PROGRESS)
    assert monitoring.processing_rate(df) == 2500.0  # 15,000 rows in 6 s of batches; the empty one is idle time
    assert monitoring.processing_rate(df.where("batch_id = 1")) is None
