"""CUDA against the CPU, in one short run on a machine with a GPU (issue 5's GPU figure; issue 4's CUDA path).

    python -m bench.cuda --out BENCH_OUT/cuda.json [--model DIR] [--flows 200000] [--threads 2]

Four measurements, each on the same inputs for both devices:

1. **The scoring UDF**: the very function Spark calls per Arrow batch (``score_udf(...).func`` from
   jobs/lib/inference.py, model loaded once per process by ``get_detector``), fed pandas batches of
   ``spark.arrow_batch_size`` rows shaped as Arrow hands them over (a Series of flat float arrays and a Series
   of mask arrays). Flows/s on each device, and how far the CUDA results (float16 autocast) are from the CPU's:
   the largest probability difference and the flows whose binary label or attack type differ.
2. **The raw forward** (bench/model.py) at batch 4096 on each device, and at a larger batch on CUDA: the
   UDF/raw ratio per device.
3. **Training on CUDA with mixed precision** (jobs/train.py ``fit`` with ``train.amp``) on a synthetic task
   that a working loop learns to near-perfect accuracy; the same epochs on the CPU for the time ratio.
4. **GPU discovery**: conf/gpu-discovery.sh, which Spark's resource scheduling runs on each executor, must print
   the GPU addresses in Spark's JSON form.

The inputs are synthetic flows (jobs/lib/synthetic.py: benign, DDoS-like and scan-like) z-scored with the
model's own statistics, so both classes occur. No Spark runs here: this is meant for a GPU machine that has
PyTorch but no JVM (the UDF's function needs pyspark's Python modules only). Without CUDA it exits 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.model import bench as raw_forward
from jobs.lib.config import load_config
from jobs.lib.synthetic import synthetic_flows
from models.artifact import DEFAULT_DIR, load_model

ROOT = Path(__file__).resolve().parent.parent


def udf_batches(detector: Any, flows: int, rows_per_batch: int) -> tuple[list[tuple[pd.Series, pd.Series]],
                                                                          np.ndarray]:
    """Synthetic flows, z-scored with the model's statistics, cut into the UDF's pandas input batches."""
    names, t = detector.features, detector.seq_len
    raw = np.array([[float(r[c]) for c in names] for r in synthetic_flows(flows, seed=11, hosts=500)],
                   dtype=np.float64)
    z = detector.norm_stats.apply_numpy(raw).astype(np.float32)  # (N, F)
    # T consecutive flows per input (the stream's per-host history); T=1 is the flow itself.
    x = np.stack([np.roll(z, shift, axis=0) for shift in range(t - 1, -1, -1)], axis=1)  # (N, T, F)
    flat = x.reshape(len(x), -1)
    batches = []
    for start in range(0, len(flat), rows_per_batch):
        part = flat[start:start + rows_per_batch]
        batches.append((pd.Series(list(part)), pd.Series([np.ones(t, dtype=bool)] * len(part))))
    return batches, x


def run_udf(model_dir: str, device: str, batch_size: int, threads: int,
            batches: list[tuple[pd.Series, pd.Series]]) -> tuple[pd.DataFrame, float, float]:
    """The UDF's function over every batch: (results, seconds of the first pass, seconds of a warm pass)."""
    from jobs.lib.inference import score_udf

    score = score_udf(model_dir, device, batch_size, threads, 3).func  # what Spark's Python worker calls
    timings, out = [], None
    for _ in range(2):  # the first pass loads the model and warms the device (cuDNN, allocator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = pd.concat(list(score(iter(batches))), ignore_index=True)
        timings.append(time.perf_counter() - start)
    assert out is not None
    return out, timings[0], timings[1]


def compare_udf(model_dir: str, flows: int, rows_per_batch: int, batch_size: int, threads: int) -> dict[str, Any]:
    detector = load_model(model_dir, device="cpu")
    batches, _ = udf_batches(detector, flows, rows_per_batch)
    results: dict[str, Any] = {"flows": flows, "rows_per_arrow_batch": rows_per_batch, "batches": len(batches),
                               "model_batch_size": batch_size}
    frames = {}
    for device in ("cpu", "cuda"):
        frame, first_s, warm_s = run_udf(model_dir, device, batch_size, threads, batches)
        frames[device] = frame
        results[device] = {"flows_per_s": round(flows / warm_s, 1), "first_pass_s": round(first_s, 3),
                           "warm_pass_s": round(warm_s, 3), "alerts": int(frame["explanation"].notna().sum())}
    cpu, cuda = frames["cpu"], frames["cuda"]
    diff = np.abs(cpu["attack_prob"].to_numpy(np.float64) - cuda["attack_prob"].to_numpy(np.float64))
    cpu_alert = cpu["attack_prob"].to_numpy() >= detector.threshold
    cuda_alert = cuda["attack_prob"].to_numpy() >= detector.threshold
    results["max_abs_prob_diff"] = float(diff.max())
    results["mean_abs_prob_diff"] = float(diff.mean())
    results["binary_label_disagreements"] = int((cpu_alert != cuda_alert).sum())
    results["attack_type_disagreements"] = int((cpu["attack_type"] != cuda["attack_type"]).sum())
    results["cuda_vs_cpu_speedup"] = round(results["cuda"]["flows_per_s"] / results["cpu"]["flows_per_s"], 2)
    return results


