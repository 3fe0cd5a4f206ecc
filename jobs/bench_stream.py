"""`make bench`: the streaming figures of issue 5, side by side in one run, written to BENCH_OUT/stream.json.

    python -m jobs.bench_stream --out out/bench [--flows 1000000] [--rate 10000] [--latency-seconds 30]

(a) end to end: Kafka pre-loaded with --flows synthetic flows, the detection job on local[2] drains them into
    Delta (availableNow); flows/s from the first to the last Delta commit of flows_scored.
(b) latency at a fixed produce rate: Delta commit time of each flow's batch minus the flow's Kafka timestamp.
(c) the scoring UDF vs a raw torch forward of the same model on the same batches and threads.
(d) a single-process baseline: kafka-python consumer -> the same z-score and sequence code (numpy twins) ->
    torch -> Parquet.
Runs against a broker of its own on free ports; uses the shipped model unless --model is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jobs.lib.config import add_config_args, load_config
from jobs.lib.kafka_broker import LocalBroker, ensure_topics, free_port
from jobs.lib.outputs import replace_output_dir
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import make_producer, send_records


def _commit_times(spark: Any, table: str) -> dict[int, float]:
    """Delta version -> commit time (s since epoch) for the table's WRITE commits."""
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").select("version", "timestamp", "operation").collect()
    return {r.version: r.timestamp.timestamp() for r in rows if r.operation == "WRITE"}


def end_to_end(spark: Any, cfg: Any, sets: list[str], model_dir: str, out: Path, flows: int) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from jobs import stream_detect
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu")
    model_cfg = stream_detect.model_config(cfg, detector, sets, None)
    t0 = time.monotonic()
    query = stream_detect.start(spark, cfg, model_cfg, detector, model_dir, out, available_now=True)
    query.awaitTermination()
    wall = time.monotonic() - t0
    table = str(out / "tables" / "flows_scored")
    times = sorted(_commit_times(spark, table).values())
    scored = spark.read.format("delta").load(table).count()
    first_batch_rows = (spark.read.format("delta").load(table).where(F.col("batch_id") == 0).count())
    # Rows per second between the first and the last commit, excluding the first batch (its rows were done
    # before the first commit time, with JVM/worker warm-up in it).
    span = times[-1] - times[0]
    return {"flows": scored, "wall_s": round(wall, 1), "batches": len(times),
            "flows_per_s": round((scored - first_batch_rows) / span, 1) if span > 0 else round(scored / wall, 1),
            "flows_per_s_wall": round(scored / wall, 1)}


def paced_send(producer: Any, topic: str, messages: list[tuple[bytes, bytes]], rate: float) -> float:
    """Send pre-encoded (key, value) messages at `rate` per second (as fast as possible when the producer is
    slower); returns the rate achieved, flush included."""
    t0 = time.monotonic()
    for i, (key, value) in enumerate(messages, 1):
        producer.send(topic, key=key, value=value)
        if i % 500 == 0:
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    return len(messages) / (time.monotonic() - t0)


def batch_commit_times(spark: Any, table: str) -> dict[int, float]:
    """batch_id -> commit time of the Delta WRITE that appended that micro-batch's rows to `table`.

    Every micro-batch with rows makes exactly one WRITE commit to flows_scored, in batch order, and batches
    without rows make none; so the sorted batch ids in the table pair with the sorted WRITE versions."""
    versions = sorted(_commit_times(spark, table).items())
    ids = sorted(r[0] for r in spark.read.format("delta").load(table).select("batch_id").distinct().collect())
    if len(ids) != len(versions):
        raise RuntimeError(f"{table}: {len(ids)} batch ids but {len(versions)} WRITE commits")
    return {batch_id: commit for batch_id, (_, commit) in zip(ids, versions, strict=True)}


