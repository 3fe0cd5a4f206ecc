"""`make bench`: the streaming figures of issues 5 and 20, side by side in one run: BENCH_OUT/stream.json and
BENCH_OUT/latency.png.

    python -m bench.stream --out out/bench [--flows 1000000] [--rates 1000,2000,5000,10000] [--latency-seconds 30]

(a) end to end: Kafka pre-loaded with --flows synthetic flows, the detection job on local[2] drains them into
    Delta (availableNow); flows/s over the whole run (query start to last commit; the job's warm-up before the
    query, stream.warmup_flows, is timed apart and in flows_per_s_with_warmup) and in steady state (the batches
    after the first two).
(b) latency at each offered rate, one running job: produce -> alert received by a consumer of the alerts topic,
    and produce -> Delta commit of the flow's batch (p50/p99), with the median seconds of each step of the
    window's batches; a rate the job cannot keep up with is marked. The producer and the alerts consumer run in
    a process of their own, as a deployment's would.
(c) parse + validate + z-score alone (parse_flows_per_s, the run's wire format; `parse` has both), and the
    scoring UDF vs a raw torch forward.
(d) a single-process baseline: kafka-python consumer -> the same z-score and sequence code (numpy twins) ->
    torch -> Parquet; spark_vs_baseline for the whole run and for the steady state. It reads the flows as JSON
    whatever the run's wire format (kafka.flows_format, `make bench BENCH_FORMAT=avro`).
Runs against a broker of its own on free ports; uses the shipped model unless --model is given.

One module of about 400 lines: the producer, the latency probes, the baseline and the report share one broker and
one run, so that every figure is comparable within the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from datetime import datetime
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


class BatchProfile(logging.Handler):
    """Collects the stream job's per-batch line (jobs.stream_detect's `flowsentinel.stream` logger): where each
    micro-batch's time went, step by step."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.batches: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 4:
            batch_id, rows, seconds, steps = record.args
            self.batches.append({"batch_id": batch_id, "rows": rows, "seconds": round(float(str(seconds)), 2),
                                 **json.loads(str(steps))})

    def __enter__(self) -> BatchProfile:
        stream_log = logging.getLogger("flowsentinel.stream")
        stream_log.setLevel(logging.INFO)
        stream_log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("flowsentinel.stream").removeHandler(self)


def end_to_end(spark: Any, cfg: Any, sets: list[str], model_dir: str, out: Path, flows: int) -> dict[str, Any]:
    from jobs import stream_detect
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu")
    model_cfg = stream_detect.model_config(cfg, detector, sets, None)
    warmup_s = stream_detect.warm_up(spark, cfg, model_cfg, detector, model_dir, out)  # as the job's main() does
    started = time.time()
    with BatchProfile() as profile:
        query = stream_detect.start(spark, cfg, model_cfg, detector, model_dir, out, available_now=True)
        query.awaitTermination()
    table = str(out / "tables" / "flows_scored")
    commits = batch_commit_times(spark, table)
    rows = dict(spark.read.format("delta").load(table).groupBy("batch_id").count().collect())
    with_warmup = drain_rates(started - warmup_s, commits, rows)["flows_per_s"]
    return {"flows": sum(rows.values()), "batches": len(commits), "wall_s": round(time.time() - started, 1),
            **drain_rates(started, commits, rows), "warmup_flows": cfg.stream.warmup_flows,
            "warmup_s": round(warmup_s, 1), "flows_per_s_with_warmup": with_warmup,
            "batch_profile_s": profile.batches}


def drain_rates(started: float, commits: dict[int, float], rows: dict[int, int]) -> dict[str, Any]:
    """Flows/s over the whole run (query start -> last flows_scored commit) and in steady state (the rows of the
    batches after the first two, over the time from the second batch's commit to the last one's)."""
    ids = sorted(commits)
    whole = sum(rows[b] for b in ids) / (commits[ids[-1]] - started)
    steady = None
    if len(ids) > 2:
        steady = sum(rows[b] for b in ids[2:]) / (commits[ids[-1]] - commits[ids[1]])
    return {"flows_per_s": round(whole, 1), "steady_flows_per_s": None if steady is None else round(steady, 1)}


