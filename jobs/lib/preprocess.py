"""The one preprocessing module: batch preparation, the stream job and evaluation all call these functions.

Every transform is a pure ``DataFrame -> DataFrame`` function (only :func:`read_flows` / :func:`read_flow_lines`
read, and :func:`fit_zscore` / :func:`with_split` run small aggregations). The row-level ones
(:func:`with_reject_reason`, :func:`with_labels`, :func:`apply_zscore`, :func:`with_sequence_key`, and
:func:`with_checks`, which runs the first three in the order every job uses) use neither
aggregations nor window functions, so they work unchanged on streaming DataFrames. :func:`assemble_sequences`
is the numpy twin of :func:`build_sequences` for the stream job's per-key state.

Cleaning rules, checked in this order; the first that applies is the row's ``reject_reason`` (``category`` or
``category: column``) and the row goes to quarantine:

1. ``empty_row``: the line holds nothing but commas and blanks (or, for typed records, no value at all).
2. ``field_count``: the line does not have as many comma-separated fields as its file's header.
   ``malformed_row``: the CSV parser rejected it for another reason (e.g. an unclosed quote).
3. ``missing_label``: the label is empty. ``unknown_label``: no canonical attack type matches it
   (:func:`schemas.labels.canonical_attack_type`).
4. ``unparseable_number: col``: a numeric cell holds text that is not a number.
5. ``missing_value: col``: a feature cell is empty.
6. ``nonfinite_value: col``: NaN or +-Infinity in a feature that is not a rate; always rejected.
   ``nonfinite_rate: col``: NaN or +-Infinity in a rate column (``RATE_COLUMNS``), only with
   ``prep.nonfinite_policy = "drop"``. With ``"impute"`` (the default) the rate is recomputed as if the flow
   had lasted one microsecond, CICFlowMeter's clock resolution: ``count * 1e6 / max(flow_duration, 1)``, where
   count is the flow's bytes (Flow Bytes/s) or packets (Flow Packets/s). CICFlowMeter writes Infinity/NaN
   exactly when the duration is 0, so 0 bytes give 0 and n packets give n * 1e6, in line with the finite rates
   of 1 us flows. The row stays valid, so the detector still scores zero-duration flows (single-packet probes).
7. ``negative_counter: col``: a negative value in ``NON_NEGATIVE_COLUMNS`` (packet and byte counts, lengths,
   flag counts, the duration). IAT minima and ``Init_Win_bytes_*`` (-1 = not seen) are legitimately negative in
   CICFlowMeter output and are not checked.
8. ``unparseable_timestamp``: a timestamp is present but matches none of the known spellings.
9. ``invalid_identifier: col``: an identifier that is present but not one: a port outside 0-65535, a protocol
   outside 0-255, an IP address that is not IPv4 (dotted quad, no leading zeros) or IPv6 (RFC 4291 text, an
   embedded IPv4 tail allowed, no zone index), a flow id that is not ``<ip>-<ip>-<port>-<port>-<protocol>``
   (CICFlowMeter's form) or longer than ``MAX_FLOW_ID_LENGTH``, a ``source_file`` longer than
   ``MAX_SOURCE_FILE_LENGTH``. Null identifiers are valid (79-column files have only dst_port): only what is
   there is checked, with Spark expressions (no Python UDF: this runs on every row).

Exact duplicate rows (all columns equal, provenance aside) are dropped after validation, keeping the first in
file order (``duplicate`` in the report).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, IntegerType, StringType

from jobs.lib.config import Config, ConfigError
from jobs.lib.flow_io import list_csv_files
from schemas.flows import (
    FEATURE_COLUMNS,
    IDENTIFIER_COLUMNS,
    INTEGER_IDENTIFIERS,
    LABEL_COLUMN,
    NON_NEGATIVE_COLUMNS,
    RATE_COLUMNS,
    SchemaError,
    canonical_headers,
)
from schemas.labels import ALIASES, ATTACK_TYPES, BENIGN, LABEL_KEY_PATTERN, LABEL_MAP
from schemas.records import FLOW_RECORD

# Columns read_flows adds beside the FLOW_RECORD ones.
RAW = "raw"  # the line as it stands in the file (the Kafka message for the stream job); kept for quarantine
PARSE_ERROR = "parse_error"  # null, or the reason the CSV parser could not read the line (see rule 2 and 4)
REJECT_REASON = "reject_reason"
SPLITS = ("train", "validation", "test")

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

# Internal columns of read_flow_lines: which scan a line came from, its file, its file split and its position.
_GROUP, _PATH, _BLOCK, _LINE = "_group", "_path", "_block", "_line"
_CORRUPT = "_corrupt_record"
_FP1, _FP2 = "_fp1", "_fp2"
_NUMERIC_RECORD_COLUMNS = [*FEATURE_COLUMNS, *INTEGER_IDENTIFIERS]
_TYPES: dict[str, DataType] = {f.name: f.dataType for f in FLOW_RECORD.fields}


def reason_category(reason: Column) -> Column:
    """``negative_counter: flow_duration`` -> ``negative_counter``."""
    return F.substring_index(reason, ":", 1)


# --------------------------------------------------------------------------------------------------- reading

def _read_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            header = next(csv.reader(fh), None)
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not header:
        raise SchemaError(f"{path}: empty file, no header")
    return header


def _unique(names: Sequence[str]) -> list[str]:
    """Unknown extra columns may share a snake_case name; the CSV parser needs distinct field names."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _csv_schema(names: Sequence[str]) -> str:
    def ddl_type(name: str) -> str:
        if name in FEATURE_COLUMNS:
            return "DOUBLE"
        if name in INTEGER_IDENTIFIERS:
            return "INT"
        return "STRING"

    return ", ".join([*(f"`{n}` {ddl_type(n)}" for n in names), f"`{_CORRUPT}` STRING"])


