"""Scoring inside Spark: the model is loaded once per Python worker and reused for every batch it scores.

`score_udf` builds an iterator pandas UDF. Its body asks :func:`get_detector` for the model; that function
lives in this importable module, so cloudpickle ships a reference to it (not a copy), and the cache below is
the worker process's own: with Spark's Python worker reuse (the default) a worker loads the model at its
first batch and keeps it for all later ones.
"""

from __future__ import annotations

import os
import re
import sys
import zipimport
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, StringType, StructField, StructType

# A StructType, not a DDL string: parsing DDL needs a running JVM, and the UDF's function must also be callable
# without one (bench/cuda.py runs it on a GPU machine that has no Spark).
# ``error``: null, or why this one row could not be scored (the job quarantines it as ``scoring_error: <error>``).
SCORE_TYPE = StructType([StructField("attack_prob", FloatType()), StructField("attack_type", StringType()),
                         StructField("explanation", StringType()), StructField("error", StringType())])
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


# The archives Spark puts on every Python worker's path (PythonUtils.sparkPythonPath): they never change while the
# worker lives.
_SPARK_ARCHIVE = re.compile(r"pyspark\.zip|py4j-.*-src\.zip|spark-core_.*\.jar")
_importers_seen = -1


def keep_spark_archive_listings() -> None:
    """Stop this Python worker from re-reading the listings of Spark's own archives before every task.

    Spark 4.1's worker calls importlib.invalidate_caches() at the start of each task. On Python 3.11 that makes
    every zipimporter re-read its archive's directory in pure Python, and a worker holds one importer per imported
    package of pyspark.zip and of the spark-core jar: measured 0.3-0.45 s per task, most of a small micro-batch's
    scoring step (Spark fixes it upstream, SPARK-54744). Those archives are fixed for the worker's life, so their
    importers keep their listings; any other archive (a user's --py-files) is re-read as before. Called per task
    and per state call; a no-op unless the worker's importer cache changed since the last call."""
    global _importers_seen
    if len(sys.path_importer_cache) == _importers_seen:
        return
    for finder in list(sys.path_importer_cache.values()):
        if (isinstance(finder, zipimport.zipimporter)
                and _SPARK_ARCHIVE.fullmatch(os.path.basename(finder.archive))):
            finder.invalidate_caches = _keep_listing  # type: ignore[method-assign]
    _importers_seen = len(sys.path_importer_cache)


def _keep_listing() -> None:
    """A Spark archive's zipimporter.invalidate_caches: its listing stays valid."""


def get_detector(model_dir: str, device: str = "auto", batch_size: int = 4096, threads: int = 0) -> Any:
    """The loaded model for these settings, loaded at most once in this process.

    ``model_dir`` is read on the worker: a relative path is resolved in the executor's working directory, where
    ``spark-submit --archives flowsentinel-model.tar.gz#model`` unpacks the model on every node.
    """
    keep_spark_archive_listings()
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


def predict_isolated(detector: Any, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """``detector.predict`` on (N, T, F) inputs, one row's failure kept to that row: a forward that raises is split
    in halves until the failing rows stand alone; each gets its error, the rest their scores. Raises when every
    row fails: then the model, not a row, is the problem (the query fails and restarts, as for a missing file)."""
    n = len(x)
    prob, types = np.full(n, np.nan, np.float32), np.zeros(n, np.int64)
    errors: list[str | None] = [None] * n

    def run(lo: int, hi: int) -> None:
        try:
            p, t = detector.predict(x[lo:hi], m[lo:hi])
            prob[lo:hi], types[lo:hi] = p, t
        except Exception as exc:
            if hi - lo == 1:
                errors[lo] = f"{type(exc).__name__}: {str(exc)[:200]}"
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)

    try:
        p, t = detector.predict(x, m)  # the usual case: one call for the whole batch
        prob[:], types[:] = p, t
    except Exception:
        run(0, n)
        if all(errors):
            raise
    for i in np.flatnonzero(~np.isfinite(prob)):
        errors[i] = errors[i] or "non-finite attack probability"
    return prob, types, errors


