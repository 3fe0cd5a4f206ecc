"""Reading CICFlowMeter CSV files: each line parsed once, its raw text kept for quarantine, rows numbered."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from jobs.lib.flow_io import list_csv_files
from jobs.lib.prep.cleaning import FIELD_COUNT, MALFORMED_ROW, PARSE_ERROR, RAW, UNPARSEABLE_NUMBER
from schemas.flows import (
    FEATURE_COLUMNS,
    INTEGER_IDENTIFIERS,
    SchemaError,
    canonical_headers,
)
from schemas.records import FLOW_RECORD

# Internal columns of read_flow_lines: which scan a line came from, its file, its file split and its position.
_GROUP, _PATH, _BLOCK, _LINE = "_group", "_path", "_block", "_line"


_CORRUPT = "_corrupt_record"


_NUMERIC_RECORD_COLUMNS = [*FEATURE_COLUMNS, *INTEGER_IDENTIFIERS]


_TYPES: dict[str, DataType] = {f.name: f.dataType for f in FLOW_RECORD.fields}


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
