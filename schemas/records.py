"""Spark schemas of the records that cross a boundary: the Kafka flow message and the Delta tables.

Declared from the column lists in :mod:`schemas.flows`, never retyped elsewhere.
"""

from __future__ import annotations

from pyspark.sql.types import (
    DoubleType,
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
