"""Benchmark: fusion model latency, torch eager vs onnxruntime CPU, against the machine's FLOP-bound time.

For the paper-size architecture (preset va, about 42 M parameters) and the tiny width, at B in {1, 8}
and T in {75, 300, 1200}: warm-up, then at least --min-iters calls and --min-seconds per cell, backends
taking turns in blocks (abaw_rt.bench.measure.time_in_turns). Reports p50/p90/p99/mean latency,
frames/s, the analytic FLOPs per frame, and the time those FLOPs take at the fp32 matmul rate measured
in the same run with the same thread count, two ways: the peak rate (torch.mm, 2048 x 2048 x 2048) and
the rate at the cell's own row count (torch.mm, (B*T) x 2048 x 1024: a weight matrix of the model's size
applied to B*T frames, which is what the model's GEMMs look like). Saves JSON under benchmarks/results/.

Goals (issue 3): both backends within 1.25x of the FLOP-bound time in every paper-size cell, and ORT
never more than 10 % slower than torch. The goal is judged against the rate at the cell's row count;
the ratio to the peak rate is reported beside it.

    python benchmarks/bench_model.py                 # full run (several minutes on 2 cores)
    python benchmarks/bench_model.py --quick         # small smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from abaw_rt.artefacts import RunOptions, open_runner
from abaw_rt.bench.measure import matmul_rate, time_in_turns
from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
from abaw_rt.export.onnx_export import export_onnx
from abaw_rt.machine import machine_info
from abaw_rt.model.config import TINY, flops_per_frame, parameter_count, preset

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_FLOP_RATIO = 1.25
GOAL_ORT_VS_TORCH = 1.10



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both backends")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--times", type=int, nargs="+", default=[75, 300, 1200])
    ap.add_argument("--models", nargs="+", default=["paper", "tiny"], choices=["paper", "tiny"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="tiny model, short cells: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/model_cpu_<date>.json)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.batches, args.times = ["tiny"], [1, 2], [75]
        args.min_iters, args.min_seconds, args.warmup = 3, 0.2, 1

    import torch

    torch.set_num_threads(args.threads)
    rate = matmul_rate(args.threads)
    print(f"fp32 peak matmul rate (torch.mm 2048^3, {args.threads} threads): {rate:.1f} GFLOP/s")
    row_rates = {}
    for b in args.batches:
        for t in args.times:
            if b * t not in row_rates:
                row_rates[b * t] = matmul_rate(args.threads, m=b * t, k=2048, n=1024)
                print(f"fp32 matmul rate at {b * t} rows ((B*T) x 2048 x 1024): {row_rates[b * t]:.1f} GFLOP/s")
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            cfg = preset("va", **(TINY if model_name == "tiny" else {}))
            ck_path = init_checkpoint(Path(tmp) / f"{model_name}.safetensors", cfg, seed=0)
            ck = load_checkpoint(ck_path)
            t0 = time.perf_counter()
            onnx_path = export_onnx(ck, Path(tmp) / f"{model_name}.fp32.onnx", check=False).path
            print(f"[{model_name}] {parameter_count(cfg) / 1e6:.2f} M params, exported in {time.perf_counter() - t0:.1f} s")
            opts = RunOptions(threads=args.threads)
            runners = {"torch": open_runner(ck_path, "torch", opts), "ort": open_runner(onnx_path, "ort", opts)}
            for r in runners.values():
                r.activate()
            for b in args.batches:
                for t in args.times:
                    feeds = runners["torch"].example_feeds(b, t, rng=np.random.default_rng(0))
                    res = {n: t.to_dict() for n, t in time_in_turns(runners, feeds, args.warmup, args.min_iters, args.min_seconds).items()}
                    fpf = flops_per_frame(cfg, t)
                    bound_ms = fpf * b * t / (row_rates[b * t] * 1e9) * 1e3
                    peak_bound_ms = fpf * b * t / (rate * 1e9) * 1e3
                    cell = {
                        "model": model_name,
                        "batch": b,
                        "time": t,
                        "mflops_per_frame": fpf / 1e6,
                        "matmul_gflops_at_rows": row_rates[b * t],
                        "flop_bound_ms": bound_ms,
                        "peak_flop_bound_ms": peak_bound_ms,
                        "backends": {},
                    }
                    for name, stats in res.items():
                        stats["frames_per_s"] = b * t / (stats["p50_ms"] / 1e3)
                        stats["x_flop_bound"] = stats["p50_ms"] / bound_ms
                        stats["x_peak_flop_bound"] = stats["p50_ms"] / peak_bound_ms
                        cell["backends"][name] = stats
                    cell["ort_over_torch"] = res["ort"]["p50_ms"] / res["torch"]["p50_ms"]
                    cells.append(cell)
                    print(
                        f"[{model_name}] B={b:<2} T={t:<5} bound {bound_ms:8.1f} ms | "
                        + " | ".join(
                            f"{n} p50 {s['p50_ms']:8.1f} p99 {s['p99_ms']:8.1f} ms ({s['x_flop_bound']:.2f}x, peak {s['x_peak_flop_bound']:.2f}x)"
                            for n, s in res.items()
                        )
                        + f" | ort/torch {cell['ort_over_torch']:.3f}"
                    )
            for r in runners.values():
                r.deactivate()

    paper = [c for c in cells if c["model"] == "paper"]
    goals = {
        "flop_bound_ratio_max": GOAL_FLOP_RATIO,
        "ort_over_torch_max": GOAL_ORT_VS_TORCH,
        "paper_cells_within_flop_goal": {
            n: all(c["backends"][n]["x_flop_bound"] <= GOAL_FLOP_RATIO for c in paper) for n in ("torch", "ort")
        }
        if paper
        else None,
        "paper_cells_ort_within_10pct": all(c["ort_over_torch"] <= GOAL_ORT_VS_TORCH for c in paper) if paper else None,
    }
    report = {
        "benchmark": "bench_model",
        "machine": machine_info(),
        "threads": args.threads,
        "timing": "Runner.last_inference_time: the backend call only (numpy in, numpy out), CPU, no device copies",
        "matmul_gflops_peak": rate,
        "matmul_gflops_at_rows": {str(k): v for k, v in row_rates.items()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cells": cells,
        "goals": goals,
    }
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"model_cpu_{'quick_' if args.quick else ''}{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"goals: {json.dumps(goals)}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
