"""The reliability suite, short: a few thousand records, one SIGKILL of the job, one broker restart.

The full run (>= 100,000 records, 3 crashes) is `make reliability`; this one runs inside `make test`.
"""

from __future__ import annotations

import json

from bench.reliability import main


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path, capsys):
    code = main(["--out", str(tmp_path), "--records", "3000", "--crashes", "1", "--broker-restarts", "1",
                 "--max-offsets", "1000", "--timeout", "600", "--seed", "7"])
    report = json.loads((tmp_path / "reliability.json").read_text())
    assert code == 0, capsys.readouterr().out
    assert report["records"] == 3000
    assert report["crashes_injected"] == 1
    assert report["broker_restarts"] == 1
    # 16 kinds x 3 + the 1 MB message, as bench.reliability.messages builds them for 3000 records; the three
    # identifier kinds (dst_port 70000, SQL in src_ip, protocol 300) once stopped the job or became alerts, two
    # flows in one record once passed as the first flow, and a label given twice as the last one
    assert report["malformed_sent"] == 49
    assert report["quarantined"] == 49
    assert report["quarantine_reasons"]["invalid_identifier"] == 9
    assert report["quarantine_reasons"]["invalid_json"] == 9  # cut mid-value, an array, two flows
    assert report["quarantine_reasons"]["duplicate_field"] == 3
    assert report["duplicates_sent"] == 3
    assert report["scored"] == 3000 - 49
    assert (report["lost"], report["duplicated"], report["misplaced"], report["unknown_offsets"]) == (0, 0, 0, 0)
    assert report["job_exits_by_itself"] == 0
    assert report["max_batch_records"] <= 1000