def latency(spark: Any, cfg: Any, sets: list[str], model_dir: str, out: Path, bootstrap: str, rate: float,
            seconds: float) -> dict[str, Any]:
    """Produce at `rate` for `seconds` into a running job; latency = the Delta commit time of the flow's
    micro-batch (when it becomes visible to readers) minus the flow's Kafka timestamp (when it was produced)."""
    from pyspark.sql import functions as F

    from jobs import stream_detect
    from jobs.replay_flows import encode, message_key
    from models.artifact import load_model

    n, warm = int(rate * seconds), 2000
    flows = [(message_key(r, "src_ip"), encode(r)) for r in synthetic_flows(warm + n, seed=7)]  # not timed
    detector = load_model(model_dir, device="cpu")
    model_cfg = stream_detect.model_config(cfg, detector, sets, None)
    query = stream_detect.start(spark, cfg, model_cfg, detector, model_dir, out, starting_offsets="latest")
    while query.lastProgress is None:
        time.sleep(0.2)
    table = str(out / "tables" / "flows_scored")

    def wait_scored(count: int, timeout_s: float) -> float:
        start = time.monotonic()
        while (spark.read.format("delta").load(table).count() < count
               and time.monotonic() - start < timeout_s):
            time.sleep(1)
        return time.monotonic() - start

    producer = make_producer(bootstrap, cfg)
    # Warm-up, not measured: the first batches start the Python workers, load the model, create the files.
    paced_send(producer, cfg.kafka.flows_topic, flows[:warm], rate)
    wait_scored(warm, 300)
    measured_from = time.time()
    achieved = paced_send(producer, cfg.kafka.flows_topic, flows[warm:], rate)
    producer.close()
    drain_s = wait_scored(warm + n, 900)
    query.stop()
    commits = batch_commit_times(spark, table)
    rows = (spark.read.format("delta").load(table)
            .where(F.col("kafka_timestamp") >= F.lit(measured_from).cast("timestamp"))
            .select("batch_id", F.col("kafka_timestamp").cast("double").alias("produced")).toPandas())
    lat = rows["batch_id"].map(commits).to_numpy(np.float64) - rows["produced"].to_numpy(np.float64)
    return {"rate": rate, "achieved_rate": round(achieved, 1), "sent": n, "flows": int(len(lat)),
            "batches": len(commits), "drain_after_last_send_s": round(drain_s, 1),
            "p50_latency_s": round(float(np.percentile(lat, 50)), 3),
            "p99_latency_s": round(float(np.percentile(lat, 99)), 3),
            "max_latency_s": round(float(lat.max()), 3)}


def udf_vs_raw(spark: Any, cfg: Any, model_dir: str, n: int = 200_000) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from jobs.lib.inference import score_udf
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu", threads=cfg.model.threads or None)
    t, f = detector.seq_len, len(detector.features)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    m = np.ones((n, t), bool)
    start = time.perf_counter()
    detector.predict(x, m)
    raw_s = time.perf_counter() - start
    df = spark.createDataFrame([(row.reshape(-1).tolist(), [True] * t) for row in x[:n]],
                               "features array<float>, mask array<boolean>").repartition(2).cache()
    df.count()
    udf = score_udf(model_dir, "cpu", cfg.model.batch_size, cfg.model.threads, 0)
    df.select(udf("features", "mask").alias("s")).agg(F.sum("s.attack_prob")).collect()  # warm the workers
    start = time.perf_counter()
    df.select(udf("features", "mask").alias("s")).agg(F.sum("s.attack_prob")).collect()
    udf_s = time.perf_counter() - start
    return {"n": n, "raw_flows_per_s": round(n / raw_s, 1), "udf_flows_per_s": round(n / udf_s, 1),
            "udf_vs_raw_ratio": round(raw_s / udf_s, 3)}


