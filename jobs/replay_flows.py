"""Replay CICFlowMeter flows onto the flows topic, one JSON message per flow (see schemas.records.FLOW_MESSAGE).

    python -m jobs.replay_flows --input ../shared/data/cicids2017 [--rate 5000] [--limit N]
    python -m jobs.replay_flows --synthetic 1000000 [--hosts 500] [--seed 1]

Messages are keyed by the flow's grouping key (conf prep.sequence_key, e.g. src_ip; the source file where a
layout has none), so all flows of one host land in one partition in order. Files are sent in name order, rows
in file order. `--rate` caps flows per second; without it, as fast as the broker takes them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.flow_io import iter_flow_records, list_csv_files
from jobs.lib.synthetic import synthetic_flows


def message_key(record: dict[str, Any], key_field: str) -> bytes:
    return str(record.get(key_field) or record.get("source_file") or "").encode("utf-8")


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/Infinity; the message contract carries them as the strings CICFlowMeter writes.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def encode(record: dict[str, Any]) -> bytes:
    """One flow as a strict-JSON message body (schemas.records.FLOW_MESSAGE)."""
    try:  # most flows are all-finite: one pass, no copy
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError:
        safe = {k: _json_safe(v) for k, v in record.items()}
        return json.dumps(safe, separators=(",", ":"), allow_nan=False).encode("utf-8")


def make_producer(bootstrap: str, cfg: Config) -> Any:
    from kafka import KafkaProducer

    ours = {"bootstrap_servers": bootstrap, "acks": "all", "linger_ms": 20, "batch_size": 512 * 1024,
            "max_request_size": 2 * 1024 * 1024, "retries": 10}
    # [kafka.client]: kafka-python names (security, SASL, SSL), apart from Spark's kafka.options; ours win
    return KafkaProducer(**{**cfg.kafka.client.to_dict(), **ours})


def send_records(producer: Any, topic: str, records: Iterable[dict[str, Any]], key_field: str,
                 rate: float | None = None, total: int | None = None, progress: bool = True) -> int:
    """Send records; returns how many the broker acknowledged. Raises on any failed send."""
    from tqdm import tqdm

    failures: list[BaseException] = []
    sent = 0
    t0 = time.monotonic()
    bar = tqdm(total=total, unit="flows", disable=not progress, mininterval=1.0, file=sys.stderr)
    for record in records:
        future = producer.send(topic, key=message_key(record, key_field), value=encode(record))
        future.add_errback(failures.append)
        sent += 1
        if sent % 1000 == 0:
            bar.update(1000)
            if failures:
                raise RuntimeError(f"send to {topic} failed: {failures[0]}")
            if rate:  # pace to the target rate
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush()
    bar.update(sent % 1000)
    bar.close()
    if failures:
        raise RuntimeError(f"{len(failures)} sends to {topic} failed; first: {failures[0]}")
    return sent


def source_records(args: argparse.Namespace) -> tuple[Iterator[dict[str, Any]], int | None]:
    if args.synthetic:
        return synthetic_flows(args.synthetic, seed=args.seed, hosts=args.hosts), args.synthetic
    files = list_csv_files(args.input)
    records: Iterator[dict[str, Any]] = (r for f in files for r in iter_flow_records(f))
    return records, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="CICFlowMeter CSV file, folder or glob (either layout)")
    source.add_argument("--synthetic", type=int, metavar="N", help="generate N schema-valid flows instead")
    parser.add_argument("--hosts", type=int, default=200, help="synthetic: number of source hosts")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    parser.add_argument("--rate", type=float, help="flows per second (default: as fast as possible)")
    parser.add_argument("--limit", type=int, help="send at most this many flows")
    parser.add_argument("--topic", help="default: conf kafka.flows_topic")
    parser.add_argument("--bootstrap", help="default: conf kafka.bootstrap_servers")
    parser.add_argument("--no-progress", action="store_true")
    add_config_args(parser)
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.synthetic is not None and args.synthetic <= 0:
        parser.error("--synthetic must be > 0")
    cfg = load_config(args.sets, args.config)
    records, total = source_records(args)
    if args.limit is not None:
        records = (r for i, r in zip(range(args.limit), records, strict=False))
        total = min(total, args.limit) if total else args.limit
    topic = args.topic or cfg.kafka.flows_topic
    producer = make_producer(args.bootstrap or cfg.kafka.bootstrap_servers, cfg)
    t0 = time.monotonic()
    try:
        sent = send_records(producer, topic, records, cfg.prep.sequence_key, args.rate, total,
                            progress=not args.no_progress)
    finally:
        producer.close()
    seconds = time.monotonic() - t0
    print(f"replayed {sent} flows to {topic} in {seconds:.1f}s ({sent / max(seconds, 1e-9):,.0f} flows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
