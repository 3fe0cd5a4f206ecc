"""The example alerts-topic consumer against alerts the real stream job published (session broker and Spark)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from jobs import alert_consumer
from jobs.lib.config import load_config
from jobs.lib.kafka_broker import ensure_topics
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import encode, make_producer, send_records
from schemas.records import ALERTS
from tests.helpers import random_artifact

N_FLOWS = 300
MALFORMED = [b"{not json", b"", json.dumps({"flow_duration": "fast"}).encode()]


@pytest.fixture(scope="module")
def published(spark, kafka_broker, tmp_path_factory) -> dict[str, Any]:
    """Run the stream job once over N_FLOWS flows plus malformed messages; threshold ~0 makes every valid flow
    an alert, so the expected alert set is known without trusting a model's judgement."""
    from jobs.lib.prep import sequence_config_overrides
    from jobs.stream_detect import start
    from models.artifact import load_model

    tmp = tmp_path_factory.mktemp("alert-consumer")
    sets = [f"kafka.bootstrap_servers={kafka_broker.bootstrap}", "kafka.flows_topic=consumer-flows",
            "kafka.alerts_topic=consumer-alerts", "spark.shuffle_partitions=2", "stream.trigger_interval="]
    cfg = load_config(sets, env={})
    model_dir = random_artifact(tmp / "model", seq_len=2, threshold=1e-9)
    detector = load_model(model_dir, device="cpu")
    model_cfg = load_config([*sets, *sequence_config_overrides(detector.sequence)], env={})
    ensure_topics(kafka_broker.bootstrap, cfg)

    producer = make_producer(kafka_broker.bootstrap, cfg)
    try:
        sent = send_records(producer, cfg.kafka.flows_topic, synthetic_flows(N_FLOWS, seed=7, hosts=10),
                            cfg.prep.sequence_key, progress=False)
        for value in MALFORMED:
            producer.send(cfg.kafka.flows_topic, key=b"bad", value=value)
        producer.flush()
    finally:
        producer.close()
    assert sent == N_FLOWS

    query = start(spark, cfg, model_cfg, detector, str(model_dir), tmp / "out", available_now=True)
    query.awaitTermination(600)
    assert query.exception() is None
    tables = tmp / "out" / "tables"
    ids = [r.alert_id for r in spark.read.format("delta").load(str(tables / "alerts")).select("alert_id").collect()]
    quarantined = spark.read.format("delta").load(str(tables / "quarantine")).count()
    return {"cfg": cfg, "alert_ids": ids, "quarantined": quarantined, "tables": tables}


def consumer_for(published: dict[str, Any], group: str) -> Any:
    cfg = published["cfg"]
    return alert_consumer.make_consumer(cfg.kafka.bootstrap_servers, cfg.kafka.alerts_topic, group,
                                        alert_consumer.kafka_client_options(cfg))


def drain(published: dict[str, Any], group: str, handle: alert_consumer.Handler,
          seen: alert_consumer.SeenIds | None = None) -> alert_consumer.ConsumeStats:
    consumer = consumer_for(published, group)
    try:
        return alert_consumer.consume(consumer, handle, seen=seen, idle_exit_s=5.0)
    finally:
        consumer.close()


def test_stream_run_alerts_every_valid_flow(published):
    # Threshold 1e-9 (an artifact needs > 0): every valid flow is an alert, every malformed message quarantined.
    assert published["quarantined"] == len(MALFORMED)
    assert len(published["alert_ids"]) == N_FLOWS == len(set(published["alert_ids"]))


def test_consumer_gets_exactly_the_alert_table_ids(published):
    received: list[dict[str, Any]] = []
    stats = drain(published, "test-all", received.append)
    assert sorted(a["alert_id"] for a in received) == sorted(published["alert_ids"])
    assert (stats.handled, stats.duplicates, stats.invalid) == (N_FLOWS, 0, 0)
    # Every message fits the documented schema, and carries the fields the table has for that alert.
    schema = alert_consumer.json_schema()
    for alert in received:
        jsonschema.validate(alert, schema)
    assert set(received[0]) <= set(ALERTS.fieldNames())
    assert {a["model_version"] for a in received} == {received[0]["model_version"]}

    # The group's offsets were committed: a second run of the same group has nothing left.
    assert drain(published, "test-all", received.append).handled == 0


