"""bench.prep without Spark: the replicated input (exact rows, layouts, jitter) and the pandas baseline
(keeps exactly the rows the batch job's rules keep, counted here without pandas; exact z-scores and sequences)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import prep as bp
from jobs.lib.config import load_config
from schemas.flows import FEATURE_COLUMNS, IDENTIFIER_COLUMNS, NON_NEGATIVE_COLUMNS, canonical_headers

XSS = "Web Attack \u00ef\u00bf\u00bd XSS"  # as the shared sample spells it
ROWS = 2000  # 100 replicas of the 20-row sample below
SRC = ["192.168.10.5", "172.16.0.1"]  # of even and odd rows


def _line(names: list[str], i: int, label: str, **override: str) -> str:
    """Data row i: distinct non-integral values; total_bwd_packets and init_win_bytes_forward integral."""
    cells = {c: repr(1000.25 * i + 3.5 * j + 0.125) for j, c in enumerate(FEATURE_COLUMNS)}
    cells["fwd_header_length_dup"] = cells["fwd_header_length"]
    cells |= {"total_bwd_packets": str(i), "init_win_bytes_forward": str(8192 + i), "label": label}
    cells |= {"flow_id": f"172.16.0.1-192.168.10.50-{40000 + i}-80-6", "src_ip": SRC[i % 2], "src_port": str(40000 + i),
              "dst_ip": "192.168.10.50", "dst_port": "80", "protocol": "6", "timestamp": f"7/7/2017 3:{50 + i}"}
    cells |= override
    return ",".join(cells[n] for n in names)


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory) -> Path:
    """a79.csv: 8 flows, a negative counter (row 9), a copy of row 1 (row 10); b85.csv: 9 flows, row 5 with a
    zero duration and Infinity / NaN rates, a copy of row 2 (row 10). Headers as the real files write them."""
    folder = tmp_path_factory.mktemp("sample")
    for name, source in (("a79.csv", "thursday-morning-webattacks.csv"), ("b85.csv", "friday-afternoon-ddos.csv")):
        header = (shared_data / source).read_bytes().decode("utf-8").splitlines()[0]
        names = canonical_headers(next(csv.reader([header])))
        labels = ["BENIGN", XSS] if name == "a79.csv" else ["BENIGN", "DDoS"]
        lines = [_line(names, i, labels[i % 2]) for i in range(1, 10)]
        if name == "a79.csv":
            lines[8] = _line(names, 9, "BENIGN", total_fwd_packets="-1")
            lines.append(lines[0])
        else:
            lines[4] = _line(names, 5, "DDoS", flow_duration="0", flow_bytes_per_s="Infinity",
                             flow_packets_per_s="NaN")
            lines.append(lines[1])
        (folder / name).write_bytes("\r\n".join([header, *lines, ""]).encode("utf-8"))
    return folder


@pytest.fixture(scope="module")
def generated(sample, tmp_path_factory) -> bp.GeneratedInput:
    return bp.generate_input(sample, tmp_path_factory.mktemp("bench") / "input", ROWS, [0.25, 0.5, 1.0])


def _data_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\r\n")[1:-1]


def test_generated_input_has_exact_rows_headers_and_jitter(sample, generated):
    assert generated.rows == {"0.25": 500, "0.5": 1000, "1.0": 2000}
    for key, rows in generated.rows.items():
        assert sum(len(_data_lines(p)) for p in generated.folders[key].glob("*.csv")) == rows
    headers = {p.name: p.read_bytes().split(b"\r\n")[0] for p in sample.glob("*.csv")}
    for path in generated.folders["1.0"].glob("*.csv"):
        assert path.read_bytes().split(b"\r\n")[0] == headers[path.name.split("-", 1)[1]]
    assert headers["a79.csv"].startswith("\ufeff Destination Port, Flow Duration".encode())

    a79 = _data_lines(generated.folders["0.25"] / "shard000-a79.csv")
    b85 = _data_lines(generated.folders["0.25"] / "shard000-b85.csv")
    assert len(a79) == len(b85) == 250  # replicas 0-24
    assert a79[:10] == _data_lines(sample / "a79.csv")  # replica 0: the sample as written
    names79 = canonical_headers(next(csv.reader([headers["a79.csv"].decode("utf-8")])))
    for original, jittered in zip(a79[:10], a79[10:20], strict=True):
        old = dict(zip(names79, original.split(","), strict=True))
        new = dict(zip(names79, jittered.split(","), strict=True))
        assert original != jittered
        assert (new["dst_port"], new["label"], new["total_bwd_packets"]) == (
            old["dst_port"], old["label"], old["total_bwd_packets"])  # small integers stay as they were
        assert new["init_win_bytes_forward"].isdigit()
        for c in FEATURE_COLUMNS:
            assert abs(float(new[c]) / float(old[c]) - 1) <= 0.01 + 1e-9, c
        assert new["fwd_header_length_dup"] == new["fwd_header_length"]
    names85 = canonical_headers(next(csv.reader([headers["b85.csv"].decode("utf-8")])))
    replica1 = dict(zip(names85, b85[14].split(","), strict=True))  # row 5 of replica 1
    assert (replica1["timestamp"], replica1["src_ip"], replica1["flow_bytes_per_s"],
            replica1["flow_packets_per_s"], replica1["flow_duration"]) == ("8/7/2017 3:55", "172.16.0.1",
                                                                           "Infinity", "NaN", "0")
    again = bp.generate_input(sample, generated.info["dir"], ROWS, [0.25, 0.5, 1.0])
    assert (again.info["reused"], again.folders, again.rows) == (True, generated.folders, generated.rows)
    everything = [line for p in generated.folders["1.0"].glob("*.csv") for line in _data_lines(p)]
    # Only the copies within a replica repeat: 18 distinct lines in each of the 100 replicas.
    assert len(set(everything)) == 1800


def _kept_without_pandas(folder: Path) -> tuple[int, int, int, dict[tuple[str, int], dict[str, float]]]:
    """The job's rules on plain csv rows: rates imputed, negative counters dropped, then exact duplicates."""
    seen, negative, duplicate, kept = set(), 0, 0, {}
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            names = canonical_headers(next(reader))
            for number, cells in enumerate(reader, start=1):
                record = dict(zip(names, (c.strip() for c in cells), strict=True))
                values = {c: float(record[c]) for c in FEATURE_COLUMNS}
                duration = max(values["flow_duration"], 1.0)
                if not math.isfinite(values["flow_bytes_per_s"]):
                    values["flow_bytes_per_s"] = (values["total_length_fwd_packets"]
                                                  + values["total_length_bwd_packets"]) * 1e6 / duration
                if not math.isfinite(values["flow_packets_per_s"]):
                    values["flow_packets_per_s"] = (values["total_fwd_packets"]
                                                    + values["total_bwd_packets"]) * 1e6 / duration
                if any(values[c] < 0 for c in NON_NEGATIVE_COLUMNS):
                    negative += 1
                    continue
                identity = (tuple(record.get(c, "") for c in IDENTIFIER_COLUMNS),
                            tuple(values[c] for c in FEATURE_COLUMNS), record["label"])
                if identity in seen:
                    duplicate += 1
                    continue
                seen.add(identity)
                kept[(path.resolve().name, number)] = values
    return len(kept), negative, duplicate, kept