# Trimming makes ' 80' an int and ' BENIGN' a label; 'Infinity' and 'NaN' parse as doubles (Java's parser).
_CSV_OPTIONS = {"mode": "PERMISSIVE", "ignoreLeadingWhiteSpace": "true", "ignoreTrailingWhiteSpace": "true",
                "columnNameOfCorruptRecord": _CORRUPT}


def _diagnose(names: Sequence[str]) -> Column:
    """Why the CSV parser flagged a line; evaluated only for the (rare) flagged lines."""
    cells = F.split(F.col(RAW), ",", -1)
    unparseable = [
        F.when(F.col(f"_r.{name}").isNull() & (F.trim(F.get(cells, i)) != ""),
               F.lit(f"{UNPARSEABLE_NUMBER}: {name}"))
        for i, name in enumerate(names) if name in _NUMERIC_RECORD_COLUMNS
    ]
    return (F.when(F.size(cells) != len(names), F.lit(FIELD_COUNT))
            .otherwise(F.coalesce(*unparseable, F.lit(MALFORMED_ROW))))


def _parse_group(spark: SparkSession, group: int, names: list[str], paths: list[str]) -> DataFrame:
    # Reading lines as text keeps each raw line for quarantine; from_csv then parses them with the same parser
    # as Spark's CSV source. The scan position (file split start + monotonically_increasing_id, which counts
    # up within a split) is the only record of line order Spark keeps: number_lines turns it into row numbers.
    # from_csv sits in the same projection as the (nondeterministic) scan position on purpose: Spark pushes no
    # filter below it, so a filter on a column derived from the parsed fields (reject_reason) cannot inline
    # one from_csv call per field reference into the filter condition.
    parsed = spark.read.text(paths).select(
        F.col("value").alias(RAW),
        F.lit(group).alias(_GROUP),
        F.col("_metadata.file_path").alias(_PATH),
        F.col("_metadata.file_name").alias("source_file"),
        F.col("_metadata.file_block_start").alias(_BLOCK),
        F.monotonically_increasing_id().alias(_LINE),
        F.from_csv(F.col("value"), _csv_schema(names), _CSV_OPTIONS).alias("_r"),
    )
    present = set(names)
    record = [
        (F.col(f"_r.{c.name}") if c.name in present else F.lit(None)).cast(c.dataType).alias(c.name)
        for c in FLOW_RECORD.fields if c.name not in ("source_file", "source_row")
    ]
    return parsed.select(
        *record, RAW, _GROUP, _PATH, "source_file", _BLOCK, _LINE,
        F.when(F.col(f"_r.{_CORRUPT}").isNotNull(), _diagnose(names)).alias(PARSE_ERROR),
    )


