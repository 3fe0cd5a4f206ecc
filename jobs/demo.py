"""`make demo`: the whole pipeline on local defaults, end to end, then a summary of what it found.

    python -m jobs.demo [--data ../shared/data/cicids2017] [--out out/demo] [--synthetic 20000]

Starts the local broker (unless one runs), creates the topics, starts the detection job
(`python -m jobs.stream_detect`) reading from the current end of the flows topic, replays DATA (or synthetic
flows when DATA does not exist, saying so), waits until the job's checkpoint has committed every replayed
offset, stops the job, prints and writes OUT/summary.json, and stops what it started. The Delta tables stay in
OUT/tables for SQL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.flow_io import iter_flow_records, list_csv_files
from jobs.lib.kafka_broker import LocalBroker, ensure_topics
from jobs.lib.monitoring import processing_rate
from jobs.lib.outputs import OutputFolderError, replace_output_dir
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import make_producer, send_records

EXAMPLE_QUERIES = {
    "alerts by attack type": "SELECT category, count(*) AS alerts, round(avg(score), 3) AS mean_score "
                             "FROM alerts GROUP BY category ORDER BY alerts DESC",
    "top alerting hosts": "SELECT host, sum(alerts) AS alerts, sum(flows) AS flows, "
                          "max(distinct_dst_ports) AS max_dst_ports_per_window FROM host_windows "
                          "GROUP BY host HAVING sum(alerts) > 0 ORDER BY alerts DESC LIMIT 5",
    "quarantine reasons": "SELECT reason, count(*) AS records FROM quarantine GROUP BY reason ORDER BY records DESC",
}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(checkpoint: Path, topic: str) -> dict[int, int]:
    """Kafka offsets up to which the query has committed (its checkpoint's latest offsets/N with commits/N)."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")] if checkpoint.exists() else []
    if not commits:
        return {}
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()
    for line in lines[2:]:
        offsets = json.loads(line)
        if topic in offsets:
            return {int(p): int(o) for p, o in offsets[topic].items()}
    return {}


def wait_until_processed(checkpoint: Path, topic: str, target: dict[int, int], job: subprocess.Popen[bytes],
                         timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = committed_offsets(checkpoint, topic)
        if all(done.get(p, 0) >= o for p, o in target.items()):
            return
        if job.poll() is not None:
            raise RuntimeError(f"the stream job exited with code {job.returncode} before processing everything")
        time.sleep(0.5)
    raise TimeoutError(f"not every replayed offset was processed within {timeout_s:.0f}s")


def summarize(cfg: Config, tables: Path, replayed: int, seconds: float) -> dict[str, Any]:
    from jobs.lib.spark import build_session
    from jobs.sql import register_tables

    spark = build_session(cfg, "flowsentinel-demo-summary")
    register_tables(spark, tables, cfg.stream.host_window)
    # The job's own rate (from its progress rows), not the replay-bound wall rate of the demo.
    progress = tables / "stream_progress"
    job_rate = (processing_rate(spark.read.format("delta").load(str(progress)))
                if (progress / "_delta_log").is_dir() else None)
    counts = spark.sql(
        "SELECT count(*) AS scored, "
        "count_if(is_attack = 1 AND true_attack_type <> 'BENIGN') AS tp, "
        "count_if(is_attack = 1 AND true_attack_type = 'BENIGN') AS fp, "
        "count_if(is_attack = 0 AND true_attack_type <> 'BENIGN') AS fn, "
        "count_if(true_attack_type IS NOT NULL) AS labeled FROM flows_scored").collect()[0]
    quarantined = spark.sql("SELECT count(*) FROM quarantine").collect()[0][0]
    by_type = {r[0]: r[1] for r in spark.sql("SELECT category, count(*) FROM alerts GROUP BY category").collect()}
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    summary = {
        "records_replayed": replayed,
        "scored": counts["scored"],
        "quarantined": quarantined,
        "alerts": sum(by_type.values()),
        "alerts_by_attack_type": dict(sorted(by_type.items())),
        "labeled": counts["labeled"],
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "seconds": round(seconds, 1),
        "job_flows_per_s": job_rate,
        "queries": {},
    }
    for title, sql in EXAMPLE_QUERIES.items():
        summary["queries"][title] = {"sql": sql, "rows": [r.asDict() for r in spark.sql(sql).collect()]}
    spark.stop()
    return summary


def print_summary(summary: dict[str, Any], tables: Path) -> None:
    print("\n=== FlowSentinel demo ===")
    for key in ("records_replayed", "scored", "quarantined", "alerts", "precision", "recall", "seconds",
                "job_flows_per_s"):
        print(f"  {key:<18} {summary[key]}")
    print("  alerts by attack type:")
    for name, n in summary["alerts_by_attack_type"].items():
        print(f"    {name:<28} {n:>8}")
    for title, q in summary["queries"].items():
        print(f"\n-- {title}\n{q['sql']};")
        for row in q["rows"]:
            print("   ", row)
    print(f"\nThe Delta tables are in {tables}; query them with Spark SQL, e.g.\n"
          f"  make sql Q=\"SELECT * FROM alerts LIMIT 10\" OUT={tables.parent}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cicids2017", help="CICFlowMeter CSV file/folder/glob")
    parser.add_argument("--out", default="out/demo", help="output folder (replaced if new, empty or a previous demo's)")
    parser.add_argument("--synthetic", type=int, default=20000, help="flows to generate when DATA is missing")
    parser.add_argument("--model", help="model folder (default: the shipped models/default)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the job to catch up")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    try:
        out = replace_output_dir(args.out, "jobs.demo")
    except OutputFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if any(ch in args.data for ch in "*?[") or Path(args.data).exists():
        files = list_csv_files(args.data)
        records: Any = (r for f in files for r in iter_flow_records(f))
        print(f"replaying {len(files)} files from {args.data}")
    else:
        records = synthetic_flows(args.synthetic, seed=1)
        print(f"{args.data} not found: replaying {args.synthetic} synthetic flows instead")

    broker = LocalBroker.from_config(cfg)
    started_broker = broker.running_pid() is None
    broker.start()
    job = None
    try:
        topic = cfg.kafka.flows_topic
        ensure_topics(cfg.kafka.bootstrap_servers, cfg)
        start = end_offsets(cfg.kafka.bootstrap_servers, topic)
        starting = json.dumps({topic: {str(p): o for p, o in start.items()}})
        cmd = [sys.executable, "-m", "jobs.stream_detect", "--out", str(out), "--starting-offsets", starting]
        cmd += ["--model", args.model] if args.model else []
        cmd += [x for s in args.sets for x in ("--set", s)] + (["--config", args.config] if args.config else [])
        log = open(out / "stream_detect.log", "wb")  # noqa: SIM115 - the child writes to it
        job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        print(f"stream job started (pid {job.pid}, log {out / 'stream_detect.log'})")
        t0 = time.monotonic()
        producer = make_producer(cfg.kafka.bootstrap_servers, cfg)
        replayed = send_records(producer, topic, records, cfg.prep.sequence_key, wire_format=cfg.kafka.flows_format)
        producer.close()
        target = end_offsets(cfg.kafka.bootstrap_servers, topic)
        print(f"replayed {replayed} flows; waiting for the job to commit offsets {target}")
        wait_until_processed(out / "checkpoints" / "stream_detect", topic, target, job, args.timeout)
        seconds = time.monotonic() - t0
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=120)
        job = None
        summary = summarize(cfg, out / "tables", replayed, seconds)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print_summary(summary, out / "tables")
    finally:
        if job is not None and job.poll() is None:
            job.kill()
        if started_broker:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
