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
    # What Spark's Python worker calls per Arrow batch, called directly (no session: jobs/bench_cuda.py runs it
    # on GPU machines without a JVM). Same probabilities and types as Detector.predict, alerts explained.
    import numpy as np

    from jobs.bench_cuda import run_udf, udf_batches
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
    from jobs.bench_cuda import main

    assert main(["--out", str(tmp_path / "cuda.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "cuda.json").exists()


def test_the_udf_function_takes_empty_batches_and_refuses_ragged_rows():
    import numpy as np
    import pandas as pd

    from jobs.lib.inference import score_udf

    score = score_udf("models/default", "cpu", 512, 1, 3).func
    empty = list(score(iter([(pd.Series([], dtype=object), pd.Series([], dtype=object))])))
    assert [len(f) for f in empty] == [0] and list(empty[0].columns) == ["attack_prob", "attack_type", "explanation"]
    ragged = (pd.Series([np.zeros(76, np.float32), np.zeros(75, np.float32)]), pd.Series([np.ones(1, bool)] * 2))
    with pytest.raises(ValueError, match="2 rows holds 151 values and 2 mask flags; expected 1 x 76"):
        list(score(iter([ragged])))