def read_flow_lines(spark: SparkSession, input_path: str | Path) -> DataFrame:
    """Every line of every CSV file (header lines included) parsed into FLOW_RECORD columns, without row numbers.

    The lower-level half of :func:`read_flows`, for jobs that stage the parsed lines before numbering them
    (numbering needs one aggregation over the scan: :func:`line_blocks`, then :func:`number_lines`).
    Files are grouped by header so that each distinct layout is one scan. Raises SchemaError naming the file
    and the column, before any Spark job runs, when a file cannot be read or lacks a required column.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in list_csv_files(input_path):
        names = _unique(canonical_headers(_read_header(path), source=str(path)))
        groups.setdefault(tuple(names), []).append(str(path.resolve()))
    frames = [_parse_group(spark, i, list(names), paths) for i, (names, paths) in enumerate(groups.items())]
    return reduce(DataFrame.unionByName, frames)


def line_blocks(lines: DataFrame) -> list[tuple[int, str, int, int]]:
    """(group, path, split start, offset) per file split, offset = lines of the file before the split minus the
    split's first scan position; one aggregation, and as many rows as file splits (a few per 128 MB)."""
    blocks = lines.groupBy(_GROUP, _PATH, _BLOCK).agg(F.min(_LINE).alias("_first"),
                                                       F.count(F.lit(1)).alias("_n")).collect()
    out, before = [], 0
    previous: tuple[int, str] | None = None
    for row in sorted(blocks, key=lambda r: (r[_GROUP], r[_PATH], r[_BLOCK])):
        if (row[_GROUP], row[_PATH]) != previous:
            previous, before = (row[_GROUP], row[_PATH]), 0
        out.append((int(row[_GROUP]), str(row[_PATH]), int(row[_BLOCK]), before - int(row["_first"])))
        before += int(row["_n"])
    return out


def number_lines(lines: DataFrame, blocks: Sequence[tuple[int, str, int, int]]) -> DataFrame:
    """Adds ``source_row`` (1 = first line after the header, blank lines counted) and drops the header lines.

    A lookup in a literal map rather than a join: a join here lets Spark's constraint inference copy the large
    validation expressions of a later filter into both sides of the join, and planning then takes minutes.
    """
    sep = "\x1f"
    split_key = F.concat_ws(sep, F.col(_GROUP).cast("string"), F.col(_PATH), F.col(_BLOCK).cast("string"))
    offsets = F.map_from_arrays(
        F.split(F.lit("\x1e".join(sep.join(map(str, b[:3])) for b in blocks)), "\x1e"),
        F.split(F.lit(",".join(str(b[3]) for b in blocks)), ",").cast("array<bigint>"))
    numbered = lines.withColumn("source_row", F.col(_LINE) + F.element_at(offsets, split_key))
    return numbered.where(F.col("source_row") > 0)


def read_flows(spark: SparkSession, input_path: str | Path) -> DataFrame:
    """CICFlowMeter CSV (a file, a folder or a glob; either layout, mixed) -> one row per data line.

    Columns: FLOW_RECORD (79-column files leave the identifiers other than dst_port null), ``source_file`` and
    ``source_row`` (1-based line number after the header; blank lines count, as in
    :func:`jobs.lib.flow_io.iter_flow_records`), ``raw`` (the line) and ``parse_error`` (null, or why the line
    could not be parsed; :func:`with_reject_reason` turns it into the reject reason). A value that is not a
    number is null in its column and named in ``parse_error``: it never fails the job. Runs one small
    aggregation over the lines (their positions) to number them.
    """
    lines = read_flow_lines(spark, input_path)
    numbered = number_lines(lines, line_blocks(lines))
    return numbered.select(*[c.name for c in FLOW_RECORD.fields], RAW, PARSE_ERROR)


# -------------------------------------------------------------------------------------------- validation

def _label_key(label: Column) -> Column:
    return F.regexp_replace(F.lower(label), LABEL_KEY_PATTERN, "")


def attack_type_of(label: Column) -> Column:
    """Canonical attack type of a raw label column (null when unknown); the Spark twin of
    :func:`schemas.labels.canonical_attack_type`."""
    keys, types = zip(*sorted(ALIASES.items()), strict=True)
    mapping = F.map_from_arrays(_names(keys), _names(types))
    return F.try_element_at(mapping, _label_key(label))


# Spellings of CICIDS2017 timestamps: TrafficLabelling writes day/month/year ('7/7/2017 3:56', Monday's file
# '03/07/2017 08:55:58'); ISO forms come from other tools and from the stream's own messages.
_DAY_FIRST_FORMATS = ["d/M/yyyy H:mm:ss", "d/M/yyyy H:mm"]
_ISO_FORMATS = ["yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm:ss.SSSSSS",
                "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"]


