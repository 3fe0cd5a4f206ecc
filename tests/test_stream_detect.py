"""The detection job against the real broker: exact table contents, restart without loss or duplicates, and the
same model inputs as the batch path."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer
from pyspark.errors import StreamingQueryException
from pyspark.sql import functions as F

from jobs import stream_detect
from jobs.lib.config import load_config
from jobs.lib.flow_io import iter_flow_records
from jobs.lib.kafka_broker import ensure_topics
from jobs.lib.prep import apply_zscore, build_sequences, with_labels, with_reject_reason, with_sequence_key
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import encode, encode_avro, make_producer, send_records
from jobs.sql import host_windows
from models.artifact import load_model
from schemas.labels import canonical_attack_type
from schemas.records import FLOWS_SCORED_STATS_COLUMNS
from tests.helpers import assert_readable_without_spark, random_artifact

MALFORMED = [
    (b"", "empty_payload"),
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00", "not_utf8"),
    (b"[1, 2, 3]", "invalid_json"),
]


def _cfg(broker, topic: str, *extra: str):
    sets = [f"kafka.bootstrap_servers={broker.bootstrap}", f"kafka.flows_topic={topic}",
            f"kafka.alerts_topic={topic}-alerts", "spark.shuffle_partitions=2", *extra]
    return sets, load_config(sets, env={})


def _produce(broker, cfg, topic: str, records, raw: list[bytes] = ()) -> None:
    ensure_topics(broker.bootstrap, cfg, [topic, f"{topic}-alerts"])
    producer = make_producer(broker.bootstrap, cfg)
    send_records(producer, topic, records, "src_ip", progress=False, wire_format=cfg.kafka.flows_format)
    for value in raw:
        producer.send(topic, key=b"bad", value=value)
    producer.flush()
    producer.close()


def _detector(cfg, sets, artifact: Path):
    """The artifact loaded as the job loads it, and the run's config with the model's own sequence settings."""
    detector = load_model(artifact, device="cpu")
    return detector, stream_detect.model_config(cfg, detector, sets, None)


def _run(spark, cfg, sets, artifact: Path, out: Path, **kw):
    detector, model_cfg = _detector(cfg, sets, artifact)
    query = stream_detect.start(spark, cfg, model_cfg, detector, str(artifact), out, **kw)
    return query


def _table(spark, out: Path, name: str):
    return spark.read.format("delta").load(str(out / "tables" / name))


def test_labeled_flows_and_malformed_messages_land_in_exact_tables(spark, kafka_broker, shared_data, tmp_path):
    topic = "detect-exact"
    sets, cfg = _cfg(kafka_broker, topic)
    ddos = list(iter_flow_records(shared_data / "friday-afternoon-ddos.csv"))[:200]
    web = list(iter_flow_records(shared_data / "thursday-morning-webattacks.csv"))[:100]
    wrong = {**ddos[0], "flow_duration": "abc"}
    negative = {**ddos[1], "total_fwd_packets": -3.0}
    extra = {**ddos[2], "ttl": 64}
    keyless = {k: v for k, v in ddos[3].items() if k not in ("src_ip", "source_file")}  # no sequence to join
    # identifiers that are not: these once reached scoring, and the port stopped the query
    port = {**ddos[4], "dst_port": 70000}
    injected = {**ddos[5], "src_ip": "1.2.3.4'; DROP TABLE alerts;--"}
    protocol = {**ddos[6], "protocol": 300}
    hostile = [port, injected, protocol]
    raw = [v for v, _ in MALFORMED] + [encode(r) for r in (wrong, negative, extra, keyless, *hostile)]
    _produce(kafka_broker, cfg, topic, ddos + web, raw)
    # threshold ~0: every valid flow is an alert, so the alert table must mirror flows_scored exactly
    artifact = random_artifact(tmp_path / "model", seq_len=3, threshold=1e-6)
    query = _run(spark, cfg, sets, artifact, tmp_path / "out", available_now=True)
    query.awaitTermination()
    assert query.exception() is None

    scored = _table(spark, tmp_path / "out", "flows_scored")
    assert scored.count() == 300
    expected_types = Counter(canonical_attack_type(r["label"]) for r in ddos + web)
    assert expected_types["DDoS"] == 200 and sum(expected_types.values()) == 300
    assert dict(scored.groupBy("true_attack_type").count().collect()) == expected_types
    assert scored.select("topic", "partition", "offset").distinct().count() == 300
    assert scored.where("is_attack = 1").count() == 300
    first = scored.where("source_file = 'friday-afternoon-ddos.csv' AND source_row = 1").first()
    assert (first.flow_id, first.src_ip, first.dst_port, first.flow_duration, first.label, first.key) == (
        "172.16.0.1-192.168.10.50-14111-80-6", "172.16.0.1", 80, 7121367.0, "DDoS", "172.16.0.1")
    assert str(first.event_time) == "2017-07-07 15:56:00"  # CICIDS2017's 12-hour clock read as afternoon

    quarantine = _table(spark, tmp_path / "out", "quarantine")
    got = sorted((r.reason, r.raw) for r in quarantine.collect())
    expected = sorted([("empty_payload", ""), ("invalid_json", "{not json"), ("not_utf8", "base64://4A"),
                       ("invalid_json", "[1, 2, 3]"), ("wrong_type: flow_duration", encode(wrong).decode()),
                       ("negative_counter: total_fwd_packets", encode(negative).decode()),
                       ("unexpected_field: ttl", encode(extra).decode()),
                       ("missing_key: src_ip", encode(keyless).decode()),
                       ("invalid_identifier: dst_port", encode(port).decode()),
                       ("invalid_identifier: src_ip", encode(injected).decode()),
                       ("invalid_identifier: protocol", encode(protocol).decode())])
    assert got == expected

    alerts = _table(spark, tmp_path / "out", "alerts")
    assert alerts.count() == 300
    a = alerts.where("flow_id = '172.16.0.1-192.168.10.50-14111-80-6'").first()
    assert (a.src_ip, a.dest_ip, a.dest_port, a.proto, a.key) == ("172.16.0.1", "192.168.10.50", 80, "TCP",
                                                                 "172.16.0.1")
    # Community ID v1 of (TCP, 172.16.0.1:14111 -> 192.168.10.50:80) by the communityid package
    assert a.community_id == "1:CXN4BF2SPXtIxNY1co/T1bDqoOM=" and a.explanation.count("=") == 3
    assert alerts.where("community_id IS NULL").count() == len(web)  # 79-column rows carry no IPs

    # Alerts first: every alert is on the topic (keyed by alert_id) before any of its batch's Delta commits.
    consumer = KafkaConsumer(cfg.kafka.alerts_topic, bootstrap_servers=kafka_broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    published = [(m.key.decode(), m.timestamp / 1000) for m in consumer]
    consumer.close()
    assert sorted(k for k, _ in published) == sorted(r.alert_id for r in alerts.select("alert_id").collect())
    for table in ("flows_scored", "alerts"):
        history = spark.sql(f"DESCRIBE HISTORY delta.`{tmp_path / 'out' / 'tables' / table}`")
        first_write = min(r.timestamp.timestamp() for r in history.where("operation = 'WRITE'").collect())
        assert max(t for _, t in published) <= first_write, table

    windows = host_windows(_table(spark, tmp_path / "out", "flows_scored"), cfg.stream.host_window)
    assert windows.agg(F.sum("flows")).first()[0] == 300
    ddos_window = windows.where("host = '172.16.0.1'").agg(F.sum("flows"), F.sum("alerts")).first()
    assert tuple(ddos_window) == (200, 200)

    # the progress listener keeps one row per micro-batch; it writes when the query ends, asynchronously
    progress_path = tmp_path / "out" / "tables" / "stream_progress"
    deadline = time.monotonic() + 60
    while not (progress_path / "_delta_log").is_dir() and time.monotonic() < deadline:
        time.sleep(0.5)
    progress = _table(spark, tmp_path / "out", "stream_progress")
    assert progress.agg(F.sum("num_input_rows")).first()[0] == 300 + len(raw)
    assert progress.select("query_id").distinct().collect()[0][0] == str(query.id)

    # Analysts read the tables without a JVM: delta-rs into pandas, DuckDB over that, the same rows as Spark.
    for table, group_by in (("flows_scored", "true_attack_type"), ("alerts", "category"), ("quarantine", "reason")):
        assert_readable_without_spark(spark, tmp_path / "out" / "tables" / table, group_by)


def test_a_row_the_scorer_or_the_enrichment_fails_on_is_quarantined_alone(spark, kafka_broker, tmp_path):
    """Rows past validation that still fail (here made so by editing a batch the sink saw): a model input of the
    wrong size, a port the Community ID refuses. Each goes to quarantine as scoring_error, the rest is written;
    before, either raised and failed the micro-batch, and the query with it."""
    topic = "detect-isolation"
    sets, cfg = _cfg(kafka_broker, topic, "stream.publish_alerts=false")
    _produce(kafka_broker, cfg, topic, synthetic_flows(20, seed=4, hosts=3))
    artifact = random_artifact(tmp_path / "model", seq_len=2, threshold=1e-6)
    detector, model_cfg = _detector(cfg, sets, artifact)
    query = (stream_detect.detection_stream(spark, cfg, model_cfg, detector, "earliest").writeStream
             .foreachBatch(lambda df, i: df.write.parquet(str(tmp_path / f"batch-{i}")))
             .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start())
    query.awaitTermination()
    batch = spark.read.parquet(str(tmp_path / "batch-0"))
    offsets = sorted(tuple(r) for r in batch.select("partition", "offset").collect())
    short, bad_port = offsets[3], offsets[7]

    def at(coordinates):
        return (F.col("partition") == coordinates[0]) & (F.col("offset") == coordinates[1])

    edited = batch.withColumns({
        "features": F.when(at(short), F.slice("features", 1, 5)).otherwise(F.col("features")),
        "dst_port": F.when(at(bad_port), F.lit(70000)).otherwise(F.col("dst_port"))})
    out = tmp_path / "out"
    stream_detect.create_tables(spark, out / "tables")
    stream_detect.BatchWriter(cfg, out / "tables", detector, str(artifact))(edited, 0)

    quarantine = _table(spark, out, "quarantine").orderBy("partition", "offset").collect()
    assert [((r.partition, r.offset), r.reason) for r in quarantine] == [
        (short, "scoring_error: input holds 5 values and 2 mask flags; expected 2 x 76 and 2"),
        (bad_port, 'scoring_error: community_id: Destination port "70000" invalid')]
    assert '"dst_port":70000' in quarantine[1].raw and quarantine[1].topic == topic
    written = {(r.partition, r.offset) for r in _table(spark, out, "flows_scored").collect()}
    assert written == set(offsets) - {short, bad_port}
    # threshold ~0: every written flow is an alert
    assert {(r.partition, r.offset) for r in _table(spark, out, "alerts").collect()} == written


def test_rows_behind_the_watermark_are_scored_not_dropped(spark, kafka_broker, tmp_path):
    """T > 1 (the state operator): after a run has moved the watermark on, flows whose Kafka timestamps are a day
    old arrive. Before, Spark's state operator dropped every one of them silently (in neither flows_scored nor
    quarantine); now each is scored, and the progress rows record what a stateful operator dropped: nothing."""
    import time as clock

    from jobs.replay_flows import message_key

    topic = "detect-late"
    sets, cfg = _cfg(kafka_broker, topic, "stream.publish_alerts=false")
    records = list(synthetic_flows(40, seed=8, hosts=4))
    _produce(kafka_broker, cfg, topic, records[:30])
    artifact = random_artifact(tmp_path / "model", seq_len=3, threshold=0.5)
    out = tmp_path / "out"
    query = _run(spark, cfg, sets, artifact, out, available_now=True)
    query.awaitTermination()
    assert query.exception() is None

    producer = make_producer(kafka_broker.bootstrap, cfg)
    a_day_ago = int(clock.time() * 1000) - 86_400_000
    for r in records[30:]:
        producer.send(topic, key=message_key(r, "src_ip"), value=encode(r), timestamp_ms=a_day_ago)
    producer.flush()
    producer.close()
    query = _run(spark, cfg, sets, artifact, out, available_now=True)
    query.awaitTermination()
    assert query.exception() is None

    scored = _table(spark, out, "flows_scored")
    late = scored.where(F.col("kafka_timestamp") < F.lit(a_day_ago / 1000 + 60).cast("timestamp"))
    assert sorted(r.source_row for r in late.collect()) == sorted(r["source_row"] for r in records[30:])
    assert scored.count() == 40 and _table(spark, out, "quarantine").count() == 0
    # the progress rows of both runs (written asynchronously, when each run ends)
    deadline = time.monotonic() + 60
    totals = None
    while totals != (40, 0) and time.monotonic() < deadline:
        time.sleep(0.5)
        if (out / "tables" / "stream_progress" / "_delta_log").is_dir():
            totals = tuple(_table(spark, out, "stream_progress").agg(
                F.sum("num_input_rows"), F.sum("rows_dropped_by_watermark")).first())
    assert totals == (40, 0)


def test_replayed_batch_is_not_written_twice(spark, kafka_broker, tmp_path):
    topic = "detect-idempotent"
    sets, cfg = _cfg(kafka_broker, topic, "stream.publish_alerts=false")
    _produce(kafka_broker, cfg, topic, synthetic_flows(50, seed=3, hosts=5))
    artifact = random_artifact(tmp_path / "model", seq_len=2, threshold=1e-6)
    detector, model_cfg = _detector(cfg, sets, artifact)
    out = tmp_path / "out"
    stream_detect.create_tables(spark, out / "tables")
    writer = stream_detect.BatchWriter(cfg, out / "tables", detector, str(artifact))

    def keep_and_write(df, batch_id):
        df.write.parquet(str(tmp_path / f"batch-{batch_id}"))  # what the sink saw, to replay it below
        writer(df, batch_id)

    query = (stream_detect.detection_stream(spark, cfg, model_cfg, detector, "earliest").writeStream
             .foreachBatch(keep_and_write).option("checkpointLocation", str(tmp_path / "cp"))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    assert query.exception() is None
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{out / 'tables' / 'flows_scored'}`").first()
    assert detail.properties["delta.dataSkippingStatsColumns"] == ",".join(FLOWS_SCORED_STATS_COLUMNS)
    before = {t: _table(spark, out, t).count() for t in stream_detect.TABLES}
    assert (before["flows_scored"], before["alerts"], before["quarantine"]) == (50, 50, 0)

    # Replaying batch 0, as after a crash between the Delta writes and the checkpoint commit, changes nothing:
    # every append records (query id, table, batch id) in its commit's userMetadata, and a batch a table has is
    # skipped there.
    persisted = spark.sparkContext._jsc.getPersistentRDDs().size()
    writer(spark.read.parquet(str(tmp_path / "batch-0")), 0)
    # the writer materializes the batch and its scores once each, and drops the blocks when done
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == persisted
    assert {t: _table(spark, out, t).count() for t in stream_detect.TABLES} == before
    marker = spark.sql(f"DESCRIBE HISTORY delta.`{out / 'tables' / 'alerts'}`").where("operation = 'WRITE'")
    assert [json.loads(r.userMetadata) for r in marker.collect()] == [
        {"app": stream_detect.APP_ID, "query": str(query.id), "writer": "alerts", "batch": 0}]

    # The query restarted (a new writer, the same query id) reads what it committed from the tables' history.
    restarted = stream_detect.BatchWriter(cfg, out / "tables", detector, str(artifact))
    restarted.query_id = str(query.id)
    restarted(spark.read.parquet(str(tmp_path / "batch-0")), 0)
    assert {t: _table(spark, out, t).count() for t in stream_detect.TABLES} == before
    # Another query (a new checkpoint: a new query id, its batch ids from 0 again) into the same tables writes its
    # batches: before, every append's txnAppId named only the table, and Delta skipped such a query's batches
    # until its batch ids passed the old query's.
    other = stream_detect.BatchWriter(cfg, out / "tables", detector, str(artifact))
    other.query_id = "another-query"
    other(spark.read.parquet(str(tmp_path / "batch-0")), 0)
    assert {t: _table(spark, out, t).count() for t in stream_detect.TABLES} == {
        "flows_scored": 100, "alerts": 100, "quarantine": 0}


def test_stop_midway_and_restart_from_checkpoint_loses_and_duplicates_nothing(spark, kafka_broker, tmp_path):
    topic = "detect-restart"
    sets, cfg = _cfg(kafka_broker, topic, "stream.max_offsets_per_trigger=100", "stream.trigger_interval=")
    raw = [v for v, _ in MALFORMED]
    _produce(kafka_broker, cfg, topic, synthetic_flows(600, seed=5, hosts=20), raw)
    artifact = random_artifact(tmp_path / "model", seq_len=3, threshold=0.5)
    out = tmp_path / "out"
    query = _run(spark, cfg, sets, artifact, out)
    deadline = time.monotonic() + 120
    while (query.lastProgress is None or query.lastProgress["batchId"] < 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()  # mid-way: 604 records at <= 100 per batch need at least 7 batches
    done_first = _table(spark, out, "flows_scored").count() + _table(spark, out, "quarantine").count()
    assert 0 < done_first < 604

    # Spark 4.1.1 (SPARK-55271): the restarted query re-runs the batch the stop left planned but uncommitted, and
    # its progress report then fails in KafkaMicroBatchStream.metrics. jobs.stream_detect.main restarts a failed
    # query from the checkpoint; so does this test, once at most.
    for attempt in range(2):
        query = _run(spark, cfg, sets, artifact, out, available_now=True)
        with contextlib.suppress(StreamingQueryException):  # the failure is read from query.exception()
            query.awaitTermination()
        if query.exception() is None:
            break
        assert attempt == 0 and 'return value of "scala.Option.get()" is null' in str(query.exception())
    assert query.exception() is None
    coords = (_table(spark, out, "flows_scored").select("partition", "offset")
              .unionByName(_table(spark, out, "quarantine").select("partition", "offset")))
    assert coords.count() == 604
    assert coords.distinct().count() == 604
    assert _table(spark, out, "quarantine").count() == 4
    alerts = _table(spark, out, "alerts")
    assert alerts.count() == alerts.select("alert_id").distinct().count()
    assert alerts.count() == _table(spark, out, "flows_scored").where("is_attack = 1").count()


def _stream_inputs(spark, cfg, sets, artifact, tmp_path):
    """Run the stream's own pipeline and keep the model inputs it assembled, by provenance."""
    detector, model_cfg = _detector(cfg, sets, artifact)
    stream = stream_detect.detection_stream(spark, cfg, model_cfg, detector, "earliest")
    query = (stream.select("source_file", "source_row", "features", "mask").writeStream.format("delta")
             .option("checkpointLocation", str(tmp_path / "cp-parity")).trigger(availableNow=True)
             .start(str(tmp_path / "stream-inputs")))
    query.awaitTermination()
    assert query.exception() is None
    rows = spark.read.format("delta").load(str(tmp_path / "stream-inputs")).collect()
    return detector, model_cfg, {(r.source_file, r.source_row): (np.array(r.features), list(r.mask)) for r in rows}


