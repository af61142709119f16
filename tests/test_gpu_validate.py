"""scripts/gpu_validate.sh and benchmarks/bench_gpu.py without a GPU: the script says so, exits 0, installs
nothing; the benchmark's own logic (goals, the CUDA-layer check, the report) runs on fakes and fake cells."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from abaw_rt.bench.measure import Timing
from abaw_rt.bench.sweep import Cell
from abaw_rt.cuda.gpu import cuda_devices
from tests.fakes_trt import H100, FakeCuda

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_validate.sh"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(bool(cuda_devices()), reason="a GPU is here: the script would run the whole validation")
def test_the_script_without_a_gpu_says_so_exits_0_and_installs_nothing(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    (wheels / "onnxruntime_gpu-1.0-py3-none-any.whl").write_bytes(b"not a wheel")  # would fail if installed
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ABAW_RT_WHEELS": str(wheels), "ABAW_RT_GPU_SITE": str(site)}
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("gpu_validate: no NVIDIA GPU here")
    assert not site.exists()
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before


def cell(backend, precision, graphs, b, p50):
    timing = Timing(p50, p50, p50, p50, 0.0, 10)
    return Cell(backend, precision, b, 300, graphs, "ok", timing=timing)


def test_goals_from_cells():
    bench = load_bench()
    cells = [
        cell("torch", "fp32", False, 1, 12.0), cell("torch", "fp16", False, 1, 6.0),
        cell("torch", "fp16", True, 1, 3.0), cell("ort", "fp16", False, 1, 4.0),
        cell("trt", "fp16", False, 1, 2.5), cell("trt", "fp16", True, 1, 2.0),
        cell("torch", "fp16", False, 64, 100.0), Cell("ort", "fp32", 64, 300, False, "error", "no CUDA provider"),
    ]  # fmt: skip
    g = bench.goals(cells, "NVIDIA H200", {(1, 300): 10.0, (64, 300): 640.0})
    assert g["fp16_graphs_speedup_B1_T300"] == 4.0 and g["fp16_graphs_met"] is True
    assert g["trt_fp16_speedup_B1_T300"] == 6.0 and g["trt_met"] is True  # the faster of the two trt modes
    assert g["ort_fp16_speedup_vs_torch_fp16_eager"] == {"B=1 T=300": 1.5}
    assert g["throughput_B64_T300"] == {"torch fp16": {"tflops": 6.4, "fraction_of_fp16_peak": round(6.4 / 989, 4)}}
    turns = {"status": "ok", "modes": {"torch fp32 eager": {"p50_ms": 10.0}, "torch fp16 + CUDA graphs": {"p50_ms": 4.0},
                                       "trt fp16": {"p50_ms": 1.0}}}  # fmt: skip
    g = bench.goals(cells, "NVIDIA H200", {}, turns)  # the ratios measured in turns win over the sweep's
    assert (g["ratios_from"], g["fp16_graphs_speedup_B1_T300"], g["trt_fp16_speedup_B1_T300"]) == ("turns", 2.5, 10.0)
    assert g["fp16_graphs_met"] is False and g["trt_met"] is True
    missed = bench.goals([cell("torch", "fp32", False, 1, 5.0), cell("torch", "fp16", True, 1, 2.5)], "Some GPU", {})
    assert missed["fp16_graphs_met"] is False and missed["trt_met"] is None and missed["fp16_peak_tflops"] is None


def test_cuda_layer_check_round_trips_through_a_captured_graph(monkeypatch):
    import abaw_rt.cuda.memory as memory

    bench = load_bench()
    fake = FakeCuda()
    monkeypatch.setattr(memory, "open_cuda", lambda binding: fake)
    result = bench.cuda_layer_check("cuda-python")
    assert result == {"binding": "fake", "status": "ok", "bytes": 64 * 300 * 2 * 4, "roundtrip_equal": True}
    assert fake.device == {} and fake.pinned == [] and fake.streams == {}  # all freed
    # a layer that loses the bytes is reported, not passed
    monkeypatch.setattr(fake, "copy_dtod_async", lambda dst, src, n, stream: None)
    assert bench.cuda_layer_check("cuda-python")["status"] == "error"


def test_a_gpu_without_cuda_torch_gives_a_report_with_every_step_recorded(monkeypatch, tmp_path, capsys):
    import abaw_rt.cuda.gpu as gpu

    bench = load_bench()
    monkeypatch.setattr(bench, "cuda_devices", lambda: [H100])
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [H100])
    monkeypatch.setattr(bench, "driver_version", lambda: "13.0")
    monkeypatch.setattr(bench, "environment", lambda: {"machine": {"cpu": "x"}, "torch": {"cuda_available": False}})
    out = tmp_path / "gpu.json"
    assert bench.main(["--model", "tiny", "--pytest-seconds", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "abaw-rt-bench/1" and report["kind"] == "gpu_validate" and report["gpu"] == H100.name
    assert report["steps"]["sweep"]["status"] == "skipped" and report["cells"] == []
    for check in report["steps"]["cuda_layer"]:  # no driver here: the real bindings' error, as one line
        assert "error" in check, check
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"gpu_validate: {H100.name}; pytest -m gpu: not run;") and line.endswith(str(out))
    assert np.isfinite(report["source"]["parameters"])


@pytest.mark.slow
def test_the_whole_run_wired_on_cpu_stand_ins(monkeypatch, tmp_path):
    """Every step of a GPU run, with the CPU standing in for CUDA (torch, onnxruntime) and the fakes for TensorRT:
    cells of every backend, the onnxruntime graph verified, an engine built, verified (the fake engine is not
    the model: it fails, and says so) and swept, the goals computed from the cells, one JSON."""
    import sys

    import abaw_rt.artefacts as artefacts
    import abaw_rt.bench.backends as backends
    import abaw_rt.cuda.gpu as gpu
    import abaw_rt.runners.trt_runner as trt_runner
    from tests.fakes_trt_build import fake_tensorrt_builder

    bench = load_bench()
    cuda = FakeCuda()
    real_options, real_config, real_factory = artefacts.RunOptions, bench.SweepConfig, backends.RunnerFactory
    on_cpu = lambda source: "cuda" if str(source).endswith(".plan") else "cpu"  # noqa: E731
    monkeypatch.setattr(artefacts, "RunOptions", lambda **kw: real_options(**{**kw, "device": "cpu", "threads": 1}))
    monkeypatch.setattr(bench, "SweepConfig", lambda **kw: real_config(**{**kw, "device": "cpu"}))
    monkeypatch.setattr(backends, "RunnerFactory", lambda src, device, workdir: real_factory(src, on_cpu(src), 1, workdir))
    monkeypatch.setattr(bench, "cuda_devices", lambda: [H100])
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [H100])
    monkeypatch.setattr(trt_runner, "open_cuda", lambda binding, device: cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt_builder("10.13.3.9", H100.name, cuda))
    monkeypatch.setattr(bench, "environment", lambda: {"machine": {"cpu": "x"}, "torch": {"cuda_available": True}})
    out = tmp_path / "gpu.json"
    argv = ["--model", "tiny", "--quick", "--batches", "1", "2", "--pytest-seconds", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    ok = {(c["backend"], c["precision"], c["cuda_graphs"]) for c in report["cells"] if c["status"] == "ok"}
    assert {("torch", "fp32", False), ("ort", "fp32", False), ("ort", "fp16", False), ("trt", "fp16", False),
            ("trt", "fp16", True)} <= ok  # fmt: skip
    steps = report["steps"]
    assert steps["verify"]["passed"] is True  # onnxruntime fp16 graph vs torch fp32
    assert steps["trt"]["status"] == "ok" and steps["trt"]["verify"]["passed"] is False
    turns = steps["goal_cell_in_turns"]
    assert turns["status"] == "ok" and {"torch fp32 eager", "ort cuda fp16", "trt fp16", "trt fp16 + CUDA graphs"} <= set(
        turns["modes"]) and "torch fp16 eager" in turns["skipped"]  # fmt: skip
    assert report["goals"]["ratios_from"] == "turns" and report["goals"]["trt_fp16_speedup_B1_T300"] > 0 and set(report["goals"]["throughput_B2_T300"]) >= {"trt fp16"}