def parse_event_time(timestamp: Column, cicids_12h_clock: bool = True) -> Column:
    """Timestamp text -> timestamp (null when absent or unparseable).

    CICIDS2017 writes a 12-hour clock without AM/PM in its day-first timestamps (the Friday DDoS of 15:56 reads
    '7/7/2017 3:56'); its captures ran from about 8:00 to 18:00, so with ``cicids_12h_clock`` an hour from 1 to 7
    in a day-first timestamp is read as the afternoon. ISO timestamps are taken as written. Naive times, read in
    the session time zone (UTC in conf/defaults.toml).
    """
    text = F.trim(timestamp)

    def parse(spelling: str) -> Column:
        return F.try_to_timestamp(text, F.lit(spelling))

    # Only the one format whose separators the text has is tried: any other would fail on them anyway, and a
    # failed try costs a parse exception (trying them in turn made this the dearest column of the stream's parse).
    day_first_with_seconds, day_first_minutes = _DAY_FIRST_FORMATS
    iso_space, iso_t, iso_space_fraction, iso_t_fraction = _ISO_FORMATS
    slash, t, fraction = text.contains("/"), text.contains("T"), text.contains(".")
    day_first = (F.when(slash & text.rlike(":.*:"), parse(day_first_with_seconds))
                 .when(slash, parse(day_first_minutes)))
    if cicids_12h_clock:
        day_first = F.when(F.hour(day_first).between(1, 7),
                           day_first + F.expr("INTERVAL 12 HOURS")).otherwise(day_first)
    iso = (F.when(slash, F.lit(None).cast("timestamp"))
           .when(fraction, F.when(t, parse(iso_t_fraction)).otherwise(parse(iso_space_fraction)))
           .when(t, parse(iso_t)).otherwise(parse(iso_space)))
    return F.coalesce(day_first, iso)


_NEVER = -1.2345678901234567e308  # a double no flow feature takes


def _names(items: Sequence[str]) -> Column:
    """An array<string> literal as one small expression (constant-folded), not one node per element."""
    return F.split(F.lit("\x1f".join(items)), "\x1f")


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


def with_labels(df: DataFrame) -> DataFrame:
    """Adds ``attack_type`` (canonical, null for an unknown label) and ``is_attack`` (0 benign, 1 attack)."""
    attack_type = attack_type_of(F.col(LABEL_COLUMN))
    return df.withColumns({
        "attack_type": attack_type,
        "is_attack": F.when(attack_type == BENIGN, 0).when(attack_type.isNotNull(), 1).cast(IntegerType()),
    })


# ------------------------------------------------------------------------------------------------ features

def feature_columns(cfg: Config) -> list[str]:
    """The model's input columns, in order: the ``[features]`` set named by ``prep.feature_set``.

    ``all`` (empty in the conf) is every CICFlowMeter feature of schemas.flows except the second
    ``Fwd Header Length``, a byte-for-byte copy of the first. Identifiers (IPs, ports, flow id, timestamp) are
    refused: in CICIDS2017 they name the testbed's machines, not attack behaviour.
    """
    name = cfg.prep.feature_set
    sets = cfg.features
    if name not in sets:
        raise ConfigError(f"config key prep.feature_set: unknown set {name!r}; known {sorted(sets)}")
    columns = list(sets[name]) or [c for c in FEATURE_COLUMNS if c != "fwd_header_length_dup"]
    for c in columns:
        if c in IDENTIFIER_COLUMNS:
            raise ConfigError(f"config key features.{name}: {c!r} is an identifier, never a model input")
        if c not in FEATURE_COLUMNS:
            raise ConfigError(f"config key features.{name}: unknown column {c!r} (see schemas/flows.py)")
    if len(set(columns)) != len(columns):
        raise ConfigError(f"config key features.{name}: a column is listed twice")
    return columns


# ----------------------------------------------------------------------------------------------- z-score

NORM_STATS_VERSION = 1
TRANSFORMS = ("signed_log1p", "none")
MIN_STD = 1e-9  # below this a feature counts as constant: std 1, so it is only centred


