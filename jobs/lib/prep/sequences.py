"""Sequences (the model's timesteps): window functions in batch, the numpy twin for the stream's state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.lib.config import Config, ConfigError
from jobs.lib.prep.cleaning import _policy


def sequence_settings(cfg: Config) -> dict[str, Any]:
    """What makes the model's input sequences; stored in prep_report.json and with the model."""
    return {"seq_len": int(cfg.prep.sequence_length), "key": cfg.prep.sequence_key,
            "key_fallback": "file:<source_file>", "order": ["event_time", "source_file", "source_row"],
            "cicids_12h_clock": bool(cfg.prep.cicids_12h_clock), "nonfinite_policy": _policy(cfg)}


def sequence_config_overrides(settings: Mapping[str, Any]) -> list[str]:
    """``--set`` flags that make this module build the inputs a model was trained on (from sequence_settings)."""
    keys = {"seq_len": "prep.sequence_length", "key": "prep.sequence_key",
            "cicids_12h_clock": "prep.cicids_12h_clock", "nonfinite_policy": "prep.nonfinite_policy"}
    out = []
    for name, dotted in keys.items():
        if name in settings:
            value = settings[name]
            out.append(f"{dotted}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def sequence_window(partition: str = "key") -> Any:
    """Event order within a key: event_time (nulls first), then file order."""
    return Window.partitionBy(partition).orderBy(F.col("event_time").asc_nulls_first(),
                                                 F.col("source_file"), F.col("source_row"))


def build_sequences(df: DataFrame, seq_len: int) -> DataFrame:
    """Adds ``features`` (T, F) and ``mask`` (T) as PREPARED_SAMPLE declares them.

    Row t of ``features`` is the key's flow t - (T-1) steps before this one in :func:`sequence_window` order, the
    scored flow last; rows before the key's first flow are zeros with mask False (left padding). Needs
    ``vector``, ``key``, ``event_time``, ``source_file``, ``source_row``. T=1 needs no window (no shuffle).
    """
    if seq_len < 1:
        raise ConfigError(f"config key prep.sequence_length: must be >= 1, got {seq_len}")
    vector = F.col("vector")
    if seq_len == 1:
        return df.withColumns({"features": F.array(vector), "mask": F.array(F.lit(True))})
    window = sequence_window()
    lags = {f"_lag{k}": F.lag(vector, k).over(window) for k in range(1, seq_len)}
    zeros = F.array_repeat(F.lit(0.0).cast("float"), F.size(vector))
    older = range(seq_len - 1, 0, -1)  # oldest first
    return df.withColumns(lags).withColumns({
        "features": F.array(*[F.coalesce(F.col(f"_lag{k}"), zeros) for k in older], vector),
        "mask": F.array(*[F.col(f"_lag{k}").isNotNull() for k in older], F.lit(True)),
    }).drop(*lags)


def assemble_sequences(history: np.ndarray, new: np.ndarray, seq_len: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy twin of :func:`build_sequences` for one key, for state kept across micro-batches.

    ``history`` (h, F): the key's latest earlier vectors, oldest first (only the last T-1 matter); ``new``
    (n, F): the key's new vectors in event order. Returns ``features`` (n, T, F) float32, ``mask`` (n, T) bool
    and the history to keep, (min(T-1, h+n), F).
    """
    new = np.asarray(new, dtype=np.float32)
    n, n_features = new.shape
    keep = seq_len - 1
    history = np.asarray(history, dtype=np.float32).reshape(-1, n_features)
    history = history[max(0, len(history) - keep):] if keep else history[:0]
    pad = keep - len(history)
    flows = np.concatenate([np.zeros((pad, n_features), np.float32), history, new])
    present = np.concatenate([np.zeros(pad, bool), np.ones(len(history) + n, bool)])
    windows = np.lib.stride_tricks.sliding_window_view(flows, seq_len, axis=0)  # (n, F, T)
    features = np.ascontiguousarray(windows.transpose(0, 2, 1))
    mask = np.lib.stride_tricks.sliding_window_view(present, seq_len).copy()
    real = np.concatenate([history, new])
    return features, mask, real[max(0, len(real) - keep):] if keep else real[:0]
