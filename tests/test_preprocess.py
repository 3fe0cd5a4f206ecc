"""jobs.lib.prep: reading, cleaning, labels, z-score, sequences, duplicates and splits, with exact values.

Fixtures are small CSV files built from the real headers and rows of ../shared/data (BOM, leading spaces,
duplicated 'Fwd Header Length', CRLF) with one quirk per row; EXPECTED_79 / EXPECTED_85 give each row's exact
outcome. tests/test_prepare_training_data.py reuses them for the job.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs.lib import prep as pp
from jobs.lib.config import ConfigError, load_config
from schemas.flows import FEATURE_COLUMNS, LAYOUT_79, LAYOUT_85, SchemaError, canonical_headers

WEB = "thursday-morning-webattacks.csv"  # 79 columns, BOM, leading spaces, mis-encoded labels
DDOS = "friday-afternoon-ddos.csv"  # 85 columns


def _real_lines(shared_data: Path, name: str) -> list[str]:
    return (shared_data / name).read_text(encoding="utf-8").splitlines()


def _edit(line: str, header: str, **values: str) -> str:
    cells = line.split(",")
    names = canonical_headers(header.lstrip("\ufeff").split(","))
    for name, value in values.items():
        cells[names.index(name)] = value
    return ",".join(cells)


# source_row -> (reject_reason, attack_type) for each fixture row; the comment says what the row holds.
EXPECTED_79 = {
    1: (None, "BENIGN"),  # the real first row of the web attacks file
    2: (None, "Web Attack XSS"),  # 'Web Attack – XSS' (en dash)
    3: (None, "Web Attack Brute Force"),  # 'Web Attack \ufffd Brute Force'
    4: (None, "BENIGN"),  # duration 0, Infinity in both rates: imputed
    5: (None, "BENIGN"),  # duration 0, no bytes, NaN bytes/s: imputed to 0
    6: ("negative_counter: total_fwd_packets", "BENIGN"),
    7: ("unknown_label", None),  # 'Unknown Attack'
    8: ("missing_label", None),
    9: ("empty_row", None),  # an empty line
    10: ("empty_row", None),  # nothing but commas
    11: ("unparseable_number: flow_iat_mean", "BENIGN"),  # 'abc'
    12: ("field_count", None),  # the last field missing
    13: ("nonfinite_value: flow_iat_std", "BENIGN"),  # NaN outside the rate columns
    14: ("missing_value: flow_iat_max", "BENIGN"),  # empty cell
    15: (None, "BENIGN"),  # an exact copy of row 1
    16: (None, "BENIGN"),  # ' 80' and ' BENIGN ' with spaces
}
EXPECTED_85 = {
    1: (None, "DDoS"),  # the real first DDoS row, '7/7/2017 3:56' = 15:56
    2: ("unparseable_timestamp", "DDoS"),  # '7/7/2017 25:99'
    3: ("unparseable_number: src_port", "DDoS"),  # 'x'
    4: (None, "DDoS"),  # ISO timestamp 2017-07-07 09:15:00
    5: (None, "DDoS"),  # label 'ddos'
    6: ("invalid_identifier: dst_port", "DDoS"),  # 70000: the port that once stopped the stream
    7: ("invalid_identifier: src_ip", "DDoS"),  # "1.2.3.4'; DROP TABLE alerts;--"
    8: ("invalid_identifier: protocol", "DDoS"),  # 300
    9: ("invalid_identifier: flow_id", "DDoS"),  # not <ip>-<ip>-<port>-<port>-<protocol>
    10: (None, "DDoS"),  # IPv6 addresses, flow id to match
    11: ("invalid_identifier: dst_ip", "DDoS"),  # 192.168.010.50: a leading zero is no IPv4 octet
}


def write_quirk_files(shared_data: Path, folder: Path) -> tuple[Path, Path]:
    """quirks79.csv (BOM, spaces, duplicated column, LF) and quirks85.csv (CRLF), rows as EXPECTED_79/_85."""
    web = _real_lines(shared_data, WEB)
    header, base = web[0], web[1]
    assert header.startswith("\ufeff") and base.endswith(",BENIGN")
    e = lambda **kv: _edit(base, header, **kv)  # noqa: E731
    rows79 = [
        base,
        e(label="Web Attack \u2013 XSS"),
        e(label="Web Attack \ufffd Brute Force"),
        e(flow_duration="0", flow_bytes_per_s="Infinity", flow_packets_per_s="Infinity"),
        e(flow_duration="0", total_length_fwd_packets="0", total_length_bwd_packets="0", flow_bytes_per_s="NaN"),
        e(total_fwd_packets="-3"),
        e(label="Unknown Attack"),
        e(label=""),
        "",
        "," * 78,
        e(flow_iat_mean="abc"),
        base.rsplit(",", 1)[0],
        e(flow_iat_std="NaN"),
        e(flow_iat_max=""),
        base,
        e(dst_port=" 80", label=" BENIGN "),
    ]
    ddos = _real_lines(shared_data, DDOS)
    h85 = ddos[0]
    rows85 = [
        ddos[1],
        _edit(ddos[2], h85, timestamp="7/7/2017 25:99"),
        _edit(ddos[3], h85, src_port="x"),
        _edit(ddos[4], h85, timestamp="2017-07-07 09:15:00"),
        _edit(ddos[5], h85, label="ddos"),
        _edit(ddos[6], h85, dst_port="70000"),
        _edit(ddos[7], h85, src_ip="1.2.3.4'; DROP TABLE alerts;--"),
        _edit(ddos[8], h85, protocol="300"),
        _edit(ddos[9], h85, flow_id="flow 9; rm -rf /"),
        _edit(ddos[10], h85, src_ip="2001:db8::7", dst_ip="::ffff:192.168.10.50",
              flow_id="2001:db8::7-::ffff:192.168.10.50-52000-80-6"),
        _edit(ddos[11], h85, dst_ip="192.168.010.50"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    p79, p85 = folder / "quirks79.csv", folder / "quirks85.csv"
    p79.write_text("\n".join([header, *rows79]) + "\n", encoding="utf-8")
    p85.write_bytes(("\r\n".join([h85, *rows85]) + "\r\n").encode("utf-8"))
    return p79, p85


@pytest.fixture(scope="module")
def quirk_dir(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quirks")
    write_quirk_files(shared_data, folder)
    return folder


def _cfg(*sets: str):
    return load_config(["spark.shuffle_partitions=2", *sets], env={})


@pytest.fixture(scope="module")
def checked_rows(spark, quirk_dir):
    """Every fixture row after read_flows + with_reject_reason + with_labels (impute policy), by (file, row)."""
    flows = pp.read_flows(spark, quirk_dir)
    rows = pp.with_labels(pp.with_reject_reason(flows, _cfg())).collect()
    return {(r["source_file"], r["source_row"]): r for r in rows}


def test_read_flows_columns_and_row_numbers(spark, quirk_dir, checked_rows):
    flows = pp.read_flows(spark, quirk_dir)
    from schemas.records import FLOW_RECORD

    assert flows.columns == [*FLOW_RECORD.fieldNames(), "raw", "parse_error"]
    assert dict(flows.dtypes)["dst_port"] == "int" and dict(flows.dtypes)["flow_duration"] == "double"
    assert sorted(checked_rows) == sorted([("quirks79.csv", i) for i in EXPECTED_79]
                                          + [("quirks85.csv", i) for i in EXPECTED_85])


def test_every_quirk_row_has_its_exact_outcome(checked_rows):
    for name, expected in (("quirks79.csv", EXPECTED_79), ("quirks85.csv", EXPECTED_85)):
        got = {i: (checked_rows[(name, i)]["reject_reason"], checked_rows[(name, i)]["attack_type"])
               for i in expected}
        assert got == expected, name


def test_parsed_values_of_real_rows(checked_rows):
    web = checked_rows[("quirks79.csv", 1)]
    assert (web["dst_port"], web["flow_duration"], web["flow_bytes_per_s"], web["label"]) == (
        123, 67016406.0, 2.864970109, "BENIGN")
    assert web["src_ip"] is None and web["timestamp"] is None  # the 79-column layout has no identifiers
    assert web["fwd_header_length"] == 64.0 and web["fwd_header_length_dup"] == 64.0  # duplicated column
    ddos = checked_rows[("quirks85.csv", 1)]
    assert (ddos["flow_id"], ddos["src_ip"], ddos["src_port"], ddos["dst_ip"], ddos["dst_port"],
            ddos["protocol"], ddos["timestamp"], ddos["flow_duration"], ddos["is_attack"]) == (
        "172.16.0.1-192.168.10.50-14111-80-6", "172.16.0.1", 14111, "192.168.10.50", 80, 6, "7/7/2017 3:56",
        7121367.0, 1)
    spaced = checked_rows[("quirks79.csv", 16)]
    assert (spaced["dst_port"], spaced["label"], spaced["is_attack"]) == (80, "BENIGN", 0)
    assert checked_rows[("quirks79.csv", 2)]["is_attack"] == 1


def test_impute_policy_rates_as_if_the_flow_lasted_one_microsecond(checked_rows):
    inf_row = checked_rows[("quirks79.csv", 4)]
    # (96 + 96) bytes and (2 + 2) packets in max(0, 1) microsecond
    assert (inf_row["flow_bytes_per_s"], inf_row["flow_packets_per_s"]) == (192e6, 4e6)
    nan_row = checked_rows[("quirks79.csv", 5)]
    assert (nan_row["flow_bytes_per_s"], nan_row["flow_packets_per_s"]) == (0.0, 0.059686877)


def test_raw_line_and_parse_error_are_kept(checked_rows):
    bad = checked_rows[("quirks79.csv", 11)]
    assert bad["parse_error"] == "unparseable_number: flow_iat_mean" and ",abc," in bad["raw"]
    assert bad["flow_iat_mean"] is None
    assert checked_rows[("quirks79.csv", 9)]["raw"] == ""
    assert checked_rows[("quirks85.csv", 1)]["raw"].startswith("172.16.0.1-192.168.10.50-14111-80-6,")
    assert not checked_rows[("quirks85.csv", 1)]["raw"].endswith("\r")


def test_drop_policy_quarantines_nonfinite_rates(spark, quirk_dir):
    flows = pp.read_flows(spark, quirk_dir / "quirks79.csv")
    rows = pp.with_reject_reason(flows, _cfg("prep.nonfinite_policy=drop")).where(
        F.col("source_row").isin(4, 5)).orderBy("source_row").collect()
    assert [r["reject_reason"] for r in rows] == ["nonfinite_rate: flow_bytes_per_s"] * 2
    assert math.isinf(rows[0]["flow_bytes_per_s"]) and math.isnan(rows[1]["flow_bytes_per_s"])
    with pytest.raises(ConfigError, match="prep.nonfinite_policy"):
        pp.with_reject_reason(flows, _cfg("prep.nonfinite_policy=zero"))


def test_validation_of_typed_records_without_raw_line(spark):
    """The stream job validates records parsed from Kafka JSON: FLOW_RECORD columns only."""
    from schemas.records import FLOW_RECORD

    good = {c: 1.0 for c in FEATURE_COLUMNS} | {"label": "BENIGN", "source_file": "k", "source_row": 1}
    rows = [good, good | {"flow_iat_min": -5.0, "source_row": 2},  # negative IAT minimum is legitimate
            good | {"act_data_pkt_fwd": -1.0, "source_row": 3}, good | {"syn_flag_count": None, "source_row": 4},
            {"label": None, "source_file": "k", "source_row": 5}, good | {"label": "  ", "source_row": 6},
            good | {"flow_iat_std": float("inf"), "source_row": 7}]
    df = spark.createDataFrame([tuple(r.get(c) for c in FLOW_RECORD.fieldNames()) for r in rows], FLOW_RECORD)
    got = [r["reject_reason"] for r in pp.with_reject_reason(df, _cfg()).orderBy("source_row").collect()]
    assert got == [None, None, "negative_counter: act_data_pkt_fwd", "missing_value: syn_flag_count",
                   "empty_row", "missing_label", "nonfinite_value: flow_iat_std"]


IP_SAMPLES = [
    "1.2.3.4", "0.0.0.0", "255.255.255.255", "192.168.10.50", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4",
    "1.2.3.4 ", " 1.2.3.4", "1.2.3.-4", "", "::", "::1", "1::", "1::2", "fe80::200:86ff:fe05:80da",
    "2001:DB8:0:0:0:0:0:1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::", "1::2::3", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:", "12345::1", "g::1", "::ffff:1.2.3.4",
    "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::ffff:1.2.3.256", "1.2.3.4::",
    "fe80::1%eth0", ":::", "1:::2", "a" * 50, "1.2.3.4'; DROP TABLE alerts;--", "localhost", "0x7f.1.1.1",
]


def test_ip_check_agrees_with_python_ipaddress(spark):
    import ipaddress

    def python_says(text: str) -> bool:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return False
        return "%" not in text  # a zone index names an interface, not a flow endpoint

    rows = spark.createDataFrame([(ip,) for ip in IP_SAMPLES], "ip string").select(
        "ip", pp.is_ip_address(F.col("ip")).alias("ok")).collect()
    assert {r["ip"]: r["ok"] for r in rows} == {ip: python_says(ip) for ip in IP_SAMPLES}


def test_identifiers_are_validated_only_where_present(spark):
    """Typed records (the stream's): each identifier rule, its bounds, and null identifiers passing."""
    from schemas.records import FLOW_RECORD

    good = {c: 1.0 for c in FEATURE_COLUMNS} | {"label": "BENIGN", "source_file": "k"}
    full = good | {"flow_id": "10.0.0.1-10.0.0.2-1234-80-6", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2",
                   "src_port": 1234, "dst_port": 80, "protocol": 6}
    edits = [{}, {"dst_port": 0}, {"dst_port": 65535}, {"dst_port": 65536}, {"src_port": -1}, {"protocol": 255},
             {"protocol": 256}, {"protocol": -1}, {"src_ip": "10.0.0.256"}, {"dst_ip": "::1"},
             {"dst_ip": "10.0.0.2/24"}, {"flow_id": "x" * 200}, {"flow_id": "10.0.0.1-10.0.0.2-1234-80"},
             {"source_file": "f" * 256}, {"source_file": "f" * 255}, {"src_ip": "bad", "dst_port": 70000}]
    rows = [full | e | {"source_row": i} for i, e in enumerate(edits)]
    rows.append(good | {"source_row": len(rows)})  # a 79-column-like record: no identifiers at all
    rows.append(good | {"dst_port": 99999, "source_row": len(rows)})
    df = spark.createDataFrame([tuple(r.get(c) for c in FLOW_RECORD.fieldNames()) for r in rows], FLOW_RECORD)
    got = [r["reject_reason"] for r in pp.with_reject_reason(df, _cfg()).orderBy("source_row").collect()]
    bad = "invalid_identifier: "
    assert got == [None, None, None, bad + "dst_port", bad + "src_port", None, bad + "protocol", bad + "protocol",
                   bad + "src_ip", None, bad + "dst_ip", bad + "flow_id", bad + "flow_id", bad + "source_file",
                   None, bad + "src_ip", None, bad + "dst_port"]


def test_reject_reason_reads_the_event_time_a_keyed_frame_already_has(spark):
    """After with_sequence_key the timestamp is judged by its parsed ``event_time``, not parsed again."""
    from schemas.records import FLOW_RECORD

    good = {c: 1.0 for c in FEATURE_COLUMNS} | {"label": "BENIGN", "source_file": "k", "src_ip": "10.0.0.1"}
    rows = [good | {"source_row": 1, "timestamp": "7/7/2017 3:56"},
            good | {"source_row": 2, "timestamp": "7/7/2017 25:99"},
            good | {"source_row": 3, "timestamp": None}]
    df = spark.createDataFrame([tuple(r.get(c) for c in FLOW_RECORD.fieldNames()) for r in rows], FLOW_RECORD)
    keyed = pp.with_sequence_key(df, _cfg())
    got = pp.with_reject_reason(keyed, _cfg()).orderBy("source_row").collect()
    assert [r["reject_reason"] for r in got] == [None, "unparseable_timestamp", None]
    # The reason follows the column: a frame whose event_time says otherwise is judged by it.
    swapped = keyed.withColumn("event_time", F.when(F.col("source_row") == 2, F.current_timestamp()))
    got = pp.with_reject_reason(swapped, _cfg()).orderBy("source_row").collect()
    assert [r["reject_reason"] for r in got] == ["unparseable_timestamp", None, None]


def test_real_rows_of_the_shared_sample(spark, shared_data):
    flows = pp.with_labels(pp.with_reject_reason(pp.read_flows(spark, shared_data / WEB), _cfg()))
    picked = flows.where(F.col("source_row").isin(1, 2, 3, 457, 7635)).orderBy("source_row").collect()
    assert [(r["source_row"], r["dst_port"], r["flow_duration"], r["reject_reason"], r["attack_type"])
            for r in picked] == [
        (1, 123, 67016406.0, None, "BENIGN"),
        (2, 80, 5735305.0, None, "Web Attack XSS"),
        (3, 80, 5016378.0, None, "Web Attack Brute Force"),
        (457, 80, -1.0, "negative_counter: flow_duration", "BENIGN"),
        (7635, 53, 48058.0, None, "BENIGN"),
    ]


def test_every_identifier_of_the_shared_samples_is_valid(spark, shared_data):
    flows = pp.with_reject_reason(pp.read_flows(spark, shared_data), _cfg())
    counts = {r["reason"]: r["count"] for r in flows.groupBy(
        pp.reason_category(F.col("reject_reason")).alias("reason")).count().collect()}
    assert counts.get(pp.INVALID_IDENTIFIER) is None
    assert sum(counts.values()) == 7635 + 750 + 750 + 7498


def test_missing_column_fails_at_start_naming_file_and_column(spark, shared_data, tmp_path):
    web = _real_lines(shared_data, WEB)
    cells = web[0].split(",")
    drop = canonical_headers([c.lstrip("\ufeff") for c in cells]).index("flow_iat_max")
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(c for i, c in enumerate(cells) if i != drop) + "\n1,2\n")
    with pytest.raises(SchemaError, match=r"bad\.csv: missing required column 'flow_iat_max'"):
        pp.read_flows(spark, tmp_path)
    empty = tmp_path / "empty.csv"
    bad.unlink()
    empty.write_text("")
    with pytest.raises(SchemaError, match=r"empty\.csv: empty file, no header"):
        pp.read_flows(spark, empty)
    with pytest.raises(SchemaError, match=r"nothere\.csv: no such file"):
        pp.read_flows(spark, tmp_path / "nothere.csv")


