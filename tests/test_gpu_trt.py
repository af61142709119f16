"""GPU + TensorRT: build small engines, run them, compare with torch through verify, refuse a mismatched sidecar.

Marked ``gpu``; skips cleanly without a CUDA device, without ``tensorrt`` or without a CUDA build of torch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from abaw_rt.cuda.gpu import cuda_devices

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_devices(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def trt():
    module = pytest.importorskip("tensorrt")  # imported only after the device check above
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("the trt runner needs a CUDA build of torch")
    return module


@pytest.fixture(scope="module")
def built(trt, tmp_path_factory):
    """A tiny checkpoint, its fp16 and fp32 graphs, and an engine from each (two profiles)."""
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.engines.builder import BuildConfig, build_engine
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.model.config import TINY, preset
    from abaw_rt.trt.profiles import ProfileSpec

    folder = tmp_path_factory.mktemp("gpu_trt")
    ckpt = load_checkpoint(init_checkpoint(folder / "demo.safetensors", preset("va", **TINY), seed=7, window=300))
    profiles = (ProfileSpec.parse("window:1,2,4:1,300,300"), ProfileSpec.parse("long:1,1,4:300,600,600"))
    cfg = BuildConfig(profiles=profiles, workspace_mib=1024, timing_cache=folder / "timing.cache")
    plans = {}
    for p in ("fp16", "fp32"):
        graph = export_onnx(ckpt, folder / f"demo.{p}.onnx", precision=p, check=False).path
        plans[p] = build_engine(graph, dataclasses.replace(cfg, out=folder / f"demo.{p}.plan"))
    return ckpt, plans, folder


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_passes_verify_against_torch(built, precision):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    ckpt, plans, folder = built
    result = CliRunner().invoke(app, ["verify", str(ckpt.path), "--engine", str(plans[precision]), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["passed"], result.output
    assert (folder / "timing.cache").is_file()


def test_profiles_buffers_and_cuda_graphs(built):
    from abaw_rt.errors import AbawRtError
    from abaw_rt.runners.trt_runner import TrtRunner

    _, plans, _ = built
    rng = np.random.default_rng(1)
    with TrtRunner(plans["fp16"]) as plain, TrtRunner(plans["fp16"], cuda_graphs=True) as graphs:
        assert plain.onnx_checked
        for batch, time in [(1, 1), (4, 300), (2, 301), (1, 600), (4, 300), (1, 37)]:
            feeds = plain.example_feeds(batch, time, rng=rng, padded=batch > 1)
            a, b = plain.infer(feeds), graphs.infer(feeds)
            for name in a:
                assert a[name].shape == (batch, time, a[name].shape[2])
                np.testing.assert_allclose(b[name], a[name], atol=2e-2, rtol=0)
        with pytest.raises(AbawRtError, match="outside every optimisation profile"):
            plain.infer(plain.example_feeds(5, 10))
    with TrtRunner(plans["fp16"], profile="long") as pinned:  # 300 frames fit both; pinned to "long"
        feeds = pinned.example_feeds(1, 300, rng=rng)
        np.testing.assert_allclose(pinned.infer(feeds)["va"], plain_out(plans["fp16"], feeds)["va"], atol=2e-2)
        with pytest.raises(AbawRtError, match="outside every optimisation profile"):
            pinned.infer(pinned.example_feeds(1, 299))


def plain_out(plan, feeds):
    from abaw_rt.runners.trt_runner import TrtRunner

    with TrtRunner(plan) as r:
        return r.infer(feeds)


def test_a_mismatched_sidecar_is_refused(built, tmp_path):
    from abaw_rt.errors import AbawRtError
    from abaw_rt.runners.trt_runner import TrtRunner

    _, plans, _ = built
    plan = tmp_path / "copy.plan"
    shutil.copy(plans["fp16"], plan)
    sidecar = json.loads(plans["fp16"].with_suffix(".json").read_text())
    plan.with_suffix(".json").write_text(json.dumps({**sidecar, "gpu_name": "Some Other GPU"}))
    with pytest.raises(AbawRtError, match="built for Some Other GPU.*rebuild it: abaw-rt build"):
        TrtRunner(plan)
    plan.with_suffix(".json").write_text(json.dumps({**sidecar, "tensorrt_version": "10.0.0.1"}))
    with pytest.raises(AbawRtError, match="built with TensorRT 10.0.0.1"):
        TrtRunner(plan)


def test_fp16_from_the_fp32_graph_per_version(built, trt, tmp_path):
    from abaw_rt.engines.builder import BuildConfig, build_engine
    from abaw_rt.errors import AbawRtError
    from abaw_rt.runners.torch_runner import TorchRunner
    from abaw_rt.runners.trt_runner import TrtRunner
    from abaw_rt.trt.compat import TrtVersion
    from abaw_rt.trt.sidecar import read_sidecar
    from abaw_rt.verify import default_grid, run_verify

    ckpt, plans, folder = built
    fp32_graph = folder / "demo.fp32.onnx"
    cfg = BuildConfig(precision="fp16", out=tmp_path / "flag.plan", timing_cache=None)
    if TrtVersion.parse(trt.__version__).major >= 11:
        with pytest.raises(AbawRtError, match="strongly typed networks only"):
            build_engine(fp32_graph, cfg)
        return
    plan = build_engine(fp32_graph, cfg)  # TensorRT 10: FP16 flag, LayerNorm/softmax constrained to FP32
    flags = read_sidecar(plan).build_flags
    assert flags["fp16_flag"] and flags["fp32_constrained_layers"] >= 3 * ckpt.header.config.n_layers
    cand = TrtRunner(plan)
    with TorchRunner(ckpt) as ref, cand:
        report = run_verify(ref, {"trt fp16 flag": cand}, default_grid(300, lengths=[1, 7, 299, 300]))
    assert report.passed, report.to_dict()