def score_frame(detector: Any, features: pd.Series, masks: pd.Series, explain_top_k: int) -> pd.DataFrame:
    """One Arrow batch of (features, mask) cells -> SCORE_TYPE columns. A row that cannot be scored (an input of
    the wrong size, a forward that fails on it, a non-finite score) gets ``error`` and no score."""
    seq_len, n_features = detector.seq_len, len(detector.features)
    n = len(features)
    # Every row must hold T*F values and T mask flags; checked per row, so a bad one fails alone.
    feature_cells, mask_cells = features.to_numpy(), masks.to_numpy()
    sizes = np.fromiter((-1 if f is None else len(f) for f in feature_cells), np.int64, n)
    flags = np.fromiter((-1 if f is None else len(f) for f in mask_cells), np.int64, n)
    ok = (sizes == seq_len * n_features) & (flags == seq_len)
    errors: list[str | None] = [
        None if good else f"input holds {size} values and {flag} mask flags; expected {seq_len} x "
                          f"{n_features} and {seq_len}"
        for good, size, flag in zip(ok, sizes, flags, strict=True)]
    prob = np.full(n, np.nan, np.float32)
    names = np.full(n, None, dtype=object)
    why = np.full(n, None, dtype=object)
    if ok.any():
        # One concatenate of the Arrow-backed arrays: 5x cheaper than np.stack of per-row arrays, which was most
        # of the UDF's time on a GPU.
        rows = np.flatnonzero(ok)
        x = np.concatenate(feature_cells[ok]).astype(np.float32, copy=False)
        m = np.concatenate(mask_cells[ok]).astype(bool, copy=False)
        x, m = x.reshape(-1, seq_len, n_features), m.reshape(-1, seq_len)
        p, type_index, failed = predict_isolated(detector, x, m)
        scored = np.array([e is None for e in failed], bool)
        prob[rows] = np.where(scored, p, np.nan)
        names[rows[scored]] = detector.type_names(type_index[scored])
        for i, e in zip(rows, failed, strict=True):
            errors[i] = e
        alert = scored & (p >= detector.threshold)
        if alert.any():
            why[rows[alert]] = explain(x[alert, -1, :], detector.features, explain_top_k)
    return pd.DataFrame({"attack_prob": prob, "attack_type": names, "explanation": why,
                         "error": pd.Series(errors, dtype=object)})