def test_unreadable_file_fails_naming_it(spark, tmp_path):
    locked = tmp_path / "locked.csv"
    locked.write_text(",".join(LAYOUT_79) + "\n")
    locked.chmod(0)
    try:
        if locked.open("rb"):  # running as root: permissions do not stop us; use a folder named .csv instead
            pass
    except PermissionError:
        with pytest.raises(SchemaError, match=r"locked\.csv: cannot read the file"):
            pp.read_flows(spark, locked)
        return
    finally:
        locked.chmod(0o644)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(SchemaError, match=r"folder\.csv"):
        pp.read_flows(spark, folder)


def test_canonical_layouts_are_what_read_flows_reads():
    # The fixture headers are the real ones: both layouts normalize to the canonical column lists.
    assert LAYOUT_79[0] == "dst_port" and LAYOUT_85[:2] == ["flow_id", "src_ip"]


# ---------------------------------------------------------------------------------------------- features

def test_feature_sets():
    assert len(pp.feature_columns(_cfg())) == 76 and "fwd_header_length_dup" not in pp.feature_columns(_cfg())
    paper = pp.feature_columns(_cfg("prep.feature_set=paper13"))
    assert paper[:3] == ["flow_duration", "total_fwd_packets", "total_bwd_packets"] and len(paper) == 17
    assert not {"src_ip", "dst_ip", "src_port", "dst_port", "flow_id", "timestamp"} & set(paper)
    with pytest.raises(ConfigError, match="identifier"):
        pp.feature_columns(_cfg('features.paper13=["flow_duration","src_ip"]', "prep.feature_set=paper13"))
    with pytest.raises(ConfigError, match="unknown column 'ttl'"):
        pp.feature_columns(_cfg('features.paper13=["ttl"]', "prep.feature_set=paper13"))
    with pytest.raises(ConfigError, match="unknown set"):
        pp.feature_columns(_cfg("prep.feature_set=best"))


