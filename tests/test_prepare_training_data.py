"""jobs.prepare_training_data end to end: on the real samples (numbers checked independently with pandas) and on
the quirk fixtures (every row's fate exact), through main() as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertSchemaEqual

from jobs import prepare_training_data as job
from jobs.lib import prep as pp
from jobs.lib.config import load_config
from schemas.flows import FEATURE_COLUMNS, IDENTIFIER_COLUMNS, NON_NEGATIVE_COLUMNS, SchemaError, canonical_headers
from schemas.records import PREPARED_SAMPLE, QUARANTINE
from tests.test_preprocess import EXPECTED_79, EXPECTED_85, write_quirk_files

# The labels present in the shared sample, spelled out here rather than taken from schemas.labels.
SAMPLE_LABELS = {"BENIGN": "BENIGN", "DDoS": "DDoS", "PortScan": "PortScan",
                 "Web Attack \u00ef\u00bf\u00bd Brute Force": "Web Attack Brute Force",
                 "Web Attack \u00ef\u00bf\u00bd XSS": "Web Attack XSS",
                 "Web Attack \u00ef\u00bf\u00bd Sql Injection": "Web Attack Sql Injection"}


def pandas_flows(folder: Path) -> pd.DataFrame:
    """The shared sample cleaned the documented way, in plain pandas: typed values, imputed rates, labels,
    negative counters marked, exact duplicates (over all columns but provenance) marked."""
    frames = []
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        raw.columns = canonical_headers(list(raw.columns))
        raw["source_file"], raw["source_row"] = path.name, np.arange(1, len(raw) + 1)
        frames.append(raw)
    df = pd.concat(frames, ignore_index=True)
    for c in IDENTIFIER_COLUMNS:
        df[c] = df[c].fillna("").str.strip() if c in df else ""
    values = df[FEATURE_COLUMNS].apply(lambda s: s.str.strip().astype(float))  # 'Infinity', 'NaN' included
    duration = np.maximum(values["flow_duration"], 1)
    for rate, counts in pp.RATE_NUMERATORS.items():
        bad = ~np.isfinite(values[rate])
        values.loc[bad, rate] = values.loc[bad, counts].sum(axis=1) * 1e6 / duration[bad]
    out = pd.concat([df[[*IDENTIFIER_COLUMNS, "source_file", "source_row"]], values], axis=1)
    out["label"] = df["label"].str.strip()
    out["attack_type"] = out["label"].map(SAMPLE_LABELS)
    out["negative"] = (values[NON_NEGATIVE_COLUMNS] < 0).any(axis=1)
    ok = ~out["negative"]
    out["duplicate"] = False
    out.loc[ok, "duplicate"] = out.loc[ok, [*IDENTIFIER_COLUMNS, *FEATURE_COLUMNS, "label"]].duplicated()
    return out


@pytest.fixture(scope="module")
def shared_run(spark, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep-shared")
    cfg = load_config(["spark.shuffle_partitions=2", "prep.sequence_length=4"], env={})  # sequences, not T=1
    return out, job.prepare(spark, cfg, str(shared_data), str(out)), pandas_flows(shared_data)


def test_report_numbers_match_an_independent_pandas_count(shared_run):
    out, report, expected = shared_run
    kept = expected[~expected["negative"] & ~expected["duplicate"]]
    assert report["rows_in"] == len(expected) == 16633
    assert report["dropped"] == {"negative_counter": int(expected["negative"].sum()),
                                 "duplicate": int(expected["duplicate"].sum())} == {"negative_counter": 1,
                                                                                      "duplicate": 139}
    assert report["rows_out"] == len(kept) == 16493
    assert report["rows_out"] + sum(report["dropped"].values()) == report["rows_in"]
    per_type = {t: sum(report["splits"][s].get(t, 0) for s in pp.SPLITS) for t in SAMPLE_LABELS.values()}
    assert per_type == kept["attack_type"].value_counts().to_dict()
    for attack_type, total in per_type.items():  # stratified: each type 70 / 15 / 15
        shares = [report["splits"][s].get(attack_type, 0) / total for s in pp.SPLITS]
        assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.03 if total > 100 else 0.16), attack_type
    assert json.loads((out / "prep_report.json").read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == [".flowsentinel-output", "normalization.json", "prep_report.json",
                                                     "quarantine", "test", "train", "validation"]


def test_tables_follow_the_contract_and_splits_share_no_vector(spark, shared_run):
    out, report, _ = shared_run
    last_vectors = {}
    for name in pp.SPLITS:
        table = spark.read.format("delta").load(str(out / name))
        # Delta stores every nested type as nullable; names and types are the contract.
        assertSchemaEqual(table.schema, PREPARED_SAMPLE)
        assert table.count() == sum(report["splits"][name].values())
        shapes = table.select(F.size("features").alias("t"), F.size(F.col("features")[0]).alias("f"),
                              F.element_at("mask", -1).alias("last")).distinct().collect()
        assert [tuple(r) for r in shapes] == [(4, 76, True)]
        last = table.select(F.element_at("features", -1).alias("v")).toPandas()["v"]
        last_vectors[name] = {np.asarray(v, np.float32).tobytes() for v in last}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not last_vectors[a] & last_vectors[b], (a, b)


def test_normalization_is_fitted_on_train_only(spark, shared_run):
    out, report, expected = shared_run
    stats = pp.NormStats.from_json((out / "normalization.json").read_text())
    assert stats.features == report["features"] == pp.feature_columns(load_config(env={}))
    assert stats.count == sum(report["splits"]["train"].values())
    train = spark.read.format("delta").load(str(out / "train")).select("source_file", "source_row").toPandas()
    rows = expected.merge(train, on=["source_file", "source_row"])
    assert len(rows) == stats.count
    t = np.sign(rows[stats.features].to_numpy()) * np.log1p(np.abs(rows[stats.features].to_numpy()))
    std = t.std(axis=0)
    np.testing.assert_allclose(stats.mean, t.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, np.where(std < pp.MIN_STD, 1.0, std), rtol=1e-9)


def test_one_sequence_exactly(spark, shared_run):
    """The first DDoS flow: its model input rebuilt by hand from the pandas rows and the stored statistics."""
    out, _, expected = shared_run
    stats = pp.NormStats.from_json((out / "normalization.json").read_text())
    kept = expected[~expected["negative"] & ~expected["duplicate"]].copy()
    kept["event_time"] = pd.to_datetime(kept["timestamp"], format="%d/%m/%Y %H:%M", errors="coerce")
    kept.loc[kept["event_time"].dt.hour.between(1, 7), "event_time"] += pd.Timedelta(hours=12)
    host = kept[kept["src_ip"] == "172.16.0.1"].sort_values(["event_time", "source_file", "source_row"])
    position = np.flatnonzero((host["source_file"] == "friday-afternoon-ddos.csv") & (host["source_row"] == 1))[0]
    history = host.iloc[max(0, position - 3):position + 1]
    vectors = stats.apply_numpy(history[stats.features].to_numpy())
    want = np.zeros((4, len(stats.features)), np.float32)
    want[4 - len(vectors):] = vectors
    rows = [spark.read.format("delta").load(str(out / s)).where(
        "source_file = 'friday-afternoon-ddos.csv' and source_row = 1").collect() for s in pp.SPLITS]
    (row,) = [r for found in rows for r in found]
    np.testing.assert_allclose(np.array(row["features"]), want, rtol=1e-5, atol=1e-6)
    assert row["mask"] == [True] * 4 and position >= 3
    assert (row["key"], str(row["event_time"]), row["attack_type"], row["is_attack"]) == (
        "172.16.0.1", "2017-07-07 15:56:00", "DDoS", 1)


def test_quarantine_holds_every_dropped_row(spark, shared_run):
    out, report, expected = shared_run
    q = spark.read.format("delta").load(str(out / "quarantine"))
    assertSchemaEqual(q.schema, QUARANTINE)
    assert q.count() == sum(report["dropped"].values())
    (negative,) = q.where(F.col("reason").startswith("negative_counter")).collect()
    assert (negative["reason"], negative["source_file"], negative["source_row"]) == (
        "negative_counter: flow_duration", "thursday-morning-webattacks.csv", 457)
    assert negative["raw"].startswith("80,-1,1,1,6,6,")
    dups = q.where(F.col("reason").startswith("duplicate of ")).select("source_file", "source_row").toPandas()
    want = expected[expected["duplicate"]][["source_file", "source_row"]]
    assert sorted(map(tuple, dups.to_numpy().tolist())) == sorted(map(tuple, want.to_numpy().tolist()))


def test_main_on_the_quirk_files(spark, shared_data, tmp_path, capsys):
    data = tmp_path / "data"
    write_quirk_files(shared_data, data)
    out = tmp_path / "out"
    assert job.main(["--input", str(data), "--output", str(out), "--set", "prep.sequence_length=2",
                     "--set", "spark.shuffle_partitions=2"]) == 0
    report = json.loads((out / "prep_report.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (27, 10)
    assert report["dropped"] == {"empty_row": 2, "field_count": 1, "missing_label": 1, "unknown_label": 1,
                                 "unparseable_number": 2, "missing_value": 1, "nonfinite_value": 1,
                                 "negative_counter": 1, "unparseable_timestamp": 1, "invalid_identifier": 5,
                                 "duplicate": 1}
    totals = {t: sum(report["splits"][s].get(t, 0) for s in pp.SPLITS) for t in
              ("BENIGN", "Web Attack XSS", "Web Attack Brute Force", "DDoS")}
    assert totals == {"BENIGN": 4, "Web Attack XSS": 1, "Web Attack Brute Force": 1, "DDoS": 4}
    q = {(r["source_file"], r["source_row"]): r["reason"]
         for r in spark.read.format("delta").load(str(out / "quarantine")).collect()}
    want = {(f, i): reason for f, rows in (("quirks79.csv", EXPECTED_79), ("quirks85.csv", EXPECTED_85))
            for i, (reason, _) in rows.items() if reason}
    want[("quirks79.csv", 15)] = "duplicate of quirks79.csv row 1"
    assert q == want
    printed = capsys.readouterr().out
    assert "rows in" in printed and "unparseable_timestamp" in printed and "Web Attack XSS" in printed
    sequences = {(r["source_file"], r["source_row"]): r["mask"] for s in pp.SPLITS
                 for r in spark.read.format("delta").load(str(out / s)).collect()}
    # file-keyed rows of quirks79.csv in file order: row 1 starts the sequence, row 2 follows it
    assert sequences[("quirks79.csv", 1)] == [False, True] and sequences[("quirks79.csv", 2)] == [True, True]


def test_missing_column_fails_before_any_work(tmp_path, spark):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.csv").write_text("Destination Port,Flow Duration,Label\n80,1,BENIGN\n")
    with pytest.raises(SchemaError, match=r"x\.csv: missing required column 'total_fwd_packets'"):
        job.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_output_and_staging_folders_it_did_not_make_are_refused(spark, shared_data, tmp_path, capsys):
    from jobs.lib.outputs import OutputFolderError

    data = tmp_path / "data"
    write_quirk_files(shared_data, data)
    mine = tmp_path / "mine"
    for folder in (mine, tmp_path / "out", tmp_path / "scratch"):
        folder.mkdir()
        (folder / "train").mkdir()  # a name the job would replace
        (folder / "train" / "keep.txt").write_text("keep me")
    argv = ["--input", str(data), "--set", "spark.shuffle_partitions=2"]
    assert job.main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert f"error: output folder {tmp_path / 'out'} is not empty" in capsys.readouterr().err
    (mine / ".flowsentinel-output").write_text("")
    with pytest.raises(OutputFolderError, match=f"output folder {tmp_path / 'scratch'} is not empty"):
        job.prepare(spark, load_config([f"prep.staging_dir={tmp_path / 'scratch'}"], env={}), str(data), str(mine))
    for folder in (mine, tmp_path / "out", tmp_path / "scratch"):
        assert (folder / "train" / "keep.txt").read_text() == "keep me"