@dataclass(frozen=True)
class NormStats:
    """Per-feature z-score statistics fitted on the training split; the artifact that travels with the model.

    ``z = clip((t(x) - mean) / std, -clip, clip)`` with ``t`` the transform: ``signed_log1p`` =
    ``sign(x) * log1p(|x|)`` (default; CICFlowMeter's byte counts, rates and durations span ten orders of
    magnitude, and without it a handful of huge flows set the scale for all) or ``none``. ``mean`` and ``std``
    are of ``t(x)`` (population std). A feature constant on the training split gets ``std = 1``. Clipping to
    +-clip bounds what an unseen extreme value can do to the network.
    """

    features: list[str]
    mean: list[float]
    std: list[float]
    clip: float = 10.0
    transform: str = "signed_log1p"
    count: int = 0  # training rows the statistics were computed on
    version: int = NORM_STATS_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"NormStats: {n} features but {len(self.mean)} means and {len(self.std)} stds")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"NormStats: unknown transform {self.transform!r}; known {TRANSFORMS}")
        if not self.clip > 0:
            raise ValueError(f"NormStats: clip must be > 0, got {self.clip}")
        if any(not (math.isfinite(s) and s > 0) for s in self.std) or not all(map(math.isfinite, self.mean)):
            raise ValueError("NormStats: means must be finite and stds finite and > 0")

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "features": list(self.features), "mean": list(self.mean),
                           "std": list(self.std), "clip": self.clip, "transform": self.transform,
                           "count": self.count, "extra": self.extra}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> NormStats:
        data = json.loads(text)
        version = data.get("version")
        if version != NORM_STATS_VERSION:
            raise ValueError(f"NormStats: version {version!r} is not the supported {NORM_STATS_VERSION}")
        return cls(features=list(data["features"]), mean=[float(x) for x in data["mean"]],
                   std=[float(x) for x in data["std"]], clip=float(data["clip"]), transform=data["transform"],
                   count=int(data.get("count", 0)), extra=dict(data.get("extra", {})))

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        """(n, F) raw features in ``self.features`` order -> (n, F) float32 z-scores; the twin of apply_zscore."""
        x = transform_numpy(np.asarray(x, dtype=np.float64), self.transform)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)


def transform_numpy(x: np.ndarray, transform: str) -> np.ndarray:
    """The numpy twin of :func:`_transform`: ``signed_log1p`` or ``none`` before the z-score."""
    return np.sign(x) * np.log1p(np.abs(x)) if transform == "signed_log1p" else x


def _transform(c: Column, transform: str) -> Column:
    return F.signum(c) * F.log1p(F.abs(c)) if transform == "signed_log1p" else c


def fit_zscore(df: DataFrame, features: Sequence[str], *, clip: float = 10.0,
               transform: str = "signed_log1p") -> NormStats:
    """Mean and std of each transformed feature in one distributed aggregation (run it on the training split)."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"config key prep.zscore_transform: expected one of {TRANSFORMS}, got {transform!r}")
    values = [_transform(F.col(c), transform) for c in features]
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 *[F.avg(v).alias(f"m{i}") for i, v in enumerate(values)],
                 *[F.stddev_pop(v).alias(f"s{i}") for i, v in enumerate(values)]).first()
    n = int(row["n"]) if row else 0
    if n == 0:
        raise ValueError("fit_zscore: no rows to fit on (is the training split empty?)")
    mean = [float(row[f"m{i}"]) for i in range(len(values))]
    std = [float(row[f"s{i}"]) for i in range(len(values))]
    std = [s if math.isfinite(s) and s >= MIN_STD else 1.0 for s in std]
    return NormStats(list(features), mean, std, clip=float(clip), transform=transform, count=n)


def apply_zscore(df: DataFrame, stats: NormStats) -> DataFrame:
    """Adds ``vector``: array<float> of z-scores in ``stats.features`` order (row-level, stream-safe).

    Expects validated rows (no nulls, finite values); each element is coalesced to 0 only so that Spark types the
    array as holding no nulls, as PREPARED_SAMPLE declares.
    """
    zero = F.lit(0.0).cast("float")
    elements = []
    for c, mean, std in zip(stats.features, stats.mean, stats.std, strict=True):
        z = (_transform(F.col(c), stats.transform) - F.lit(mean)) / F.lit(std)
        z = F.least(F.greatest(z, F.lit(-stats.clip)), F.lit(stats.clip))
        elements.append(F.coalesce(z.cast("float"), zero))
    return df.withColumn("vector", F.array(*elements))


# ------------------------------------------------------------------------------------------------ sequences

def sequence_settings(cfg: Config) -> dict[str, Any]:
    """What makes the model's input sequences; stored in prep_report.json and with the model."""
    return {"seq_len": int(cfg.prep.sequence_length), "key": cfg.prep.sequence_key,
            "key_fallback": "file:<source_file>", "order": ["event_time", "source_file", "source_row"],
            "cicids_12h_clock": bool(cfg.prep.cicids_12h_clock), "nonfinite_policy": _policy(cfg)}


