"""Cleaning rules: the reject reason of each row (the rules are listed in jobs/lib/prep/__init__.py).

:func:`with_checks` is the one validation path that batch, stream and evaluation share.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType

from jobs.lib.config import Config, ConfigError
from jobs.lib.prep.keys import parse_event_time, with_sequence_key
from jobs.lib.prep.labels import _names, attack_type_of, with_labels
from schemas.flows import (
    FEATURE_COLUMNS,
    IDENTIFIER_COLUMNS,
    LABEL_COLUMN,
    NON_NEGATIVE_COLUMNS,
    RATE_COLUMNS,
)

# Columns read_flows adds beside the FLOW_RECORD ones.
RAW = "raw"  # the line as it stands in the file (the Kafka message for the stream job); kept for quarantine


PARSE_ERROR = "parse_error"  # null, or the reason the CSV parser could not read the line (see rule 2 and 4)


REJECT_REASON = "reject_reason"


EMPTY_ROW = "empty_row"


FIELD_COUNT = "field_count"


MALFORMED_ROW = "malformed_row"


MISSING_LABEL = "missing_label"


UNKNOWN_LABEL = "unknown_label"


UNPARSEABLE_NUMBER = "unparseable_number"


MISSING_VALUE = "missing_value"


NONFINITE_VALUE = "nonfinite_value"


NONFINITE_RATE = "nonfinite_rate"


NEGATIVE_COUNTER = "negative_counter"


UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"


INVALID_IDENTIFIER = "invalid_identifier"


DUPLICATE = "duplicate"


# Reason categories in the order the rules are checked (the report lists them in this order).
REJECT_REASONS = [EMPTY_ROW, FIELD_COUNT, MALFORMED_ROW, MISSING_LABEL, UNKNOWN_LABEL, UNPARSEABLE_NUMBER,
                  MISSING_VALUE, NONFINITE_VALUE, NONFINITE_RATE, NEGATIVE_COUNTER, UNPARSEABLE_TIMESTAMP,
                  INVALID_IDENTIFIER, DUPLICATE]


# For the impute policy: the counts each rate divides by the duration (CICFlowMeter's definitions).
RATE_NUMERATORS: dict[str, list[str]] = {
    "flow_bytes_per_s": ["total_length_fwd_packets", "total_length_bwd_packets"],
    "flow_packets_per_s": ["total_fwd_packets", "total_bwd_packets"],
}


MICROSECONDS_PER_SECOND = 1e6


def reason_category(reason: Column) -> Column:
    """``negative_counter: flow_duration`` -> ``negative_counter``."""
    return F.substring_index(reason, ":", 1)


_NEVER = -1.2345678901234567e308  # a double no flow feature takes


def _first_named(values: Column, columns: Sequence[str], test: Any, reason: str) -> Column:
    """'<reason>: <column>' for the first of ``columns`` (whose values are the array ``values``) that passes
    ``test`` (a function of a Column), else null.

    An array and a higher-order function keep the expression small whatever the number of columns (CASE chains
    over 77 columns make Spark's optimizer and code generator crawl); it is evaluated only for the rare rows a
    cheap probe has already flagged.
    """
    position = F.array_position(F.transform(values, lambda x: F.coalesce(test(x), F.lit(False))), True)
    names = _names([f"{reason}: {c}" for c in columns])
    return F.when(position > 0, F.element_at(names, position.cast(IntegerType())))


def _policy(cfg: Config) -> str:
    policy = cfg.prep.nonfinite_policy
    if policy not in ("drop", "impute"):
        raise ConfigError(f"config key prep.nonfinite_policy: expected 'drop' or 'impute', got {policy!r}")
    return policy


def _nonfinite(c: Column) -> Column:
    return F.isnan(c) | (F.abs(c) == float("inf"))


def impute_rates(df: DataFrame) -> DataFrame:
    """Replace NaN/+-Infinity in the rate columns by ``count * 1e6 / max(flow_duration, 1)`` (rule 6)."""
    duration = F.greatest(F.col("flow_duration"), F.lit(1.0))
    replaced = {}
    for rate in RATE_COLUMNS:
        count = reduce(lambda a, b: a + b, [F.col(c) for c in RATE_NUMERATORS[rate]])
        replaced[rate] = (F.when(_nonfinite(F.col(rate)), count * MICROSECONDS_PER_SECOND / duration)
                          .otherwise(F.col(rate)))
    return df.withColumns(replaced)


# Identifier rules (rule 9). The longest real CICIDS2017 flow id is 38 characters; two IPv6 addresses, two ports
# and a protocol need at most 95.
MAX_FLOW_ID_LENGTH = 128


MAX_SOURCE_FILE_LENGTH = 255  # a file name (ext4, NTFS and APFS limit)


PORT_RANGE, PROTOCOL_RANGE = (0, 65535), (0, 255)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"


_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"


_HEX_GROUPS = r"([0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4})*)"


_FLOW_ID = r"^[0-9a-fA-F.:]{2,39}-[0-9a-fA-F.:]{2,39}-[0-9]{1,5}-[0-9]{1,5}-[0-9]{1,3}$"


def is_ip_address(ip: Column) -> Column:
    """True where the text is an IPv4 or IPv6 address as Python's ``ipaddress.ip_address`` reads it (no zone
    index), false otherwise, null for null; a Spark expression, so it costs no Python round trip per row.

    IPv6: an IPv4 tail counts as two groups; without ``::`` exactly eight groups, with one ``::`` at most seven
    written groups (``::`` then stands for at least one)."""
    hex_form = F.regexp_replace(ip, rf":{_IPV4}$", ":0:0")
    written = F.size(F.filter(F.split(hex_form, ":"), lambda g: g != ""))
    ipv6 = (F.length(ip) <= 45) & ~hex_form.contains(".") & (
        hex_form.rlike(r"^([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$")
        | (hex_form.rlike(rf"^{_HEX_GROUPS}?::{_HEX_GROUPS}?$") & (written <= 7)))
    return F.when(ip.rlike(rf"^{_IPV4}$"), F.lit(True)).otherwise(ipv6)


def _identifier_checks(df: DataFrame) -> list[Column]:
    """``invalid_identifier: col`` for the first identifier present in ``df`` that is not one (rule 9)."""
    col = F.col
    checks: dict[str, Column] = {}
    for name, (low, high) in (("src_port", PORT_RANGE), ("dst_port", PORT_RANGE), ("protocol", PROTOCOL_RANGE)):
        checks[name] = ~col(name).between(low, high)
    for name in ("src_ip", "dst_ip"):
        checks[name] = ~is_ip_address(col(name))
    checks["flow_id"] = (F.length(col("flow_id")) > MAX_FLOW_ID_LENGTH) | ~col("flow_id").rlike(_FLOW_ID)
    checks["source_file"] = F.length(col("source_file")) > MAX_SOURCE_FILE_LENGTH
    order = [*IDENTIFIER_COLUMNS, "source_file"]
    return [F.when(checks[name], F.lit(f"{INVALID_IDENTIFIER}: {name}"))
            for name in order if name in checks and name in df.columns]


def with_reject_reason(df: DataFrame, cfg: Config) -> DataFrame:
    """Adds ``reject_reason`` (null = valid) by the rules in the module docstring; row-level, stream-safe.

    Works on what :func:`read_flows` returns and on typed records parsed from Kafka (FLOW_RECORD columns; the
    optional ``raw`` and ``parse_error`` columns are used when present, and so are ``attack_type`` from
    :func:`with_labels` and ``event_time`` from :func:`with_sequence_key`, which saves matching each label and
    parsing each timestamp twice). With ``prep.nonfinite_policy = "impute"`` the
    rate columns come back imputed.
    """
    policy = _policy(cfg)
    if policy == "impute":
        df = impute_rates(df)
    col = F.col
    label = col(LABEL_COLUMN)
    if RAW in df.columns:
        empty = col(RAW).isNull() | col(RAW).rlike(r"^[\s,]*$")
    else:
        # array_max skips nulls: it is null only when every feature is.
        empty = F.array_max(col("_values")).isNull() & (label.isNull() | (F.trim(label) == ""))
    parse_error = col(PARSE_ERROR) if PARSE_ERROR in df.columns else F.lit(None).cast(StringType())

    # Cheap whole-row probes decide whether the per-column checks run at all. array_max is NaN when any value
    # is NaN (Spark orders NaN above everything); arrays_overlap with a value that never occurs is null exactly
    # when the array holds a null.
    values, nonneg = col("_values"), col("_nonneg")
    has_null = F.arrays_overlap(values, F.array(F.lit(_NEVER))).isNull()
    highest, lowest = F.array_max(values), F.array_min(values)
    has_nonfinite = F.isnan(highest) | (highest == float("inf")) | (lowest == float("-inf"))
    nonfinite_names = [f"{NONFINITE_RATE if c in RATE_COLUMNS else NONFINITE_VALUE}: {c}" for c in FEATURE_COLUMNS]
    position = F.array_position(F.transform(values, lambda x: F.coalesce(_nonfinite(x), F.lit(False))), True)
    nonfinite = F.when(position > 0, F.element_at(_names(nonfinite_names), position.cast(IntegerType())))
    checks = [
        F.when(empty, F.lit(EMPTY_ROW)),
        F.when(parse_error.isin(FIELD_COUNT, MALFORMED_ROW), parse_error),
        F.when(label.isNull() | (F.trim(label) == ""), F.lit(MISSING_LABEL)),
        F.when((col("attack_type") if "attack_type" in df.columns else attack_type_of(label)).isNull(),
               F.lit(UNKNOWN_LABEL)),
        F.when(parse_error.isNotNull(), parse_error),
        F.when(has_null, _first_named(values, FEATURE_COLUMNS, lambda x: x.isNull(), MISSING_VALUE)),
        F.when(has_nonfinite, nonfinite),
        F.when(F.array_min(nonneg) < 0, _first_named(nonneg, NON_NEGATIVE_COLUMNS, lambda x: x < 0,
                                                     NEGATIVE_COUNTER)),
    ]
    if "timestamp" in df.columns:
        present = col("timestamp").isNotNull() & (F.trim(col("timestamp")) != "")
        event_time = (col("event_time") if "event_time" in df.columns
                      else parse_event_time(col("timestamp"), cfg.prep.cicids_12h_clock))
        unparsed = event_time.isNull()
        checks.append(F.when(present & unparsed, F.lit(UNPARSEABLE_TIMESTAMP)))
    checks += _identifier_checks(df)
    arrays = {"_values": F.array(*[col(c) for c in FEATURE_COLUMNS]),
              "_nonneg": F.array(*[col(c) for c in NON_NEGATIVE_COLUMNS])}
    return df.withColumns(arrays).withColumn(REJECT_REASON, F.coalesce(*checks)).drop(*arrays)


def with_checks(df: DataFrame, cfg: Config) -> DataFrame:
    """The row-level steps every job runs on raw flows, batch, stream and evaluation alike: :func:`with_labels`,
    :func:`with_sequence_key`, then :func:`with_reject_reason`, which reuses their ``attack_type`` and
    ``event_time`` instead of matching each label and parsing each timestamp again."""
    return with_reject_reason(with_sequence_key(with_labels(df), cfg), cfg)
