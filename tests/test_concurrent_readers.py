"""SQL readers of the Delta tables see consistent snapshots while the stream job writes them.

The job runs in this process (jobs.stream_detect.start on the session's SparkSession, as main does) over a
topic of valid synthetic flows, in micro-batches of at most 300 records; meanwhile the test queries
flows_scored with SQL. Every batch_id a reader sees must be complete (as many rows as its Kafka offset range,
read from the checkpoint), batch ids must have no gaps, and a version read twice must give the same rows.
"""

from __future__ import annotations

import time

from bench.reliability import Message, Producer, batch_sizes, committed_offsets
from jobs.lib.config import load_config
from jobs.replay_flows import encode, message_key
from jobs.stream_detect import model_config, start
from models.artifact import load_model
from tests.helpers import random_artifact

RECORDS = 1200
MAX_OFFSETS = 300


def test_sql_readers_see_whole_batches_while_the_job_writes(tmp_path, spark, kafka_broker):
    import threading

    from jobs.lib.kafka_broker import ensure_topics
    from jobs.lib.synthetic import synthetic_flows

    topic = "concurrent-readers"
    sets = ["spark.shuffle_partitions=2", f"kafka.bootstrap_servers={kafka_broker.bootstrap}",
            f"kafka.flows_topic={topic}", f"stream.max_offsets_per_trigger={MAX_OFFSETS}",
            "stream.trigger_interval=", "stream.publish_alerts=false"]
    cfg = load_config(sets, env={})
    ensure_topics(kafka_broker.bootstrap, cfg, [topic])
    producer = Producer(kafka_broker.bootstrap, cfg, topic, threading.Lock())
    try:
        producer.send([Message("valid", message_key(r, "src_ip"), encode(r))
                       for r in synthetic_flows(RECORDS, seed=3, hosts=50)])
    finally:
        producer.close()

    model = random_artifact(tmp_path / "model", seq_len=2)
    detector = load_model(model, device="cpu")
    out = tmp_path / "out"
    checkpoint = out / "checkpoints" / "stream_detect"
    table = out / "tables" / "flows_scored"
    query = start(spark, cfg, model_config(cfg, detector, sets, None), detector, str(model), out)
    snapshots: dict[int, list[tuple[int, int]]] = {}
    try:
        deadline = time.monotonic() + 1200
        while sum(committed_offsets(checkpoint)[1].values()) < RECORDS:
            assert query.isActive, query.exception()
            assert time.monotonic() < deadline, "the job did not process the topic in time"
            version = spark.sql(f"DESCRIBE HISTORY delta.`{table}` LIMIT 1").first()["version"]
            per_batch = spark.sql(f"SELECT batch_id, count(*) AS n FROM delta.`{table}` VERSION AS OF {version} "
                                  f"GROUP BY batch_id ORDER BY batch_id").collect()
            rows = f"SELECT partition, offset, attack_prob FROM delta.`{table}` VERSION AS OF {version} " \
                   f"ORDER BY partition, offset"
            first, second = spark.sql(rows).collect(), spark.sql(rows).collect()
            assert first == second, f"version {version} read twice differs"
            snapshots[version] = [(r["batch_id"], r["n"]) for r in per_batch]
            time.sleep(2.0)  # readers leave the 2 cores mostly to the job
    finally:
        query.stop()

    # The offset ranges of the batches, from the checkpoint: batch 0 starts at offset 0 of every partition.
    first_end = committed_offsets_of_batch(checkpoint, 0)
    sizes = [sum(first_end.values()), *batch_sizes(checkpoint)]
    with_data = [v for v, groups in snapshots.items() if groups]
    assert len(with_data) >= 2, f"the readers saw too few versions while the job wrote: {sorted(snapshots)}"
    for version, groups in snapshots.items():
        ids = [b for b, _ in groups]
        assert ids == [b for b in range(len(sizes)) if sizes[b] > 0][: len(ids)], (version, groups)
        for batch_id, n in groups:
            assert n == sizes[batch_id], f"version {version}: batch {batch_id} has {n} of {sizes[batch_id]} rows"
    final = spark.sql(f"SELECT count(*) AS n, count(DISTINCT partition, offset) AS d FROM delta.`{table}`").first()
    assert (final["n"], final["d"]) == (RECORDS, RECORDS)


def committed_offsets_of_batch(checkpoint, batch: int) -> dict[int, int]:
    import json

    lines = [ln for ln in (checkpoint / "offsets" / str(batch)).read_text().splitlines() if ln.strip()]
    return {int(p): int(o) for offsets in json.loads(lines[2]).values() for p, o in offsets.items()}
