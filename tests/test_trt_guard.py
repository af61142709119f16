"""The no-GPU guard: without a CUDA device nothing touches TensorRT, and every path says so in one clean error.

TensorRT's lean runtime segfaults when its objects are created without a GPU, so the device check
must come before ``import tensorrt``. A stand-in ``tensorrt`` package on ``sys.path`` records whether
it was imported; it has no API, so a test that reached TensorRT objects would fail loudly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import abaw_rt.cuda.gpu as gpu
from abaw_rt.cli import app
from abaw_rt.cuda.gpu import GpuInfo
from abaw_rt.engines.builder import BuildConfig, build_engine
from abaw_rt.errors import AbawRtError
from abaw_rt.artefacts import open_runner
from abaw_rt.runners.trt_runner import TrtRunner
from tests.test_trt_sidecar import make_engine, make_onnx

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture
def fake_tensorrt(tmp_path, monkeypatch):
    """Put a stand-in ``tensorrt`` first on sys.path; returns (set its version, was it imported?)."""
    pkg = tmp_path / "fake_site" / "tensorrt"
    pkg.mkdir(parents=True)
    marker = tmp_path / "tensorrt-was-imported"
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)

    def set_version(version: str) -> None:
        (pkg / "__init__.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n__version__ = {version!r}\n"
        )
        sys.modules.pop("tensorrt", None)

    set_version("10.13.3.9")
    yield set_version, marker.exists
    sys.modules.pop("tensorrt", None)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [])


@pytest.fixture
def an_h100(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [H100])


def test_runner_without_cuda_refuses_before_importing_tensorrt(tmp_path, fake_tensorrt, no_gpu):
    _, imported = fake_tensorrt
    plan, _ = make_engine(tmp_path)
    for make in (lambda: TrtRunner(plan), lambda: open_runner(plan, "trt")):
        with pytest.raises(AbawRtError, match="TensorRT needs an NVIDIA GPU, and no CUDA device is visible"):
            make()
    assert not imported() and "tensorrt" not in sys.modules


def test_build_without_cuda_refuses_before_importing_tensorrt(tmp_path, fake_tensorrt, no_gpu):
    _, imported = fake_tensorrt
    onnx = make_onnx(tmp_path / "demo.fp16.onnx")
    out = tmp_path / "out" / "demo.plan"
    out.parent.mkdir()
    with pytest.raises(AbawRtError, match="needs an NVIDIA GPU"):
        build_engine(onnx, BuildConfig(out=out, timing_cache=tmp_path / "timing.cache"))
    assert not imported() and list(out.parent.iterdir()) == [] and not (tmp_path / "timing.cache").exists()


@pytest.mark.skipif(bool(gpu.cuda_devices()), reason="this machine has a CUDA device")
def test_the_real_device_probe_finds_nothing_here(tmp_path, fake_tensorrt):
    _, imported = fake_tensorrt
    plan, _ = make_engine(tmp_path)
    with pytest.raises(AbawRtError, match="no CUDA device"):
        TrtRunner(plan)
    assert not imported()


def test_gpu_without_tensorrt_names_the_extra(tmp_path, an_h100, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    plan, _ = make_engine(tmp_path)
    with pytest.raises(AbawRtError, match=r"pip install 'abaw-rt\[trt\]'"):
        TrtRunner(plan)


def test_unsupported_and_mismatched_tensorrt_versions(tmp_path, fake_tensorrt, an_h100):
    set_version, imported = fake_tensorrt
    plan, sidecar = make_engine(tmp_path)
    set_version("9.2.0.5")
    with pytest.raises(AbawRtError, match=r"TensorRT 9\.2\.0\.5: this abaw-rt supports TensorRT 10.x and 11.x"):
        TrtRunner(plan)
    set_version("10.12.0.36")
    with pytest.raises(
        AbawRtError, match=r"built with TensorRT 10\.13\.3\.9, this machine runs TensorRT 10\.12\.0\.36.*abaw-rt build"
    ):
        TrtRunner(plan)
    assert imported()  # with a GPU present, TensorRT is imported (and only its version read)


def test_another_gpu_is_refused(tmp_path, fake_tensorrt, monkeypatch):
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [GpuInfo(0, "NVIDIA A10", (8, 6))])
    plan, sidecar = make_engine(tmp_path)
    with pytest.raises(
        AbawRtError, match=r"built for NVIDIA H100 80GB HBM3 .* this GPU is NVIDIA A10 \(8\.6\); rebuild it"
    ):
        TrtRunner(plan)
    with pytest.raises(AbawRtError, match="CUDA device 1: this machine has 1"):
        TrtRunner(plan, device="cuda:1")


def test_a_fitting_engine_is_accepted_and_activation_needs_cuda_torch(tmp_path, fake_tensorrt, an_h100):
    torch = pytest.importorskip("torch")
    plan, sidecar = make_engine(tmp_path)
    runner = TrtRunner(plan)
    assert runner.onnx_checked and runner.precision == "fp16" and runner.profiles == sidecar.profiles
    assert [s.name for s in runner.input_specs] == ["visual", "audio", "lengths"]
    assert TrtRunner(plan, profile="long").pinned == 1
    with pytest.raises(AbawRtError, match=r"profile 'nope': engine .* has profiles \['window', 'long'\]"):
        TrtRunner(plan, profile="nope")
    if torch.cuda.is_available():
        pytest.skip("torch has CUDA here: activation would reach the stand-in TensorRT")
    with pytest.raises(AbawRtError, match="this torch .* has no CUDA"):
        runner.activate()
    with pytest.raises(AbawRtError, match="not active"):
        runner.infer(runner.example_feeds(1, 5))


# -- the CLI ----------------------------------------------------------------------------------------------
def _one_line_error(result, match: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], result.stderr


def test_cli_build_verify_export_without_gpu(tmp_path, fake_tensorrt, no_gpu):
    _, imported = fake_tensorrt
    cli = CliRunner()
    onnx = make_onnx(tmp_path / "demo.fp16.onnx")
    out = tmp_path / "engines"
    out.mkdir()
    result = cli.invoke(app, ["build", str(onnx), "--recipe", "h100", "--out", str(out / "x.plan")])
    _one_line_error(result, "needs an NVIDIA GPU")
    assert list(out.iterdir()) == []

    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, preset

    (tmp_path / "ck").mkdir()
    ckpt = init_checkpoint(tmp_path / "ck" / "demo.safetensors", preset("va", **TINY))
    result = cli.invoke(app, ["export", str(ckpt), "-p", "fp16", "--to", "trt"])
    _one_line_error(result, "needs an NVIDIA GPU")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["demo.safetensors"]  # refused before exporting

    plan, _ = make_engine(tmp_path)
    result = cli.invoke(app, ["verify", str(ckpt), "--engine", str(plan)])
    _one_line_error(result, "needs an NVIDIA GPU")
    result = cli.invoke(app, ["build", str(onnx), "--recipe", "no-such-gpu"])
    _one_line_error(result, "recipe 'no-such-gpu': no such file or recipe name")
    result = cli.invoke(app, ["build", str(onnx), "--profile", "bad"])
    _one_line_error(result, "--profile 'bad': expected NAME:BMIN")
    assert not imported()


def test_cli_build_refuses_profiles_that_miss_the_window(tmp_path, no_gpu):
    onnx = make_onnx(tmp_path / "demo.fp16.onnx", window=300)
    result = CliRunner().invoke(app, ["build", str(onnx), "--profile", "short:1,1,4:1,75,100"])
    _one_line_error(result, "cover 1..100 only, expected at least 1..300")
    assert not Path("engines", "demo.fp16.plan").exists()
