"""Spark schemas of the records that cross a boundary: the Kafka flow message and the Delta tables.

Declared from the column lists in :mod:`schemas.flows`, never retyped elsewhere.
"""

from __future__ import annotations

import json
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
    StructField,
    StructType,
    TimestampType,
)

from schemas.flows import FEATURE_COLUMNS, IDENTIFIER_COLUMNS, INTEGER_IDENTIFIERS, LABEL_COLUMN

# Provenance of a flow read from a CSV file: the file and the data row number (1 = first row after the header).
# Where a layout has no timestamps these give the event order within one source.
PROVENANCE_FIELDS = [StructField("source_file", StringType()), StructField("source_row", LongType())]


def _identifier_field(name: str) -> StructField:
    return StructField(name, IntegerType() if name in INTEGER_IDENTIFIERS else StringType())


# One flow, canonical names and types. Both CSV layouts map onto it (79-column files leave the identifiers
# other than dst_port null). This is also the JSON body of one Kafka message on the flows topic:
# {"flow_id": "...", "src_ip": "...", ..., "flow_duration": 7121367.0, ..., "label": "DDoS",
#  "source_file": "friday-afternoon-ddos.csv", "source_row": 1}
FLOW_RECORD = StructType(
    [_identifier_field(c) for c in IDENTIFIER_COLUMNS]
    + [StructField(c, DoubleType()) for c in FEATURE_COLUMNS]
    + [StructField(LABEL_COLUMN, StringType())]
    + PROVENANCE_FIELDS
)
FLOW_MESSAGE = FLOW_RECORD

_AVRO_TYPES: dict[DataType, str] = {IntegerType(): "int", LongType(): "long", DoubleType(): "double",
                                    StringType(): "string"}


def flow_message_avro_schema() -> dict[str, Any]:
    """FLOW_MESSAGE as an Avro record schema, for the `kafka.flows_format = "avro"` wire format: one Avro binary
    datum per Kafka record, no header. Every field is ``["null", T]`` with default null (a flow from a 79-column
    file has no IPs), in FLOW_MESSAGE's order. schemas/flow_message.avsc is this, for producers; a test keeps the
    two equal."""
    return {
        "type": "record", "name": "FlowMessage", "namespace": "io.flowsentinel",
        "doc": "One CICFlowMeter flow (schemas.records.FLOW_MESSAGE); generated, do not edit",
        "fields": [{"name": f.name, "type": ["null", _AVRO_TYPES[f.dataType]], "default": None}
                   for f in FLOW_MESSAGE.fields],
    }


def flow_message_avsc() -> str:
    """The text of schemas/flow_message.avsc (`python -m schemas.records > schemas/flow_message.avsc`)."""
    schema = flow_message_avro_schema()
    fields = schema.pop("fields")
    return (json.dumps(schema)[:-1] + ',\n  "fields": [\n'
            + ",\n".join("    " + json.dumps(f) for f in fields) + "\n  ]\n}\n")