# ----------------------------------------------------------------------------------------------- z-score

def test_zscore_exact_values_guards_and_round_trip(spark):
    df = spark.createDataFrame([(1.0, 5.0, 0.0), (2.0, 5.0, 0.0), (3.0, 5.0, 0.0), (4.0, 5.0, 1e12)],
                               "a double, b double, c double")
    stats = pp.fit_zscore(df, ["a", "b", "c"], clip=1.5, transform="none")
    assert stats.count == 4 and stats.mean[:2] == [2.5, 5.0] and stats.mean[2] == pytest.approx(2.5e11)
    # population std; b is constant, so std 1 (only centred)
    assert stats.std[0] == pytest.approx(math.sqrt(1.25)) and stats.std[1] == 1.0
    assert stats.std[2] == pytest.approx(math.sqrt(3) * 2.5e11)
    vectors = [r["vector"] for r in pp.apply_zscore(df, stats).collect()]
    s = math.sqrt(1.25)
    expected = [[-1.5 / s, 0.0, -1 / math.sqrt(3)], [-0.5 / s, 0.0, -1 / math.sqrt(3)],
                [0.5 / s, 0.0, -1 / math.sqrt(3)], [1.5 / s, 0.0, 1.5]]  # c: 3 / sqrt(3) = 1.73, clipped
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    np.testing.assert_allclose(stats.apply_numpy(np.array([[1, 5, 0], [4, 5, 1e12]])), [expected[0], expected[3]],
                               rtol=1e-6)
    assert dict(pp.apply_zscore(df, stats).dtypes)["vector"] == "array<float>"