def sequence_config_overrides(settings: Mapping[str, Any]) -> list[str]:
    """``--set`` flags that make this module build the inputs a model was trained on (from sequence_settings)."""
    keys = {"seq_len": "prep.sequence_length", "key": "prep.sequence_key",
            "cicids_12h_clock": "prep.cicids_12h_clock", "nonfinite_policy": "prep.nonfinite_policy"}
    out = []
    for name, dotted in keys.items():
        if name in settings:
            value = settings[name]
            out.append(f"{dotted}={str(value).lower() if isinstance(value, bool) else value}")
    return out


_KEY_COLUMNS = [*IDENTIFIER_COLUMNS, "source_file"]


def with_sequence_key(df: DataFrame, cfg: Config) -> DataFrame:
    """Adds ``key`` (the grouping key of the sequences) and ``event_time`` (row-level, stream-safe).

    ``key`` is the ``prep.sequence_key`` column (default src_ip) as text. Where a row has none (79-column files
    have no IPs) it is ``file:<source_file>``: the flows of one file form one sequence in file order, the only
    order such files keep. ``event_time`` is the parsed timestamp (:func:`parse_event_time`), null where there
    is none; ordering then falls back to (source_file, source_row).
    """
    name = cfg.prep.sequence_key
    if name not in _KEY_COLUMNS:
        raise ConfigError(f"config key prep.sequence_key: expected one of {_KEY_COLUMNS}, got {name!r}")
    value = F.trim(F.col(name).cast(StringType()))
    fallback = F.concat(F.lit("file:"), F.col("source_file"))
    key = fallback if name == "source_file" else F.when(value != "", value).otherwise(fallback)
    timestamp = F.col("timestamp") if "timestamp" in df.columns else F.lit(None).cast(StringType())
    return df.withColumns({"key": key, "event_time": parse_event_time(timestamp, cfg.prep.cicids_12h_clock)})


def with_checks(df: DataFrame, cfg: Config) -> DataFrame:
    """The row-level steps every job runs on raw flows, batch, stream and evaluation alike: :func:`with_labels`,
    :func:`with_sequence_key`, then :func:`with_reject_reason`, which reuses their ``attack_type`` and
    ``event_time`` instead of matching each label and parsing each timestamp again."""
    return with_reject_reason(with_sequence_key(with_labels(df), cfg), cfg)


def sequence_window(partition: str = "key") -> Any:
    """Event order within a key: event_time (nulls first), then file order."""
    return Window.partitionBy(partition).orderBy(F.col("event_time").asc_nulls_first(),
                                                 F.col("source_file"), F.col("source_row"))


def build_sequences(df: DataFrame, seq_len: int) -> DataFrame:
    """Adds ``features`` (T, F) and ``mask`` (T) as PREPARED_SAMPLE declares them.

    Row t of ``features`` is the key's flow t - (T-1) steps before this one in :func:`sequence_window` order, the
    scored flow last; rows before the key's first flow are zeros with mask False (left padding). Needs
    ``vector``, ``key``, ``event_time``, ``source_file``, ``source_row``. T=1 needs no window (no shuffle).
    """
    if seq_len < 1:
        raise ConfigError(f"config key prep.sequence_length: must be >= 1, got {seq_len}")
    vector = F.col("vector")
    if seq_len == 1:
        return df.withColumns({"features": F.array(vector), "mask": F.array(F.lit(True))})
    window = sequence_window()
    lags = {f"_lag{k}": F.lag(vector, k).over(window) for k in range(1, seq_len)}
    zeros = F.array_repeat(F.lit(0.0).cast("float"), F.size(vector))
    older = range(seq_len - 1, 0, -1)  # oldest first
    return df.withColumns(lags).withColumns({
        "features": F.array(*[F.coalesce(F.col(f"_lag{k}"), zeros) for k in older], vector),
        "mask": F.array(*[F.col(f"_lag{k}").isNotNull() for k in older], F.lit(True)),
    }).drop(*lags)


