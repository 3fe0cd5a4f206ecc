"""Scoring inside Spark: the model is loaded once per Python worker and reused for every batch it scores.

`score_udf` builds an iterator pandas UDF. Its body asks :func:`get_detector` for the model; that function
lives in this importable module, so cloudpickle ships a reference to it (not a copy), and the cache below is
the worker process's own: with Spark's Python worker reuse (the default) a worker loads the model at its
first batch and keeps it for all later ones.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, StringType, StructField, StructType

# A StructType, not a DDL string: parsing DDL needs a running JVM, and the UDF's function must also be callable
# without one (jobs/bench_cuda.py runs it on a GPU machine that has no Spark).
SCORE_TYPE = StructType([StructField("attack_prob", FloatType()), StructField("attack_type", StringType()),
                         StructField("explanation", StringType())])
_DETECTORS: dict[tuple[str, str, int, int], Any] = {}


def task_device(device: str) -> str:
    """The device for this task: with GPU scheduling (spark.task.resource.gpu.amount), ``auto`` and ``cuda``
    become the GPU Spark assigned to the task (``cuda:<address>``), so executors sharing a node use their own
    GPUs; otherwise the setting as given (``auto``: CUDA when present, else the CPU)."""
    if device not in ("auto", "cuda"):
        return device
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    if gpus is not None and gpus.addresses:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{gpus.addresses[0]}"
    return device


def get_detector(model_dir: str, device: str = "auto", batch_size: int = 4096, threads: int = 0) -> Any:
    """The loaded model for these settings, loaded at most once in this process.

    ``model_dir`` is read on the worker: a relative path is resolved in the executor's working directory, where
    ``spark-submit --archives flowsentinel-model.tar.gz#model`` unpacks the model on every node.
    """
    device = task_device(device)
    key = (model_dir, device, batch_size, threads)
    if key not in _DETECTORS:
        from models.artifact import load_model

        _DETECTORS[key] = load_model(model_dir, device=device, batch_size=batch_size, threads=threads or None)
    return _DETECTORS[key]


def explain(last_flow: np.ndarray, names: list[str], top_k: int) -> list[str]:
    """For each row of (N, F) z-scores: the top_k features farthest from the training mean, as 'name=z'."""
    if top_k <= 0 or len(last_flow) == 0:
        return [""] * len(last_flow)
    k = min(top_k, last_flow.shape[1])
    order = np.argsort(-np.abs(last_flow), axis=1, kind="stable")[:, :k]
    return [", ".join(f"{names[j]}={last_flow[i, j]:+.1f}" for j in row) for i, row in enumerate(order)]


def score_udf(model_dir: str, device: str, batch_size: int, threads: int, explain_top_k: int) -> Any:
    """Iterator pandas UDF (features array<float> (T*F, flat), mask array<boolean> (T)) -> SCORE_TYPE."""

    @F.pandas_udf(SCORE_TYPE)  # type: ignore[call-overload]
    def score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        detector = get_detector(model_dir, device, batch_size, threads)
        seq_len, n_features = detector.seq_len, len(detector.features)
        for features, masks in batches:
            if len(features) == 0:
                yield pd.DataFrame({"attack_prob": np.zeros(0, np.float32), "attack_type": [], "explanation": []})
                continue
            # One concatenate of the Arrow-backed arrays: 5x cheaper than np.stack of per-row arrays, which was
            # most of the UDF's time on a GPU. Every row holds T*F values (T mask flags); checked, not assumed.
            x = np.concatenate(features.to_numpy()).astype(np.float32, copy=False)
            m = np.concatenate(masks.to_numpy()).astype(bool, copy=False)
            if x.size != len(features) * seq_len * n_features or m.size != len(masks) * seq_len:
                raise ValueError(f"scoring input of {len(features)} rows holds {x.size} values and {m.size} "
                                 f"mask flags; expected {seq_len} x {n_features} and {seq_len} per row")
            x, m = x.reshape(-1, seq_len, n_features), m.reshape(-1, seq_len)
            prob, type_index = detector.predict(x, m)
            alert = prob >= detector.threshold
            why = np.full(len(prob), None, dtype=object)
            if alert.any():
                why[alert] = explain(x[alert, -1, :], detector.features, explain_top_k)
            yield pd.DataFrame({"attack_prob": prob, "attack_type": detector.type_names(type_index),
                                "explanation": why})

    return score


# ------------------------------------------------------------------------------------------- community id

def community_id(src_ip: str | None, dst_ip: str | None, proto: int | None, src_port: int | None,
                 dst_port: int | None, seed: int = 0) -> str | None:
    """Community ID v1 flow hash (https://github.com/corelight/community-id-spec), as Zeek and Suricata
    compute it: base64(sha1(seed, smaller endpoint first)). None when an IP is missing or not an IP."""
    if not src_ip or not dst_ip or proto is None:
        return None
    try:
        sip, dip = ipaddress.ip_address(src_ip).packed, ipaddress.ip_address(dst_ip).packed
    except ValueError:
        return None
    sport, dport = int(src_port or 0), int(dst_port or 0)
    if proto not in (6, 17, 132):  # ports only count for TCP, UDP, SCTP here
        sport = dport = 0
    if (sip, sport) > (dip, dport):
        sip, dip, sport, dport = dip, sip, dport, sport
    data = struct.pack("!H", seed) + sip + dip + struct.pack("!BB", int(proto), 0)
    data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def _community_ids(src_ip: pd.Series, dst_ip: pd.Series, proto: pd.Series, src_port: pd.Series,
                     dst_port: pd.Series) -> pd.Series:
    def value(v: Any) -> Any:
        return None if pd.isna(v) else v

    return pd.Series([community_id(value(a), value(b), value(p), value(s), value(d))
                      for a, b, p, s, d in zip(src_ip, dst_ip, proto, src_port, dst_port, strict=True)],
                     dtype=object)


def community_id_column(src_ip: Column, dst_ip: Column, proto: Column, src_port: Column,
                        dst_port: Column) -> Column:
    # Built on call: a pandas UDF object needs a running SparkContext, never one at import time.
    udf = F.pandas_udf(_community_ids, StringType())  # type: ignore[call-overload]
    return udf(src_ip, dst_ip, proto, src_port, dst_port)


def proto_name(proto: Column) -> Column:
    return (F.when(proto == 6, "TCP").when(proto == 17, "UDP").when(proto == 1, "ICMP")
            .otherwise(proto.cast("string")))


def severity(score: Column) -> Column:
    return F.when(score >= 0.99, 1).when(score >= 0.9, 2).otherwise(3)