@pytest.fixture(scope="module")
def seq_cfg():
    return load_config(["prep.sequence_length=4"], env={})  # sequences, whatever T the defaults choose


@pytest.fixture(scope="module")
def pandas_run(seq_cfg, generated, tmp_path_factory):
    out = tmp_path_factory.mktemp("pandas")
    return out, bp.pandas_prepare(seq_cfg, generated.folders["1.0"], out)


def test_pandas_keeps_what_the_batch_job_rules_keep(generated, pandas_run):
    out, report = pandas_run
    kept, negative, duplicate, _ = _kept_without_pandas(generated.folders["1.0"])
    assert (kept, negative, duplicate) == (1700, 100, 200)
    assert (report["rows_in"], report["rows_out"]) == (ROWS, kept)
    assert report["dropped"] == {"negative_counter": negative, "duplicate": duplicate}
    assert json.loads((out / "prep_report.json").read_text()) == report
    assert np.load(out / "features.npy").shape == (1700, 4, 76)
    assert np.load(out / "mask.npy").shape == (1700, 4)
    assert pq.read_table(out / "meta.parquet").num_rows == 1700


def test_pandas_zscore_and_sequences_are_exact(seq_cfg, generated, pandas_run):
    out, _ = pandas_run
    _, _, _, rows = _kept_without_pandas(generated.folders["1.0"])
    stats = bp.pp.NormStats.from_json((out / "normalization.json").read_text())
    meta = pq.read_table(out / "meta.parquet").to_pandas()
    features, mask = np.load(out / "features.npy"), np.load(out / "mask.npy")
    names = [c for c in FEATURE_COLUMNS if c != "fwd_header_length_dup"]
    assert stats.features == names

    # Statistics: of signed_log1p over exactly the train rows.
    train = [rows[(f, r)] for f, r in meta.loc[meta["split"] == "train", ["source_file", "source_row"]].itertuples(
        index=False)]
    t = np.log1p(np.array([[v[c] for c in names] for v in train]))  # all values >= 0 here
    assert stats.count == len(train) == int((meta["split"] == "train").sum())
    np.testing.assert_allclose(stats.mean, t.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, t.std(axis=0), rtol=1e-9)

    def position(row: int) -> int:
        (index,) = np.flatnonzero((meta["source_file"] == "shard000-b85.csv") & (meta["source_row"] == row))
        return int(index)

    def z(row: int, column: str) -> np.float32:
        j = names.index(column)
        value = rows[("shard000-b85.csv", row)][column]
        return np.float32(min(max((math.log1p(value) - stats.mean[j]) / stats.std[j], -10.0), 10.0))

    # Key 172.16.0.1 (odd rows, 3:51, 3:53, 3:55 ...): row 1 is its first flow, row 5 its third.
    first, third = position(1), position(5)
    assert meta.loc[first, "key"] == "172.16.0.1" and meta.loc[first, "attack_type"] == "DDoS"
    assert mask[first].tolist() == [False, False, False, True] and not features[first, :3].any()
    assert mask[third].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(features[third, 1], features[first, 3])
    np.testing.assert_array_equal(features[third, 2], features[position(3), 3])
    for row, column in ((1, "flow_duration"), (1, "init_win_bytes_forward"), (5, "flow_duration"),
                        (5, "flow_bytes_per_s"), (5, "flow_packets_per_s")):
        assert features[position(row), 3, names.index(column)] == pytest.approx(z(row, column), rel=1e-6)
    # Row 5's rates were imputed as if the flow lasted 1 us: bytes (or packets) * 1e6.
    assert rows[("shard000-b85.csv", 5)]["flow_packets_per_s"] == (5004.875 + 5) * 1e6  # total_fwd + total_bwd
