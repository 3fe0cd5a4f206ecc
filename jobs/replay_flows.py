"""Replay CICFlowMeter flows onto the flows topic, one message per flow (see schemas.records.FLOW_MESSAGE), in the
wire format of conf kafka.flows_format: a JSON object (default) or an Avro binary datum of
schemas/flow_message.avsc.

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
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.flow_io import iter_flow_records, list_csv_files
from jobs.lib.synthetic import synthetic_flows
from schemas.records import flow_message_avro_schema


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


def _varint(n: int) -> bytes:
    """Avro's int/long: zig-zag, then 7 bits a byte, low first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_int(bits: int) -> Any:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def put(name: str, value: Any) -> bytes:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"field {name!r}: {value!r} is not an Avro {'int' if bits == 32 else 'long'}")
        return _varint(value)
    return put


def _avro_double(name: str, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {name!r}: {value!r} is not a number")
    return struct.pack("<d", value)


def _avro_string(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: {value!r} is not a string")
    data = value.encode("utf-8")
    return _varint(len(data)) + data


_AVRO_WRITERS = {"int": _avro_int(32), "long": _avro_int(64), "double": _avro_double, "string": _avro_string}
_AVRO_FIELDS = [(f["name"], _AVRO_WRITERS[f["type"][1]]) for f in flow_message_avro_schema()["fields"]]
_AVRO_NAMES = frozenset(name for name, _ in _AVRO_FIELDS)


def encode_avro(record: dict[str, Any]) -> bytes:
    """One flow as an Avro binary datum of schemas/flow_message.avsc: per field in schema order, the union branch
    (0 null, 1 value) and the value. A key the schema does not name, or a value its type cannot hold, raises
    ValueError naming the field (a JSON message would reach the stream and be quarantined; Avro cannot carry it)."""
    unknown = record.keys() - _AVRO_NAMES
    if unknown:
        raise ValueError(f"fields not in schemas/flow_message.avsc: {sorted(unknown)}")
    out = bytearray()
    for name, put in _AVRO_FIELDS:
        value = record.get(name)
        if value is None:
            out += b"\x00"
        else:
            out += b"\x02"
            out += put(name, value)
    return bytes(out)


ENCODERS = {"json": encode, "avro": encode_avro}


def synthetic_messages(n: int, seed: int, wire_format: str) -> list[tuple[bytes, bytes]]:
    """`n` synthetic flows (seed `seed`) as Kafka (key, value) messages in the wire format, keyed by source IP."""
    encoder = ENCODERS[wire_format]
    return [(message_key(r, "src_ip"), encoder(r)) for r in synthetic_flows(n, seed=seed)]


def make_producer(bootstrap: str, cfg: Config) -> Any:
    from kafka import KafkaProducer

    ours = {"bootstrap_servers": bootstrap, "acks": "all", "linger_ms": 20, "batch_size": 512 * 1024,
            "max_request_size": 2 * 1024 * 1024, "retries": 10}
    # [kafka.client]: kafka-python names (security, SASL, SSL), apart from Spark's kafka.options; ours win
    return KafkaProducer(**{**cfg.kafka.client.to_dict(), **ours})


def send_records(producer: Any, topic: str, records: Iterable[dict[str, Any]], key_field: str,
                 rate: float | None = None, total: int | None = None, progress: bool = True,
                 wire_format: str = "json") -> int:
    """Send records in the wire format (ENCODERS); returns how many the broker acknowledged. Raises on any failed
    send."""
    from tqdm import tqdm

    encoder = ENCODERS[wire_format]
    failures: list[BaseException] = []
    sent = 0
    t0 = time.monotonic()
    bar = tqdm(total=total, unit="flows", disable=not progress, mininterval=1.0, file=sys.stderr)
    for record in records:
        future = producer.send(topic, key=message_key(record, key_field), value=encoder(record))
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
                            progress=not args.no_progress, wire_format=cfg.kafka.flows_format)
    finally:
        producer.close()
    seconds = time.monotonic() - t0
    print(f"replayed {sent} flows ({cfg.kafka.flows_format}) to {topic} in {seconds:.1f}s "
          f"({sent / max(seconds, 1e-9):,.0f} flows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
