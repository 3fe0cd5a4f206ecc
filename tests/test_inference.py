"""Device choice inside Spark tasks: the task's own GPU under GPU scheduling, the setting as given otherwise."""

from __future__ import annotations

from jobs.lib.inference import task_device


def test_outside_a_task_the_setting_stands():
    assert [task_device(d) for d in ("auto", "cpu", "cuda:1")] == ["auto", "cpu", "cuda:1"]


def test_a_task_without_gpu_resources_keeps_auto(spark):
    # no spark.task.resource.gpu.amount here: the task has no GPU address, so auto stays auto (CPU without CUDA)
    got = spark.sparkContext.parallelize(range(2), 2).map(lambda _: task_device("auto")).collect()
    assert got == ["auto", "auto"]
