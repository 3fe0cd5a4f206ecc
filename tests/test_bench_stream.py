"""The streaming benchmark's arithmetic and its plot (without Spark or a broker), and its load generator."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np

from bench import stream as bench_stream


def test_drain_rates_over_the_whole_run_and_after_the_first_two_batches():
    commits = {0: 110.0, 1: 120.0, 3: 130.0, 4: 150.0}  # batch 2 had no rows: no commit
    rows = {0: 1000, 1: 2000, 3: 3000, 4: 6000}
    assert bench_stream.drain_rates(100.0, commits, rows) == {"flows_per_s": 240.0, "steady_flows_per_s": 300.0}
    assert bench_stream.drain_rates(100.0, {0: 110.0}, {0: 1000}) == {"flows_per_s": 100.0,
                                                                     "steady_flows_per_s": None}


def test_a_rate_is_above_capacity_when_the_batches_are_slower_than_it_or_the_latency_grows():
    produced = np.arange(400, dtype=float) / 10  # 40 s of flows, in order
    cycling = 2.0 + (produced % 4.0)  # batches every 4 s: latency 2-6 s, the same in every quarter
    quick = [{"rows": 4000, "seconds": 3.0}, {"rows": 4400, "seconds": 3.2}, {"rows": 3600, "seconds": 2.9}]
    assert not bench_stream.above_capacity(1000, quick, produced, cycling, 4.0)  # 4,000 / 3.0 s >= 1,000/s
    assert bench_stream.above_capacity(1500, quick, produced, cycling, 4.0)  # 1,333/s of batch time < 1,500
    growing = cycling + produced * 0.25  # the backlog adds 10 s over the window: first quarter ~3.2, last ~11.8
    assert bench_stream.above_capacity(1000, quick, produced, growing, 4.0)
    assert not bench_stream.above_capacity(1000, quick, produced, growing, 9.0)  # within a (longer) cycle
    shuffled = np.random.default_rng(0).permutation(400)  # produce order, not row order, defines the quarters
    assert bench_stream.above_capacity(1000, quick, produced[shuffled], growing[shuffled], 4.0)
    assert not bench_stream.above_capacity(1000, [], produced, cycling, 4.0)  # no profile: the latency decides


def test_percentiles_and_the_latency_plot(tmp_path):
    assert bench_stream.percentiles(np.arange(1, 102, dtype=float)) == {"n": 101, "p50_s": 51.0, "p99_s": 100.0,
                                                                        "max_s": 101.0}
    assert bench_stream.percentiles(np.array([])) == {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    rows = [{"rate": rate, "above_capacity": rate > 5000,
             "to_alert_topic": {"p50_s": 0.5 * i, "p99_s": i + 1.0}, "to_delta": {"p50_s": i + 1.0, "p99_s": None}}
            for i, rate in enumerate([1000, 2000, 5000, 10000])]
    bench_stream.plot_latency(rows, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_median_steps_per_step_over_the_batches_that_have_it():
    batches = [{"batch_id": 3, "rows": 100, "materialize": 1.0, "commit": 2.0},
               {"batch_id": 4, "rows": 300, "materialize": 3.0, "commit": 1.0, "publish": 0.5},
               {"batch_id": 5, "rows": 200, "materialize": 2.0, "commit": 4.0}]
    assert bench_stream.median_steps(batches) == {"commit": 2.0, "materialize": 2.0, "publish": 0.5, "rows": 200.0}
    assert bench_stream.median_steps([]) == {}


def test_the_load_generator_produces_from_a_process_of_its_own_and_times_the_alerts_it_sees(kafka_broker):
    """What the latency run relies on: the flows of a seed on the flows topic in the run's wire format, the send's
    begin and end, and each alert on the alerts topic noted by the flow's coordinates with its produce time."""
    from kafka import KafkaConsumer, KafkaProducer

    from jobs.lib.config import load_config
    from jobs.lib.kafka_broker import ensure_topics
    from jobs.lib.synthetic import synthetic_flows
    from jobs.replay_flows import ENCODERS, message_key

    sets = [f"kafka.bootstrap_servers={kafka_broker.bootstrap}", "kafka.flows_topic=loadgen-flows",
            "kafka.alerts_topic=loadgen-alerts", "kafka.flows_format=avro"]
    ensure_topics(kafka_broker.bootstrap, load_config(sets, None), ["loadgen-flows", "loadgen-alerts"])
    load = bench_stream.LoadGenerator(kafka_broker.bootstrap, sets)
    try:
        begin, end, achieved = load.send(300, 5, 1000)
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
        alert = {"partition": 1, "offset": 42, "kafka_timestamp": "2026-12-02T10:00:00+00:00"}
        producer.send("loadgen-alerts", json.dumps(alert).encode()).get(timeout=30)
        producer.close()
    finally:
        received = load.close()
    assert end - begin >= 0.29 and 0 < achieved <= 1000 * 1.05  # paced: 300 flows at 1,000/s
    assert list(received) == [(1, 42)]
    produced, seen = received[(1, 42)]
    assert produced == datetime.fromisoformat("2026-12-02T10:00:00+00:00").timestamp() and seen >= end
    consumer = KafkaConsumer("loadgen-flows", bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    got = sorted((m.key, m.value) for m in consumer)
    consumer.close()
    encode = ENCODERS["avro"]
    assert got == sorted((message_key(r, "src_ip"), encode(r)) for r in synthetic_flows(300, seed=5))