def paced_send(producer: Any, topic: str, messages: list[tuple[bytes, bytes]], rate: float) -> float:
    """Send pre-encoded (key, value) messages at `rate` per second (as fast as possible when the producer is
    slower); returns the rate achieved, flush included."""
    t0 = time.monotonic()
    for i, (key, value) in enumerate(messages, 1):
        producer.send(topic, key=key, value=value)
        if i % 100 == 0:
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


class AlertClock:
    """Consumes the alerts topic in a thread of its own and notes when each alert arrived:
    (partition, offset) of the flow -> (produced: the flow's Kafka timestamp, received), both s since epoch."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import threading

        from kafka import KafkaConsumer

        self.received: dict[tuple[int, int], tuple[float, float]] = {}
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                       enable_auto_commit=False, fetch_max_wait_ms=50)
        while not self._consumer.assignment():  # joined: alerts from now on are seen
            self._consumer.poll(timeout_ms=100)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for messages in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                for m in messages:
                    alert = json.loads(m.value)
                    produced = datetime.fromisoformat(alert["kafka_timestamp"]).timestamp()
                    self.received.setdefault((alert["partition"], alert["offset"]), (produced, now))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def _load_process(conn: Any, bootstrap: str, sets: list[str], config: str | None) -> None:
    """:class:`LoadGenerator`'s process: a producer and an :class:`AlertClock`, driven by commands on `conn`."""
    from jobs.replay_flows import synthetic_messages

    cfg = load_config(sets, config)
    clock = AlertClock(bootstrap, cfg.kafka.alerts_topic)
    producer = make_producer(bootstrap, cfg)
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "send":
            n, seed, rate = args
            flows = synthetic_messages(n, seed, cfg.kafka.flows_format)  # not timed
            begin = time.time()
            achieved = paced_send(producer, cfg.kafka.flows_topic, flows, rate)
            conn.send((begin, time.time(), achieved))
        else:  # close
            producer.close()
            time.sleep(2)  # the last alerts in flight
            clock.close()
            conn.send(clock.received)
            return


class LoadGenerator:
    """The latency run's producer and alerts consumer, in a process of their own. In a deployment neither shares
    the job's Python process; in it, their threads would take the GIL from the job's driver code (the foreachBatch
    body makes a few hundred Py4J calls per micro-batch, each of which takes the GIL back)."""

    def __init__(self, bootstrap: str, sets: list[str], config: str | None = None) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the driver's JVM gateway
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_load_process, args=(child, bootstrap, sets, config), daemon=True)
        self._process.start()
        self._receive(120)

    def _receive(self, timeout_s: float) -> Any:
        if not self._conn.poll(timeout_s):
            raise RuntimeError(f"the load generator did not answer within {timeout_s:.0f} s "
                               f"(exit code {self._process.exitcode})")
        return self._conn.recv()

    def send(self, n: int, seed: int, rate: float) -> tuple[float, float, float]:
        """Produce `n` synthetic flows (seed `seed`) at `rate` per second: (begin, end, achieved rate)."""
        self._conn.send(("send", n, seed, rate))
        return self._receive(120 + 2 * n / rate)

    def close(self) -> dict[tuple[int, int], tuple[float, float]]:
        """Stop producing and consuming; AlertClock.received of the whole run."""
        self._conn.send(("close",))
        received = self._receive(60)
        self._process.join(30)
        return received


