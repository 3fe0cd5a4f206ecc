"""Reading CICFlowMeter CSV files into canonical flow records (dicts named by :mod:`schemas.flows`).

Used where a single process walks files row by row: the Kafka replay producer and tests. The Spark batch
path reads the same files with the same header mapping.
"""

from __future__ import annotations

import csv
import glob
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.flows import FEATURE_COLUMNS, INTEGER_IDENTIFIERS, SchemaError, canonical_headers

_FEATURES = set(FEATURE_COLUMNS)


def list_csv_files(input_path: str | Path) -> list[Path]:
    """A CSV file, a folder (its *.csv, sorted) or a glob -> the files; SchemaError if none."""
    text = str(input_path)
    path = Path(text)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text))
    else:
        files = [path]
    for f in files:
        if not f.is_file():
            raise SchemaError(f"{f}: no such file")
    if not files:
        raise SchemaError(f"{input_path}: no CSV files found")
    return files


def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)  # accepts 'Infinity', 'inf', 'NaN'
    except ValueError:
        return math.nan


def iter_flow_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one canonical record per data row: features as floats, identifiers typed, provenance added.

    Unparseable feature text becomes NaN (the validation downstream quarantines it), an empty cell None.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError(f"{path}: empty file, no header") from None
        names = canonical_headers(header, source=str(path))
        for row_number, row in enumerate(reader, start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            record: dict[str, Any] = {}
            for name, cell in zip(names, row, strict=False):
                if name in _FEATURES:
                    record[name] = _number(cell)
                elif name in INTEGER_IDENTIFIERS:
                    value = _number(cell)
                    record[name] = int(value) if value is not None and math.isfinite(value) else None
                else:
                    record[name] = cell.strip()
            record["source_file"] = path.name
            record["source_row"] = row_number
            yield record
