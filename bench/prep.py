"""`make bench-prep`: the batch preparation benchmark of issue 3, written to BENCH_OUT/prep.json.

    .venv/bin/python -m bench.prep --out out/bench [--rows 2830743] [--fractions 0.25,0.5,1.0]
        [--data ../shared/data/cicids2017] [--input-dir out/bench-prep-input] [--set prep.sequence_length=8 ...]

1. **Input**: a CICIDS2017-sized input (--rows, default 2,830,743: the full data set) built by replicating the
   CSV sample in --data with jitter, under --input-dir (reused while its manifest matches). Replica 0 is the
   sample verbatim; in replica r every numeric feature is multiplied by a factor in [1 - jitter, 1 + jitter]
   drawn per (replica, column) (columns holding only integers stay integers) and day-first or ISO timestamps
   move r days later, so replicas differ while duplicates within a replica stay duplicates. Headers, labels,
   IPs and ports are kept. The rows are cut into equal shards in replica order; the input of data fraction f
   is a folder of links to the first f of the shards.
2. **pandas**: a plain single-process implementation of the same cleaning, z-score and sequences
   (:func:`pandas_prepare`) on the full input, in a process of its own so that its memory is its own.
3. **Spark**: ``jobs.prepare_training_data.prepare`` on each fraction, after an untimed warm-up run on the
   sample (JIT and class loading would otherwise be charged to the first fraction).

Peak memory is the summed RSS of the process tree (Python driver, Spark JVM and its Python workers; the pandas
process) sampled every 0.2 s, and the summed PSS beside it (forked workers' shared pages counted once). Outputs
of the runs go to OUT/_work and are removed (--keep-outputs keeps them).

One module of about 800 lines on purpose: the replicated input, the pandas twin of the whole batch job and the timed
Spark runs must stay in step for the agreement check to mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.lib import prep as pp
from jobs.lib.config import Config, ConfigError, add_config_args, load_config
from jobs.lib.flow_io import list_csv_files
from jobs.lib.outputs import replace_output_dir
from jobs.lib.spark import build_session
from jobs.prepare_training_data import prepare
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
from schemas.labels import ATTACK_TYPES, BENIGN, canonical_attack_type

CICIDS2017_ROWS = 2_830_743
DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
GENERATOR_VERSION = 1
SIGNIFICANT_DIGITS = 10  # as many as CICFlowMeter writes; more would only make the files longer
# Issue 3's targets: Spark no slower than pandas; 4x the data in <= 4.4x the time (10 % over linear).
VS_PANDAS_RATIO_MAX = 1.0
SCALING_SLACK = 1.1

# The second Fwd Header Length is a copy of the first: it gets the same factor, so it stays a copy.
_FACTOR_INDEX = {c: FEATURE_COLUMNS.index("fwd_header_length" if c == "fwd_header_length_dup" else c)
                 for c in FEATURE_COLUMNS}


# ------------------------------------------------------------------------------------------------ input

@dataclass
class SampleFile:
    """One CSV file of the sample, parsed once and replicated many times."""

    name: str
    header: str  # the header line as written (BOM and spaces kept)
    newline: str
    names: list[str]  # canonical column names
    lines: list[str]  # data lines as written
    text: list[pa.Array]  # per column: the cells as written
    values: dict[int, np.ndarray]  # feature column position -> float64 values (NaN where not a number)
    integral: dict[int, bool]  # feature column position -> holds only integers
    timestamps: tuple[np.ndarray, list[str]] | None  # (codes, distinct texts) of the timestamp column


def read_sample(path: Path) -> SampleFile:
    """Parse a CICFlowMeter CSV (either layout) for replication; its rows must all have the header's width."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    newline = "\r\n" if "\r\n" in text else "\n"
    all_lines = text.splitlines()
    if not all_lines:
        raise SchemaError(f"{path}: empty file, no header")
    header = all_lines[0]
    names = canonical_headers(next(csv.reader([header])), source=str(path))
    lines = [line for line in all_lines[1:] if line.strip(" ,")]  # blank lines are not replicated
    cells = [line.split(",") for line in lines]  # CICFlowMeter never quotes
    for number, row in enumerate(cells, start=1):
        if len(row) != len(names):
            raise SchemaError(f"{path}: data row {number} has {len(row)} fields, the header {len(names)}; "
                              "the sample must be a clean CICFlowMeter CSV")
    columns = list(zip(*cells, strict=True)) if cells else [() for _ in names]
    values, integral = {}, {}
    timestamps = None
    for i, name in enumerate(names):
        if name in FEATURE_COLUMNS:
            v = pd.to_numeric(pd.Series(columns[i], dtype=object).str.strip(), errors="coerce").to_numpy(np.float64)
            finite = v[np.isfinite(v)]
            values[i], integral[i] = v, bool(np.all(finite == np.rint(finite)))
        elif name == "timestamp":
            codes, uniques = pd.factorize(pd.Series(columns[i], dtype=object))
            timestamps = (codes, [str(u) for u in uniques])
    return SampleFile(path.name, header, newline, names, lines, [pa.array(c, pa.string()) for c in columns],
                      values, integral, timestamps)


