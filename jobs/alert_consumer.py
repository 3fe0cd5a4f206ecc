"""Example consumer of the alerts topic, and the JSON Schema of an alert message.

    python -m jobs.alert_consumer --group soc-pager                 # print each new alert as one JSON line
    python -m jobs.alert_consumer --group audit --idle-exit 10      # drain what is there, then stop
    python -m jobs.alert_consumer --schema                          # the alert message's JSON Schema

Delivery contract (see jobs/stream_detect.py): the stream job publishes each alert row of the Delta ``alerts``
table as one JSON object (schemas.records.ALERTS; null fields are left out), keyed by ``alert_id``. Publishing is
at-least-once: a micro-batch replayed after a crash publishes its alerts again, with the same alert_id. So a
consumer must be idempotent on alert_id. This one:

- joins a consumer group (``--group``), so several copies share the partitions and a restart resumes;
- has ``enable_auto_commit=False`` and commits an offset only after the alert before it was handled, so a crash
  never skips an alert (it may hand one to the handler again: at-least-once, like the producer side);
- drops an alert_id it has already handled among the last ``--dedupe-ids`` (DEDUPE_IDS) it handled: a count
  bound, oldest forgotten first, so memory stays flat; a replay older than that window is handled again, and
  across restarts the handler must be idempotent itself (e.g. upsert by alert_id).

Copy :func:`consume` and replace the handler to page, ticket or forward to a SIEM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructType,
    TimestampType,
)

from jobs.lib.config import Config, add_config_args, load_config
from schemas.records import ALERTS

# Fields every alert carries (the stream job derives them from columns that are never null for a scored flow);
# the rest are absent when unknown (a 79-column source has no IPs, ports or flow id).
REQUIRED_FIELDS = ["alert_id", "timestamp", "category", "severity", "score", "model_version", "topic",
                   "partition", "offset"]

Handler = Callable[[dict[str, Any]], None]
# Alert ids a consumer remembers to drop replays: a count bound, so memory stays flat however long it runs
# (about 220 MB per million 32-character ids, measured with tracemalloc).
DEDUPE_IDS = 1_000_000


def _json_type(data_type: DataType) -> dict[str, Any]:
    if isinstance(data_type, StringType):
        return {"type": "string"}
    if isinstance(data_type, TimestampType):
        # to_json writes Spark timestamps as ISO 8601 in the session time zone (UTC in conf/defaults.toml).
        return {"type": "string", "format": "date-time"}
    if isinstance(data_type, IntegerType | LongType):
        return {"type": "integer"}
    if isinstance(data_type, FloatType | DoubleType):
        return {"type": "number"}
    if isinstance(data_type, BooleanType):
        return {"type": "boolean"}
    if isinstance(data_type, ArrayType):
        return {"type": "array", "items": _json_type(data_type.elementType)}
    raise TypeError(f"no JSON Schema mapping for {data_type.simpleString()}")


def json_schema(schema: StructType = ALERTS, required: list[str] | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one alert message, derived from the Delta table's Spark schema."""
    required = REQUIRED_FIELDS if required is None else required
    unknown = sorted(set(required) - set(schema.fieldNames()))
    if unknown:
        raise ValueError(f"required fields not in the schema: {unknown}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flowsentinel.local/schemas/alert.json",
        "title": "FlowSentinel alert",
        "description": "One message on the alerts topic; the Kafka key is alert_id. Derived from "
                       "schemas.records.ALERTS; fields that are null are omitted.",
        "type": "object",
        "properties": {f.name: _json_type(f.dataType) for f in schema.fields},
        "required": list(required),
        "additionalProperties": False,
    }


@dataclass
class ConsumeStats:
    """What one :func:`consume` call did."""

    handled: int = 0  # alerts given to the handler
    duplicates: int = 0  # messages whose alert_id was already handled (the producer's at-least-once replays)
    invalid: int = 0  # messages that are not a JSON object with an alert_id (logged and skipped)
    handled_ids: list[str] = field(default_factory=list)


class SeenIds:
    """The most recent `capacity` alert ids, oldest forgotten first (bounded memory for a long-running consumer)."""

    def __init__(self, capacity: int = DEDUPE_IDS) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def kafka_client_options(cfg: Config) -> dict[str, Any]:
    """conf [kafka.client]: kafka-python keyword arguments (security_protocol, sasl_plain_username, ...)."""
    return dict(cfg.kafka.client.to_dict())


