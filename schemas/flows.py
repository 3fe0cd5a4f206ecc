"""The CICFlowMeter flow record as CICIDS2017 publishes it, in both layouts, and its canonical form.

Three layouts exist:
- MachineLearningCVE, 79 columns: ``Destination Port``, 77 flow features, ``Label``.
- The same without ``Destination Port``, 78 columns (copies re-saved with the port dropped).
- GeneratedLabelledFlows / TrafficLabelling, 85 columns: ``Flow ID``, ``Source IP``, ``Source Port``,
  ``Destination IP``, ``Destination Port``, ``Protocol``, ``Timestamp``, the same 77 features, ``Label``.

Headers differ between copies (leading spaces, a UTF-8 BOM, ``Fwd Header Length`` twice or as
``Fwd Header Length.1``); :func:`canonical_header` maps every spelling to one snake_case name. Everything else
(preprocessing, the Kafka message, Delta tables, tests) refers to the names defined here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# (canonical name, CICFlowMeter header) for the 77 flow features, in file order.
_FEATURES: list[tuple[str, str]] = [
    ("flow_duration", "Flow Duration"),
    ("total_fwd_packets", "Total Fwd Packets"),
    ("total_bwd_packets", "Total Backward Packets"),
    ("total_length_fwd_packets", "Total Length of Fwd Packets"),
    ("total_length_bwd_packets", "Total Length of Bwd Packets"),
    ("fwd_packet_length_max", "Fwd Packet Length Max"),
    ("fwd_packet_length_min", "Fwd Packet Length Min"),
    ("fwd_packet_length_mean", "Fwd Packet Length Mean"),
    ("fwd_packet_length_std", "Fwd Packet Length Std"),
    ("bwd_packet_length_max", "Bwd Packet Length Max"),
    ("bwd_packet_length_min", "Bwd Packet Length Min"),
    ("bwd_packet_length_mean", "Bwd Packet Length Mean"),
    ("bwd_packet_length_std", "Bwd Packet Length Std"),
    ("flow_bytes_per_s", "Flow Bytes/s"),
    ("flow_packets_per_s", "Flow Packets/s"),
    ("flow_iat_mean", "Flow IAT Mean"),
    ("flow_iat_std", "Flow IAT Std"),
    ("flow_iat_max", "Flow IAT Max"),
    ("flow_iat_min", "Flow IAT Min"),
    ("fwd_iat_total", "Fwd IAT Total"),
    ("fwd_iat_mean", "Fwd IAT Mean"),
    ("fwd_iat_std", "Fwd IAT Std"),
    ("fwd_iat_max", "Fwd IAT Max"),
    ("fwd_iat_min", "Fwd IAT Min"),
    ("bwd_iat_total", "Bwd IAT Total"),
    ("bwd_iat_mean", "Bwd IAT Mean"),
    ("bwd_iat_std", "Bwd IAT Std"),
    ("bwd_iat_max", "Bwd IAT Max"),
    ("bwd_iat_min", "Bwd IAT Min"),
    ("fwd_psh_flags", "Fwd PSH Flags"),
    ("bwd_psh_flags", "Bwd PSH Flags"),
    ("fwd_urg_flags", "Fwd URG Flags"),
    ("bwd_urg_flags", "Bwd URG Flags"),
    ("fwd_header_length", "Fwd Header Length"),
    ("bwd_header_length", "Bwd Header Length"),
    ("fwd_packets_per_s", "Fwd Packets/s"),
    ("bwd_packets_per_s", "Bwd Packets/s"),
    ("min_packet_length", "Min Packet Length"),
    ("max_packet_length", "Max Packet Length"),
    ("packet_length_mean", "Packet Length Mean"),
    ("packet_length_std", "Packet Length Std"),
    ("packet_length_variance", "Packet Length Variance"),
    ("fin_flag_count", "FIN Flag Count"),
    ("syn_flag_count", "SYN Flag Count"),
    ("rst_flag_count", "RST Flag Count"),
    ("psh_flag_count", "PSH Flag Count"),
    ("ack_flag_count", "ACK Flag Count"),
    ("urg_flag_count", "URG Flag Count"),
    ("cwe_flag_count", "CWE Flag Count"),
    ("ece_flag_count", "ECE Flag Count"),
    ("down_up_ratio", "Down/Up Ratio"),
    ("average_packet_size", "Average Packet Size"),
    ("avg_fwd_segment_size", "Avg Fwd Segment Size"),
    ("avg_bwd_segment_size", "Avg Bwd Segment Size"),
    # CICFlowMeter writes 'Fwd Header Length' a second time here (pandas reads it as 'Fwd Header Length.1').
    ("fwd_header_length_dup", "Fwd Header Length.1"),
    ("fwd_avg_bytes_per_bulk", "Fwd Avg Bytes/Bulk"),
    ("fwd_avg_packets_per_bulk", "Fwd Avg Packets/Bulk"),
    ("fwd_avg_bulk_rate", "Fwd Avg Bulk Rate"),
    ("bwd_avg_bytes_per_bulk", "Bwd Avg Bytes/Bulk"),
    ("bwd_avg_packets_per_bulk", "Bwd Avg Packets/Bulk"),
    ("bwd_avg_bulk_rate", "Bwd Avg Bulk Rate"),
    ("subflow_fwd_packets", "Subflow Fwd Packets"),
    ("subflow_fwd_bytes", "Subflow Fwd Bytes"),
    ("subflow_bwd_packets", "Subflow Bwd Packets"),
    ("subflow_bwd_bytes", "Subflow Bwd Bytes"),
    ("init_win_bytes_forward", "Init_Win_bytes_forward"),
    ("init_win_bytes_backward", "Init_Win_bytes_backward"),
    ("act_data_pkt_fwd", "act_data_pkt_fwd"),
    ("min_seg_size_forward", "min_seg_size_forward"),
    ("active_mean", "Active Mean"),
    ("active_std", "Active Std"),
    ("active_max", "Active Max"),
    ("active_min", "Active Min"),
    ("idle_mean", "Idle Mean"),
    ("idle_std", "Idle Std"),
    ("idle_max", "Idle Max"),
    ("idle_min", "Idle Min"),
]

_IDENTIFIERS: list[tuple[str, str]] = [
    ("flow_id", "Flow ID"),
    ("src_ip", "Source IP"),
    ("src_port", "Source Port"),
    ("dst_ip", "Destination IP"),
    ("dst_port", "Destination Port"),
    ("protocol", "Protocol"),
    ("timestamp", "Timestamp"),
]

FEATURE_COLUMNS: list[str] = [name for name, _ in _FEATURES]
# Columns that identify a flow. Never model inputs: in CICIDS2017 the IPs identify the testbed's attacker
# machines rather than attack behaviour. They stay in records for grouping, windows and alerts.
IDENTIFIER_COLUMNS: list[str] = [name for name, _ in _IDENTIFIERS]
LABEL_COLUMN = "label"

LAYOUT_79: list[str] = ["dst_port", *FEATURE_COLUMNS, LABEL_COLUMN]
LAYOUT_85: list[str] = [*IDENTIFIER_COLUMNS, *FEATURE_COLUMNS, LABEL_COLUMN]
# Re-saved copies without Destination Port (the model never uses it: identifiers are not features).
LAYOUT_78: list[str] = [*FEATURE_COLUMNS, LABEL_COLUMN]
# Columns every input file must have, whatever its layout: the features and the label.
REQUIRED_COLUMNS: list[str] = LAYOUT_78
# Identifier columns that are integers; the rest (flow_id, src_ip, dst_ip, timestamp) are strings.
INTEGER_IDENTIFIERS = ("src_port", "dst_port", "protocol")
# How a flow travels on the flows topic (kafka.flows_format): one JSON object of schemas.records.FLOW_MESSAGE, or one
# Avro binary datum of schemas/flow_message.avsc.
WIRE_FORMATS = ("json", "avro")

# Counters that can never be negative in a well-formed flow (packet counts, byte lengths, flag counts, the
# duration). IAT minima, header lengths and init_win_bytes_* (-1 = "not seen") can be negative in real
# CICFlowMeter output and are not listed.
NON_NEGATIVE_COLUMNS: list[str] = [
    c for c in FEATURE_COLUMNS
    if c.startswith(("total_", "subflow_", "fwd_packet_length", "bwd_packet_length"))
    or c.endswith(("_flags", "_flag_count"))
] + ["flow_duration", "act_data_pkt_fwd"]
# Rate columns computed by division in CICFlowMeter; they hold 'Infinity' and 'NaN' when the duration is 0.
RATE_COLUMNS: list[str] = ["flow_bytes_per_s", "flow_packets_per_s"]


def _key(header: str) -> str:
    """Spelling-insensitive form of a header: BOM, surrounding spaces and case removed."""
    return re.sub(r"\s+", " ", header.replace("\ufeff", "").strip()).lower()


_CANONICAL: dict[str, str] = {_key(raw): name for name, raw in [*_FEATURES, *_IDENTIFIERS]}
_CANONICAL[_key("Label")] = LABEL_COLUMN
_CANONICAL.update({name: name for name in [*FEATURE_COLUMNS, *IDENTIFIER_COLUMNS, LABEL_COLUMN]})


class SchemaError(ValueError):
    """An input does not match the CICFlowMeter schema; the message names the file and the column."""


def canonical_header(header: str) -> str | None:
    """Canonical name for one CICFlowMeter header spelling, or None if it is not a known column."""
    return _CANONICAL.get(_key(header))


def canonical_headers(headers: Sequence[str], source: str = "input") -> list[str]:
    """Canonical names for a whole header row, in order.

    The second ``Fwd Header Length`` becomes ``fwd_header_length_dup``; unknown columns keep a snake_case
    form of their name (they are carried but never used as features). Raises SchemaError naming `source`
    and the missing column when a required column is absent.
    """
    out: list[str] = []
    for raw in headers:
        name = canonical_header(raw)
        if name == "fwd_header_length" and name in out:
            name = "fwd_header_length_dup"
        if name is None:
            name = re.sub(r"[^0-9a-z]+", "_", _key(raw)).strip("_") or f"col{len(out)}"
        out.append(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in out]
    if missing:
        raise SchemaError(f"{source}: missing required column {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out


def layout_of(columns: Sequence[str]) -> int:
    """85 when the canonical columns include the flow identifiers, 79 with Destination Port only, else 78."""
    if all(c in columns for c in IDENTIFIER_COLUMNS):
        return 85
    return 79 if "dst_port" in columns else 78