def above_capacity(rate: float, batches: list[dict[str, Any]], produced: np.ndarray, seconds: np.ndarray,
                   cycle_s: float) -> bool:
    """Whether an offered rate is above the job's capacity. Either the window's batches processed fewer flows per
    second of their own time (median rows / median seconds, the query's time between batches not counted) than
    were offered, or the produce -> commit latency of the window's last quarter of flows (by produce time)
    exceeds its first quarter's by more than one batch cycle (median seconds between two commits): a job that
    keeps up has a latency that cycles with its batches and does not grow; above its capacity the backlog grows
    all through the window, and the latency with it."""
    rows = [b["rows"] for b in batches if b.get("seconds")]
    busy = [b["seconds"] for b in batches if b.get("seconds")]
    if rows and float(np.median(rows)) / float(np.median(busy)) < rate:
        return True
    order = np.argsort(produced, kind="stable")
    quarter = max(len(order) // 4, 1)
    first, last = seconds[order[:quarter]], seconds[order[-quarter:]]
    return bool(np.median(last) - np.median(first) > cycle_s)


def percentiles(seconds: np.ndarray) -> dict[str, Any]:
    if len(seconds) == 0:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    return {"n": int(len(seconds)), "p50_s": round(float(np.percentile(seconds, 50)), 3),
            "p99_s": round(float(np.percentile(seconds, 99)), 3), "max_s": round(float(seconds.max()), 3)}


def latency(spark: Any, cfg: Any, sets: list[str], model_dir: str, out: Path, bootstrap: str, rates: list[float],
            seconds: float, config: str | None = None) -> list[dict[str, Any]]:
    """One running job, each rate in turn for `seconds`: produce -> alert received on the alerts topic, and
    produce -> the Delta commit of the flow's micro-batch (when it becomes visible to readers). The flows are
    produced, and the alerts consumed, by a :class:`LoadGenerator` (a process of its own)."""
    from pyspark.sql import functions as F

    from jobs import stream_detect
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu")
    model_cfg = stream_detect.model_config(cfg, detector, sets, None)
    with BatchProfile() as profile:
        query = stream_detect.start(spark, cfg, model_cfg, detector, model_dir, out, starting_offsets="latest")
        while query.lastProgress is None:
            time.sleep(0.2)
        table = str(out / "tables" / "flows_scored")

        def consumed() -> int:
            """Messages of the (new) topic the query has finished, from its last progress: polling a count of
            the table instead would run Spark jobs beside the stream's own on the same 2 cores."""
            progress = query.lastProgress
            if not progress or not progress["sources"]:
                return 0
            end = json.loads(progress.json)["sources"][0]["endOffset"]
            return sum(int(o) for parts in (end or {}).values() for o in parts.values())

        def wait_scored(count: int, timeout_s: float) -> float:
            start = time.monotonic()
            while consumed() < count and time.monotonic() - start < timeout_s:
                time.sleep(0.1)
            return time.monotonic() - start

        load = LoadGenerator(bootstrap, sets, config)
        try:
            # Warm-up, not measured: the first batches start the Python workers, load the model, create the files.
            sent = 4000
            load.send(sent, 7, 2000)
            wait_scored(sent, 300)
            windows = []
            for i, rate in enumerate(rates):
                n = int(rate * seconds)
                begin, end, achieved = load.send(n, 100 + i, rate)
                sent += n
                drain_s = wait_scored(sent, 900)
                windows.append((rate, n, begin, end, achieved, drain_s))
        finally:
            received = load.close()
        query.stop()
    steps = {b["batch_id"]: b for b in profile.batches}
    commits = batch_commit_times(spark, table)
    scored = (spark.read.format("delta").load(table)
              .select("batch_id", "partition", "offset", F.col("kafka_timestamp").cast("double").alias("produced"))
              .toPandas())
    scored["committed"] = scored["batch_id"].map(commits)
    results = []
    for rate, n, begin, end, achieved, drain_s in windows:
        mine = scored[(scored["produced"] >= begin) & (scored["produced"] < end)]
        alerts = np.array([got - made for made, got in received.values() if begin <= made < end])
        batch_ids = sorted(mine["batch_id"].unique())
        profiled = [steps[b] for b in batch_ids if b in steps]
        cycle = np.diff(sorted(commits[b] for b in batch_ids if b in commits))
        to_delta = (mine["committed"] - mine["produced"]).to_numpy(np.float64)
        results.append({
            "rate": rate, "achieved_rate": round(achieved, 1), "sent": n, "scored": int(len(mine)),
            "batches": len(batch_ids), "drain_after_last_send_s": round(drain_s, 1),
            "above_capacity": above_capacity(rate, profiled,
                                             mine["produced"].to_numpy(np.float64), to_delta,
                                             float(np.median(cycle)) if len(cycle) else float("inf")),
            "to_alert_topic": percentiles(alerts),
            "to_delta": percentiles(to_delta),
            "median_batch_s": median_steps(profiled),
        })
    return results


def median_steps(batches: list[dict[str, Any]]) -> dict[str, float]:
    """Per step (score, publish, commit, ...), the median seconds over `batches` (BatchProfile rows)."""
    names = {k for b in batches for k in b if k != "batch_id"}
    return {k: round(float(np.median([b[k] for b in batches if k in b])), 3) for k in sorted(names)}


def plot_latency(rows: list[dict[str, Any]], path: Path) -> None:
    """Latency vs offered load: p50 and p99, to the alerts topic and to the Delta commit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [r["rate"] for r in rows]
    for sink, colour in (("to_alert_topic", "tab:red"), ("to_delta", "tab:blue")):
        for stat, style in (("p50_s", "-o"), ("p99_s", "--s")):
            ys = [r[sink][stat] if r[sink][stat] is not None else np.nan for r in rows]
            ax.plot(rates, ys, style, color=colour, label=f"{stat[:3]} {sink.replace('_', ' ')}")
    for r in rows:
        if r["above_capacity"]:
            ax.axvspan(r["rate"] * 0.97, r["rate"] * 1.03, color="grey", alpha=0.2)
    ax.set_xscale("log")
    ax.set_xticks(rates, [f"{x:,.0f}" for x in rates])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered flows/s (grey: above the job's capacity)")
    ax.set_ylabel("seconds from produce")
    ax.set_title("FlowSentinel stream_detect on local[2]: latency vs load")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_rate(spark: Any, cfg: Any, sets: list[str], model_dir: str, n: int = 100_000) -> dict[str, Any]:
    """Parse + validate + z-score alone (validated_flows over Kafka-shaped rows held in memory, into Spark's
    noop sink), warm: the second of two runs, for each wire format (kafka.flows_format)."""
    from jobs import stream_detect
    from jobs.lib.messages import WIRE_FORMATS
    from jobs.replay_flows import ENCODERS
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu")
    now = datetime.now()
    records = list(synthetic_flows(n, seed=11))
    result: dict[str, Any] = {"n": n}
    for wire_format in WIRE_FORMATS:
        model_cfg = stream_detect.model_config(cfg, detector, [*sets, f"kafka.flows_format={wire_format}"], None)
        encode = ENCODERS[wire_format]
        kafka = spark.createDataFrame(
            [(None, encode(r), "bench-flows", i % 2, i, now) for i, r in enumerate(records)],
            "key binary, value binary, topic string, partition int, offset long, timestamp timestamp",
        ).repartition(2).cache()
        kafka.count()
        flows = stream_detect.validated_flows(kafka, model_cfg, detector.norm_stats)
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            flows.write.format("noop").mode("overwrite").save()
            runs.append(time.perf_counter() - start)
        kafka.unpersist()
        result[wire_format] = {"cold_s": round(runs[0], 2), "warm_s": round(runs[1], 2),
                               "parse_flows_per_s": round(n / runs[1], 1)}
    return result


def udf_vs_raw(spark: Any, cfg: Any, model_dir: str, n: int = 200_000) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from jobs.lib.inference import score_udf
    from models.artifact import load_model

    detector = load_model(model_dir, device="cpu", threads=cfg.model.threads or None)
    t, f = detector.seq_len, len(detector.features)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    m = np.ones((n, t), bool)

    def timed(run: Any) -> float:
        """Median seconds of three runs: one run of either side moved the ratio by half on this machine."""
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    raw_s = timed(lambda: detector.predict(x, m))
    df = spark.createDataFrame([(row.reshape(-1).tolist(), [True] * t) for row in x[:n]],
                               "features array<float>, mask array<boolean>").repartition(2).cache()
    df.count()
    udf = score_udf(model_dir, "cpu", cfg.model.batch_size, cfg.model.threads, 0)
    df.select(udf("features", "mask").alias("s")).agg(F.sum("s.attack_prob")).collect()  # warm the workers
    udf_s = timed(lambda: df.select(udf("features", "mask").alias("s")).agg(F.sum("s.attack_prob")).collect())
    return {"n": n, "raw_flows_per_s": round(n / raw_s, 1), "udf_flows_per_s": round(n / udf_s, 1),
            "udf_vs_raw_ratio": round(raw_s / udf_s, 3)}


def baseline(cfg: Any, model_dir: str, bootstrap: str, topic: str, expected: int, out: Path) -> dict[str, Any]:
    """One process: consume, validate the essentials, z-score and sequence with the numpy twins, score, write."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from kafka import KafkaConsumer

    from jobs.lib.prep import assemble_sequences
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
    parser.add_argument("--rates", default="1000,2000,5000,10000", help="offered flows/s, comma-separated")
    parser.add_argument("--latency-seconds", type=float, default=30, help="how long each rate is offered")
    parser.add_argument("--model", help="model folder (default: conf model.dir)")
    add_config_args(parser)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    out = Path(args.out).resolve()
    work = replace_output_dir(out / "stream-work", "bench.stream")
    broker = LocalBroker(free_port(), free_port(), work / "kafka", heap="1g")
    broker.start()
    try:
        sets = [f"kafka.bootstrap_servers={broker.bootstrap}", "kafka.flows_topic=bench-flows",
                "kafka.alerts_topic=bench-alerts", *args.sets]
        cfg = load_config(sets, args.config)
        model_dir = args.model or cfg.model.dir
        wire_format = cfg.kafka.flows_format
        ensure_topics(broker.bootstrap, cfg)
        producer = make_producer(broker.bootstrap, cfg)
        t0 = time.monotonic()
        send_records(producer, "bench-flows", synthetic_flows(args.flows, seed=3, hosts=2000), "src_ip",
                     total=args.flows, wire_format=wire_format)
        produce_s = time.monotonic() - t0
        # The baseline reads JSON, its fastest decoder in Python (json.loads is C; an Avro decoder would be
        # Python), so that Spark is compared with the baseline at its best: the same flows, as JSON.
        baseline_topic = "bench-flows"
        if wire_format != "json":
            baseline_topic = "bench-flows-json"
            ensure_topics(broker.bootstrap, cfg, [baseline_topic])
            send_records(producer, baseline_topic, synthetic_flows(args.flows, seed=3, hosts=2000), "src_ip",
                         total=args.flows)
        producer.close()
        from jobs.lib.spark import build_session
        from jobs.stream_detect import session_conf

        spark = build_session(cfg, "flowsentinel-bench-stream", master="local[2]", extra_conf=session_conf(cfg))
        result: dict[str, Any] = {"flows_loaded": args.flows, "flows_format": wire_format,
                                  "produce_s": round(produce_s, 1)}
        e2e = result["end_to_end"] = end_to_end(spark, cfg, sets, model_dir, work / "e2e", args.flows)
        result["flows_per_s"] = e2e["flows_per_s"]
        result["steady_flows_per_s"] = e2e["steady_flows_per_s"]
        lat_sets = [*sets, "kafka.flows_topic=bench-latency", "kafka.alerts_topic=bench-latency-alerts",
                    "stream.trigger_interval=500 milliseconds"]
        lat_cfg = load_config(lat_sets, args.config)
        ensure_topics(broker.bootstrap, lat_cfg, ["bench-latency", "bench-latency-alerts"])
        result["latency"] = latency(spark, lat_cfg, lat_sets, model_dir, work / "lat", broker.bootstrap, rates,
                                    args.latency_seconds, args.config)
        result["parse"] = parse_rate(spark, cfg, sets, model_dir)
        result["parse_flows_per_s"] = result["parse"][wire_format]["parse_flows_per_s"]
        result["udf"] = udf_vs_raw(spark, cfg, model_dir)
        result["udf_vs_raw_ratio"] = result["udf"]["udf_vs_raw_ratio"]
        spark.stop()
        result["baseline"] = baseline(cfg, model_dir, broker.bootstrap, baseline_topic, args.flows, work / "base")
        base = result["baseline_flows_per_s"] = result["baseline"]["baseline_flows_per_s"]
        result["spark_vs_baseline"] = round(e2e["flows_per_s"] / base, 3)
        if e2e["steady_flows_per_s"] is not None:
            result["steady_spark_vs_baseline"] = round(e2e["steady_flows_per_s"] / base, 3)
    finally:
        broker.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_latency(result["latency"], out / "latency.png")
    print(json.dumps({k: v for k, v in result.items() if k != "end_to_end"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
