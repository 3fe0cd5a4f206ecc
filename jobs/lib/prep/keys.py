"""Sequence keys and event time: which flows form one sequence, and in what order."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from jobs.lib.config import Config, ConfigError
from schemas.flows import (
    IDENTIFIER_COLUMNS,
)

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
    # The exact shape of the ISO formats (what the stream's producers write): Spark's cast reads it as those
    # formats do (tests/test_preprocess.py compares them over every calendar edge), at a fraction of the cost of a
    # formatter, the dearest part of the stream's validation.
    iso_shape = text.rlike(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d{1,6})?$")
    iso = (F.when(iso_shape, text.try_cast("timestamp"))
           .when(slash, F.lit(None).cast("timestamp"))
           .when(fraction, F.when(t, parse(iso_t_fraction)).otherwise(parse(iso_space_fraction)))
           .when(t, parse(iso_t)).otherwise(parse(iso_space)))
    return F.coalesce(day_first, iso)


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