def score_udf(model_dir: str, device: str, batch_size: int, threads: int, explain_top_k: int) -> Any:
    """Iterator pandas UDF (features array<float> (T*F, flat), mask array<boolean> (T)) -> SCORE_TYPE.

    A row that cannot be scored gets ``error`` and no score; the others are scored (:func:`score_frame`). A
    failure of the whole batch (the model cannot be loaded, every row fails) raises."""

    @F.pandas_udf(SCORE_TYPE)  # type: ignore[call-overload]
    def score(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        detector = get_detector(model_dir, device, batch_size, threads)
        for features, masks in batches:
            yield score_frame(detector, features, masks, explain_top_k)

    return score


# The stream's scorer: SCORE_TYPE and the Community ID of every row the model flags (null for the others).
ALERT_SCORE_TYPE = StructType([*SCORE_TYPE.fields, StructField("community_id", StringType())])


def alert_score_udf(model_dir: str, device: str, batch_size: int, threads: int, explain_top_k: int) -> Any:
    """Iterator pandas UDF (features, mask, src_ip, dst_ip, protocol, src_port, dst_port) -> ALERT_SCORE_TYPE.

    Scores like :func:`score_udf` and, in the same pass over the batch, computes the Community ID of each row at
    or above the model's threshold (an alert): one Python round trip per batch instead of two. A row whose
    Community ID cannot be computed gets ``error`` (``community_id: <why>``), like a row that cannot be scored."""

    @F.pandas_udf(ALERT_SCORE_TYPE)  # type: ignore[call-overload]
    def score(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        detector = get_detector(model_dir, device, batch_size, threads)
        for features, masks, src_ip, dst_ip, proto, src_port, dst_port in batches:
            frame = score_frame(detector, features, masks, explain_top_k)
            cid = pd.Series([None] * len(frame), dtype=object)
            alert = np.flatnonzero((frame["error"].isna() & (frame["attack_prob"] >= detector.threshold)).to_numpy())
            if len(alert):
                ids = _community_ids(src_ip.iloc[alert], dst_ip.iloc[alert], proto.iloc[alert],
                                     src_port.iloc[alert], dst_port.iloc[alert])
                cid.iloc[alert] = ids["community_id"].to_numpy()
                failed = ids["error"].notna().to_numpy()
                frame.loc[alert[failed], "error"] = ids["error"].to_numpy()[failed]
            frame["community_id"] = cid
            yield frame

    return score


# ------------------------------------------------------------------------------------------- community id

_ALGORITHMS: dict[int, Any] = {}


def community_id(src_ip: str | None, dst_ip: str | None, proto: int | None, src_port: int | None,
                 dst_port: int | None, seed: int = 0) -> str | None:
    """Community ID v1 flow hash (https://github.com/corelight/community-id-spec) by the ``communityid`` package,
    the spec's own Python implementation: TCP, UDP and SCTP hash their ports, ICMP and ICMPv6 their type and code
    (CICFlowMeter writes them where the ports go), any other protocol none. None when an address or the
    protocol is missing, or the ports of a protocol that hashes them; ValueError when the package refuses the
    values (e.g. a port outside 0-65535)."""
    import communityid

    if not src_ip or not dst_ip or proto is None:
        return None
    proto = int(proto)
    with_ports = proto in communityid.PORT_PROTOS
    if with_ports and (src_port is None or dst_port is None):
        return None
    try:
        flow = communityid.FlowTuple(proto, src_ip, dst_ip, *((int(src_port), int(dst_port))  # type: ignore[arg-type]
                                                              if with_ports else ()))
    except communityid.FlowTupleError as exc:
        raise ValueError(str(exc)) from None
    if seed not in _ALGORITHMS:
        _ALGORITHMS[seed] = communityid.CommunityID(seed)
    algorithm = _ALGORITHMS[seed]
    value = algorithm.calc(flow)
    if value is None:
        raise ValueError(algorithm.get_error())
    return str(value)


def _community_ids(src_ip: pd.Series, dst_ip: pd.Series, proto: pd.Series, src_port: pd.Series,
                   dst_port: pd.Series) -> pd.DataFrame:
    """Per flow: ``community_id`` (null without both addresses, a protocol, or the ports of a protocol that needs
    them) and ``error``, what kept it from being computed (the job quarantines that row as scoring_error)."""

    def value(v: Any) -> Any:
        return None if pd.isna(v) else v

    ids: list[str | None] = []
    errors: list[str | None] = []
    for a, b, p, s, d in zip(src_ip, dst_ip, proto, src_port, dst_port, strict=True):
        try:
            ids.append(community_id(value(a), value(b), value(p), value(s), value(d)))
            errors.append(None)
        except Exception as exc:  # about this row only: the row is quarantined, the others keep their ids
            ids.append(None)
            errors.append(f"community_id: {str(exc)[:200]}")
    return pd.DataFrame({"community_id": pd.Series(ids, dtype=object), "error": pd.Series(errors, dtype=object)})


def proto_name(proto: Column) -> Column:
    return (F.when(proto == 6, "TCP").when(proto == 17, "UDP").when(proto == 1, "ICMP")
            .otherwise(proto.cast("string")))


def severity(score: Column) -> Column:
    return F.when(score >= 0.99, 1).when(score >= 0.9, 2).otherwise(3)
