"""Benchmark and validation on an NVIDIA GPU: what ``scripts/gpu_validate.sh`` runs, one JSON and one summary line.

Steps, each recorded (a step that cannot run here is recorded as skipped with the reason, never dropped):

1. environment: machine_info (GPU and driver through the driver library, package versions, load average),
   torch / onnxruntime / TensorRT / cuda-bindings / pycuda as they import here;
2. the torch-free CUDA layer (``abaw_rt.cuda.memory``) on each binding that imports: pinned upload,
   download and a captured CUDA graph replayed, bytes compared;
3. ``pytest -m gpu`` (capped at ``--pytest-seconds``);
4. the paper-size model (``--model tiny`` for a smoke run) through ``abaw_rt.bench.sweep.run_sweep`` at
   T=300, B in {1, 64}: torch CUDA fp32 / fp16 eager and with CUDA graphs, onnxruntime's CUDA provider
   fp32 / fp16 (graphs exported here), then ``abaw_rt.verify.run_verify`` of the onnxruntime fp16 graph
   against torch fp32;
5. when ``tensorrt`` imports: an fp16 engine built from that graph, verified and swept the same way;
6. the goal cell (B=1, T=300) again, every mode taking turns in blocks (``abaw_rt.bench.measure.time_in_turns``),
   so the ratios the goals state are measured under the same conditions.

Goals (issue 19): torch fp16 + CUDA graphs >= 3x lower latency than fp32 eager at B=1 T=300; TensorRT
fp16 >= 4x torch fp32 eager; B=64 throughput against the GPU's dense fp16 peak; onnxruntime CUDA fp16
against torch fp16, measured in the same run.

Without an NVIDIA GPU it says so, writes nothing and exits 0 (``--probe`` exits 3 instead, for the script).

    python benchmarks/bench_gpu.py                       # everything, paper size
    python benchmarks/bench_gpu.py --model tiny --quick  # smoke run
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from abaw_rt.bench.report import make_report, save_report
from abaw_rt.bench.sweep import Cell, SweepConfig, run_sweep
from abaw_rt.cuda.gpu import cuda_devices, driver_version
from abaw_rt.errors import AbawRtError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NO_GPU = 3  # --probe's exit status without a GPU
GOAL_GRAPHS, GOAL_TRT, GOAL_CELL = 3.0, 4.0, (1, 300)
# Dense FP16 tensor-core peak (TFLOP/s, no sparsity) by a lower-case fragment of the GPU's name; first match wins.
FP16_PEAK_TFLOPS = (
    ("h200", 989.0), ("h100 pcie", 756.0), ("h100", 989.0), ("a100", 312.0), ("l40s", 362.0), ("l4", 121.0),
    ("a10", 125.0), ("t4", 65.0), ("rtx 4090", 165.0), ("orin", 42.5),
)  # fmt: skip


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def no_gpu_message() -> str:
    why = "no CUDA driver" if driver_version() is None else "the driver sees no CUDA device"
    return f"gpu_validate: no NVIDIA GPU here ({why}); nothing measured, nothing installed, nothing written"


# -- 1. environment -------------------------------------------------------------------------------------
def _try(fn):
    try:
        return fn()
    except Exception as exc:  # a package that does not import or work is the finding, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def environment() -> dict:
    from abaw_rt.machine import machine_info

    def torch_info():
        import torch

        ok = torch.cuda.is_available()
        return {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": ok,
                "device": torch.cuda.get_device_name(0) if ok else None}  # fmt: skip

    def ort_info():
        import onnxruntime as ort

        return {"version": ort.__version__, "providers": ort.get_available_providers(), "file": ort.__file__}

    def module_version(name):
        return lambda: {"version": getattr(importlib.import_module(name), "__version__", "unknown")}

    return {
        "machine": machine_info(),
        "torch": _try(torch_info),
        "onnxruntime": _try(ort_info),
        "tensorrt": _try(module_version("tensorrt")),
        "cuda-bindings": _try(module_version("cuda.bindings")),
        "pycuda": _try(module_version("pycuda")),
        "python": sys.version.split()[0],
    }


# -- 2. the CUDA layer ------------------------------------------------------------------------------------
def cuda_layer_check(binding: str) -> dict:
    """Upload, download and a CUDA graph replay on ``binding``; the bytes must come back unchanged."""
    from abaw_rt.cuda.memory import CudaGraph, DeviceArray, PinnedBuffer, Stream, open_cuda

    api = open_cuda(binding)
    stream, host, back = Stream(api), PinnedBuffer(api), PinnedBuffer(api)
    a, b = DeviceArray(api), DeviceArray(api)
    try:
        data = np.random.default_rng(0).standard_normal((64, 300, 2)).astype(np.float32)
        nbytes = host.write(data, np.float32)
        a.reserve(nbytes), b.reserve(nbytes), back.reserve(nbytes)
        stream.upload(a, host, nbytes)
        graph = CudaGraph(stream, lambda: stream.copy_from_device(b, a.ptr, nbytes))  # a -> b, captured
        graph.launch()
        stream.download(back, b, nbytes)
        stream.synchronize()
        same = bool(np.array_equal(back.view(data.shape, np.float32), data))
        graph.close()
        return {"binding": api.name, "status": "ok" if same else "error", "bytes": nbytes, "roundtrip_equal": same}
    finally:
        for x in (a, b, host, back):
            x.free()
        stream.close()


# -- 3. the gpu tests -------------------------------------------------------------------------------------
def run_gpu_tests(seconds: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {seconds:.0f} s"}
    tail = proc.stdout.strip().splitlines()[-1:] or proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail[0])}
    status = "ok" if proc.returncode in (0, 5) else "error"  # 5: nothing collected
    return {"status": status, "returncode": proc.returncode, "counts": counts, "summary": tail[0],
            "failures": [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))][:20]}  # fmt: skip


# -- 4./5. sweeps, verify, engine ---------------------------------------------------------------------------
def sweep(source: Path, cfg: SweepConfig, workdir: Path) -> list[Cell]:
    from abaw_rt.bench.backends import RunnerFactory

    def show(c: Cell) -> None:
        t = f"p50 {c.timing.p50_ms:8.2f} ms" if c.timing else f"{c.status}: {(c.reason or '')[:90]}"
        print(f"  {c.backend:5} {c.precision} graphs={c.cuda_graphs!s:5} B={c.batch:<3} T={c.time:<5} {t}", flush=True)

    return run_sweep(cfg, RunnerFactory(source, device="cuda", workdir=workdir), progress=show)


def verify(checkpoint: Path, candidates: dict[str, tuple[Path, str]], window: int) -> dict:
    """Each candidate (artefact, backend) against torch fp32 on CUDA, on the verify grid."""
    from abaw_rt.artefacts import RunOptions, open_runner
    from abaw_rt.verify import default_grid, run_verify

    reference = open_runner(checkpoint, "torch", RunOptions(precision="fp32", device="cuda"))
    runners = {name: open_runner(path, backend, RunOptions(device="cuda")) for name, (path, backend) in candidates.items()}
    with reference:
        for r in runners.values():
            r.activate()
        try:
            return run_verify(reference, runners, default_grid(window, batches=(1, 4))).to_dict()
        finally:
            for r in runners.values():
                r.deactivate()


def build_fp16_engine(graph: Path, workdir: Path, max_batch: int) -> Path:
    from abaw_rt.engines.builder import BuildConfig, build_engine
    from abaw_rt.trt.profiles import ProfileSpec

    profiles = (ProfileSpec.parse(f"live:1,1,{min(max_batch, 8)}:1,300,300"),)
    if max_batch > 8:  # the large batch gets kernels tuned for it
        profiles += (ProfileSpec.parse(f"batch:9,{max_batch},{max_batch}:1,300,300"),)
    cfg = BuildConfig(profiles=profiles, out=workdir / "bench.fp16.plan", timing_cache=workdir / "timing.cache")
    return build_engine(graph, cfg)


def goal_cell_in_turns(checkpoint: Path, plan: Path | None, workdir: Path, quick: bool) -> dict:
    """The modes the goals compare, at B=1 T=300, taking turns in blocks (``time_in_turns``): fair ratios."""
    from abaw_rt.bench.backends import RunnerFactory
    from abaw_rt.bench.measure import time_in_turns
    from abaw_rt.bench.sweep import Skip

    ckpt = RunnerFactory(checkpoint, device="cuda", workdir=workdir)
    modes = {"torch fp32 eager": (ckpt, "torch", "fp32", False), "torch fp16 eager": (ckpt, "torch", "fp16", False),
             "torch fp16 + CUDA graphs": (ckpt, "torch", "fp16", True), "ort cuda fp16": (ckpt, "ort", "fp16", False)}
    if plan is not None:
        engine = RunnerFactory(plan, device="cuda", workdir=workdir)
        modes |= {"trt fp16": (engine, "trt", "fp16", False), "trt fp16 + CUDA graphs": (engine, "trt", "fp16", True)}
    runners, skipped = {}, {}
    for name, (factory, backend, precision, graphs) in modes.items():
        try:
            runners[name] = factory(backend, precision, graphs).activate()
        except (Skip, AbawRtError) as exc:
            skipped[name] = str(exc)
    try:
        if "torch fp32 eager" not in runners:
            return {"status": "skipped", "reason": skipped.get("torch fp32 eager", "no reference"), "skipped": skipped}
        b, t = GOAL_CELL
        feeds = runners["torch fp32 eager"].example_feeds(b, t, rng=np.random.default_rng(0))
        n, secs = (5, 0.5) if quick else (20, 3.0)
        timings = time_in_turns(runners, feeds, warmup=3, min_iters=n, min_seconds=secs, rounds=3)
    finally:
        for r in runners.values():
            r.deactivate()
    base = timings["torch fp32 eager"].p50_ms
    modes_out = {k: {**v.to_dict(), "speedup_vs_fp32_eager": round(base / v.p50_ms, 2)} for k, v in timings.items()}
    return {"status": "ok", "batch": b, "time": t, "modes": modes_out, "skipped": skipped}


# -- goals and the summary ----------------------------------------------------------------------------------
def _p50(cells: list[Cell], backend: str, precision: str, graphs: bool, b: int, t: int) -> float | None:
    for c in cells:
        if c.key == (backend, precision, b, t, graphs) and c.timing:
            return c.timing.p50_ms
    return None


def goals(cells: list[Cell], gpu_name: str, gflops: dict[tuple[int, int], float], turns: dict | None = None) -> dict:
    """The issue's goals; the B=1 T=300 ratios from the cell measured in turns when there is one, else the sweep."""
    b, t = GOAL_CELL
    fp32 = _p50(cells, "torch", "fp32", False, b, t)
    graphs = _p50(cells, "torch", "fp16", True, b, t)
    trt = [p for g in (False, True) if (p := _p50(cells, "trt", "fp16", g, b, t)) is not None]
    if turns and turns.get("status") == "ok":
        p50 = {k: v["p50_ms"] for k, v in turns["modes"].items()}
        fp32, graphs = p50.get("torch fp32 eager"), p50.get("torch fp16 + CUDA graphs")
        trt = [p50[k] for k in ("trt fp16", "trt fp16 + CUDA graphs") if k in p50]
    ratio = (lambda x, y: round(x / y, 2) if x and y else None)
    peak = next((p for frag, p in FP16_PEAK_TFLOPS if frag in gpu_name.lower()), None)
    big = max((c.batch for c in cells), default=0)
    throughput = {
        f"{c.backend} {c.precision}{' + CUDA graphs' if c.cuda_graphs else ''}": {
            "tflops": round(gflops[(c.batch, c.time)] / c.timing.p50_ms, 2),
            "fraction_of_fp16_peak": round(gflops[(c.batch, c.time)] / c.timing.p50_ms / peak, 4) if peak else None,
        }
        for c in cells if c.batch == big and c.timing and (c.batch, c.time) in gflops
    }  # fmt: skip
    ort_vs_torch = {f"B={c.batch} T={c.time}": ratio(_p50(cells, "torch", "fp16", False, c.batch, c.time), c.timing.p50_ms)
                    for c in cells if c.backend == "ort" and c.precision == "fp16" and c.timing}  # fmt: skip
    speedup, trt_speedup = ratio(fp32, graphs), ratio(fp32, min(trt) if trt else None)
    return {
        "ratios_from": "turns" if turns and turns.get("status") == "ok" else "sweep",
        "fp16_graphs_speedup_B1_T300": speedup, "fp16_graphs_goal": GOAL_GRAPHS,
        "fp16_graphs_met": None if speedup is None else speedup >= GOAL_GRAPHS,
        "trt_fp16_speedup_B1_T300": trt_speedup, "trt_goal": GOAL_TRT,
        "trt_met": None if trt_speedup is None else trt_speedup >= GOAL_TRT,
        "ort_fp16_speedup_vs_torch_fp16_eager": ort_vs_torch,
        f"throughput_B{big}_T300": throughput, "fp16_peak_tflops": peak,
    }  # fmt: skip


