"""Schema-valid synthetic CICFlowMeter flows for load tests and for `make demo` when no data folder exists.

Three behaviours, drawn per host so that per-host sequences look like something: ordinary benign traffic
(varied durations and sizes, a handful of server ports), DDoS-like floods (many short, small flows from a few
sources to one web server) and port scans (one or two packets to ever new destination ports). The numbers are
plausible, not realistic: they exercise the pipeline, they do not evaluate a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from schemas.flows import FEATURE_COLUMNS

BEHAVIOURS = ("BENIGN", "DDoS", "PortScan")
_START = datetime(2017, 7, 7, 9, 0, 0)


def _features(rng: np.random.Generator, kind: str, n: int) -> dict[str, np.ndarray]:
    if kind == "BENIGN":
        duration = rng.lognormal(12, 2.5, n)
        fwd = rng.integers(1, 60, n).astype(float)
        bwd = rng.integers(0, 80, n).astype(float)
        fwd_len = fwd * rng.uniform(20, 900, n)
        bwd_len = bwd * rng.uniform(0, 1400, n)
    elif kind == "DDoS":
        duration = rng.lognormal(13, 1.0, n)
        fwd = rng.integers(3, 8, n).astype(float)
        bwd = rng.integers(0, 6, n).astype(float)
        fwd_len = fwd * rng.uniform(0, 20, n)
        bwd_len = bwd * rng.uniform(0, 1000, n)
    else:  # PortScan
        duration = rng.uniform(1, 200, n)
        fwd = rng.integers(1, 3, n).astype(float)
        bwd = rng.integers(0, 2, n).astype(float)
        fwd_len = np.zeros(n)
        bwd_len = bwd * 6.0
    packets = fwd + bwd
    seconds = np.maximum(duration, 1.0) / 1e6
    out = {name: np.zeros(n) for name in FEATURE_COLUMNS}
    out.update(
        flow_duration=np.round(duration),
        total_fwd_packets=fwd,
        total_bwd_packets=bwd,
        total_length_fwd_packets=np.round(fwd_len),
        total_length_bwd_packets=np.round(bwd_len),
        fwd_packet_length_mean=np.where(fwd > 0, fwd_len / np.maximum(fwd, 1), 0),
        bwd_packet_length_mean=np.where(bwd > 0, bwd_len / np.maximum(bwd, 1), 0),
        flow_bytes_per_s=(fwd_len + bwd_len) / seconds,
        flow_packets_per_s=packets / seconds,
        fwd_packets_per_s=fwd / seconds,
        bwd_packets_per_s=bwd / seconds,
        flow_iat_mean=duration / np.maximum(packets - 1, 1),
        flow_iat_max=duration,
        fwd_iat_total=duration,
        fwd_header_length=fwd * 32,
        bwd_header_length=bwd * 32,
        fwd_header_length_dup=fwd * 32,
        average_packet_size=(fwd_len + bwd_len) / np.maximum(packets, 1),
        syn_flag_count=(kind == "PortScan") * np.ones(n),
        ack_flag_count=(kind != "PortScan") * np.ones(n),
        subflow_fwd_packets=fwd,
        subflow_fwd_bytes=np.round(fwd_len),
        subflow_bwd_packets=bwd,
        subflow_bwd_bytes=np.round(bwd_len),
        init_win_bytes_forward=rng.choice([-1.0, 229.0, 8192.0, 29200.0, 65535.0], n),
        init_win_bytes_backward=rng.choice([-1.0, 0.0, 235.0, 28960.0], n),
        min_seg_size_forward=np.full(n, 20.0),
    )
    out["fwd_packet_length_max"] = out["fwd_packet_length_mean"]
    out["bwd_packet_length_max"] = out["bwd_packet_length_mean"]
    out["max_packet_length"] = np.maximum(out["fwd_packet_length_max"], out["bwd_packet_length_max"])
    out["packet_length_mean"] = out["average_packet_size"]
    out["avg_fwd_segment_size"] = out["fwd_packet_length_mean"]
    out["avg_bwd_segment_size"] = out["bwd_packet_length_mean"]
    out["down_up_ratio"] = np.floor(bwd / np.maximum(fwd, 1))
    return out


def synthetic_flows(n: int, seed: int = 0, hosts: int = 200, attack_share: float = 0.2,
                    chunk: int = 20_000) -> Iterator[dict[str, Any]]:
    """Yield `n` flow records (canonical names, FLOW_RECORD fields) in event-time order."""
    rng = np.random.default_rng(seed)
    attackers = max(1, int(hosts * attack_share))
    host_kind = np.array(["BENIGN"] * (hosts - attackers)
                         + [BEHAVIOURS[1 + i % 2] for i in range(attackers)])
    emitted = 0
    while emitted < n:
        m = min(chunk, n - emitted)
        host = rng.integers(0, hosts, m)
        kinds = host_kind[host]
        columns: dict[str, np.ndarray] = {name: np.zeros(m) for name in FEATURE_COLUMNS}
        for kind in BEHAVIOURS:
            sel = kinds == kind
            if sel.any():
                for name, values in _features(rng, kind, int(sel.sum())).items():
                    columns[name][sel] = values
        dst_port = np.where(kinds == "PortScan", rng.integers(1, 65535, m),
                            rng.choice([80, 443, 53, 22, 8080], m))
        src_port = rng.integers(1024, 65535, m)
        for i in range(m):
            h = int(host[i])
            src_ip = f"10.{h // 65536 % 256}.{h // 256 % 256}.{h % 256}"
            dst_ip = "192.168.10.50" if kinds[i] != "BENIGN" else f"192.168.10.{int(dst_port[i]) % 200 + 3}"
            proto = 17 if dst_port[i] == 53 else 6
            row = emitted + i
            record: dict[str, Any] = {
                "flow_id": f"{dst_ip}-{src_ip}-{int(dst_port[i])}-{int(src_port[i])}-{proto}",
                "src_ip": src_ip,
                "src_port": int(src_port[i]),
                "dst_ip": dst_ip,
                "dst_port": int(dst_port[i]),
                "protocol": proto,
                "timestamp": (_START + timedelta(milliseconds=row)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            }
            for name in FEATURE_COLUMNS:
                record[name] = float(columns[name][i])
            record["label"] = str(kinds[i])
            record["source_file"] = f"synthetic-{seed}"
            record["source_row"] = row + 1
            yield record
        emitted += m


def separable_split(n: int, t: int, f: int, seed: int) -> Any:
    """A training split (jobs.train.SplitArrays) whose label is decided by the last (scored) flow only.

    Type k in 1..3 shifts feature k-1 of the scored flow by +8; benign flows are plain noise (the classes are
    separable to about 1e-4, so near-perfect accuracy is reachable), and earlier flows are noise behind a mask
    of random length. A model that ignores the scored flow, or a loop that does not train, stays near the 50%
    benign/attack base rate. Used by the training tests and bench/cuda.py.
    """
    from jobs.train import SplitArrays

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    types = rng.integers(0, 4, size=n)
    types[: n // 2] = 0
    rng.shuffle(types)
    for k in (1, 2, 3):
        x[types == k, -1, k - 1] += 8.0
    lengths = rng.integers(1, t + 1, size=n)
    mask = np.arange(t)[None, :] >= (t - lengths)[:, None]
    x[~mask] = 0.0
    return SplitArrays(x, mask, (types > 0).astype(np.int8), types.astype(np.int64), "synthetic")
