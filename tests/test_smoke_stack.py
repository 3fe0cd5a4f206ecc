"""The whole stack for real: kafka-python -> Kafka broker -> Spark Structured Streaming -> Delta -> SQL."""

import math

from jobs.lib.flow_io import iter_flow_records
from jobs.lib.kafka_broker import ensure_topics
from jobs.smoke import kafka_to_delta, produce_records


def test_flows_travel_from_kafka_to_delta(spark, cfg, kafka_broker, shared_data, tmp_path):
    topic = "smoke-flows"
    assert ensure_topics(kafka_broker.bootstrap, cfg, [topic]) == [topic]
    files = [shared_data / "friday-afternoon-ddos.csv", shared_data / "friday-afternoon-portscan.csv"]
    sent = sum(produce_records(kafka_broker.bootstrap, topic, iter_flow_records(f)) for f in files)
    assert sent == 1500

    table = str(tmp_path / "flows")
    kafka_to_delta(spark, cfg, kafka_broker.bootstrap, topic, table, str(tmp_path / "checkpoint"))

    counts = spark.sql(f"SELECT label, count(*) AS n, count(DISTINCT partition) AS parts "
                       f"FROM delta.`{table}` GROUP BY label ORDER BY label").collect()
    assert [(r.label, r.n, r.parts) for r in counts] == [("DDoS", 750, 2), ("PortScan", 750, 2)]
    assert spark.sql(f"SELECT count(DISTINCT partition, offset) FROM delta.`{table}`").first()[0] == 1500

    row = spark.sql(f"SELECT * FROM delta.`{table}` WHERE source_file = 'friday-afternoon-ddos.csv' "
                    f"AND source_row = 1").collect()
    assert len(row) == 1
    r = row[0]
    assert (r.flow_id, r.src_ip, r.src_port, r.dst_ip, r.dst_port, r.protocol, r.timestamp) == (
        "172.16.0.1-192.168.10.50-14111-80-6", "172.16.0.1", 14111, "192.168.10.50", 80, 6, "7/7/2017 3:56")
    assert (r.flow_duration, r.total_fwd_packets, r.total_length_fwd_packets, r.topic) == (
        7121367.0, 4.0, 24.0, topic)

    # Every value survives the trip exactly, Infinity and NaN included.
    expected = {(rec["source_file"], rec["source_row"]): rec for f in files for rec in iter_flow_records(f)}
    got = spark.sql(f"SELECT * FROM delta.`{table}`").collect()
    assert len(got) == len(expected)
    for g in got:
        e = expected[(g.source_file, g.source_row)]
        for name in ("flow_bytes_per_s", "flow_packets_per_s", "idle_max", "init_win_bytes_forward"):
            a, b = g[name], e[name]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (name, g.source_row, a, b)
