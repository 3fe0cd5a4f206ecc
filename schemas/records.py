"""Spark schemas of the records that cross a boundary: the Kafka flow message and the Delta tables.

Declared from the column lists in :mod:`schemas.flows`, never retyped elsewhere.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
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
