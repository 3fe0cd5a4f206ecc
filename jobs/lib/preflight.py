"""Start-up checks of the stream job that fail fast with a message naming the problem.

Without them, an unreachable broker makes Spark's Kafka source retry for minutes before a Java stack trace,
and an output folder that cannot be written fails deep inside the first Delta commit.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BROKER_ATTEMPTS = 3
BROKER_TIMEOUT_S = 5.0
BROKER_BACKOFF_S = 1.0


class PreflightError(RuntimeError):
    """A resource the job needs is unusable; the message names it."""


def check_broker(bootstrap: str, options: Mapping[str, Any], attempts: int = BROKER_ATTEMPTS,
                 timeout_s: float = BROKER_TIMEOUT_S, backoff_s: float = BROKER_BACKOFF_S) -> None:
    """Ask the brokers for their topics, `attempts` times at most; raise PreflightError when none answers.

    `options` are conf [kafka.client] (SASL/SSL): kafka-python keyword arguments, as replay and the consumer use.
    Spark's [kafka.options] (Java names: sasl.jaas.config, ssl.truststore.location) have no kafka-python
    equivalent by renaming, so the check never reads them."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    client_options = dict(options)
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            consumer = KafkaConsumer(**{**client_options, "bootstrap_servers": bootstrap,
                                        "request_timeout_ms": int(timeout_s * 1000),
                                        "bootstrap_timeout_ms": int(timeout_s * 1000)})
            try:
                consumer.topics()
            finally:
                consumer.close()
            return
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
            if attempt < attempts:
                time.sleep(backoff_s * attempt)
    detail = str(last) if type(last).__name__ in str(last) else f"{type(last).__name__}: {last}"
    raise PreflightError(f"Kafka broker {bootstrap} unreachable after {attempts} attempts ({detail}); "
                         f"check kafka.bootstrap_servers and kafka.client")


def check_writable(folder: str) -> None:
    """Create `folder` and write a probe file in it; raise PreflightError naming the folder when that fails.

    Only local paths: a URI (s3://, abfss://) is left to the storage connector's own errors."""
    if "://" in folder:
        return
    path = Path(folder)
    probe = path / f".write-probe-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"output folder {folder} is not writable: {exc.strerror or exc}") from exc


def check_checkpoint(checkpoint: str, topic: str) -> None:
    """Refuse a checkpoint that another query wrote: Spark would fail later with an assertion (another number
    of sources), or, worse, silently resume at offsets of another topic.

    The latest offset log entry is `v1`, a metadata line, then one line per source; this job has one source,
    whose line is Kafka's {"topic": {"partition": offset}}. A missing or empty checkpoint is a fresh start."""
    if "://" in checkpoint:
        return
    offsets = Path(checkpoint) / "offsets"
    entries = sorted((int(p.name), p) for p in offsets.glob("[0-9]*") if p.name.isdigit()) if offsets.is_dir() else []
    if not entries:
        return
    latest = entries[-1][1]
    lines = [line for line in latest.read_text().splitlines() if line.strip()]
    sources = lines[2:]
    advice = "use another --out or stream.checkpoint_dir, or remove the checkpoint to start over"
    if len(sources) != 1:
        raise PreflightError(f"checkpoint {checkpoint} belongs to another query: {latest} records "
                             f"{len(sources)} sources, this job reads 1 (topic {topic!r}); {advice}")
    try:
        topics = set(json.loads(sources[0]))
    except (ValueError, TypeError) as exc:
        raise PreflightError(f"checkpoint {checkpoint} belongs to another query: {latest} does not hold Kafka "
                             f"offsets ({exc}); {advice}") from exc
    if topics != {topic}:
        raise PreflightError(f"checkpoint {checkpoint} belongs to another query: it reads topic(s) "
                             f"{sorted(topics)}, this job reads {topic!r}; {advice}")