def test_replayed_alerts_are_deduplicated(published):
    """The producer's at-least-once replays (same alert_id, same body) reach the handler once; junk is skipped.

    The stream job's messages plus replays of five of them go to a topic of their own, so the other tests'
    groups see only what the job published."""
    cfg = published["cfg"]
    original: list[dict[str, Any]] = []
    drain(published, "test-dedupe-source", original.append)
    topic = "consumer-alerts-replayed"
    ensure_topics(cfg.kafka.bootstrap_servers, cfg, [topic])
    producer = make_producer(cfg.kafka.bootstrap_servers, cfg)
    try:
        for alert in [*original, *original[:5]]:
            producer.send(topic, key=alert["alert_id"].encode(), value=encode(alert))
        producer.send(topic, key=b"x", value=b"not an alert")
        producer.flush()
    finally:
        producer.close()
    received: list[dict[str, Any]] = []
    consumer = alert_consumer.make_consumer(cfg.kafka.bootstrap_servers, topic, "test-dedupe")
    try:
        stats = alert_consumer.consume(consumer, received.append, idle_exit_s=5.0)
    finally:
        consumer.close()
    assert (stats.handled, stats.duplicates, stats.invalid) == (N_FLOWS, 5, 1)
    assert sorted(a["alert_id"] for a in received) == sorted(published["alert_ids"])


def test_a_failing_handler_loses_nothing_and_repeats_nothing(published):
    """Offsets are committed only for handled alerts: after a crash the group resumes at the failed alert."""
    handled: list[str] = []

    def flaky(alert: dict[str, Any]) -> None:
        if len(handled) == 40:
            raise RuntimeError("pager down")
        handled.append(alert["alert_id"])

    with pytest.raises(RuntimeError, match="pager down"):
        drain(published, "test-crash", flaky)
    assert len(handled) == 40

    rest: list[str] = []
    stats = drain(published, "test-crash", lambda a: rest.append(a["alert_id"]))  # a fresh process: no memory
    assert stats.handled == N_FLOWS - 40
    assert set(handled).isdisjoint(rest)
    assert sorted(handled + rest) == sorted(published["alert_ids"])


def test_schema_is_derived_from_the_table_schema():
    schema = alert_consumer.json_schema()
    assert list(schema["properties"]) == ALERTS.fieldNames()
    assert schema["properties"]["score"] == {"type": "number"}
    assert schema["properties"]["timestamp"] == {"type": "string", "format": "date-time"}
    assert schema["properties"]["dest_port"] == {"type": "integer"}
    assert schema["required"] == alert_consumer.REQUIRED_FIELDS
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"alert_id": "a", "unexpected": 1}, schema)
    with pytest.raises(ValueError, match="not in the schema"):
        alert_consumer.json_schema(required=["nope"])


def test_cli_prints_the_schema(capsys):
    assert alert_consumer.main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == alert_consumer.json_schema()


def test_seen_ids_forget_the_oldest():
    seen = alert_consumer.SeenIds(capacity=2)
    for alert_id in ("a", "b", "c"):
        seen.add(alert_id)
    assert ("a" in seen, "b" in seen, "c" in seen) == (False, True, True)


def test_dedupe_window_is_bounded_by_count():
    """A replay within the last `capacity` handled ids is dropped; an older one is handled again (documented), and
    the memory never holds more than `capacity` ids however many alerts pass."""
    from collections import namedtuple

    from kafka.structs import TopicPartition

    Record = namedtuple("Record", "offset value")
    ids = ["a", "b", "c", "b", "a", *[f"x{i}" for i in range(100)]]
    records = [Record(i, json.dumps({"alert_id": alert_id}).encode()) for i, alert_id in enumerate(ids)]

    class FakeConsumer:
        def __init__(self) -> None:
            self.batches = [{TopicPartition("alerts", 0): records}]
            self.committed: list[int] = []

        def poll(self, timeout_ms: int, max_records: int | None) -> dict:
            return self.batches.pop(0) if self.batches else {}

        def commit(self, offsets: dict) -> None:
            self.committed += [o.offset for o in offsets.values()]

    seen = alert_consumer.SeenIds(capacity=2)
    handled: list[str] = []
    consumer = FakeConsumer()
    stats = alert_consumer.consume(consumer, lambda a: handled.append(a["alert_id"]), seen=seen,
                                   idle_exit_s=0.0, poll_timeout_ms=1)
    # "b" was among the last two handled (b, c): dropped; "a" had been forgotten: handled again.
    assert handled[:4] == ["a", "b", "c", "a"] and (stats.handled, stats.duplicates) == (104, 1)
    assert len(seen._ids) == 2 and consumer.committed == [len(ids)]


def test_cli_rejects_an_empty_dedupe_window(capsys):
    with pytest.raises(SystemExit):
        alert_consumer.main(["--dedupe-ids", "0"])
    assert "--dedupe-ids must be >= 1" in capsys.readouterr().err