_DAY_FIRST = re.compile(r"^(\s*)(\d{1,2})/(\d{1,2})/(\d{4})(.*)$")
_ISO = re.compile(r"^(\s*)(\d{4})-(\d{2})-(\d{2})(.*)$")


def shift_timestamp(text: str, days: int) -> str:
    """A CICIDS2017 timestamp moved ``days`` later, written the way it was (day-first or ISO); other text as is."""
    if m := _DAY_FIRST.match(text):
        lead, d, mo, y, rest = m.groups()
        new = date(int(y), int(mo), int(d)) + timedelta(days=days)
        return f"{lead}{new.day:0{len(d)}d}/{new.month:0{len(mo)}d}/{new.year}{rest}"
    if m := _ISO.match(text):
        lead, y, mo, d, rest = m.groups()
        return f"{lead}{(date(int(y), int(mo), int(d)) + timedelta(days=days)).isoformat()}{rest}"
    return text


def round_significant(x: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Round to ``digits`` significant digits so that the shortest text of each double has no more of them
    (zeros and non-finite values unchanged)."""
    with np.errstate(all="ignore"):
        exponent = digits - 1 - np.floor(np.log10(np.abs(x)))
        ok = np.isfinite(exponent) & (np.abs(exponent) <= 300)
        exponent = np.where(ok, exponent, 0.0)
        # Multiply or divide by an exact power of ten, never by an inexact 10**-k.
        up, down = 10.0 ** np.maximum(exponent, 0), 10.0 ** np.maximum(-exponent, 0)
        rounded = np.rint(x * up / down) * down / up
    return np.where(ok, rounded, x)


def replica_factors(seed: int, replica: int, jitter: float) -> np.ndarray:
    """(77,) per-column factors of a replica; replica 0 is the sample itself."""
    if replica == 0:
        return np.ones(len(FEATURE_COLUMNS))
    return np.random.default_rng([seed, replica]).uniform(1.0 - jitter, 1.0 + jitter, len(FEATURE_COLUMNS))


def replica_text(sample: SampleFile, replica: int, start: int, stop: int, factors: np.ndarray) -> str:
    """Data lines ``start:stop`` of ``sample`` as written in replica ``replica`` (newline-terminated)."""
    nl = sample.newline
    if replica == 0:
        return "".join(line + nl for line in sample.lines[start:stop])
    columns = []
    for i, name in enumerate(sample.names):
        raw = sample.text[i][start:stop]
        if i in sample.values:
            v = sample.values[i][start:stop] * factors[_FACTOR_INDEX[name]]
            finite = np.isfinite(v)
            v = np.where(finite, v, 0.0)
            jittered = pa.array(np.rint(v).astype(np.int64) if sample.integral[i] else round_significant(v))
            # Infinity, NaN and text stay as written: CICFlowMeter's spelling, which Spark and pandas parse.
            columns.append(pc.if_else(pa.array(finite), pc.cast(jittered, pa.string()), raw))
        elif name == "timestamp" and sample.timestamps is not None:
            codes, uniques = sample.timestamps
            shifted = pa.array([shift_timestamp(u, replica) for u in uniques], pa.string())
            columns.append(shifted.take(pa.array(codes[start:stop])))
        else:
            columns.append(raw)
    lines = pc.binary_join_element_wise(*columns, ",")
    return "".join(line + nl for line in lines.to_pylist())


def parse_fractions(text: str | Sequence[float]) -> list[float]:
    """'0.25,0.5,1.0' -> [0.25, 0.5, 1.0]: sorted, each in (0, 1], 1.0 included (the full-size run)."""
    items: Sequence[str | float] = text.split(",") if isinstance(text, str) else text
    try:
        fractions = sorted({float(f) for f in items})
    except ValueError:
        raise ValueError(f"--fractions: expected numbers separated by commas, got {text!r}") from None
    if not fractions or any(not 0 < f <= 1 for f in fractions) or fractions[-1] != 1.0:
        raise ValueError(f"--fractions: each must be in (0, 1] and 1.0 must be one of them, got {text!r}")
    return fractions


def shard_count(fractions: Sequence[float]) -> int:
    """The fewest equal shards of which every fraction is a whole number (4 for 0.25, 0.5, 1.0)."""
    count = math.lcm(*[Fraction(f).limit_denominator(64).denominator for f in fractions])
    for f in fractions:
        if abs(f * count - round(f * count)) > 1e-9:
            raise ValueError(f"--fractions: {f} is not a multiple of 1/{count}; use simple fractions")
    return count


def fraction_key(f: float) -> str:
    return str(float(f))


@dataclass
class GeneratedInput:
    folders: dict[str, Path]  # fraction key -> input folder
    rows: dict[str, int]  # fraction key -> data rows
    info: dict[str, Any]


def generate_input(data: str | Path, input_dir: str | Path, rows: int, fractions: Sequence[float],
                   seed: int = 2017, jitter: float = 0.01) -> GeneratedInput:
    """Write ``rows`` data rows replicated from the sample in ``data`` under ``input_dir`` (see the module doc);
    reuses what is there when its manifest matches."""
    started = time.monotonic()
    if rows < 1:
        raise ValueError(f"--rows: must be >= 1, got {rows}")
    if not 0 <= jitter < 1:
        raise ValueError(f"--jitter: must be in [0, 1), got {jitter}")
    fractions = parse_fractions(fractions)
    shards = shard_count(fractions)
    paths = list_csv_files(data)
    input_dir = Path(input_dir)
    bounds = [rows * q // shards for q in range(shards + 1)]
    manifest = {"version": GENERATOR_VERSION, "rows": rows, "shards": shards, "seed": seed, "jitter": jitter,
                "fractions": [fraction_key(f) for f in fractions],
                "sample": {p.name: p.stat().st_size for p in paths}}
    folders = {fraction_key(f): input_dir / f"fraction-{fraction_key(f)}" for f in fractions}
    counts = {fraction_key(f): bounds[round(f * shards)] for f in fractions}
    manifest_path = input_dir / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest:
        return GeneratedInput(folders, counts, {"reused": True, **_input_info(input_dir, manifest, 0.0)})
    samples = [read_sample(p) for p in paths]
    sample_rows = sum(len(s.lines) for s in samples)
    if sample_rows == 0:
        raise SchemaError(f"{data}: the sample has no data rows")
    if input_dir.exists():
        if any(input_dir.iterdir()) and not manifest_path.is_file():
            raise ValueError(f"--input-dir {input_dir}: exists and was not made by this benchmark; "
                             "name an empty or new folder")
        shutil.rmtree(input_dir)
    shard_dir = input_dir / "shards"
    shard_dir.mkdir(parents=True)
    offsets = np.cumsum([0] + [len(s.lines) for s in samples])
    shard_files: list[list[Path]] = []
    for q in range(shards):
        lo, hi = bounds[q], bounds[q + 1]
        handles: dict[str, Any] = {}
        try:
            for replica in range(lo // sample_rows, (hi - 1) // sample_rows + 1) if hi > lo else ():
                factors = replica_factors(seed, replica, jitter)
                base = replica * sample_rows
                for sample, offset in zip(samples, offsets[:-1], strict=True):
                    start = max(lo, base + offset) - base - offset
                    stop = min(hi, base + offset + len(sample.lines)) - base - offset
                    if start >= stop:
                        continue
                    if sample.name not in handles:
                        path = shard_dir / f"shard{q:03d}-{sample.name}"
                        handles[sample.name] = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                        handles[sample.name].write(sample.header + sample.newline)
                    handles[sample.name].write(replica_text(sample, replica, int(start), int(stop), factors))
        finally:
            for fh in handles.values():
                fh.close()
        shard_files.append(sorted(shard_dir / f"shard{q:03d}-{name}" for name in handles))
    for f in fractions:
        folder = folders[fraction_key(f)]
        folder.mkdir()
        for files in shard_files[:round(f * shards)]:
            for path in files:
                (folder / path.name).symlink_to(Path("..") / "shards" / path.name)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    info = _input_info(input_dir, manifest, time.monotonic() - started)
    return GeneratedInput(folders, counts, {"reused": False, **info})


def _input_info(input_dir: Path, manifest: dict[str, Any], seconds: float) -> dict[str, Any]:
    files = sorted((input_dir / "shards").glob("*.csv"))
    return {"dir": str(input_dir), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "generate_seconds": round(seconds, 1), "manifest": manifest}


# ----------------------------------------------------------------------------------------------- pandas

NA_TEXT = ["", "NaN", "nan"]
STRING_IDENTIFIERS = [c for c in IDENTIFIER_COLUMNS if c not in INTEGER_IDENTIFIERS]
DUPLICATE_COLUMNS = [*IDENTIFIER_COLUMNS, *FEATURE_COLUMNS, LABEL_COLUMN]
CHUNK_ROWS = 131_072
_DAY_FIRST_FORMATS = ["%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"]
_ISO_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f"]


def read_flows_pandas(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """One CICFlowMeter CSV -> (DUPLICATE_COLUMNS + source_file, source_row; per row: holds unparseable text).

    'Infinity' parses as inf; an empty cell and 'NaN' both as NaN (pandas cannot tell them apart cheaply; Spark
    calls an empty feature cell ``missing_value``, which the generated input never has).
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise SchemaError(f"{path}: empty file, no header")
    names = canonical_headers(header, source=str(path))
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in DUPLICATE_COLUMNS:
            positions.setdefault(name, i)
    numeric = {i for name, i in positions.items() if name in FEATURE_COLUMNS or name in INTEGER_IDENTIFIERS}
    options = {"header": None, "skiprows": 1, "usecols": sorted(positions.values()), "keep_default_na": False,
               "na_values": NA_TEXT, "skip_blank_lines": False, "skipinitialspace": True, "encoding": "utf-8",
               "encoding_errors": "replace", "engine": "c"}
    unparseable = None
    try:
        frame = pd.read_csv(path, dtype={i: np.float64 if i in numeric else object for i in positions.values()},
                            **options)
    except ValueError:  # text in a numeric column: read as text, convert, remember which rows
        frame = pd.read_csv(path, dtype=object, **options)
        unparseable = np.zeros(len(frame), bool)
        for i in numeric:
            text = frame[i].str.strip()
            frame[i] = pd.to_numeric(text, errors="coerce")
            unparseable |= (frame[i].isna() & text.notna() & ~text.isin(NA_TEXT)).to_numpy()
    frame = frame.rename(columns={i: name for name, i in positions.items()})
    for c in IDENTIFIER_COLUMNS:
        if c not in frame:
            frame[c] = np.nan if c in INTEGER_IDENTIFIERS else ""
    frame["source_file"] = path.resolve().name  # as Spark names it (links resolved)
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame, np.zeros(len(frame), bool) if unparseable is None else unparseable


def parse_event_times(text: pd.Series, cicids_12h_clock: bool = True) -> np.ndarray:
    """Timestamp text -> datetime64[ns] (NaT where absent or unparseable); the pandas twin of
    :func:`jobs.lib.prep.parse_event_time`, run once per distinct text."""
    codes, uniques = pd.factorize(text.fillna("").str.strip())
    distinct = pd.Series(uniques, dtype=object)
    day_first = pd.Series(pd.NaT, index=distinct.index, dtype="datetime64[ns]")
    for fmt in _DAY_FIRST_FORMATS:
        day_first = day_first.fillna(pd.to_datetime(distinct, format=fmt, errors="coerce"))
    if cicids_12h_clock:
        afternoon = day_first.dt.hour.between(1, 7)
        day_first[afternoon] += pd.Timedelta(hours=12)
    parsed = day_first
    for fmt in _ISO_FORMATS:
        parsed = parsed.fillna(pd.to_datetime(distinct, format=fmt, errors="coerce"))
    values = parsed.to_numpy("datetime64[ns]")
    return values[codes] if len(values) else np.full(len(codes), np.datetime64("NaT"), "datetime64[ns]")


def fit_zscore_numpy(x: np.ndarray, rows: np.ndarray, features: list[str], clip: float,
                     transform: str) -> pp.NormStats:
    """The twin of :func:`jobs.lib.prep.fit_zscore` over ``x[rows]``, two passes in chunks (bounded memory,
    no cancellation in the variance)."""
    n = len(rows)
    if n == 0:
        raise ValueError("fit_zscore: no rows to fit on (is the training split empty?)")
    total = np.zeros(x.shape[1])
    for a in range(0, n, CHUNK_ROWS):
        total += pp.transform_numpy(x[rows[a:a + CHUNK_ROWS]], transform).sum(axis=0)
    mean = total / n
    squares = np.zeros(x.shape[1])
    for a in range(0, n, CHUNK_ROWS):
        squares += ((pp.transform_numpy(x[rows[a:a + CHUNK_ROWS]], transform) - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / n)
    std = np.where(np.isfinite(std) & (std >= pp.MIN_STD), std, 1.0)
    return pp.NormStats(list(features), mean.tolist(), std.tolist(), clip=clip, transform=transform, count=n)


def hash_splits(x: np.ndarray, attack_codes: np.ndarray, cfg: Config) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) per row: the ``hash`` mode of
    :func:`jobs.lib.prep.with_split` with pandas' hash instead of Spark's xxhash64 (so not the same rows,
    the same rule): a vector is its signed_log1p values rounded to SPLIT_VECTOR_DECIMALS places (as
    :func:`jobs.lib.prep.vector_hash`); per attack type, cut points at quantiles of u = hash(seed, vector);
    a vector seen with several types goes to its earliest split."""
    if cfg.prep.split_mode != "hash":
        raise ConfigError(f"config key prep.split_mode: the pandas baseline implements 'hash' only, "
                          f"got {cfg.prep.split_mode!r}")
    train = float(cfg.prep.train_fraction)
    cut1, cut2 = train, train + float(cfg.prep.validation_fraction)
    vector = np.empty(len(x), np.uint64)
    for a in range(0, len(x), CHUNK_ROWS):  # row hashes are independent: chunks bound the memory
        rounded = np.round(pp.transform_numpy(x[a:a + CHUNK_ROWS], "signed_log1p"), pp.SPLIT_VECTOR_DECIMALS) + 0.0
        vector[a:a + CHUNK_ROWS] = pd.util.hash_pandas_object(pd.DataFrame(rounded), index=False).to_numpy()
    # hash_array mixes integers without a key: the seed enters by its own hash, xor-ed in first.
    seed = pd.util.hash_array(np.array([int(cfg.prep.split_seed)], np.uint64))[0]
    u = pd.util.hash_array(vector ^ seed) / 2.0**64
    split = np.full(len(x), 2, np.int8)
    for code in np.unique(attack_codes):
        rows = attack_codes == code
        q1, q2 = np.quantile(u[rows], [cut1, cut2], method="lower")
        split[rows] = np.where(u[rows] <= q1, 0, np.where(u[rows] <= q2, 1, 2))
    return pd.Series(split).groupby(vector).transform("min").to_numpy(np.int8)


def _npy_writer(path: Path, dtype: Any, shape: tuple[int, ...]) -> Any:
    """An open file with a .npy header for ``shape``: the rows follow in C order, written chunk by chunk."""
    fh = open(path, "wb")  # noqa: SIM115  (closed by the caller)
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": shape})
    return fh


def pandas_prepare(cfg: Config, input_path: str | Path, output: str | Path) -> dict[str, Any]:
    """The batch preparation in plain single-process pandas/numpy: read -> clean -> z-score -> sequences -> files.

    Cleaning follows :mod:`jobs.lib.prep` (header normalization by schemas.flows, rate imputation or drop,
    non-finite values, negative counters, labels by schemas.labels, unparseable timestamps, exact duplicates over
    every column but the provenance); lines with the wrong number of fields are not handled (pandas' C parser
    stops on them; the generated input has none). The z-score is fitted on the train rows; sequences of T flows
    per key in (event time, source file, source row) order are built with
    :func:`jobs.lib.prep.assemble_sequences`. Writes OUTPUT/features.npy (n, T, F) float32, mask.npy
    (n, T), meta.parquet (key, event_time, source_file, source_row, attack_type, is_attack, split; same row
    order) and normalization.json; returns a report with rows_in, rows_out and dropped as prep_report.json has.
    """
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    features = pp.feature_columns(cfg)
    seq_len = int(cfg.prep.sequence_length)
    if seq_len < 1:
        raise ValueError(f"config key prep.sequence_length: must be >= 1, got {seq_len}")
    policy = cfg.prep.nonfinite_policy
    if policy not in ("drop", "impute"):
        raise ConfigError(f"config key prep.nonfinite_policy: expected 'drop' or 'impute', got {policy!r}")
    key_name = cfg.prep.sequence_key
    if key_name not in [*IDENTIFIER_COLUMNS, "source_file"]:
        raise ConfigError(f"config key prep.sequence_key: expected one of {[*IDENTIFIER_COLUMNS, 'source_file']}, "
                          f"got {key_name!r}")

    # Extract.
    parts = [read_flows_pandas(p) for p in list_csv_files(input_path)]
    df = pd.concat([frame for frame, _ in parts], ignore_index=True)
    unparseable = np.concatenate([bad for _, bad in parts])
    del parts
    n = len(df)

    # Clean: the first rule that applies names the reason, in jobs.lib.prep's order.
    reason = np.zeros(n, np.int8)  # 0 = valid, else 1 + index in REJECT_REASONS

    def reject(mask: np.ndarray, name: str) -> None:
        reason[mask & (reason == 0)] = pp.REJECT_REASONS.index(name) + 1

    for c in STRING_IDENTIFIERS:
        df[c] = df[c].fillna("").str.strip()
    df[LABEL_COLUMN] = df[LABEL_COLUMN].fillna("").str.strip()
    empty = np.logical_and.reduce([df[c].isna().to_numpy() for c in FEATURE_COLUMNS])
    reject(empty & (df[LABEL_COLUMN] == "").to_numpy(), pp.EMPTY_ROW)
    reject((df[LABEL_COLUMN] == "").to_numpy(), pp.MISSING_LABEL)
    label_codes, labels = pd.factorize(df[LABEL_COLUMN])
    types = np.array([canonical_attack_type(str(label)) for label in labels] + [None], dtype=object)
    attack_type = types[label_codes]  # code -1 (none) picks the trailing None
    reject(pd.isna(attack_type), pp.UNKNOWN_LABEL)
    reject(unparseable, pp.UNPARSEABLE_NUMBER)
    if policy == "impute":
        duration = np.maximum(df["flow_duration"].to_numpy(), 1.0)
        for rate, counts in pp.RATE_NUMERATORS.items():
            values = df[rate].to_numpy()
            bad = ~np.isfinite(values)
            if bad.any():
                count = sum(df[c].to_numpy() for c in counts)
                df[rate] = np.where(bad, count * pp.MICROSECONDS_PER_SECOND / duration, values)
    for c in FEATURE_COLUMNS:  # in column order: the first non-finite column names the reason
        reject(~np.isfinite(df[c].to_numpy()), pp.NONFINITE_RATE if c in RATE_COLUMNS else pp.NONFINITE_VALUE)
    for c in NON_NEGATIVE_COLUMNS:
        reject(df[c].to_numpy() < 0, pp.NEGATIVE_COUNTER)
    event_time = parse_event_times(df["timestamp"], bool(cfg.prep.cicids_12h_clock))
    reject((df["timestamp"] != "").to_numpy() & np.isnat(event_time), pp.UNPARSEABLE_TIMESTAMP)
    valid = reason == 0
    # Identical rows have identical reasons, so the first of each group over all rows is the first valid one.
    duplicate = df.duplicated(subset=DUPLICATE_COLUMNS, keep="first").to_numpy() & valid
    kept = np.flatnonzero(valid & ~duplicate)
    dropped = {name: int((reason == i + 1).sum()) for i, name in enumerate(pp.REJECT_REASONS)}
    dropped[pp.DUPLICATE] = int(duplicate.sum())
    dropped = {k: v for k, v in dropped.items() if v or k == pp.DUPLICATE}

    # Keep only what the model input and the provenance need; let the frame go.
    x = np.empty((len(kept), len(features)), np.float64)
    for j, c in enumerate(features):
        x[:, j] = df[c].to_numpy()[kept]
    fallback = ("file:" + df["source_file"]).to_numpy(object)[kept]
    if key_name == "source_file":
        key = fallback
    else:
        text = df[key_name]
        if key_name in INTEGER_IDENTIFIERS:  # 80, not 80.0, as Spark casts an int
            text = text.astype("Int64").astype("string").fillna("")
        text = text.to_numpy(object)[kept]
        key = np.where(text == "", fallback, text)
    source_file = df["source_file"].to_numpy(object)[kept]
    source_row = df["source_row"].to_numpy(np.int64)[kept]
    event_time, attack_type = event_time[kept], attack_type[kept]
    del df

    # Split, then the z-score fitted on train only.
    type_codes, type_names = pd.factorize(attack_type)
    attack_codes = np.array([pp.LABEL_MAP[t] for t in type_names], np.int16)[type_codes]
    split = hash_splits(x, attack_codes, cfg)
    stats = fit_zscore_numpy(x, np.flatnonzero(split == 0), features, float(cfg.prep.zscore_clip),
                             cfg.prep.zscore_transform)

    # Sequences in (key, event time with nulls first, source file, source row) order, chunk by chunk.
    key_codes = pd.factorize(key)[0]
    file_codes = pd.factorize(source_file, sort=True)[0]
    order = np.lexsort((source_row, file_codes, event_time.astype(np.int64), key_codes))  # NaT sorts first
    m, keep = len(order), seq_len - 1
    with (_npy_writer(output / "features.npy", np.float32, (m, seq_len, len(features))) as feature_file,
          _npy_writer(output / "mask.npy", np.bool_, (m, seq_len)) as mask_file):
        history, current = np.zeros((0, len(features)), np.float32), -1
        for a in range(0, m, CHUNK_ROWS):
            rows = order[a:a + CHUNK_ROWS]
            z, codes = stats.apply_numpy(x[rows]), key_codes[rows]
            starts = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist()]
            for s, e in zip(starts, [*starts[1:], len(rows)], strict=True):
                if codes[s] != current:
                    current, history = codes[s], history[:0]
                sequences, mask, _ = pp.assemble_sequences(history, z[s:e], seq_len)
                # The carried history is kept here (the key's last T-1 vectors), so a key cut by a chunk boundary
                # continues exactly.
                seen = np.concatenate([history, z[s:e]])
                history = seen[max(0, len(seen) - keep):] if keep else seen[:0]
                sequences.tofile(feature_file)
                mask.tofile(mask_file)
    split_names = np.array(pp.SPLITS, dtype=object)
    meta = pa.table({"key": pa.array(key[order], pa.string()),
                     "event_time": pa.array(event_time[order]),
                     "source_file": pa.array(source_file[order], pa.string()),
                     "source_row": pa.array(source_row[order]),
                     "attack_type": pa.array(attack_type[order], pa.string()),
                     "is_attack": pa.array((attack_type[order] != BENIGN).astype(np.int32)),
                     "split": pa.array(split_names[split[order]], pa.string())})
    pq.write_table(meta, output / "meta.parquet")
    (output / "normalization.json").write_text(stats.to_json())
    splits: dict[str, dict[str, int]] = {name: {} for name in pp.SPLITS}
    counts = pd.crosstab(split, attack_codes)
    for s in counts.index:
        for code in counts.columns:
            if counts.loc[s, code]:
                splits[pp.SPLITS[s]][ATTACK_TYPES[code]] = int(counts.loc[s, code])
    report = {"rows_in": n, "rows_out": m, "dropped": dropped, "splits": splits, "features": features,
              "sequence": {"seq_len": seq_len, "key": key_name}, "seconds": round(time.monotonic() - started, 2)}
    if m + sum(dropped.values()) != n:
        raise RuntimeError(f"rows do not add up: {m} out + {sum(dropped.values())} dropped != {n} in")
    (output / "prep_report.json").write_text(json.dumps(report, indent=2))
    return report


def _pandas_child(sets: list[str], config_file: str | None, input_path: str, output: str, result: str) -> None:
    """Entry of the pandas process: its own config (Config does not pickle), the timed run, the report."""
    cfg = load_config(sets, config_file)
    t0 = time.monotonic()
    report = pandas_prepare(cfg, input_path, output)
    report["wall_seconds"] = time.monotonic() - t0
    Path(result).write_text(json.dumps(report))


# ----------------------------------------------------------------------------------------------- memory

class PeakRss:
    """Samples the memory of a process and all its descendants on a thread; the peaks once stopped.

    ``peak_mb``: summed RSS, the usual figure. It counts the pages that forked Python workers share with their
    parent once per process; ``peak_pss_mb`` (proportional set size) splits them, so it does not.
    """

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = pss = 0
        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return
        for proc in tree:
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                info = proc.memory_full_info()
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        self.peak_bytes = max(self.peak_bytes, rss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    @property
    def peak_pss_mb(self) -> float:
        return round(self.peak_pss_bytes / 2**20, 1)


# ------------------------------------------------------------------------------------------------- runs

def run_pandas(sets: list[str], config_file: str | None, input_path: Path, output: Path) -> dict[str, Any]:
    """pandas_prepare in a fresh process (spawned: no Spark JVM, no memory of ours); its time and peak RSS."""
    result = output.parent / f"{output.name}.result.json"
    process = multiprocessing.get_context("spawn").Process(
        target=_pandas_child, args=(sets, config_file, str(input_path), str(output), str(result)))
    process.start()
    assert process.pid is not None  # started
    with PeakRss(process.pid) as memory:
        process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the pandas run failed (exit code {process.exitcode}); its traceback is above")
    report = json.loads(result.read_text())
    result.unlink()
    return {"seconds": round(report.pop("wall_seconds"), 2), "peak_memory_mb": memory.peak_mb,
            "peak_memory_pss_mb": memory.peak_pss_mb, "report": report}


def run_spark(spark: Any, cfg: Config, input_path: Path, output: Path) -> dict[str, Any]:
    """jobs.prepare_training_data.prepare on one input; its wall time and the peak RSS of this process tree."""
    with PeakRss(os.getpid()) as memory:
        t0 = time.monotonic()
        report = prepare(spark, cfg, str(input_path), str(output))
        seconds = time.monotonic() - t0
    return {"seconds": round(seconds, 2), "peak_memory_mb": memory.peak_mb, "peak_memory_pss_mb": memory.peak_pss_mb,
            "report": report}


def machine_info() -> dict[str, Any]:
    import pyspark

    return {"cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_mb": round(psutil.virtual_memory().total / 2**20), "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {"pyspark": pyspark.__version__, "pandas": pd.__version__, "numpy": np.__version__,
                         "pyarrow": pa.__version__}}


def _log(message: str) -> None:
    print(f"[bench-prep {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _summary_counts(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("rows_in", "rows_out", "dropped")}


def run_benchmark(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    fractions = parse_fractions(args.fractions)
    out = Path(args.out)
    work = replace_output_dir(out / "_work", "bench.prep")
    load_start = os.getloadavg()

    _log(f"input: {args.rows:,} rows from {args.data} under {args.input_dir}")
    generated = generate_input(args.data, args.input_dir, args.rows, fractions, seed=args.seed, jitter=args.jitter)
    full = fraction_key(1.0)
    _log(f"input {'reused' if generated.info['reused'] else 'written'}: {generated.info['files']} files, "
         f"{generated.info['bytes'] / 2**20:,.0f} MB")

    _log(f"pandas on {generated.rows[full]:,} rows")
    pandas_run = run_pandas(args.sets, args.config, generated.folders[full], work / "pandas")
    _log(f"pandas: {pandas_run['seconds']} s, peak {pandas_run['peak_memory_mb']:,} MB")
    if not args.keep_outputs:
        shutil.rmtree(work / "pandas", ignore_errors=True)

    spark = build_session(cfg, app_name="flowsentinel-bench-prep")
    spark_runs: dict[str, dict[str, Any]] = {}
    try:
        warmup = None
        if not args.no_warmup:
            _log(f"spark warm-up on {args.data} (not timed)")
            warmup = run_spark(spark, cfg, Path(args.data), work / "spark-warmup")
            shutil.rmtree(work / "spark-warmup", ignore_errors=True)
        for f in fractions:
            key = fraction_key(f)
            _log(f"spark on fraction {key}: {generated.rows[key]:,} rows")
            spark_runs[key] = run_spark(spark, cfg, generated.folders[key], work / f"spark-{key}")
            _log(f"spark {key}: {spark_runs[key]['seconds']} s, peak {spark_runs[key]['peak_memory_mb']:,} MB")
            if not args.keep_outputs:
                shutil.rmtree(work / f"spark-{key}", ignore_errors=True)
    finally:
        spark.stop()
    if not args.keep_outputs:
        shutil.rmtree(work, ignore_errors=True)

    smallest = fraction_key(fractions[0])
    seconds, pandas_seconds = spark_runs[full]["seconds"], pandas_run["seconds"]
    scaling = {k: run["seconds"] for k, run in spark_runs.items()}
    scaling_ratio = round(seconds / scaling[smallest], 3) if smallest != full else None
    scaling_max = round(SCALING_SLACK / fractions[0], 3)  # 4.4 for 0.25 -> 1.0
    spark_counts, pandas_counts = _summary_counts(spark_runs[full]["report"]), _summary_counts(pandas_run["report"])
    result = {
        "rows": generated.rows[full],
        "seconds": seconds,
        "rows_per_s": round(generated.rows[full] / seconds, 1),
        "vs_pandas_ratio": round(seconds / pandas_seconds, 3),
        "pandas_seconds": pandas_seconds,
        "pandas_rows_per_s": round(generated.rows[full] / pandas_seconds, 1),
        "scaling": scaling,
        "scaling_rows": {k: generated.rows[k] for k in spark_runs},
        "scaling_ratio": scaling_ratio,
        "scaling_ratio_ideal": round(1.0 / fractions[0], 3),
        "peak_memory_mb": {"spark": spark_runs[full]["peak_memory_mb"], "pandas": pandas_run["peak_memory_mb"]},
        "peak_memory_pss_mb": {"spark": spark_runs[full]["peak_memory_pss_mb"],
                               "pandas": pandas_run["peak_memory_pss_mb"]},
        "peak_memory_mb_by_fraction": {"spark": {k: run["peak_memory_mb"] for k, run in spark_runs.items()}},
        "targets": {"vs_pandas_ratio_max": VS_PANDAS_RATIO_MAX, "scaling_ratio_max": scaling_max,
                    "vs_pandas_ratio_met": seconds / pandas_seconds <= VS_PANDAS_RATIO_MAX,
                    "scaling_ratio_met": None if scaling_ratio is None else scaling_ratio <= scaling_max},
        # Same rows in, same rows kept and dropped for the same reasons (the splits differ: other hashes).
        "agreement": {"same_counts": spark_counts == pandas_counts, "spark": spark_counts, "pandas": pandas_counts},
        "warmup": None if warmup is None else {"input": str(args.data), "seconds": warmup["seconds"],
                                               "rows": warmup["report"]["rows_in"]},
        "machine": {**machine_info(), "load_avg_start": [round(x, 2) for x in load_start],
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {"bench": {"rows": args.rows, "fractions": [fraction_key(f) for f in fractions],
                             "seed": args.seed, "jitter": args.jitter, "data": str(args.data),
                             "input_dir": str(args.input_dir), "warmup": not args.no_warmup},
                   "prep": {k: v for k, v in cfg.prep.items() if k != "staging_dir"},
                   "spark": cfg.to_dict()["spark"]},
        "input": generated.info,
    }
    return result


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"rows                 {result['rows']:>14,}",
             f"spark                {result['seconds']:>14,.1f} s  ({result['rows_per_s']:,.0f} rows/s, "
             f"peak {result['peak_memory_mb']['spark']:,.0f} MB)",
             f"pandas               {result['pandas_seconds']:>14,.1f} s  ({result['pandas_rows_per_s']:,.0f} rows/s, "
             f"peak {result['peak_memory_mb']['pandas']:,.0f} MB)",
             f"spark / pandas       {result['vs_pandas_ratio']:>14.3f}    (target <= "
             f"{result['targets']['vs_pandas_ratio_max']})"]
    lines += [f"spark at {k:<12}{s:>14,.1f} s  ({result['scaling_rows'][k]:,} rows)"
              for k, s in result["scaling"].items()]
    if result["scaling_ratio"] is not None:
        lines.append(f"scaling ratio        {result['scaling_ratio']:>14.3f}    "
                     f"(ideal {result['scaling_ratio_ideal']}, target <= {result['targets']['scaling_ratio_max']})")
    lines.append(f"same counts as pandas: {result['agreement']['same_counts']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for prep.json (and the runs' scratch, removed)")
    parser.add_argument("--rows", type=int, default=CICIDS2017_ROWS, help="full-size data rows (default %(default)s)")
    parser.add_argument("--data", default="../shared/data/cicids2017", help="the CSV sample to replicate")
    parser.add_argument("--input-dir", default="out/bench-prep-input", help="where the generated input goes")
    parser.add_argument("--fractions", default=",".join(map(str, DEFAULT_FRACTIONS)),
                        help="data fractions Spark runs on (default %(default)s; 1.0 is required)")
    parser.add_argument("--seed", type=int, default=2017, help="seed of the jitter")
    parser.add_argument("--jitter", type=float, default=0.01, help="relative jitter of numeric features")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed Spark run on the sample")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the runs' outputs under OUT/_work")
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        parse_fractions(args.fractions)
    except ValueError as exc:
        parser.error(str(exc))
    cfg = load_config(args.sets, args.config)
    result = run_benchmark(cfg, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prep.json").write_text(json.dumps(result, indent=2))
    print(format_summary(result))
    print(f"wrote {out / 'prep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
