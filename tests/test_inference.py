"""Device choice inside Spark tasks: the task's own GPU under GPU scheduling, the setting as given otherwise."""

from __future__ import annotations

import pytest
import torch

from jobs.lib.inference import task_device


def test_outside_a_task_the_setting_stands():
    assert [task_device(d) for d in ("auto", "cpu", "cuda:1")] == ["auto", "cpu", "cuda:1"]


def test_a_task_without_gpu_resources_keeps_auto(spark):
    # no spark.task.resource.gpu.amount here: the task has no GPU address, so auto stays auto (CPU without CUDA)
    got = spark.sparkContext.parallelize(range(2), 2).map(lambda _: task_device("auto")).collect()
    assert got == ["auto", "auto"]


def test_the_udf_function_scores_like_the_detector_without_spark():
    # What Spark's Python worker calls per Arrow batch, called directly (no session: bench/cuda.py runs it
    # on GPU machines without a JVM). Same probabilities and types as Detector.predict, alerts explained.
    import numpy as np

    from bench.cuda import run_udf, udf_batches
    from models.artifact import load_model

    detector = load_model("models/default", device="cpu")
    batches, x = udf_batches(detector, 3000, 1000)
    assert [len(f) for f, _ in batches] == [1000, 1000, 1000]
    frame, _, _ = run_udf("models/default", "cpu", 512, 1, batches)
    prob, types = detector.predict(x, np.ones(x.shape[:2], bool))
    # the UDF scores 1,000-row batches in forwards of 512, predict 3,000 rows in forwards of 4,096: float32
    # sums in another order, so equal to rounding, not bit for bit
    np.testing.assert_allclose(frame["attack_prob"].to_numpy(), prob, rtol=0, atol=1e-6)
    assert list(frame["attack_type"]) == list(detector.type_names(types))
    alerts = frame["attack_prob"].to_numpy() >= detector.threshold
    assert alerts.tolist() == (prob >= detector.threshold).tolist()
    assert 0 < alerts.sum() < len(prob)
    assert frame["explanation"].notna().to_numpy().tolist() == alerts.tolist()
    assert all(len(e.split(", ")) == 3 for e in frame["explanation"].dropna())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_cuda_refuses_to_run_without_cuda(tmp_path, capsys):
    from bench.cuda import main

    assert main(["--out", str(tmp_path / "cuda.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "cuda.json").exists()


def test_the_udf_function_takes_empty_batches_and_quarantines_ragged_rows_alone():
    import numpy as np
    import pandas as pd

    from jobs.lib.inference import score_udf

    score = score_udf("models/default", "cpu", 512, 1, 3).func
    empty = list(score(iter([(pd.Series([], dtype=object), pd.Series([], dtype=object))])))
    assert [len(f) for f in empty] == [0]
    assert list(empty[0].columns) == ["attack_prob", "attack_type", "explanation", "error"]
    # before: one 75-value row raised for the whole batch, and the query failed on it
    ragged = (pd.Series([np.zeros(76, np.float32), np.zeros(75, np.float32), None, np.zeros(76, np.float32)]),
              pd.Series([np.ones(1, bool), np.ones(1, bool), np.ones(1, bool), np.ones(2, bool)]))
    (frame,) = list(score(iter([ragged])))
    assert frame["error"].tolist() == [
        None, "input holds 75 values and 1 mask flags; expected 1 x 76 and 1",
        "input holds -1 values and 1 mask flags; expected 1 x 76 and 1",
        "input holds 76 values and 2 mask flags; expected 1 x 76 and 1"]
    assert np.isfinite(frame["attack_prob"][0]) and frame["attack_prob"][1:].isna().all()
    assert frame["attack_type"][0] in ("BENIGN", "DDoS", "PortScan") and frame["attack_type"][1:].isna().all()


class _Picky:
    """A detector whose forward fails on any batch holding a row whose first value is 7 (a poisoned row)."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.calls = 0

    def predict(self, x, m):
        import numpy as np

        self.calls += 1
        if self.broken:
            raise RuntimeError("weights missing")
        if (x[:, 0, 0] == 7).any():
            raise RuntimeError("poisoned")
        prob = x[:, 0, 1].astype(np.float32)
        return prob, np.zeros(len(x), np.int64)


def test_predict_isolated_keeps_a_failure_to_its_row_and_raises_when_the_model_fails():
    import numpy as np

    from jobs.lib.inference import predict_isolated

    x = np.zeros((8, 1, 2), np.float32)
    x[:, 0, 1] = np.arange(8) / 10
    x[5, 0, 0] = 7
    x[2, 0, 1] = np.nan
    prob, _, errors = predict_isolated(_Picky(), x, np.ones((8, 1), bool))
    assert errors == [None, None, "non-finite attack probability", None, None, "RuntimeError: poisoned", None, None]
    np.testing.assert_allclose(prob[[0, 1, 3, 4, 6, 7]], [0.0, 0.1, 0.3, 0.4, 0.6, 0.7], rtol=1e-6)
    with pytest.raises(RuntimeError, match="weights missing"):  # not about a row: the query must fail
        predict_isolated(_Picky(broken=True), x, np.ones((8, 1), bool))


# The Community ID spec's published test vectors (corelight/community-id-spec, baseline/baseline_deflt.json,
# seed 0): (proto, saddr, daddr, sport, dport, id); ports of ICMP and ICMPv6 are their type and code.
COMMUNITY_ID_VECTORS = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136, "1:zavyT/cezQr1fmImYCwYnMXbgck="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (46, "10.1.12.1", "10.1.12.2", None, None, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),  # RSVP: no ports
    (46, "10.1.12.2", "10.1.12.1", 7, 9, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),  # ports of a portless protocol ignored
]


def test_community_id_matches_the_spec_test_vectors():
    from jobs.lib.inference import community_id

    assert [community_id(s, d, p, sp, dp) for p, s, d, sp, dp, _ in COMMUNITY_ID_VECTORS] == [
        v[-1] for v in COMMUNITY_ID_VECTORS]


def test_community_id_of_incomplete_or_impossible_flows():
    import pandas as pd

    from jobs.lib.inference import _community_ids, community_id

    assert community_id(None, "10.0.0.1", 6, 1, 2) is None  # 79-column flows carry no addresses
    assert community_id("10.0.0.2", "10.0.0.1", 6, None, None) is None
    with pytest.raises(ValueError, match="70000"):  # the message that once stopped the stream
        community_id("10.0.0.2", "10.0.0.1", 6, 1, 70000)
    frame = _community_ids(pd.Series(["10.0.0.2", "1.2.3.4'; DROP TABLE alerts;--", "192.168.1.52"]),
                           pd.Series(["10.0.0.1", "10.0.0.1", "8.8.8.8"]), pd.Series([6, 6, 17]),
                           pd.Series([1, 1, 54585]), pd.Series([70000, 2, 53]))
    assert frame["community_id"].tolist() == [None, None, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="]
    assert frame["error"].tolist() == [
        'community_id: Destination port "70000" invalid',
        "community_id: Unsupported format for source IP address \"1.2.3.4'; DROP TABLE alerts;--\"", None]


@pytest.mark.parametrize("threshold", [1e-6, 1 - 1e-7])
def test_the_stream_scorer_adds_the_community_id_of_alerts_only(tmp_path, threshold):
    """alert_score_udf: the scores of score_udf and, for rows at or above the threshold, the Community ID; a row
    whose ID cannot be computed gets the error (the job quarantines it). Below the threshold nothing is hashed,
    so the impossible port of a benign row costs nothing and fails nothing."""
    import numpy as np
    import pandas as pd

    from jobs.lib.inference import alert_score_udf, score_udf
    from tests.helpers import random_artifact

    artifact = str(random_artifact(tmp_path / "model", seq_len=1, threshold=threshold))
    features = pd.Series([np.full(76, 0.5, np.float32), np.zeros(76, np.float32), np.zeros(75, np.float32)])
    masks = pd.Series([np.ones(1, bool)] * 3)
    tuples = (pd.Series(["192.168.1.52", "10.0.0.2", "10.0.0.3"]), pd.Series(["8.8.8.8", "10.0.0.1", "10.0.0.1"]),
              pd.Series([17, 6, 6]), pd.Series([54585, 1, 1]), pd.Series([53, 70000, 2]))
    (frame,) = list(alert_score_udf(artifact, "cpu", 512, 1, 0).func(iter([(features, masks, *tuples)])))
    (plain,) = list(score_udf(artifact, "cpu", 512, 1, 0).func(iter([(features, masks)])))
    np.testing.assert_array_equal(frame["attack_prob"].to_numpy(), plain["attack_prob"].to_numpy())
    ragged = "input holds 75 values and 1 mask flags; expected 1 x 76 and 1"
    if threshold < 0.5:  # every row alerts
        assert frame["community_id"].tolist() == ["1:d/FP5EW3wiY1vCndhwleRRKHowQ=", None, None]
        assert frame["error"].tolist() == [None, 'community_id: Destination port "70000" invalid', ragged]
    else:
        assert frame["community_id"].tolist() == [None, None, None]
        assert frame["error"].tolist() == [None, None, ragged]


class _Resource:
    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)


class _Task:
    """A stand-in for pyspark's TaskContext of a task that Spark gave these GPU addresses."""

    def __init__(self, *addresses: str) -> None:
        self._resources = {"gpu": _Resource(*addresses)} if addresses else {}

    def resources(self) -> dict:
        return self._resources


@pytest.mark.parametrize(("device", "gpus", "cuda", "expected"), [
    ("auto", ("1",), True, "cuda:1"),  # the task's own GPU, not GPU 0 of the node
    ("cuda", ("3", "0"), True, "cuda:3"),
    ("cuda", ("1",), False, "cuda"),  # Spark assigned a GPU torch cannot see: the setting as given
    ("auto", (), True, "auto"),  # no GPU scheduling: auto stays auto
    ("cpu", ("1",), True, "cpu"),
    ("cuda:0", ("1",), True, "cuda:0"),  # an explicit device is the user's choice
])
def test_task_device_takes_the_gpu_spark_assigned_to_the_task(monkeypatch, device, gpus, cuda, expected):
    import pyspark

    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: _Task(*gpus)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert task_device(device) == expected


def test_start_refuses_cuda_where_no_gpu_is_visible(monkeypatch):
    from jobs.lib.preflight import PreflightError
    from jobs.stream_detect import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PreflightError, match=r"model.device = 'cuda' but no CUDA GPU is visible"):
        check_device("cuda", executors_have_gpus=False)
    with pytest.raises(PreflightError, match=r"model.device = 'cuda:1' but no CUDA GPU is visible"):
        check_device("cuda:1", executors_have_gpus=False)
    check_device("auto", executors_have_gpus=False)  # falls back to the CPU
    check_device("cuda", executors_have_gpus=True)  # the executors' GPUs: each task checks its own
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0", executors_have_gpus=False)
    with pytest.raises(PreflightError, match=r"model.device = 'cuda:1' but this machine has 1 GPU\(s\)"):
        check_device("cuda:1", executors_have_gpus=False)


def test_spark_archive_listings_survive_the_per_task_cache_invalidation(tmp_path, monkeypatch):
    # Spark's worker calls importlib.invalidate_caches() before every task; on Python 3.11 each zipimporter then
    # re-reads its archive's listing (a new dict). Spark's own archives keep theirs; any other archive is re-read.
    import importlib
    import sys
    import zipfile

    from jobs.lib.inference import keep_spark_archive_listings

    archives = {}
    for name, module in (("pyspark.zip", "fs_probe_spark"), ("spark-core_2.13-4.1.1.jar", "fs_probe_jar"),
                         ("deps.zip", "fs_probe_user")):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{module}.py", "VALUE = 1\n")
        archives[name] = str(path)
        monkeypatch.syspath_prepend(str(path))
        monkeypatch.delitem(sys.modules, module, raising=False)
        assert importlib.import_module(module).VALUE == 1
    try:
        keep_spark_archive_listings()
        before = {name: sys.path_importer_cache[path]._files for name, path in archives.items()}
        importlib.invalidate_caches()
        after = {name: sys.path_importer_cache[path]._files for name, path in archives.items()}
        assert {name: after[name] is before[name] for name in archives} == {
            "pyspark.zip": True, "spark-core_2.13-4.1.1.jar": True, "deps.zip": False}
    finally:
        for path in archives.values():
            sys.path_importer_cache.pop(path, None)
        for module in ("fs_probe_spark", "fs_probe_jar", "fs_probe_user"):
            sys.modules.pop(module, None)
