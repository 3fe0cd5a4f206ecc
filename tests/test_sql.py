"""The SQL CLI and every documented operator query, on small Delta tables whose rows are known exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql.types import StructType

from jobs import sql
from schemas.records import ALERTS, FLOWS_SCORED, QUARANTINE

README = Path(__file__).resolve().parents[1] / "README.md"


def ts(text: str) -> datetime:
    """A UTC instant (the session time zone is UTC), given as an aware datetime so the machine's zone is moot."""
    return datetime.fromisoformat(f"2017-07-07 {text}").replace(tzinfo=UTC)


def local(text: str) -> datetime:
    # PySpark hands timestamps back as naive datetimes in the Python process's local zone.
    return ts(text).astimezone().replace(tzinfo=None)


def rows(schema: StructType, *given: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Full rows of `schema` from partial dicts (absent fields null); a misspelt field fails here."""
    names = schema.fieldNames()
    for row in given:
        assert set(row) <= set(names), set(row) - set(names)
    return [tuple(row.get(n) for n in names) for row in given]


# Binary fractions, so float32 scores compare exactly.
S_HIGH, S_HIGH2, S_MED, S_MED2, S_LOW = 0.998046875, 0.96875, 0.9375, 0.9375, 0.75


def flow(partition: int, offset: int, src: str | None, dst: str, dport: int, at: str | None, label: str,
         prob: float, is_attack: int, pred: str, version: str, key: str | None = None,
         kafka_at: str | None = None) -> dict[str, Any]:
    true_type = label
    return {"src_ip": src, "dst_ip": dst, "dst_port": dport, "protocol": 6, "src_port": 40000 + offset,
            "event_time": ts(at) if at else None, "key": key or src, "label": label, "true_attack_type": true_type,
            "attack_prob": prob, "is_attack": is_attack, "attack_type": pred, "model_version": version,
            "batch_id": 0, "topic": "flows", "partition": partition, "offset": offset,
            "kafka_timestamp": ts(kafka_at) if kafka_at else ts(at).replace(minute=ts(at).minute + 1)}


FLOWS = [
    flow(0, 0, "10.0.0.1", "192.168.10.50", 80, "10:05", "DDoS", S_HIGH, 1, "DDoS", "v1"),
    flow(0, 1, "10.0.0.1", "192.168.10.50", 80, "10:20", "DDoS", S_HIGH2, 1, "DDoS", "v1"),
    flow(0, 2, "10.0.0.1", "192.168.10.50", 22, "11:10", "PortScan", S_LOW, 1, "PortScan", "v1"),
    flow(1, 0, "10.0.0.2", "192.168.10.50", 443, "10:30", "BENIGN", S_MED, 1, "DDoS", "v1"),
    flow(1, 1, "10.0.0.2", "10.0.0.1", 53, "11:40", "BENIGN", 0.125, 0, "BENIGN", "v1"),
    flow(1, 2, "10.0.0.3", "192.168.10.50", 80, "11:50", "DDoS", 0.25, 0, "BENIGN", "v2"),
    flow(1, 3, "10.0.0.3", "192.168.10.50", 80, "12:00", "BENIGN", 0.0625, 0, "BENIGN", "v2"),
    # A 79-column source: no IPs or times; the key is the source file, the time the Kafka timestamp.
    flow(0, 3, None, "192.168.10.51", 8080, None, "PortScan", S_HIGH, 1, "PortScan", "v2",
         key="wednesday.csv", kafka_at="12:30"),
]


def scan(offset: int, src: str, port: int, at: str, prob: float, batch_id: int, length: float | None) -> dict[str, Any]:
    """An unlabeled flow (no true type) scored by model v3, for the host_windows view."""
    pred = "PortScan" if prob >= 0.5 else "BENIGN"
    return {**flow(2, offset, src, "192.168.10.60", port, at, None, prob, int(prob >= 0.5), pred, "v3"),
            "batch_id": batch_id, "total_length_fwd_packets": length, "total_length_bwd_packets": 40.0 if length
            else None}


# 10.0.0.9 scans ports 1-8 in batch 0 and 7-14 in batch 1, inside one minute: its 10:06 window has 16 flows, 14
# distinct ports, 100 bytes each; 10.0.0.8 touches 12 ports at 10:07 in batch 0, two of them flagged.
SCANS = ([scan(i, "10.0.0.9", 1 + i, f"10:06:{i:02d}", S_HIGH, 0, 60.0) for i in range(8)]
         + [scan(8 + i, "10.0.0.9", 7 + i, f"10:06:{8 + i:02d}", S_HIGH, 1, 60.0) for i in range(8)]
         + [scan(16 + i, "10.0.0.8", 101 + i, f"10:07:{i:02d}", S_MED if i < 2 else 0.125, 0, None)
            for i in range(12)])


def alert(alert_id: str, f: dict[str, Any], severity: int) -> dict[str, Any]:
    return {"alert_id": alert_id, "timestamp": f["event_time"] or f["kafka_timestamp"], "src_ip": f["src_ip"],
            "src_port": f["src_port"], "dest_ip": f["dst_ip"], "dest_port": f["dst_port"], "proto": "TCP",
            "category": f["attack_type"], "severity": severity, "score": f["attack_prob"],
            "model_version": f["model_version"], "explanation": "syn_flag_count=+3.0", "key": f["key"],
            "batch_id": 0, "topic": "flows", "partition": f["partition"], "offset": f["offset"],
            "kafka_timestamp": f["kafka_timestamp"]}


ALERT_ROWS = [alert("a1", FLOWS[0], 1), alert("a2", FLOWS[1], 2), alert("a3", FLOWS[2], 3),
              alert("a4", FLOWS[3], 2), alert("a5", FLOWS[7], 1)]

QUARANTINE_ROWS = [
    {"raw": "{", "reason": "invalid_json", "quarantined_at": ts("10:00")},
    {"raw": "", "reason": "empty_payload", "quarantined_at": ts("10:01")},
    {"raw": "{}", "reason": "missing_field: flow_duration", "quarantined_at": ts("10:02")},
    {"raw": "{}", "reason": "missing_field: total_fwd_packets", "quarantined_at": ts("10:03")},
    {"raw": "{}", "reason": "wrong_type: src_port", "quarantined_at": ts("10:04")},
]


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sql") / "tables"
    for name, schema, data in (("flows_scored", FLOWS_SCORED, FLOWS + SCANS), ("alerts", ALERTS, ALERT_ROWS),
                               ("quarantine", QUARANTINE, QUARANTINE_ROWS)):
        spark.createDataFrame(rows(schema, *data), schema).write.format("delta").save(str(base / name))
    return base


@pytest.fixture
def views(spark, tables):
    assert sql.register_tables(spark, tables, "1 minute") == {name: True for name in sql.TABLE_SCHEMAS}
    return spark


def result(spark, name: str, **params: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sql.run_query(spark, name, params).collect()]


# Expected rows of every documented query with its default parameters.
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "top_hosts": [
        ("10.0.0.1", 3, 2, S_HIGH, local("10:05"), local("11:10")),
        ("10.0.0.2", 1, 1, S_MED, local("10:30"), local("10:30")),
        ("wednesday.csv", 1, 1, S_HIGH, local("12:30"), local("12:30")),
    ],
    "alerts_per_type_per_hour": [
        # (S_HIGH + S_HIGH2 + S_MED) / 3 = 0.968098958...
        (local("10:00"), "DDoS", 3, 0.9681, 1),
        (local("11:00"), "PortScan", 1, 0.75, 0),
        (local("12:00"), "PortScan", 1, 0.998, 1),
    ],
    "host_recent_flows": [],  # its default host is empty: nothing matches
    "false_positive_review": [
        ("a4", local("10:30"), "10.0.0.2", "192.168.10.50", 443, "TCP", "DDoS", S_MED, "v1", "syn_flag_count=+3.0"),
    ],
    "quarantine_reasons": [
        ("missing_field", 2, "missing_field: flow_duration", local("10:03")),
        ("empty_payload", 1, "empty_payload", local("10:01")),
        ("invalid_json", 1, "invalid_json", local("10:00")),
        ("wrong_type", 1, "wrong_type: src_port", local("10:04")),
    ],
    "detection_by_model_version": [
        # v1: 3 attacks all caught, 1 benign flagged; v2: 2 attacks, 1 caught, no benign flagged.
        ("v1", 5, 4, 3, 1, 0, 0.75, 1.0, local("10:06"), local("11:41")),
        # v3: unlabeled flows: no precision or recall
        ("v3", 28, 18, 0, 0, 0, None, None, local("10:07:00"), local("10:08:11")),
        ("v2", 3, 1, 1, 0, 1, 1.0, 0.5, local("11:51"), local("12:30")),
    ],
    "port_scan_suspects": [
        ("10.0.0.9", local("10:06"), local("10:07"), 16, 16, 14, 1600.0),
        ("10.0.0.8", local("10:07"), local("10:08"), 12, 2, 12, 0.0),
    ],
}


def test_every_documented_query_has_expected_rows():
    assert set(EXPECTED) == set(sql.QUERIES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_operator_query_rows(views, name):
    assert result(views, name) == EXPECTED[name]


def test_host_recent_flows_for_a_host(views):
    # 10.0.0.1 as source (3 flows) and as destination (1 flow), newest first; limit cuts the oldest.
    expected = [
        (local("11:40"), "10.0.0.2", 40001, "10.0.0.1", 53, 6, "BENIGN", 0.125, 0, "BENIGN", "v1", 1, 1),
        (local("11:10"), "10.0.0.1", 40002, "192.168.10.50", 22, 6, "PortScan", S_LOW, 1, "PortScan", "v1", 0, 2),
        (local("10:20"), "10.0.0.1", 40001, "192.168.10.50", 80, 6, "DDoS", S_HIGH2, 1, "DDoS", "v1", 0, 1),
        (local("10:05"), "10.0.0.1", 40000, "192.168.10.50", 80, 6, "DDoS", S_HIGH, 1, "DDoS", "v1", 0, 0),
    ]
    assert result(views, "host_recent_flows", host="10.0.0.1") == expected
    assert result(views, "host_recent_flows", host="10.0.0.1", limit="2") == expected[:2]
    # A host known only by its sequence key (79-column source).
    assert [r[-2:] for r in result(views, "host_recent_flows", host="wednesday.csv")] == [(0, 3)]


def test_parameters_override_defaults(views):
    assert result(views, "top_hosts", limit="1") == EXPECTED["top_hosts"][:1]
    assert result(views, "port_scan_suspects", min_ports="13") == EXPECTED["port_scan_suspects"][:1]


def test_host_windows_view_totals_flows_scored_per_host_and_window(views, tables):
    got = [tuple(r) for r in views.sql("SELECT * FROM host_windows ORDER BY host, window_start").collect()]
    assert [(r[0], r[1], r[3], r[4], r[6], r[8]) for r in got] == [  # host, start, flows, alerts, ports, batch
        ("10.0.0.1", local("10:05"), 1, 1, 1, 0), ("10.0.0.1", local("10:20"), 1, 1, 1, 0),
        ("10.0.0.1", local("11:10"), 1, 1, 1, 0), ("10.0.0.2", local("10:30"), 1, 1, 1, 0),
        ("10.0.0.2", local("11:40"), 1, 0, 1, 0), ("10.0.0.3", local("11:50"), 1, 0, 1, 0),
        ("10.0.0.3", local("12:00"), 1, 0, 1, 0), ("10.0.0.8", local("10:07"), 12, 2, 12, 0),
        ("10.0.0.9", local("10:06"), 16, 16, 14, 1),
        ("wednesday.csv", local("12:30"), 1, 1, 1, 0),  # no event time: the Kafka timestamp's window
    ]
    assert got[8] == ("10.0.0.9", local("10:06"), local("10:07"), 16, 16, 1600.0, 14, list(range(1, 15)), 1)
    # the window is the config's stream.host_window, applied when the view is registered
    assert sql.register_tables(views, tables, "1 hour") == {name: True for name in sql.TABLE_SCHEMAS}
    hourly = [tuple(r)[:5] for r in views.sql("SELECT * FROM host_windows WHERE host = '10.0.0.1' "
                                              "ORDER BY window_start").collect()]
    assert hourly == [("10.0.0.1", local("10:00"), local("11:00"), 2, 2), ("10.0.0.1", local("11:00"),
                                                                            local("12:00"), 1, 1)]


def test_parameter_values_are_literals_not_sql(views):
    # Quotes and backslashes in a value are data: no match, no syntax error, no injected predicate.
    assert result(views, "host_recent_flows", host="x' OR '1'='1") == []
    assert result(views, "host_recent_flows", host="x\\' OR 1=1 --") == []
    assert result(views, "host_recent_flows", host="x\\") == []


def test_bind_sql_renders_one_typed_literal_per_marker():
    assert sql.bind_sql("SELECT :a, :b, :c, '10:05', x::string", {"a": 1, "b": "it's \\", "c": 0.5}) == (
        "SELECT 1, 'it\\'s \\\\', 0.5D, '10:05', x::string")
    with pytest.raises(ValueError, match=":d has no value"):
        sql.bind_sql("SELECT :d", {})
    with pytest.raises(ValueError, match="cannot use"):
        sql.sql_literal(float("nan"))


def test_bad_parameters_are_rejected_with_their_name():
    with pytest.raises(ValueError, match="has no parameter colour"):
        sql.bind_params("top_hosts", {"colour": "red"})
    with pytest.raises(ValueError, match="limit expects int"):
        sql.bind_params("top_hosts", {"limit": "ten"})
    with pytest.raises(ValueError, match="unknown query 'nope'"):
        sql.run_query(None, "nope")  # type: ignore[arg-type]


def test_missing_tables_are_registered_empty(spark, tmp_path, tables):
    partial = tmp_path / "tables"
    spark.read.format("delta").load(str(tables / "alerts")).write.format("delta").save(str(partial / "alerts"))
    found = sql.register_tables(spark, partial, "1 minute")
    assert found == {"flows_scored": False, "alerts": True, "quarantine": False}
    assert spark.table("host_windows").count() == 0
    assert result(spark, "quarantine_reasons") == []
    assert spark.table("flows_scored").schema == FLOWS_SCORED
    assert result(spark, "top_hosts") == EXPECTED["top_hosts"]


def test_cli_runs_sql_and_named_queries(spark, tables, capsys):
    assert sql.main(["--tables", str(tables), "--format", "json",
                     "SELECT alert_id, category FROM alerts WHERE severity = 1 ORDER BY alert_id"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"alert_id": "a1", "category": "DDoS"},
                                                     {"alert_id": "a5", "category": "PortScan"}]

    assert sql.main(["--tables", str(tables), "--format", "json", "--query", "quarantine_reasons",
                     "--max-rows", "2"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(g["category"], g["records"]) for g in got] == [("missing_field", 2), ("empty_payload", 1)]


def test_cli_errors_are_one_line(tables, capsys):
    assert sql.main(["--tables", str(tables), "--query", "top_hosts", "--param", "limit=x"]) == 2
    assert capsys.readouterr().err.strip() == "error: query top_hosts: parameter limit expects int, got 'x'"
    assert sql.main(["--tables", str(tables), "SELECT nope FROM alerts"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and len(err.strip().splitlines()) == 1


def test_cli_lists_the_queries(capsys):
    assert sql.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split(" ")[0] for line in out.splitlines() if not line.startswith(" ")] == list(sql.QUERIES)


def test_readme_documents_every_query():
    text = README.read_text()
    missing = [name for name in sql.QUERIES if f"`{name}`" not in text]
    assert missing == []


def test_limit_parameter_and_limit_clause_go_together():
    # run_query writes `limit` into "LIMIT :limit"; a query with one and not the other would ignore it silently.
    for name, query in sql.QUERIES.items():
        assert ("LIMIT :limit" in query.sql) == ("limit" in query.params), name


def test_make_sql_takes_the_query_verbatim(spark, tmp_path):
    """The README's `make sql` example with a backticked Delta path works, and neither make nor the shell runs a
    `$(...)` or `$(shell ...)` inside the query: both stay text of string literals (one make run: one JVM)."""
    import re
    import subprocess

    root = README.parent
    out = tmp_path / "demo"
    spark.createDataFrame([(7, "batch")], "batch_id long, note string").write.format("delta").save(
        str(out / "tables" / "stream_progress"))
    example = next(line for line in README.read_text().splitlines() if 'make sql Q="SELECT * FROM delta.' in line)
    readme_query = re.search(r'make sql Q="(.*)"`', example).group(1).replace("\\`", "`")
    assert readme_query == "SELECT * FROM delta.`OUT/tables/stream_progress`"
    ran = tmp_path / "ran"
    query = readme_query.replace("OUT/", f"{out}/").replace(
        "SELECT *", f"SELECT *, '$(touch {ran}-shell)' AS a, '$(shell touch {ran}-make)' AS b")
    # -o: the stamps count as up to date, so the test never re-runs setup or the Maven jar resolution.
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "-o", ".jars/.resolved", "sql", f"Q={query}",
                           f"OUT={out}"], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("ran*"))
    row = next(line for line in done.stdout.splitlines() if line.startswith("|7 "))
    assert [cell.strip() for cell in row.strip().strip("|").split("|")] == [
        "7", "batch", f"$(touch {ran}-shell)", f"$(shell touch {ran}-make)"], done.stdout
