"""schemas/: header spellings of every CICFlowMeter layout, labels and families, and the records crossing boundaries."""

import csv

import pytest

from jobs.lib.flow_io import iter_flow_records, list_csv_files
from schemas.flows import (
    FEATURE_COLUMNS,
    LAYOUT_78,
    LAYOUT_79,
    LAYOUT_85,
    SchemaError,
    canonical_header,
    canonical_headers,
    layout_of,
)
from schemas.records import FLOW_MESSAGE


def test_feature_list_is_the_77_cicflowmeter_features():
    assert len(FEATURE_COLUMNS) == 77
    assert len(set(FEATURE_COLUMNS)) == 77
    assert (len(LAYOUT_78), len(LAYOUT_79), len(LAYOUT_85)) == (78, 79, 85)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("\ufeff Destination Port", "dst_port"),
        (" Flow Bytes/s", "flow_bytes_per_s"),
        ("Fwd Header Length.1", "fwd_header_length_dup"),
        ("Init_Win_bytes_forward", "init_win_bytes_forward"),
        (" Label", "label"),
        ("Source IP", "src_ip"),
        ("flow_duration", "flow_duration"),
        ("Not A Column", None),
    ],
)
def test_canonical_header(raw, name):
    assert canonical_header(raw) == name


def test_real_headers_of_both_layouts_normalize(shared_data):
    for path in list_csv_files(shared_data):
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        names = canonical_headers(header, source=path.name)
        assert names == (LAYOUT_85 if len(header) == 85 else LAYOUT_79), path.name
        assert layout_of(names) == len(header)


def test_grouped_copy_without_destination_port_normalizes(shared_data):
    grouped = shared_data.parent / "cicids2017-grouped"
    for path in list_csv_files(grouped):
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        names = canonical_headers(header, source=path.name)
        assert names == LAYOUT_78, path.name
        assert layout_of(names) == 78


def test_duplicated_fwd_header_length_spelled_twice():
    header = ["Destination Port", *[f" {c}" for c in ["Fwd Header Length"] * 2]]
    with pytest.raises(SchemaError):  # too few columns, but the duplicate itself is mapped first
        canonical_headers(header, "x.csv")
    names = [canonical_header(h) for h in LAYOUT_79]
    assert names == LAYOUT_79


def test_missing_required_column_names_file_and_column(tmp_path):
    header = [c for c in LAYOUT_79 if c != "flow_iat_max"]
    with pytest.raises(SchemaError, match=r"bad\.csv: missing required column 'flow_iat_max'"):
        canonical_headers(header, "bad.csv")


def test_iter_flow_records_reads_real_rows(shared_data):
    rows = iter_flow_records(shared_data / "friday-afternoon-ddos.csv")
    first = next(rows)
    assert first["flow_id"] == "172.16.0.1-192.168.10.50-14111-80-6"
    assert (first["src_ip"], first["src_port"], first["dst_ip"], first["dst_port"]) == (
        "172.16.0.1", 14111, "192.168.10.50", 80)
    assert (first["protocol"], first["timestamp"], first["label"]) == (6, "7/7/2017 3:56", "DDoS")
    assert first["flow_duration"] == 7121367.0
    assert (first["source_file"], first["source_row"]) == ("friday-afternoon-ddos.csv", 1)
    assert sum(1 for _ in rows) == 749


def test_iter_flow_records_79_layout_with_bom(shared_data):
    rows = list(iter_flow_records(shared_data / "thursday-morning-webattacks.csv"))
    assert len(rows) == 7635
    assert "src_ip" not in rows[0]
    # The dash is mis-encoded twice in this copy: U+FFFD's UTF-8 bytes read as Latin-1.
    bad_dash = "\u00ef\u00bf\u00bd"
    assert {r["label"] for r in rows} == {"BENIGN", f"Web Attack {bad_dash} Brute Force",
                                          f"Web Attack {bad_dash} XSS", f"Web Attack {bad_dash} Sql Injection"}


def test_flow_message_schema_covers_both_layouts():
    assert FLOW_MESSAGE.fieldNames()[:7] == ["flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol",
                                             "timestamp"]
    assert FLOW_MESSAGE.fieldNames()[-3:] == ["label", "source_file", "source_row"]