def make_consumer(bootstrap: str, topic: str, group_id: str, options: Mapping[str, Any] | None = None,
                  auto_offset_reset: str = "earliest") -> Any:
    from kafka import KafkaConsumer

    ours = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,  # commit only what was handled; see consume()
        "auto_offset_reset": auto_offset_reset,  # a new group starts at the oldest retained alert: none missed
        "key_deserializer": lambda k: k.decode("utf-8") if k is not None else None,
    }
    return KafkaConsumer(topic, **{**dict(options or {}), **ours})  # [kafka.client] adds; ours win


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        alert = json.loads(value) if value else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return alert if isinstance(alert, dict) and isinstance(alert.get("alert_id"), str) else None


def consume(consumer: Any, handle: Handler, *, seen: SeenIds | None = None, max_messages: int | None = None,
            idle_exit_s: float | None = None, stop: threading.Event | None = None,
            poll_timeout_ms: int = 500) -> ConsumeStats:
    """Poll, hand each new alert to `handle`, commit what was handled.

    Stops after `max_messages` messages, after `idle_exit_s` seconds without a message, or when `stop` is set.
    If `handle` raises, the offsets of the alerts handled before it are committed and the error propagates:
    the failed alert is the first one a restarted consumer of the group sees.
    """
    from kafka.structs import OffsetAndMetadata

    seen = seen if seen is not None else SeenIds()
    stats = ConsumeStats()
    done: dict[Any, Any] = {}  # TopicPartition -> OffsetAndMetadata of the next message to read
    messages = 0
    last_message = time.monotonic()
    try:
        while not (stop and stop.is_set()):
            if max_messages is not None and messages >= max_messages:
                break
            budget = None if max_messages is None else max_messages - messages
            batch = consumer.poll(timeout_ms=poll_timeout_ms, max_records=budget)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - last_message >= idle_exit_s:
                    break
                continue
            last_message = time.monotonic()
            for tp, records in batch.items():
                for record in records:
                    messages += 1
                    alert = _decode(record.value)
                    if alert is None:
                        # A poison message must not block the partition: log it and move past it.
                        stats.invalid += 1
                        print(f"warning: skipping an invalid alert message at {tp.topic}/{tp.partition}@"
                              f"{record.offset}", file=sys.stderr)
                    elif alert["alert_id"] in seen:
                        stats.duplicates += 1
                    else:
                        handle(alert)
                        seen.add(alert["alert_id"])
                        stats.handled += 1
                        stats.handled_ids.append(alert["alert_id"])
                    done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            consumer.commit(dict(done))
            done.clear()
    finally:
        if done:  # the handler raised mid-batch: keep what it finished
            consumer.commit(dict(done))
    return stats


def print_alert(alert: dict[str, Any]) -> None:
    """The example handler: one JSON line per alert on stdout."""
    print(json.dumps(alert, sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="flowsentinel-alert-printer", help="consumer group id")
    parser.add_argument("--topic", help="default: conf kafka.alerts_topic")
    parser.add_argument("--bootstrap", help="default: conf kafka.bootstrap_servers")
    parser.add_argument("--latest", action="store_true", help="a new group starts at new alerts, not the oldest")
    parser.add_argument("--max-messages", type=int, help="stop after this many messages")
    parser.add_argument("--idle-exit", type=float, metavar="S", help="stop after S seconds without a message")
    parser.add_argument("--dedupe-ids", type=int, default=DEDUPE_IDS, metavar="N",
                        help="remember the last N handled alert ids to drop replays (bounded memory)")
    parser.add_argument("--schema", action="store_true", help="print the alert JSON Schema and exit")
    add_config_args(parser)
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.dedupe_ids < 1:
        parser.error("--dedupe-ids must be >= 1")
    cfg = load_config(args.sets, args.config)
    consumer = make_consumer(args.bootstrap or cfg.kafka.bootstrap_servers, args.topic or cfg.kafka.alerts_topic,
                             args.group, kafka_client_options(cfg), "latest" if args.latest else "earliest")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        stats = consume(consumer, print_alert, seen=SeenIds(args.dedupe_ids), max_messages=args.max_messages,
                        idle_exit_s=args.idle_exit, stop=stop)
    finally:
        consumer.close()
    print(f"handled {stats.handled} alerts; {stats.duplicates} duplicates and {stats.invalid} invalid messages "
          f"skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
