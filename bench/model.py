"""Raw model throughput: torch forward passes of the detector on fixed batches, in flows per second.

    .venv/bin/python -m bench.model [--model DIR] [--out BENCH_OUT/model.json] [--threads 2]

This is the ceiling the stream job's pandas UDF is compared against (issue 5: UDF/raw ratio): no Spark, no
Arrow, no preprocessing; just `model(x, mask)` under eval() and inference_mode on the chosen device, with the
given CPU threads. The input is random z-scored features with full masks (the steady state of a stream where
every key has history; for T=1 every mask is full anyway).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from models.artifact import DEFAULT_DIR, load_model


def bench(model_dir: str | Path, threads: int, batch: int, seconds: float, device: str) -> dict[str, object]:
    if threads > 0:
        torch.set_num_threads(threads)
    detector = load_model(model_dir, device=device, batch_size=batch)
    dev = detector.device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, detector.seq_len, len(detector.features), generator=generator).to(dev)  # (B, T, F)
    mask = torch.ones(batch, detector.seq_len, dtype=torch.bool, device=dev)  # (B, T)
    use_amp = dev.type == "cuda"

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            attack_logit, _ = detector.model(x, mask)
            torch.sigmoid(attack_logit.float())
        if use_amp:
            torch.cuda.synchronize()

    for _ in range(3):  # warm-up: allocator, cuDNN autotuning, lazy init
        forward()
    iterations, start = 0, time.perf_counter()
    while True:
        forward()
        iterations += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and iterations >= 5:
            break
    return {
        "flows_per_s": round(iterations * batch / elapsed, 1),
        "batch": batch,
        "iterations": iterations,
        "seconds": round(elapsed, 3),
        "threads": torch.get_num_threads(),
        "device": str(dev) if dev.type != "cuda" else f"cuda ({torch.cuda.get_device_name(dev)})",
        "model_version": detector.model_version,
        "arch": detector.manifest["arch"],
        "seq_len": detector.seq_len,
        "n_features": len(detector.features),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_DIR), help="model folder (default: the shipped model)")
    parser.add_argument("--out", help="write the result as JSON here (e.g. BENCH_OUT/model.json)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=10.0, help="measure for at least this long")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = parser.parse_args(argv)
    result = bench(args.model, args.threads, args.batch, args.seconds, args.device)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