def test_norm_stats_json_round_trip_and_checks():
    stats = pp.NormStats(["a", "b"], [1.0, 2.0], [0.5, 1.0], clip=3.0, transform="none", count=10)
    text = stats.to_json()
    again = pp.NormStats.from_json(text)
    assert again == stats and again.to_json() == text
    with pytest.raises(ValueError, match="version"):
        pp.NormStats.from_json(text.replace('"version": 1', '"version": 99'))
    with pytest.raises(ValueError, match="2 features but 1 means"):
        pp.NormStats(["a", "b"], [1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="stds finite and > 0"):
        pp.NormStats(["a"], [1.0], [0.0])


def test_zscore_signed_log1p(spark):
    e = math.e
    df = spark.createDataFrame([(-1.0,), (0.0,), (e - 1,)], "x double")
    stats = pp.fit_zscore(df, ["x"])  # t(x) = -ln 2, 0, 1
    t = [-math.log(2), 0.0, 1.0]
    mean, std = sum(t) / 3, math.sqrt(sum((v - sum(t) / 3) ** 2 for v in t) / 3)
    assert (stats.transform, stats.clip) == ("signed_log1p", 10.0)
    assert stats.mean[0] == pytest.approx(mean) and stats.std[0] == pytest.approx(std)
    got = [r["vector"][0] for r in pp.apply_zscore(df, stats).collect()]
    np.testing.assert_allclose(got, [(v - mean) / std for v in t], rtol=1e-6)
    with pytest.raises(ValueError, match="no rows"):
        pp.fit_zscore(df.where("x > 100"), ["x"])


# --------------------------------------------------------------------------------------------- sequences

def _ordered_flows(spark):
    """Key A: three flows, two at the same minute (file order breaks the tie); key B: one flow, no time."""
    rows = [
        ("A", "2017-07-07 15:56:00", "f.csv", 7, [3.0, 30.0]),
        ("A", "2017-07-07 15:55:00", "f.csv", 9, [1.0, 10.0]),
        ("B", None, "g.csv", 1, [9.0, 90.0]),
        ("A", "2017-07-07 15:56:00", "f.csv", 5, [2.0, 20.0]),
    ]
    return spark.createDataFrame(rows, "key string, ts string, source_file string, source_row long, "
                                       "vector array<float>").withColumn("event_time", F.to_timestamp("ts"))


def test_build_sequences_exact_arrays_and_masks(spark):
    got = {(r["key"], r["source_row"]): (r["features"], r["mask"])
           for r in pp.build_sequences(_ordered_flows(spark), 3).collect()}
    z = [0.0, 0.0]
    assert got == {
        ("A", 9): ([z, z, [1.0, 10.0]], [False, False, True]),
        ("A", 5): ([z, [1.0, 10.0], [2.0, 20.0]], [False, True, True]),
        ("A", 7): ([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], [True, True, True]),
        ("B", 1): ([z, z, [9.0, 90.0]], [False, False, True]),
    }
    one = pp.build_sequences(_ordered_flows(spark), 1).where("source_row = 7").first()
    assert (one["features"], one["mask"]) == ([[3.0, 30.0]], [True])
    types = dict(pp.build_sequences(_ordered_flows(spark), 3).dtypes)
    assert (types["features"], types["mask"]) == ("array<array<float>>", "array<boolean>")


def test_batch_and_stream_paths_give_identical_model_inputs(spark):
    """The Spark window path and the numpy path the stream job keeps per key, fed in micro-batches."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(9, 4)).astype(np.float32)
    rows = [("k", "2017-07-07 10:00:00", "f.csv", i + 1, vectors[i].tolist()) for i in range(9)]
    df = spark.createDataFrame(rows, "key string, ts string, source_file string, source_row long, "
                                     "vector array<float>").withColumn("event_time", F.to_timestamp("ts"))
    for seq_len in (1, 4):
        spark_rows = pp.build_sequences(df, seq_len).orderBy("source_row").collect()
        batch_features = np.array([r["features"] for r in spark_rows], np.float32)
        batch_mask = np.array([r["mask"] for r in spark_rows])
        history = np.zeros((0, 4), np.float32)
        parts, masks = [], []
        seen = 0
        for chunk in (vectors[:2], vectors[2:3], vectors[3:9]):  # three micro-batches
            feats, mask, history = pp.assemble_sequences(history, chunk, seq_len)
            parts.append(feats)
            masks.append(mask)
            seen += len(chunk)
            np.testing.assert_array_equal(history, vectors[max(0, seen - (seq_len - 1)):seen])
        np.testing.assert_array_equal(np.concatenate(parts), batch_features)
        np.testing.assert_array_equal(np.concatenate(masks), batch_mask)


def test_assemble_sequences_exact():
    history = np.array([[1, 1], [2, 2], [3, 3]], np.float32)
    feats, mask, kept = pp.assemble_sequences(history, np.array([[4, 4]], np.float32), 3)
    np.testing.assert_array_equal(feats, [[[2, 2], [3, 3], [4, 4]]])
    np.testing.assert_array_equal(mask, [[True, True, True]])
    np.testing.assert_array_equal(kept, [[3, 3], [4, 4]])
    feats, mask, kept = pp.assemble_sequences(np.zeros((0, 2)), np.array([[5, 6]], np.float32), 3)
    np.testing.assert_array_equal(feats, [[[0, 0], [0, 0], [5, 6]]])
    np.testing.assert_array_equal(mask, [[False, False, True]])
    assert feats.dtype == np.float32 and kept.shape == (1, 2)


def test_with_sequence_key_and_event_time(spark):
    rows = [("10.0.0.1", "7/7/2017 3:56", "a.csv"), (None, None, "b.csv"), ("  ", "03/07/2017 08:55:58", "c.csv"),
            ("10.0.0.2", "2017-07-07 01:00:00", "d.csv"), ("10.0.0.3", "6/7/2017 12:30", "e.csv")]
    df = spark.createDataFrame(rows, "src_ip string, timestamp string, source_file string")
    got = [(r["key"], r["event_time"]) for r in pp.with_sequence_key(df, _cfg()).collect()]
    import datetime as dt

    assert got == [("10.0.0.1", dt.datetime(2017, 7, 7, 15, 56)), ("file:b.csv", None),
                   ("file:c.csv", dt.datetime(2017, 7, 3, 8, 55, 58)),
                   ("10.0.0.2", dt.datetime(2017, 7, 7, 1, 0)),  # ISO: as written
                   ("10.0.0.3", dt.datetime(2017, 7, 6, 12, 30))]  # 12:30 is noon
    plain = pp.with_sequence_key(df, _cfg("prep.cicids_12h_clock=false")).first()
    assert plain["event_time"] == dt.datetime(2017, 7, 7, 3, 56)
    by_file = pp.with_sequence_key(df, _cfg("prep.sequence_key=source_file")).first()
    assert by_file["key"] == "file:a.csv"
    spellings = ["7/7/2017 3:56", "03/07/2017 08:55:58", "2017-07-07 01:00:00", "2017-07-07T01:00:00",
                 "2017-07-07 01:00:00.250000", " 2017-07-07T01:00:00.250000 ", "7/7/2017", "2017-07-07",
                 "3:56 7/7/2017", "2017-07-07T01:00", "07.07.2017 01:00", "", "T.", None]
    texts = spark.createDataFrame([(s,) for s in spellings], "timestamp string")
    parsed = [r[0] for r in texts.select(pp.parse_event_time(F.col("timestamp"))).collect()]
    assert parsed == [dt.datetime(2017, 7, 7, 15, 56), dt.datetime(2017, 7, 3, 8, 55, 58),
                      dt.datetime(2017, 7, 7, 1, 0), dt.datetime(2017, 7, 7, 1, 0),
                      dt.datetime(2017, 7, 7, 1, 0, 0, 250000), dt.datetime(2017, 7, 7, 1, 0, 0, 250000),
                      None, None, None, None, None, None, None, None]
    with pytest.raises(ConfigError, match="prep.sequence_key"):
        pp.with_sequence_key(df, _cfg("prep.sequence_key=label"))


def test_iso_fast_path_reads_every_calendar_edge_as_the_formats_do(spark):
    """parse_event_time casts text of the exact ISO shape instead of running the formatter: over every edge of
    each field (month 13, 30 February, 29 February of leap and common years, hour 24, second 60, 1-6 fraction
    digits, year 0000), the cast and the formatter agree on the value or on null."""
    import itertools

    from jobs.lib.prep.keys import _ISO_FORMATS

    days = ["0000-01-01", "1970-01-01", "2016-02-29", "2017-02-29", "2017-02-30", "2017-04-31", "2017-00-10",
            "2017-13-01", "2017-07-00", "2017-07-32", "9999-12-31"]
    times = ["00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "99:99:99"]
    fractions = ["", ".5", ".123", ".000", ".123456"]
    texts = [f"{d}{sep}{h}{f}" for d, sep, h, f in itertools.product(days, [" ", "T"], times, fractions)]
    df = spark.createDataFrame([(x,) for x in texts], "timestamp string")
    fast = F.col("timestamp").try_cast("timestamp")
    formats = F.coalesce(*[F.try_to_timestamp(F.col("timestamp"), F.lit(f)) for f in _ISO_FORMATS])
    rows = df.select("timestamp", fast.cast("string").alias("fast"), formats.cast("string").alias("formats"),
                     pp.parse_event_time(F.col("timestamp")).cast("string").alias("parsed")).collect()  # year 0
    # valid: 4 days (year 0 is ISO year 0) x 2 times x 5 fractions x 2 separators
    assert len(rows) == 660 and sum(r["fast"] is not None for r in rows) == 80
    assert [(r["timestamp"], r["fast"]) for r in rows if r["fast"] != r["formats"]] == []
    assert all(r["parsed"] == r["fast"] for r in rows)


def test_sequence_settings_round_trip_to_config_flags():
    settings = pp.sequence_settings(_cfg("prep.sequence_length=8", "prep.nonfinite_policy=drop"))
    flags = pp.sequence_config_overrides(settings)
    assert flags == ["prep.sequence_length=8", "prep.sequence_key=src_ip", "prep.cicids_12h_clock=true",
                     "prep.nonfinite_policy=drop"]
    assert pp.sequence_settings(_cfg(*flags)) == settings


# ----------------------------------------------------------------------------------- duplicates and splits

def test_mark_duplicates_keeps_the_first_in_file_order(spark, quirk_dir):
    flows = pp.read_flows(spark, quirk_dir)
    # Staged first, as jobs.prepare_training_data does: the window over the whole validation expression plans slowly.
    valid = pp.with_reject_reason(flows, _cfg()).where("reject_reason is null").localCheckpoint()
    dups = pp.mark_duplicates(valid).where("duplicate_of is not null").select(
        "source_file", "source_row", "duplicate_of").collect()
    assert [tuple(r) for r in dups] == [("quirks79.csv", 15, "quirks79.csv row 1")]


TWO_FEATURES = ['features.paper13=["flow_duration","total_fwd_packets"]', "prep.feature_set=paper13"]


def _split_input(spark):
    """3,001 flows: 1,000 vectors three times each, the attack type a function of the vector; vector (7, 0) is
    Bot three times and BENIGN once (the same features with two labels)."""
    v = F.col("id") % 1000
    types = F.element_at(F.array(F.lit("BENIGN"), F.lit("DDoS"), F.lit("PortScan")), (v % 3 + 1).cast("int"))
    df = spark.range(3000).select(
        v.cast("double").alias("flow_duration"), (v % 7).cast("double").alias("total_fwd_packets"),
        F.when(v == 7, F.lit("Bot")).otherwise(types).alias("attack_type"),
        F.lit("x.csv").alias("source_file"), F.col("id").alias("source_row"))
    return df.unionByName(spark.createDataFrame([(7.0, 0.0, "BENIGN", "y.csv", 1)], df.schema))


def test_split_is_leakage_free_stratified_and_seeded(spark):
    cfg = _cfg(*TWO_FEATURES)
    tagged = pp.with_split(_split_input(spark), cfg)
    vectors = tagged.groupBy("flow_duration", "total_fwd_packets").agg(F.countDistinct("split").alias("n"))
    assert vectors.where("n > 1").count() == 0
    assert {r["split"] for r in tagged.where("flow_duration = 7").collect()} == {"train"}  # 3 Bot + 1 BENIGN
    counts = {(r["attack_type"], r["split"]): r["count"]
              for r in tagged.groupBy("attack_type", "split").count().collect()}
    for attack_type in ("BENIGN", "DDoS", "PortScan"):
        total = sum(counts.get((attack_type, s), 0) for s in pp.SPLITS)
        shares = [counts.get((attack_type, s), 0) / total for s in pp.SPLITS]
        assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.03), attack_type
    rerun = pp.with_split(_split_input(spark), cfg)
    again = {tuple(r) for r in rerun.select("source_file", "source_row", "split").collect()}
    assert again == {tuple(r) for r in tagged.select("source_file", "source_row", "split").collect()}
    other = pp.with_split(_split_input(spark), _cfg(*TWO_FEATURES, "prep.split_seed=1"))
    assert {tuple(r) for r in other.select("source_file", "source_row", "split").collect()} != again
    parts = pp.split(_split_input(spark), cfg)
    assert sorted(parts) == sorted(pp.SPLITS) and sum(p.count() for p in parts.values()) == 3001


def test_random_split_mode_ignores_vectors(spark):
    cfg = _cfg(*TWO_FEATURES, "prep.split_mode=random")
    tagged = pp.with_split(_split_input(spark), cfg)
    spread = tagged.groupBy("flow_duration", "total_fwd_packets").agg(F.countDistinct("split").alias("n"))
    assert spread.where("n > 1").count() > 0  # the leaky baseline does put one vector in several splits


def test_vector_hash_rounds_as_spark_round_did_and_a_staged_hash_is_reused(spark, shared_data):
    """rint(x * 10^5) / 10^5 (numpy's rounding, cheap) hashes every real row as Spark's BigDecimal round did, so
    the splits did not move; with_split takes a staged ``_vh`` as the vector instead of hashing the features."""
    features = pp.feature_columns(_cfg())
    flows = pp.with_reject_reason(pp.read_flows(spark, shared_data / WEB), _cfg()).where("reject_reason is null")
    by_round = F.xxhash64(*[F.round(F.signum(F.col(c)) * F.log1p(F.abs(F.col(c))), pp.SPLIT_VECTOR_DECIMALS)
                            + F.lit(0.0) for c in features])
    hashes = flows.select(pp.vector_hash(features).alias("rint"), by_round.alias("round"))
    assert hashes.count() == 7634  # the web file's rows but its one negative counter
    assert hashes.where("rint != round").count() == 0
    one_vector = _split_input(spark).withColumn(pp.VECTOR_HASH, F.lit(42).cast("long"))
    tagged = pp.with_split(one_vector, _cfg(*TWO_FEATURES))
    assert {r["split"] for r in tagged.select("split").distinct().collect()} == {"train"}
    assert pp.VECTOR_HASH not in tagged.columns
