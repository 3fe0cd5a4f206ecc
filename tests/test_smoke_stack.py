"""The whole message path for real: CSV rows -> kafka-python (jobs.replay_flows) -> Kafka broker -> Spark's Kafka
source -> the stream job's message parser (jobs.lib.messages) -> Delta -> SQL, every value surviving exactly."""

import math

from jobs.lib.flow_io import iter_flow_records
from jobs.lib.kafka_broker import ensure_topics
from jobs.lib.messages import parse_flow_messages
from jobs.replay_flows import make_producer, send_records


def test_flows_travel_from_csv_through_kafka_to_delta_exactly(spark, cfg, kafka_broker, shared_data, tmp_path):
    topic = "smoke-flows"
    assert ensure_topics(kafka_broker.bootstrap, cfg, [topic]) == [topic]
    # the two 85-column files (IPs, keyed by src_ip) and a 79-column one (no IPs, keyed by its file) whose rates
    # hold Infinity and NaN
    names = ["friday-afternoon-ddos.csv", "friday-afternoon-portscan.csv", "friday-afternoon-benign.csv"]
    files = [shared_data / name for name in names]
    producer = make_producer(kafka_broker.bootstrap, cfg)
    try:
        sent = sum(send_records(producer, topic, iter_flow_records(f), "src_ip", progress=False) for f in files)
    finally:
        producer.close()
    assert sent == 8998

    kafka = (spark.read.format("kafka").option("kafka.bootstrap.servers", kafka_broker.bootstrap)
             .option("subscribe", topic).option("startingOffsets", "earliest").load())
    table = str(tmp_path / "flows")
    parse_flow_messages(kafka).drop("value").write.format("delta").save(table)

    assert spark.sql(f"SELECT count(*) FROM delta.`{table}` WHERE message_error IS NOT NULL").first()[0] == 0
    counts = spark.sql(f"SELECT label, count(*) AS n FROM delta.`{table}` GROUP BY label ORDER BY label").collect()
    assert [(r.label, r.n) for r in counts] == [("BENIGN", 7498), ("DDoS", 750), ("PortScan", 750)]
    assert spark.sql(f"SELECT count(DISTINCT partition, offset) FROM delta.`{table}`").first()[0] == 8998

    # Keyed by source host (the file where a layout has none): each key's flows sit in one partition, in the
    # order they were sent (file by file, row by row).
    rows = spark.sql(f"SELECT coalesce(src_ip, source_file) AS key, partition, offset, source_file, source_row "
                     f"FROM delta.`{table}` ORDER BY partition, offset").collect()
    by_key: dict[str, list] = {}
    for r in rows:
        by_key.setdefault(r.key, []).append(r)
    assert sorted(by_key) == ["172.16.0.1", "friday-afternoon-benign.csv"]
    for key, seq in by_key.items():
        assert len({r.partition for r in seq}) == 1, key
        assert [(names.index(r.source_file), r.source_row) for r in seq] == sorted(
            (names.index(r.source_file), r.source_row) for r in seq), key

    row = spark.sql(f"SELECT * FROM delta.`{table}` WHERE source_file = 'friday-afternoon-ddos.csv' "
                    f"AND source_row = 1").collect()
    assert len(row) == 1
    r = row[0]
    assert (r.flow_id, r.src_ip, r.src_port, r.dst_ip, r.dst_port, r.protocol, r.timestamp) == (
        "172.16.0.1-192.168.10.50-14111-80-6", "172.16.0.1", 14111, "192.168.10.50", 80, 6, "7/7/2017 3:56")
    assert (r.flow_duration, r.total_fwd_packets, r.total_length_fwd_packets, r.topic) == (
        7121367.0, 4.0, 24.0, topic)

    # Every value of every field survives the trip exactly, Infinity and NaN included.
    expected = {(rec["source_file"], rec["source_row"]): rec for f in files for rec in iter_flow_records(f)}
    got = spark.sql(f"SELECT * FROM delta.`{table}`").collect()
    assert len(got) == len(expected)
    nonfinite = 0
    for g in got:
        e = expected[(g.source_file, g.source_row)]
        for name, b in e.items():
            a = g[name]
            if isinstance(b, float) and not math.isfinite(b):
                nonfinite += 1
                assert (math.isnan(a) and math.isnan(b)) or a == b, (name, g.source_row, a, b)
            else:
                assert a == b, (name, g.source_row, a, b)
    assert nonfinite > 0  # the sample holds Infinity/NaN rates, so the special strings were exercised
