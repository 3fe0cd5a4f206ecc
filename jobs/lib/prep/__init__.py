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

from jobs.lib.prep.cleaning import (
    DUPLICATE,
    EMPTY_ROW,
    FIELD_COUNT,
    INVALID_IDENTIFIER,
    MALFORMED_ROW,
    MAX_FLOW_ID_LENGTH,
    MAX_SOURCE_FILE_LENGTH,
    MICROSECONDS_PER_SECOND,
    MISSING_LABEL,
    MISSING_VALUE,
    NEGATIVE_COUNTER,
    NONFINITE_RATE,
    NONFINITE_VALUE,
    PARSE_ERROR,
    PORT_RANGE,
    PROTOCOL_RANGE,
    RATE_NUMERATORS,
    RAW,
    REJECT_REASON,
    REJECT_REASONS,
    UNKNOWN_LABEL,
    UNPARSEABLE_NUMBER,
    UNPARSEABLE_TIMESTAMP,
    impute_rates,
    is_ip_address,
    reason_category,
    with_checks,
    with_reject_reason,
)
from jobs.lib.prep.keys import parse_event_time, with_sequence_key
from jobs.lib.prep.labels import attack_type_of, label_map, with_labels
from jobs.lib.prep.normalize import apply_zscore, feature_columns, fit_zscore
from jobs.lib.prep.reading import line_blocks, number_lines, read_flow_lines, read_flows
from jobs.lib.prep.sequences import (
    assemble_sequences,
    build_sequences,
    sequence_config_overrides,
    sequence_settings,
    sequence_window,
)
from jobs.lib.prep.splits import (
    SPLIT_VECTOR_DECIMALS,
    SPLITS,
    VECTOR_HASH,
    mark_duplicates,
    split,
    vector_hash,
    with_fingerprint,
    with_split,
)
from schemas.labels import ATTACK_TYPES, LABEL_MAP
from schemas.normalization import MIN_STD, TRANSFORMS, NormStats, transform_numpy

__all__ = [
    "ATTACK_TYPES",
    "DUPLICATE",
    "EMPTY_ROW",
    "FIELD_COUNT",
    "INVALID_IDENTIFIER",
    "LABEL_MAP",
    "MALFORMED_ROW",
    "MAX_FLOW_ID_LENGTH",
    "MAX_SOURCE_FILE_LENGTH",
    "MICROSECONDS_PER_SECOND",
    "MIN_STD",
    "MISSING_LABEL",
    "MISSING_VALUE",
    "NEGATIVE_COUNTER",
    "NONFINITE_RATE",
    "NONFINITE_VALUE",
    "NormStats",
    "PARSE_ERROR",
    "PORT_RANGE",
    "PROTOCOL_RANGE",
    "RATE_NUMERATORS",
    "RAW",
    "REJECT_REASON",
    "REJECT_REASONS",
    "SPLITS",
    "SPLIT_VECTOR_DECIMALS",
    "TRANSFORMS",
    "UNKNOWN_LABEL",
    "UNPARSEABLE_NUMBER",
    "UNPARSEABLE_TIMESTAMP",
    "VECTOR_HASH",
    "apply_zscore",
    "assemble_sequences",
    "attack_type_of",
    "build_sequences",
    "feature_columns",
    "fit_zscore",
    "impute_rates",
    "is_ip_address",
    "label_map",
    "line_blocks",
    "mark_duplicates",
    "number_lines",
    "parse_event_time",
    "read_flow_lines",
    "read_flows",
    "reason_category",
    "sequence_config_overrides",
    "sequence_settings",
    "sequence_window",
    "split",
    "transform_numpy",
    "vector_hash",
    "with_checks",
    "with_fingerprint",
    "with_labels",
    "with_reject_reason",
    "with_sequence_key",
    "with_split",
]
