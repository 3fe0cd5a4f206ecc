"""Smoke path proving the stack for real: CSV flows -> Kafka (kafka-python) -> Spark Structured Streaming
(availableNow) -> Delta -> Spark SQL.

    python -m jobs.smoke --data ../shared/data/cicids2017 --out out/demo

Starts a local broker unless ``--bootstrap`` names a running one. `make demo` runs this until the streaming
detection job replaces it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.flow_io import iter_flow_records, list_csv_files
from jobs.lib.kafka_broker import LocalBroker, ensure_topics
from jobs.lib.spark import build_session
from schemas.records import FLOW_MESSAGE


def produce_records(bootstrap: str, topic: str, records: Iterable[dict[str, Any]]) -> int:
    """Send each record as one JSON message; returns how many were acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    futures = [producer.send(topic, json.dumps(record).encode("utf-8")) for record in records]
    producer.flush()
    sent = sum(1 for f in futures if f.get(timeout=30))
    producer.close()
    return sent


def parse_flow_messages(raw: DataFrame) -> DataFrame:
    """Kafka rows (value bytes + coordinates) -> one typed flow per row, with its Kafka coordinates."""
    return raw.select(
        F.from_json(F.col("value").cast("string"), FLOW_MESSAGE).alias("flow"),
        "topic", "partition", "offset",
    ).select("flow.*", "topic", "partition", "offset")


def kafka_to_delta(spark: SparkSession, cfg: Config, bootstrap: str, topic: str, table: str,
                   checkpoint: str) -> None:
    """Drain the topic once (availableNow) into a Delta table."""
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic)
              .option("startingOffsets", "earliest"))
    for key, value in cfg.kafka.options.items():
        reader = reader.option(f"kafka.{key}", value)
    query = (parse_flow_messages(reader.load()).writeStream.format("delta")
             .option("checkpointLocation", checkpoint)
             .trigger(availableNow=True)
             .start(table))
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CICFlowMeter CSV file, folder or glob")
    parser.add_argument("--out", required=True, help="output folder (Delta tables under OUT/tables)")
    parser.add_argument("--bootstrap", help="use this running broker instead of starting one")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    out = Path(args.out).resolve()
    files = list_csv_files(args.data)

    broker = None if args.bootstrap else LocalBroker.from_config(cfg)
    started_here = broker is not None and broker.running_pid() is None
    if broker is not None:
        broker.start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        topic = f"smoke-{int(time.time())}"
        ensure_topics(bootstrap, cfg, [topic])
        t0 = time.monotonic()
        sent = sum(produce_records(bootstrap, topic, iter_flow_records(f)) for f in files)
        spark = build_session(cfg, "flowsentinel-smoke")
        table = str(out / "tables" / "smoke_flows")
        kafka_to_delta(spark, cfg, bootstrap, topic, table, str(out / "checkpoints" / topic))
        summary = spark.sql(f"SELECT label, count(*) AS flows FROM delta.`{table}` "
                            f"WHERE topic = '{topic}' GROUP BY label ORDER BY label").collect()
        print(f"produced {sent} flows from {len(files)} files to topic {topic} and wrote them to {table} "
              f"in {time.monotonic() - t0:.1f}s")
        for row in summary:
            print(f"  {row['label']:<40} {row['flows']:>8}")
        spark.stop()
    finally:
        if broker is not None and started_here:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