def _trt_summary(g: dict, trt: dict) -> str:
    if trt.get("status") != "ok":
        return f"trt: {trt.get('status', 'not run')} ({trt.get('reason', '')})"
    verified = trt.get("verify", {}).get("passed", trt.get("verify", {}).get("error"))
    return f"trt fp16 {g.get('trt_fp16_speedup_B1_T300')}x fp32 eager (goal {GOAL_TRT}x), verify: {verified}"


def summary_line(report: dict) -> str:
    g, steps = report["goals"], report["steps"]
    tests = steps.get("pytest_gpu", {})
    parts = [
        f"gpu_validate: {report['gpu']}",
        f"pytest -m gpu: {tests.get('summary') or tests.get('reason', 'not run')}",
        f"torch fp16+graphs {g.get('fp16_graphs_speedup_B1_T300')}x fp32 eager at B=1 T=300 (goal {GOAL_GRAPHS}x)",
        f"ort cuda fp16 verify: {steps.get('verify', {}).get('passed', 'not run')}",
        _trt_summary(g, steps.get("trt", {})),
    ]
    return "; ".join(str(p) for p in parts)


# -- the run ------------------------------------------------------------------------------------------------
def measure(args, deadline: Deadline, steps: dict, workdir: Path) -> tuple[list[Cell], dict, dict]:
    """Steps 4 and 5; returns (cells, GFLOP per call by (batch, time), the model's summary)."""
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, flops_per_frame, parameter_count, preset

    model = preset("va", **(TINY if args.model == "tiny" else {}))
    summary = {"model": args.model, "parameters": parameter_count(model)}
    torch = steps["environment"]["torch"]
    if not torch.get("cuda_available"):
        steps["sweep"] = {"status": "skipped", "reason": f"no CUDA build of torch here ({torch})"}
        return [], {}, summary
    ckpt = init_checkpoint(workdir / "bench.safetensors", model, seed=0)
    timing = dict(warmup=2, min_iters=5, min_seconds=0.3, max_seconds=3.0) if args.quick else \
        dict(warmup=3, min_iters=20, min_seconds=1.0, max_seconds=10.0)  # fmt: skip
    cfg = SweepConfig(backends=("torch", "ort"), precisions=("fp32", "fp16"), times=(300,), batches=tuple(args.batches),
                      cuda_graphs=(False, True), device="cuda", **timing)  # fmt: skip
    steps["sweep_config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    cells = sweep(ckpt, cfg, workdir)
    graph = onnx_path_for(ckpt, "fp16", workdir)
    steps["verify"] = (_try(lambda: verify(ckpt, {"ort cuda fp16": (graph, "ort")}, 300)) if graph.is_file()
                       else {"status": "skipped", "reason": "the fp16 graph was not exported (see the ort cells)"})  # fmt: skip
    plan = None
    trt = _try(lambda: importlib.import_module("tensorrt"))  # after the GPU check: safe to import
    if isinstance(trt, dict):
        steps["trt"] = {"status": "skipped", "reason": f"tensorrt does not import here ({trt['error']})"}
    elif deadline.left() < 150 or not graph.is_file():
        steps["trt"] = {"status": "skipped", "reason": f"{deadline.left():.0f} s left or no fp16 graph"}
    else:
        start = time.perf_counter()
        try:
            plan = build_fp16_engine(graph, workdir, max(args.batches))
        except AbawRtError as exc:
            steps["trt"] = {"status": "error", "reason": str(exc)}
            print(f"  trt build failed: {exc}", flush=True)
        else:
            steps["trt"] = {"status": "ok", "build_s": round(time.perf_counter() - start, 1),
                            "verify": _try(lambda: verify(ckpt, {"trt fp16": (plan, "trt")}, 300))}  # fmt: skip
            cells += sweep(plan, replace(cfg, backends=("trt",), precisions=("fp16",)), workdir)
    steps["goal_cell_in_turns"] = _try(lambda: goal_cell_in_turns(ckpt, plan, workdir, args.quick))
    gflops = {(b, 300): flops_per_frame(model, 300) * b * 300 / 1e9 for b in args.batches}
    return cells, gflops, summary


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", action="store_true", help=f"only say whether a GPU is here (exit {NO_GPU} if not)")
    ap.add_argument("--model", choices=["paper", "tiny"], default="paper")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--quick", action="store_true", help="short cells (smoke run)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip later steps past this many seconds")
    ap.add_argument("--pytest-seconds", type=float, default=150.0, help="cap on 'pytest -m gpu' (0: do not run it)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/gpu_<gpu>_<date>.json)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    devices = cuda_devices()
    if not devices:
        print(no_gpu_message())
        return NO_GPU if args.probe else 0
    if args.probe:
        print(f"gpu_validate: {devices[0].name}, driver CUDA {driver_version()}")
        return 0
    deadline = Deadline(args.budget_s)
    steps: dict = {"environment": environment()}
    bindings = [b for b, m in (("cuda-python", "cuda.bindings"), ("pycuda", "pycuda")) if importlib.util.find_spec(m)]
    steps["cuda_layer"] = [{"binding": b, **_try(lambda b=b: cuda_layer_check(b))} for b in bindings]
    if args.pytest_seconds > 0:
        steps["pytest_gpu"] = run_gpu_tests(max(min(args.pytest_seconds, deadline.left() - 240), 30))
    with tempfile.TemporaryDirectory(prefix="abaw_rt_gpu_") as tmp:
        cells, gflops, source = measure(args, deadline, steps, Path(tmp))
    gpu = devices[0].name
    report = make_report("gpu_validate", steps["environment"]["machine"], source, steps.pop("sweep_config", {}), cells,
                         extra={"gpu": gpu, "goals": goals(cells, gpu, gflops, steps.get("goal_cell_in_turns")),
                                "steps": steps})  # fmt: skip
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    out = args.out or RESULTS / f"gpu_{slug}_{'quick_' if args.quick else ''}{time.strftime('%Y%m%d')}.json"
    save_report(report, out)
    print(summary_line(report) + f"; saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