def compare_training(threads: int, epochs: int, devices: tuple[str, ...] = ("cuda", "cpu")) -> dict[str, Any]:
    """The same fit on CUDA (float16 autocast + GradScaler) and on the CPU, on a separable synthetic task."""
    from jobs.lib.synthetic import separable_split
    from jobs.train import fit, split_metrics
    from models.artifact import build_model

    train, val = separable_split(8192, 4, 8, seed=0), separable_split(2048, 4, 8, seed=1)
    cfg = load_config(["train.patience=100", "train.progress=false", f"train.threads={threads}",
                       "train.max_minutes=3.0", "train.amp=true"], env={})
    out: dict[str, Any] = {"train_rows": len(train), "epochs": epochs, "batch_size": cfg.train.batch_size}
    for name in devices:
        device = torch.device(name)
        torch.manual_seed(0)
        model = build_model("cnn_lstm", {"n_features": 8, "seq_len": 4, "n_types": 4})
        result = fit(model, train, val, cfg, device, max_epochs=epochs)
        report = split_metrics(result.model, val, ["BENIGN", "a", "b", "c"], 0.5, device, 1024)
        out[name] = {"seconds": round(result.seconds, 2), "amp": name == "cuda",
                     "first_train_loss": round(result.history[0]["train_loss"], 4),
                     "last_train_loss": round(result.history[-1]["train_loss"], 4),
                     "val_accuracy": round(float(report["accuracy"]), 4),
                     "val_macro_f1": round(float(report["macro_f1"]), 4)}
    if "cpu" in out and "cuda" in out:
        out["cuda_vs_cpu_speedup"] = round(out["cpu"]["seconds"] / out["cuda"]["seconds"], 2)
    return out


def gpu_discovery() -> dict[str, Any]:
    proc = subprocess.run(["bash", str(ROOT / "conf" / "gpu-discovery.sh")], capture_output=True, text=True,
                          timeout=60)
    parsed = json.loads(proc.stdout) if proc.returncode == 0 else None
    addresses = parsed.get("addresses", []) if isinstance(parsed, dict) else []
    return {"returncode": proc.returncode, "stdout": proc.stdout.strip(), "stderr": proc.stderr.strip()[-500:],
            "parsed": parsed, "matches_torch": len(addresses) == torch.cuda.device_count() > 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON result file (e.g. BENCH_OUT/cuda.json)")
    parser.add_argument("--model", default=str(DEFAULT_DIR))
    parser.add_argument("--flows", type=int, default=200_000, help="flows scored by the UDF on each device")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target machine)")
    parser.add_argument("--train-epochs", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: CUDA is not available here; bench_cuda compares CUDA with the CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = load_config([], env={})
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "cpu_threads": args.threads, "model": args.model,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def step(name: str, fn: Any) -> None:
        start = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # one failed step must not lose the others' figures
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        out.write_text(json.dumps(result, indent=2) + "\n")

    step("gpu_discovery", gpu_discovery)
    step("udf", lambda: compare_udf(args.model, args.flows, cfg.spark.arrow_batch_size, cfg.model.batch_size,
                                    args.threads))
    step("raw_cpu", lambda: raw_forward(args.model, args.threads, 4096, 5.0, "cpu"))
    step("raw_cuda", lambda: raw_forward(args.model, args.threads, 4096, 5.0, "cuda"))
    step("raw_cuda_batch_65536", lambda: raw_forward(args.model, args.threads, 65536, 5.0, "cuda"))
    for device in ("cpu", "cuda"):
        udf, raw = result.get("udf", {}).get(device, {}), result.get(f"raw_{device}", {})
        if "flows_per_s" in udf and "flows_per_s" in raw:
            result.setdefault("udf_vs_raw_ratio", {})[device] = round(udf["flows_per_s"] / raw["flows_per_s"], 3)
    step("training", lambda: compare_training(args.threads, args.train_epochs))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
