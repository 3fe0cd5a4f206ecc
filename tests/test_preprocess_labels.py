"""Label taxonomy: every spelling and encoding of a CICIDS2017 label maps to one canonical attack type."""

import pytest

from schemas.labels import (
    ATTACK_TYPES,
    BENIGN,
    FAMILIES,
    LABEL_MAP,
    canonical_attack_type,
    family_of,
    is_attack,
)

SPELLINGS = [
    ("BENIGN", "BENIGN"),
    (" Benign ", "BENIGN"),
    ("DoS Hulk", "DoS Hulk"),
    ("DoS GoldenEye", "DoS GoldenEye"),
    ("DoS slowloris", "DoS slowloris"),
    ("DoS Slowhttptest", "DoS Slowhttptest"),
    ("DDoS", "DDoS"),
    ("ddos", "DDoS"),
    ("PortScan", "PortScan"),
    ("Port Scan", "PortScan"),
    ("FTP-Patator", "FTP-Patator"),
    ("SSH-Patator", "SSH-Patator"),
    ("Bot", "Bot"),
    ("Web Attack \u00ef\u00bf\u00bd Brute Force", "Web Attack Brute Force"),  # as in the shared sample
    ("Web Attack \ufffd XSS", "Web Attack XSS"),
    ("Web Attack \u2013 Sql Injection", "Web Attack Sql Injection"),  # en dash
    ("Web Attack - Sql Injection", "Web Attack Sql Injection"),
    ("web attack brute force", "Web Attack Brute Force"),
    ("Web Attack \u00e2\u20ac\u201c XSS", "Web Attack XSS"),  # en dash read as cp1252
    ("Infiltration", "Infiltration"),
    ("Infilteration", "Infiltration"),
    ("Heartbleed", "Heartbleed"),
    ("Normal", None),
    ("DoS", "DoS"),  # grouped copies label by family
    ("BruteForce", "Brute Force"),
    ("WebAttack", "Web Attack"),
    ("Web Attack", "Web Attack"),
    ("Brute-Force", "Brute Force"),
    ("DoS attack", None),
    ("", None),
    ("  ", None),
    (None, None),
]


@pytest.mark.parametrize(("raw", "canonical"), SPELLINGS)
def test_canonical_attack_type(raw, canonical):
    assert canonical_attack_type(raw) == canonical


def test_label_map_is_fixed_with_benign_first():
    assert ATTACK_TYPES[0] == BENIGN
    assert len(ATTACK_TYPES) == 18 and len(set(ATTACK_TYPES)) == 18
    assert LABEL_MAP["Heartbleed"] == 14 and LABEL_MAP["DDoS"] == 5
    assert [LABEL_MAP[f] for f in ("DoS", "Brute Force", "Web Attack")] == [15, 16, 17]  # appended
    assert [is_attack(t) for t in ("BENIGN", "DDoS", "Bot")] == [0, 1, 1]


def test_spark_mapping_agrees_with_python(spark):
    from jobs.lib.prep import with_labels

    rows = [(i, raw) for i, (raw, _) in enumerate(SPELLINGS)]
    labelled = with_labels(spark.createDataFrame(rows, "i int, label string")).orderBy("i").collect()
    assert [r["attack_type"] for r in labelled] == [c for _, c in SPELLINGS]
    expected_binary = [None if c is None else int(c != BENIGN) for _, c in SPELLINGS]
    assert [r["is_attack"] for r in labelled] == expected_binary
    assert dict(with_labels(spark.createDataFrame([("x",)], "label string")).dtypes)["is_attack"] == "int"


def test_every_type_has_a_family():
    assert FAMILIES == ["BENIGN", "DDoS", "DoS", "PortScan", "Web Attack", "Brute Force", "Bot", "Infiltration"]
    assert {t: family_of(t) for t in ATTACK_TYPES} == {
        "BENIGN": "BENIGN", "DoS Hulk": "DoS", "DoS GoldenEye": "DoS", "DoS slowloris": "DoS",
        "DoS Slowhttptest": "DoS", "DDoS": "DDoS", "PortScan": "PortScan", "FTP-Patator": "Brute Force",
        "SSH-Patator": "Brute Force", "Bot": "Bot", "Web Attack Brute Force": "Web Attack",
        "Web Attack XSS": "Web Attack", "Web Attack Sql Injection": "Web Attack", "Infiltration": "Infiltration",
        "Heartbleed": "DoS", "DoS": "DoS", "Brute Force": "Brute Force", "Web Attack": "Web Attack"}


def test_grouped_78_column_file_reads_with_family_labels(spark, shared_data):
    """The 78-column copy (no Destination Port, labels by family) goes through the one reading path."""
    from pyspark.sql import functions as F

    from jobs.lib import prep as pp

    flows = pp.with_labels(pp.read_flows(spark, shared_data.parent / "cicids2017-grouped"))
    counts = {r["attack_type"]: r["count"] for r in flows.groupBy("attack_type").count().collect()}
    assert counts == {"Bot": 1465, "DoS": 718, "Brute Force": 419, "BENIGN": 170, "Infiltration": 25}
    assert flows.where(F.col("dst_port").isNotNull() | F.col("src_ip").isNotNull()).count() == 0
    first = flows.where(F.col("source_row") == 1).select("flow_duration", "label", "is_attack").first()
    assert (first["flow_duration"], first["label"], first["is_attack"]) == (3.0, "Bot", 1)