def assemble_sequences(history: np.ndarray, new: np.ndarray, seq_len: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy twin of :func:`build_sequences` for one key, for state kept across micro-batches.

    ``history`` (h, F): the key's latest earlier vectors, oldest first (only the last T-1 matter); ``new``
    (n, F): the key's new vectors in event order. Returns ``features`` (n, T, F) float32, ``mask`` (n, T) bool
    and the history to keep, (min(T-1, h+n), F).
    """
    new = np.asarray(new, dtype=np.float32)
    n, n_features = new.shape
    keep = seq_len - 1
    history = np.asarray(history, dtype=np.float32).reshape(-1, n_features)
    history = history[max(0, len(history) - keep):] if keep else history[:0]
    pad = keep - len(history)
    flows = np.concatenate([np.zeros((pad, n_features), np.float32), history, new])
    present = np.concatenate([np.zeros(pad, bool), np.ones(len(history) + n, bool)])
    windows = np.lib.stride_tricks.sliding_window_view(flows, seq_len, axis=0)  # (n, F, T)
    features = np.ascontiguousarray(windows.transpose(0, 2, 1))
    mask = np.lib.stride_tricks.sliding_window_view(present, seq_len).copy()
    real = np.concatenate([history, new])
    return features, mask, real[max(0, len(real) - keep):] if keep else real[:0]


# ----------------------------------------------------------------------------------- duplicates and splits

def with_fingerprint(df: DataFrame) -> DataFrame:
    """Adds ``_fp1``, ``_fp2``: a 128-bit hash of every FLOW_RECORD column but the provenance (the raw label
    included). Two rows are duplicates when both halves match: for 10^9 rows the chance that any two different
    rows collide is below 10^-20."""
    columns = [F.col(c.name) for c in FLOW_RECORD.fields if c.name not in ("source_file", "source_row")]
    # A constant first argument changes the starting state of the chained hash: a second, independent 64 bits.
    return df.withColumns({_FP1: F.xxhash64(*columns), _FP2: F.xxhash64(F.lit("flowsentinel:fp2"), *columns)})


def mark_duplicates(df: DataFrame) -> DataFrame:
    """Adds ``duplicate_of`` ('<file> row <n>' of the first identical row in file order; null for the first).

    Shuffles by fingerprint only: pass just the columns you need (fingerprints and provenance) when the rows are
    wide.
    """
    if _FP1 not in df.columns:
        df = with_fingerprint(df)
    group = Window.partitionBy(_FP1, _FP2)
    order = group.orderBy("source_file", "source_row")
    first = F.first(F.concat(F.col("source_file"), F.lit(" row "), F.col("source_row").cast("string"))).over(
        order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return df.withColumn("duplicate_of", F.when(F.row_number().over(order) > 1, first))


def _uniform(*columns: Column, seed: int) -> Column:
    """A deterministic pseudo-random number in [0, 1) from the columns' values."""
    h = F.xxhash64(F.lit(seed), *columns)
    return (h.bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF))).cast(DoubleType()) / float(2**63)


SPLIT_VECTOR_DECIMALS = 5
VECTOR_HASH = "_vh"  # vector_hash of the prep.feature_set columns, when a job staged it (with_split reuses it)


def vector_hash(features: Sequence[str]) -> Column:
    """Hash of a feature vector as the model can tell it apart: each value as signed_log1p rounded to
    SPLIT_VECTOR_DECIMALS places, so flows differing only beyond about the sixth significant digit (e.g. a
    duration of 64068604 vs 64068608 us, which become the same float32 z-score) count as one vector; -0.0 and
    0.0 hash alike.

    Rounds as numpy's ``np.round`` does (``rint(x * 10^d) / 10^d``), not with Spark's ``round``, which goes
    through a BigDecimal per value and took most of the split's time at CICIDS2017 size; the two differ only
    for a value within a rounding error of a tie."""
    scale = float(10**SPLIT_VECTOR_DECIMALS)
    return F.xxhash64(*[F.rint(_transform(F.col(c), "signed_log1p") * scale) / scale + F.lit(0.0)
                        for c in features])


def _split_fractions(cfg: Config) -> tuple[float, float]:
    train, validation = float(cfg.prep.train_fraction), float(cfg.prep.validation_fraction)
    if not (0 < train < 1 and 0 <= validation < 1 and train + validation < 1):
        raise ConfigError("config keys prep.train_fraction and prep.validation_fraction: need 0 < train < 1, "
                          f"0 <= validation and train + validation < 1, got {train} and {validation}")
    return train, train + validation