# Rows that could not be used, with why. Nothing is dropped silently: every rejected CSV row or Kafka record
# lands here. Kafka coordinates are null for rows from files, source_file/source_row null for Kafka records.
QUARANTINE = StructType(
    [
        StructField("raw", StringType()),
        StructField("reason", StringType()),
        StructField("source_file", StringType()),
        StructField("source_row", LongType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("quarantined_at", TimestampType()),
    ]
)

# One model input as the batch preparation writes it (Delta tables train/validation/test) and as the stream
# job assembles it before scoring. `features` is (T, F): the T most recent flows of `key` up to and including
# this one, oldest first, z-scored with the stored statistics; rows before the key's first flow are zeros with
# mask False (left padding, so the scored flow is always the last row).
PREPARED_SAMPLE = StructType(
    [
        StructField("features", ArrayType(ArrayType(FloatType(), False), False)),
        StructField("mask", ArrayType(BooleanType(), False)),
        StructField("is_attack", IntegerType()),  # binary label: 0 benign, 1 attack
        StructField("attack_type", StringType()),  # canonical attack type, "BENIGN" for benign
        StructField("key", StringType()),  # the grouping key of the sequence (e.g. src_ip)
        StructField("event_time", TimestampType()),
        StructField("source_file", StringType()),
        StructField("source_row", LongType()),
    ]
)

# ------------------------------------------------------------------ the stream job's Delta tables (OUT/tables/)

# The few flow features kept beside the scores in flows_scored (the full vector stays in Kafka's retention).
KEY_FEATURES = ["flow_duration", "total_fwd_packets", "total_bwd_packets", "total_length_fwd_packets",
                "total_length_bwd_packets", "flow_bytes_per_s", "flow_packets_per_s"]

_KAFKA_COORDINATES = [
    StructField("topic", StringType()),
    StructField("partition", IntegerType()),
    StructField("offset", LongType()),
    StructField("kafka_timestamp", TimestampType()),
]

# Every valid flow the stream job scored, once (exactly-once by Kafka coordinates).
FLOWS_SCORED = StructType(
    [_identifier_field(c) for c in IDENTIFIER_COLUMNS]
    + [StructField("event_time", TimestampType()), StructField("key", StringType())]
    + [StructField(c, DoubleType()) for c in KEY_FEATURES]
    + [
        StructField("label", StringType()),  # as replayed (null when the source carries none)
        StructField("true_attack_type", StringType()),  # canonical form of label
        StructField("attack_prob", FloatType()),
        StructField("is_attack", IntegerType()),  # the model's decision: attack_prob >= threshold
        StructField("attack_type", StringType()),  # the model's attack type ("BENIGN" below the threshold)
        StructField("model_version", StringType()),
        StructField("batch_id", LongType()),
        StructField("scored_at", TimestampType()),  # when the micro-batch's write began (commit follows)
    ]
    + PROVENANCE_FIELDS
    + _KAFKA_COORDINATES
)

# The flows_scored columns Delta keeps min/max statistics of (data skipping): what queries filter on. Statistics
# of every column (Delta's default: the first 32) cost the stream about a second per 50,000-flow micro-batch.
FLOWS_SCORED_STATS_COLUMNS = ["event_time", "kafka_timestamp", "batch_id", "src_ip", "dst_ip", "key", "is_attack",
                              "attack_type", "true_attack_type"]

# Flows at or above the threshold, shaped after Suricata EVE / ECS alert events. alert_id (derived from the
# Kafka coordinates) is also the key of the JSON message on the alerts topic: consumers dedupe on it.
ALERTS = StructType(
    [
        StructField("alert_id", StringType()),
        StructField("timestamp", TimestampType()),  # the flow's event time, else its Kafka timestamp
        StructField("flow_id", StringType()),
        StructField("community_id", StringType()),  # Community ID v1 (seed 0), null without IPs
        StructField("src_ip", StringType()),
        StructField("src_port", IntegerType()),
        StructField("dest_ip", StringType()),
        StructField("dest_port", IntegerType()),
        StructField("proto", StringType()),  # TCP / UDP / ICMP / the IANA number
        StructField("category", StringType()),  # attack type
        StructField("severity", IntegerType()),  # 1 high (score >= 0.99), 2 medium (>= 0.9), 3 low
        StructField("score", FloatType()),
        StructField("model_version", StringType()),
        StructField("explanation", StringType()),  # the flow's most unusual features (|z-score|), top first
        StructField("key", StringType()),
        StructField("batch_id", LongType()),
    ]
    + _KAFKA_COORDINATES
)

# The stream job's Delta tables (OUT/tables/<name>): what jobs/stream_detect.py creates and writes and what
# jobs/sql.py registers as views.
TABLE_SCHEMAS: dict[str, StructType] = {"flows_scored": FLOWS_SCORED, "alerts": ALERTS, "quarantine": QUARANTINE}

# Per host (the sequence key) per event-time window (stream.host_window): a view over flows_scored
# (jobs.sql.host_windows), registered beside the tables; the stream job writes no table for it.
HOST_WINDOWS = StructType(
    [
        StructField("host", StringType()),
        StructField("window_start", TimestampType()),
        StructField("window_end", TimestampType()),
        StructField("flows", LongType()),
        StructField("alerts", LongType()),
        StructField("bytes", DoubleType()),
        StructField("distinct_dst_ports", IntegerType()),
        StructField("dst_ports", ArrayType(IntegerType())),
        StructField("updated_batch_id", LongType()),
    ]
)


if __name__ == "__main__":
    print(flow_message_avsc(), end="")