def baseline(cfg: Any, model_dir: str, bootstrap: str, topic: str, expected: int, out: Path) -> dict[str, Any]:
    """One process: consume, validate the essentials, z-score and sequence with the numpy twins, score, write."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from kafka import KafkaConsumer

    from jobs.lib.preprocess import assemble_sequences
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu", threads=cfg.model.threads or None)
    names, stats, t = detector.features, detector.norm_stats, detector.seq_len
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=20000, fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=32 * 1024 * 1024, consumer_timeout_ms=10000)
    history: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((0, len(names)), np.float32))
    out.mkdir(parents=True, exist_ok=True)
    done, part = 0, 0
    start = time.perf_counter()
    while done < expected:
        polled = consumer.poll(timeout_ms=2000, max_records=20000)
        if not polled:
            break
        records = [json.loads(m.value) for msgs in polled.values() for m in msgs]
        keys = [r.get("src_ip") or f"file:{r.get('source_file')}" for r in records]
        x = stats.apply_numpy(np.array([[float(r[c]) for c in names] for r in records], dtype=np.float64))
        feats = np.empty((len(records), t, len(names)), np.float32)
        masks = np.empty((len(records), t), bool)
        rows_of: dict[str, list[int]] = defaultdict(list)  # key -> its rows, in arrival order
        for i, key in enumerate(keys):
            rows_of[key].append(i)
        for key, idx in rows_of.items():
            f, mk, history[key] = assemble_sequences(history[key], x[idx], t)
            feats[idx], masks[idx] = f, mk
        prob, types = detector.predict(feats, masks)
        pq.write_table(pa.table({"key": keys, "attack_prob": prob, "attack_type": detector.type_names(types)}),
                       out / f"part-{part:05d}.parquet")
        part += 1
        done += len(records)
    seconds = time.perf_counter() - start
    consumer.close()
    return {"flows": done, "seconds": round(seconds, 1), "baseline_flows_per_s": round(done / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--model", help="model folder (default: conf model.dir)")
    add_config_args(parser)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    work = replace_output_dir(out / "stream-work", "jobs.bench_stream")
    broker = LocalBroker(free_port(), free_port(), work / "kafka", heap="1g")
    broker.start()
    try:
        sets = [f"kafka.bootstrap_servers={broker.bootstrap}", "kafka.flows_topic=bench-flows",
                "kafka.alerts_topic=bench-alerts", *args.sets]
        cfg = load_config(sets, args.config)
        model_dir = args.model or cfg.model.dir
        ensure_topics(broker.bootstrap, cfg)
        producer = make_producer(broker.bootstrap, cfg)
        t0 = time.monotonic()
        send_records(producer, "bench-flows", synthetic_flows(args.flows, seed=3, hosts=2000), "src_ip",
                     total=args.flows)
        producer.close()
        produce_s = time.monotonic() - t0
        from jobs.lib.spark import build_session
        from jobs.stream_detect import session_conf

        spark = build_session(cfg, "flowsentinel-bench-stream", master="local[2]", extra_conf=session_conf(cfg))
        result: dict[str, Any] = {"flows_loaded": args.flows, "produce_s": round(produce_s, 1)}
        result["end_to_end"] = end_to_end(spark, cfg, sets, model_dir, work / "e2e", args.flows)
        result["flows_per_s"] = result["end_to_end"]["flows_per_s"]
        lat_sets = [*sets, "kafka.flows_topic=bench-latency", "stream.trigger_interval=500 milliseconds"]
        ensure_topics(broker.bootstrap, load_config(lat_sets, args.config), ["bench-latency"])
        result["latency"] = latency(spark, load_config(lat_sets, args.config), lat_sets, model_dir, work / "lat",
                                    broker.bootstrap, args.rate, args.latency_seconds)
        result["p50_latency_s"] = result["latency"]["p50_latency_s"]
        result["p99_latency_s"] = result["latency"]["p99_latency_s"]
        result["udf"] = udf_vs_raw(spark, cfg, model_dir)
        result["udf_vs_raw_ratio"] = result["udf"]["udf_vs_raw_ratio"]
        spark.stop()
        result["baseline"] = baseline(cfg, model_dir, broker.bootstrap, "bench-flows", args.flows, work / "base")
        result["baseline_flows_per_s"] = result["baseline"]["baseline_flows_per_s"]
    finally:
        broker.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