def with_split(df: DataFrame, cfg: Config) -> DataFrame:
    """Adds ``split`` (train / validation / test), seeded and stratified by attack type.

    Runs two small aggregations (the per-type thresholds, collected; the vectors whose rows would fall into two
    splits) and returns a lazy DataFrame. ``prep.split_mode``:

    - ``hash`` (default, leakage-aware): u = hash(seed, feature vector) in [0, 1); within each attack type the
      cut points are the train_fraction and train+validation quantiles of u, so every type gets its share and
      identical vectors of one type always land together. A vector that appears with several attack types would
      get a split per type: all its rows go to the earliest of them (train before validation before test), so
      no feature vector is ever in two splits.
    - ``temporal``: within each attack type, the earliest flows by event_time train and the latest test; rows
      without a timestamp fall back to ``hash``. Vectors seen at several times go to their earliest split.
    - ``random``: u = hash(seed, source_file, source_row), per row: the leaky baseline, for comparison only.

    Expects validated, de-duplicated rows with ``attack_type``, the feature columns, and for ``temporal``
    ``event_time``; a ``_vh`` column (:data:`VECTOR_HASH`) is taken as the vector hash instead of hashing again.
    """
    mode = cfg.prep.split_mode
    if mode not in ("hash", "temporal", "random"):
        raise ConfigError(f"config key prep.split_mode: expected hash, temporal or random, got {mode!r}")
    seed = int(cfg.prep.split_seed)
    cut1, cut2 = _split_fractions(cfg)
    features = feature_columns(cfg)
    vh = F.col(VECTOR_HASH) if VECTOR_HASH in df.columns else vector_hash(features)
    # random: per row (duplicated vectors may straddle splits); otherwise per feature vector.
    u = _uniform(F.col("source_file"), F.col("source_row"), seed=seed) if mode == "random" else _uniform(vh, seed=seed)
    stratum = F.col("attack_type")
    if mode == "temporal":
        timed = F.col("event_time").isNotNull()
        u = F.when(timed, F.unix_micros(F.col("event_time")).cast(DoubleType())).otherwise(u)
        stratum = F.concat(stratum, F.when(timed, F.lit("|t")).otherwise(F.lit("|h")))
    ranked = df.select(stratum.alias("_stratum"), u.alias("_u"), vh.alias(VECTOR_HASH))
    quantiles = ranked.groupBy("_stratum").agg(
        F.percentile_approx("_u", [cut1, cut2], 100000).alias("_q")).collect()
    first_cut, second_cut = F.lit(None).cast(DoubleType()), F.lit(None).cast(DoubleType())
    for row in quantiles:
        first_cut = F.when(F.col("_stratum") == row["_stratum"], F.lit(float(row["_q"][0]))).otherwise(first_cut)
        second_cut = F.when(F.col("_stratum") == row["_stratum"], F.lit(float(row["_q"][1]))).otherwise(second_cut)
    # percentile_approx returns values of the data: u at the cut itself belongs to the lower split.
    index = (F.when(F.col("_u") <= first_cut, 0).when(F.col("_u") <= second_cut, 1).otherwise(2))
    names = F.array(*[F.lit(s) for s in SPLITS])
    tagged = df.withColumns({"_stratum": stratum, "_u": u, VECTOR_HASH: vh}).withColumn("_split", index)
    if mode == "random":
        return tagged.withColumn("split", F.element_at(names, F.col("_split") + 1)).drop(
            "_stratum", "_u", VECTOR_HASH, "_split")
    spans = (tagged.groupBy(VECTOR_HASH).agg(F.min("_split").alias("_first_split"), F.max("_split").alias("_last"))
             .where(F.col("_first_split") != F.col("_last")).select(VECTOR_HASH, "_first_split"))
    joined = tagged.join(F.broadcast(spans), VECTOR_HASH, "left")
    final = F.coalesce(F.col("_first_split"), F.col("_split"))
    return joined.withColumn("split", F.element_at(names, final + 1)).drop(
        "_stratum", "_u", VECTOR_HASH, "_split", "_first_split")


def split(df: DataFrame, cfg: Config) -> dict[str, DataFrame]:
    """train / validation / test DataFrames by :func:`with_split` (cache its input if it is expensive)."""
    tagged = with_split(df, cfg)
    return {name: tagged.where(F.col("split") == name).drop("split") for name in SPLITS}


def label_map() -> list[str]:
    """The attack-type head's classes, index = class id (schemas.labels.ATTACK_TYPES)."""
    return list(ATTACK_TYPES)


__all__ = [
    "ATTACK_TYPES", "LABEL_MAP", "NormStats", "REJECT_REASONS", "SPLITS", "apply_zscore", "assemble_sequences",
    "attack_type_of", "build_sequences", "feature_columns", "fit_zscore", "impute_rates", "label_map",
    "line_blocks", "mark_duplicates", "number_lines", "parse_event_time", "read_flow_lines", "read_flows",
    "reason_category", "sequence_config_overrides", "sequence_settings", "sequence_window", "split",
    "transform_numpy", "vector_hash", "with_checks", "with_fingerprint", "with_labels", "with_reject_reason",
    "with_sequence_key", "with_split",
]