def _batch_inputs(flows_df, model_cfg, detector):
    prepared = build_sequences(apply_zscore(with_sequence_key(with_labels(with_reject_reason(flows_df, model_cfg)),
                                                              model_cfg), detector.norm_stats),
                               detector.seq_len)
    return {(r.source_file, r.source_row): (np.array(r.features, dtype=np.float32).reshape(-1), list(r.mask))
            for r in prepared.select("source_file", "source_row", "features", "mask").collect()}


@pytest.mark.parametrize("max_per_trigger", [10_000, 37])
def test_batch_and_stream_build_identical_model_inputs(spark, kafka_broker, tmp_path, max_per_trigger):
    topic = f"detect-parity-{max_per_trigger}"
    sets, cfg = _cfg(kafka_broker, topic, f"stream.max_offsets_per_trigger={max_per_trigger}")
    records = list(synthetic_flows(300, seed=11, hosts=7))
    _produce(kafka_broker, cfg, topic, records)
    artifact = random_artifact(tmp_path / "model", seq_len=4)
    detector, model_cfg, stream_inputs = _stream_inputs(spark, cfg, sets, artifact, tmp_path)

    from schemas.records import FLOW_RECORD

    flows = spark.createDataFrame([tuple(r.get(f.name) for f in FLOW_RECORD.fields) for r in records], FLOW_RECORD)
    batch_inputs = _batch_inputs(flows, model_cfg, detector)
    assert stream_inputs.keys() == batch_inputs.keys()
    assert len(stream_inputs) == 300
    for key, (features, mask) in batch_inputs.items():
        np.testing.assert_array_equal(stream_inputs[key][0], features, err_msg=str(key))
        assert stream_inputs[key][1] == mask, key
    # the sequences really reach back: some inputs hold T real flows, the first of each host fewer
    masks = [sum(m) for _, m in batch_inputs.values()]
    assert min(masks) == 1 and max(masks) == 4


REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_model_scores_real_flows_as_the_batch_path_does(spark, kafka_broker, shared_data, tmp_path):
    """The real default model (models/default) on real flows: the stream's alerts are exactly the flows the
    batch preprocessing + the same model flag offline, and they are the known attacks. The flows travel in the
    Avro wire format (the other tests here use JSON)."""
    topic = "detect-default-model"
    sets, cfg = _cfg(kafka_broker, topic, "stream.publish_alerts=false", "kafka.flows_format=avro")
    picks = {"friday-afternoon-ddos.csv": 150, "friday-afternoon-portscan.csv": 150,
             "friday-afternoon-benign.csv": 300}
    records = [r for name, n in picks.items() for r in list(iter_flow_records(shared_data / name))[:n]]
    # a valid flow without src_ip and source_file once crashed the UDF of this T=1 path (a null input)
    keyless = {k: v for k, v in records[0].items() if k not in ("src_ip", "source_file")}
    # and a record of two flows: Avro's decoder reads the first and ignores the rest
    two = encode_avro(records[1]) + encode_avro(records[2])
    _produce(kafka_broker, cfg, topic, records, [encode_avro(keyless), two])
    artifact = REPO / "models" / "default"
    query = _run(spark, cfg, sets, artifact, tmp_path / "out", available_now=True)
    query.awaitTermination()
    assert query.exception() is None
    assert sorted((r.reason, r.raw) for r in _table(spark, tmp_path / "out", "quarantine").collect()) == [
        ("invalid_avro", "base64:" + base64.b64encode(two).decode()),
        ("missing_key: src_ip", "base64:" + base64.b64encode(encode_avro(keyless)).decode())]

    scored = {(r.source_file, r.source_row): r for r in _table(spark, tmp_path / "out", "flows_scored").collect()}
    assert len(scored) == 600

    from schemas.records import FLOW_RECORD

    detector, model_cfg = _detector(cfg, sets, artifact)
    flows = spark.createDataFrame([tuple(r.get(f.name) for f in FLOW_RECORD.fields) for r in records], FLOW_RECORD)
    inputs = _batch_inputs(flows, model_cfg, detector)
    keys = sorted(inputs)
    x = np.stack([inputs[k][0] for k in keys]).reshape(len(keys), detector.seq_len, len(detector.features))
    m = np.array([inputs[k][1] for k in keys], dtype=bool)
    prob, _ = detector.predict(x, m)
    np.testing.assert_allclose([scored[k].attack_prob for k in keys], prob, rtol=0, atol=1e-5)
    offline_alerts = {k for k, p in zip(keys, prob, strict=True) if p >= detector.threshold}
    # an alert's id is the first 32 hex digits of sha256("topic:partition:offset") of its flow
    alert_ids = {hashlib.sha256(f"{r.topic}:{r.partition}:{r.offset}".encode()).hexdigest()[:32]: k
                 for k, r in scored.items()}
    alerts = {alert_ids[r.alert_id] for r in _table(spark, tmp_path / "out", "alerts").collect()}
    assert alerts == offline_alerts
    # and the model is good at it: >= 99% of these DDoS and PortScan flows are alerts, at most one benign flow is
    by_file = Counter(f for f, _ in alerts)
    assert min(by_file["friday-afternoon-ddos.csv"], by_file["friday-afternoon-portscan.csv"]) >= 0.99 * 150
    assert by_file["friday-afternoon-benign.csv"] <= 1


