"""Benchmark: fusion model latency on an NVIDIA GPU: torch fp32 eager vs fp16 eager vs fp16 + CUDA graphs.

The paper-size architecture (preset va, about 42 M parameters; ``--model tiny`` for a smoke run) at
B in {1, 8, 64} and T in {75, 300, 1200}. Each cell: warm-up, then at least --min-iters calls and
--min-seconds, the modes interleaved call by call so they see the same GPU state. The time is the
runner's own ``last_inference_time``: host arrays in, host arrays out (H2D copy, model, D2H copy,
device synchronised). TF32 is off, so fp32 is true fp32. ``--trt PLAN`` adds a TensorRT engine
(plain and with CUDA graphs) built for this GPU, e.g. with the ``h100`` recipe, which covers this grid.

Goal (issue 7): fp16 + CUDA graphs at least 3x lower latency than fp32 eager at B=1, T=300.

Without a CUDA device visible to torch the script prints why, writes nothing and exits 0 (skipped).

    python benchmarks/bench_gpu.py                       # full grid, paper size
    python benchmarks/bench_gpu.py --model tiny --quick  # smoke run
    python benchmarks/bench_gpu.py --trt engines/va.fp16.nvidia-h100-80gb-hbm3.plan
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SPEEDUP = 3.0
GOAL_CELL = (1, 300)


def cuda_or_skip():
    """torch with a CUDA device, or a clear message and exit 0."""
    try:
        import torch
    except ImportError:
        print("bench_gpu: SKIPPED: torch is not installed (pip install a CUDA build of torch)", file=sys.stderr)
        raise SystemExit(0) from None
    if not torch.cuda.is_available():
        print(
            f"bench_gpu: SKIPPED: no CUDA device visible to torch {torch.__version__} "
            f"(built with CUDA {torch.version.cuda}). Run it on a machine with an NVIDIA GPU and a CUDA build of "
            "torch; nothing was measured or written.",
            file=sys.stderr,
        )
        raise SystemExit(0)
    return torch


def bench_cell(runners: dict, feeds: dict, warmup: int, min_iters: int, min_seconds: float) -> dict:
    from abaw_rt.bench.measure import Timing

    for _ in range(warmup):
        for r in runners.values():
            r.infer(feeds)
    times = {name: [] for name in runners}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_iters or time.perf_counter() - start < min_seconds:
        for name, r in runners.items():
            r.infer(feeds)
            times[name].append(r.last_inference_time)
    return {name: Timing.of(t).to_dict() for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["paper", "tiny"], default="paper")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--times", type=int, nargs="+", default=[75, 300, 1200])
    ap.add_argument("--trt", type=Path, default=None, help="also time this TensorRT engine plan (with its sidecar)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="B in {1, 8}, T in {75, 300}, short cells")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON path (default: benchmarks/results/model_gpu_<gpu>_<date>.json)"
    )
    args = ap.parse_args()
    if args.quick:
        args.batches, args.times, args.min_iters, args.min_seconds = [1, 8], [75, 300], 5, 0.3

    torch = cuda_or_skip()
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.machine import machine_info
    from abaw_rt.model.config import TINY, flops_per_frame, parameter_count, preset
    from abaw_rt.runners.buckets import ShapeBuckets
    from abaw_rt.runners.torch_runner import TorchRunner

    device_name = torch.cuda.get_device_name(0)
    cfg = preset("va", **(TINY if args.model == "tiny" else {}))
    exact = ShapeBuckets(batch=tuple(sorted(set(args.batches))), time=tuple(sorted(set(args.times))))  # no padding
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        ck = load_checkpoint(init_checkpoint(Path(tmp) / "bench.safetensors", cfg, seed=0))
        runners = {
            "torch fp32 eager": TorchRunner(ck, device="cuda", precision="fp32"),
            "torch fp16 eager": TorchRunner(ck, device="cuda", precision="fp16"),
            "torch fp16 + CUDA graphs": TorchRunner(
                ck, device="cuda", precision="fp16", cuda_graphs=True, buckets=exact
            ),
        }
        if args.trt is not None:
            from abaw_rt.runners.trt_runner import TrtRunner

            runners["trt"] = TrtRunner(args.trt)
            runners["trt + CUDA graphs"] = TrtRunner(args.trt, cuda_graphs=True, buckets=exact)
        for r in runners.values():
            r.activate()
        print(f"{device_name}: {args.model} model, {parameter_count(cfg) / 1e6:.1f} M parameters")
        for b in args.batches:
            for t in args.times:
                feeds = runners["torch fp32 eager"].example_feeds(b, t, rng=np.random.default_rng(0))
                cell = {"batch": b, "time": t, "gflops_per_call": flops_per_frame(cfg, t) * b * t / 1e9}
                try:
                    cell["modes"] = bench_cell(runners, feeds, args.warmup, args.min_iters, args.min_seconds)
                except torch.cuda.OutOfMemoryError as exc:
                    cell["error"] = f"out of GPU memory: {str(exc).splitlines()[0]}"
                    torch.cuda.empty_cache()
                    cells.append(cell)
                    print(f"B={b:<3} T={t:<5} {cell['error']}")
                    continue
                base = cell["modes"]["torch fp32 eager"]["p50_ms"]
                for s in cell["modes"].values():
                    s["speedup_vs_fp32_eager"] = base / s["p50_ms"]
                    s["frames_per_s"] = b * t / (s["p50_ms"] / 1e3)
                cells.append(cell)
                print(
                    f"B={b:<3} T={t:<5} "
                    + " | ".join(
                        f"{n} p50 {s['p50_ms']:8.2f} ms ({s['speedup_vs_fp32_eager']:.2f}x)"
                        for n, s in cell["modes"].items()
                    )
                )
        for r in runners.values():
            r.deactivate()

    goal_cell = next((c for c in cells if (c["batch"], c["time"]) == GOAL_CELL and "modes" in c), None)
    speedup = goal_cell["modes"]["torch fp16 + CUDA graphs"]["speedup_vs_fp32_eager"] if goal_cell else None
    goals = {
        "fp16_graphs_speedup_at_B1_T300_min": GOAL_SPEEDUP,
        "fp16_graphs_speedup_at_B1_T300": speedup,
        "met": None if speedup is None else speedup >= GOAL_SPEEDUP,
    }
    report = {
        "benchmark": "bench_gpu",
        "device": device_name,
        "machine": machine_info(),
        "model": args.model,
        "parameters": parameter_count(cfg),
        "timing": "Runner.last_inference_time: numpy in, numpy out (H2D, model, D2H), device synchronised; TF32 off",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cells": cells,
        "goals": goals,
    }
    RESULTS.mkdir(exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    out = args.out or RESULTS / f"model_gpu_{slug}_{'quick_' if args.quick else ''}{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"goals: {json.dumps(goals)}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
