"""Benchmark layer: one extractor graph's latency and throughput against batch, beside its FLOP-bound time.

The FLOP-bound time is the graph's analytic FLOPs (``abaw_rt.graphs.flops``) at onnxruntime's own fp32
MatMul rate on this machine with the same threads (``ort_matmul_rate``): the time the work would take if
every convolution ran as fast as a large matrix product. Depthwise convolutions and small layers cannot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from abaw_rt.artefacts import open_extractor_engine, open_graph
from abaw_rt.bench.measure import Timing, time_calls
from abaw_rt.feeds import extractor_feeds
from abaw_rt.graphs.flops import graph_flops
from abaw_rt.graphs.precision import graph_compute_precision


def ort_matmul_rate(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of onnxruntime's MatMul (n x n x n) with ``threads`` intra-op threads: best of short trials."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "mm", [a], [y], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = {"a": np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)}
    sess.run(None, x)
    best = 0.0
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            sess.run(None, x)
            calls += 1
        best = max(best, 2 * n**3 * calls / (time.perf_counter() - start) / 1e9)
    return best


def _rows(run, batches: Sequence[int], min_seconds: float) -> list[dict]:
    """p50 latency, ms per item and items per second of an active extractor runner at each batch."""
    rows = []
    for b in batches:
        feeds = run.example_feeds(b, 1) if run.name == "trt" else extractor_feeds(run.input_specs, b, 0)

        def call() -> float:
            run.infer(feeds)
            return run.last_inference_time

        t = Timing.of(time_calls(call, warmup=1, min_iters=2, min_seconds=min_seconds, max_seconds=4 * min_seconds))
        rows.append({"batch": b, **t.to_dict(), "ms_per_item": t.p50_ms / b, "items_per_s": 1e3 * b / t.p50_ms})
    return rows


def bench_extractor_engine(plan: Path, batches: Sequence[int] | None = None, min_seconds: float = 1.0) -> dict:
    """Latency and throughput of one extractor engine (TensorRT) per batch (default: 1, 4, 16, 32 inside its
    profile); JSON-able. AbawRtError without a CUDA GPU, before TensorRT is touched."""
    runner = open_extractor_engine(plan, what="extractor", hint="bench its graph instead (abaw-rt bench GRAPH.onnx)")
    top = max(p.batch.max for p in runner.profiles)
    batches = tuple(batches or [b for b in (1, 4, 16, 32) if b <= top] or [top])
    with runner as run:
        rows = _rows(run, batches, min_seconds)
    best = min(rows, key=lambda r: r["ms_per_item"])
    return {"engine": str(plan), "precision": runner.precision, "backend": "trt", "gpu": runner.gpu.name,
            "profile_batch": runner.profiles[0].batch.as_list(), "rows": rows, "best": best}  # fmt: skip


def bench_extractor(graph: Path, batches: Sequence[int] = (1, 4, 16, 32), threads: int = 1, provider: str = "cpu",
                    min_seconds: float = 1.0, rate_gflops: float | None = None) -> dict:  # fmt: skip
    """Latency and throughput of one extractor graph per batch, beside its FLOP-bound time (JSON-able)."""
    gflops = sum(graph_flops(graph).values()) / 1e9
    rate = rate_gflops or ort_matmul_rate(threads)
    rows = []
    with open_graph(graph, provider=provider, threads=threads, what="extractor") as run:
        for b in batches:
            feeds = extractor_feeds(run.input_specs, b, 0)

            def call() -> float:
                run.infer(feeds)
                return run.last_inference_time

            t = Timing.of(time_calls(call, warmup=1, min_iters=2, min_seconds=min_seconds, max_seconds=4 * min_seconds))
            per_item = t.p50_ms / b
            bound = gflops / rate * 1e3
            rows.append({"batch": b, **t.to_dict(), "ms_per_item": per_item, "items_per_s": 1e3 / per_item,
                         "flop_bound_ms_per_item": bound, "ratio_to_flop_bound": per_item / bound})  # fmt: skip
    best = min(rows, key=lambda r: r["ms_per_item"])
    return {"graph": str(graph), "precision": graph_compute_precision(graph), "threads": threads, "provider": provider,
            "gflops_per_item": gflops, "matmul_gflops_per_s": rate, "rows": rows, "best": best}  # fmt: skip