def test_materialize_counting_counts_in_the_materializing_job_itself(spark):
    df = spark.range(0, 10, 1, 2)  # two partitions, no shuffle: one job for the pass
    sc = spark.sparkContext
    sc.setJobGroup("materialize-counting", "one job")
    try:
        done, counts = stream_detect.materialize_counting(df, even=F.col("id") % 2 == 0, big=F.col("id") >= 7)
        jobs = sc.statusTracker().getJobIdsForGroup("materialize-counting")
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert counts == {"even": 5, "big": 3}
    assert len(jobs) == 1  # the counts cost no job of their own
    assert sorted(r.id for r in done.collect()) == list(range(10))
    stream_detect.release(done)
    empty, zero = stream_detect.materialize_counting(df.where("id < 0"), any=F.lit(True))
    assert zero == {"any": 0} and empty.count() == 0
    stream_detect.release(empty)


def test_the_next_batch_reuses_the_code_spark_generated_for_the_last(spark, tmp_path, monkeypatch):
    """The batch's own values (its id, the time it was scored) reach the tables' projections as text. A number or
    time literal is written into Spark's generated Java source, so a new value each batch compiled new classes on
    the driver and ran them interpreted until the JIT compiled them again."""
    from datetime import datetime

    sets = ["spark.shuffle_partitions=2"]
    cfg = load_config(sets, env={})
    artifact = random_artifact(tmp_path / "model", seq_len=1, threshold=1e-6)  # every scored flow an alert
    detector, model_cfg = _detector(cfg, sets, artifact)
    when = datetime(2026, 1, 1)
    messages = [encode(r) for r in synthetic_flows(20, seed=5)] + [value for value, _ in MALFORMED]
    kafka = spark.createDataFrame([(None, v, "flows", 0, i, when) for i, v in enumerate(messages)],
                                  "key binary, value binary, topic string, partition int, offset long, "
                                  "timestamp timestamp")
    monkeypatch.setattr(stream_detect, "read_kafka", lambda *_: kafka)
    writer = stream_detect.BatchWriter(cfg, tmp_path / "tables", detector, str(artifact))
    compilations = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()

    def one_batch(batch_id: int) -> dict[str, list]:
        stream = stream_detect.detection_stream(spark, cfg, model_cfg, detector, "earliest")
        scored = stream_detect.materialize(writer.scored(stream, batch_id))  # as the job
        valid = F.col("reason").isNull()
        rows = {"flows_scored": writer.flows_scored(scored.where(valid)).collect(),
                "alerts": writer.alerts(scored.where(valid)).collect(),
                "quarantine": writer.quarantine(scored.where(~valid)).collect()}
        stream_detect.release(scored)
        return rows

    first = one_batch(7)
    before = compilations.getCount()
    second = one_batch(8)
    assert compilations.getCount() - before == 0
    for rows, batch_id in ((first, 7), (second, 8)):
        assert [len(rows[t]) for t in ("flows_scored", "alerts", "quarantine")] == [20, 20, len(MALFORMED)]
        assert {r.batch_id for r in rows["flows_scored"] + rows["alerts"]} == {batch_id}
    stamps = [{r.scored_at for r in rows["flows_scored"]} | {r.quarantined_at for r in rows["quarantine"]}
              for rows in (first, second)]
    assert len(stamps[0]) == len(stamps[1]) == 1 and stamps[0] != stamps[1]  # one time per batch, each its own


@pytest.mark.parametrize("seq_len", [1, 3])
def test_warm_up_runs_the_whole_batch_path_and_leaves_nothing_behind(spark, tmp_path, caplog, seq_len):
    # No broker at that address: the warm-up reads no offsets, and a publish to it would fail the test.
    sets = ["kafka.bootstrap_servers=127.0.0.1:9", "stream.warmup_flows=300", "spark.shuffle_partitions=2"]
    cfg = load_config(sets, env={})
    artifact = random_artifact(tmp_path / "model", seq_len=seq_len, threshold=1e-6)  # every scored flow an alert
    detector, model_cfg = _detector(cfg, sets, artifact)
    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.txt").write_text("not the warm-up's\n")
    with caplog.at_level(logging.INFO, logger="flowsentinel.stream"):
        seconds = stream_detect.warm_up(spark, cfg, model_cfg, detector, str(artifact), out)
    batches = [r.args for r in caplog.records if r.name == "flowsentinel.stream.warm_up" and len(r.args) == 4]
    assert len(batches) == 1
    batch_id, rows, _, steps = batches[0]
    assert (batch_id, rows) == (0, 300)  # every flow parsed, validated and scored
    assert set(json.loads(steps)) == {"score", "commit"}  # Delta commits, and nothing published
    assert seconds > 0
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]  # the scratch tables are gone, nothing else touched


def test_no_warm_up_when_its_flows_are_zero(spark, tmp_path):
    sets = ["stream.warmup_flows=0"]
    cfg = load_config(sets, env={})
    detector, model_cfg = _detector(cfg, sets, random_artifact(tmp_path / "model", seq_len=1))
    assert stream_detect.warm_up(spark, cfg, model_cfg, detector, str(tmp_path / "model"), tmp_path / "out") == 0.0
    assert not (tmp_path / "out").exists()
