"""GPU: the torch CUDA backend (fp32, fp16, CUDA graphs per shape bucket, torch.compile) against the CPU reference.

Marked ``gpu``; skips cleanly without a CUDA device visible to torch.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch"),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.model.config import TINY, preset

    path = tmp_path_factory.mktemp("gpu_torch") / "demo.safetensors"
    return load_checkpoint(init_checkpoint(path, preset("va", **TINY), seed=11))


def test_cuda_fp32_and_fp16_pass_verify(ckpt):
    from abaw_rt.runners.torch_runner import TorchRunner
    from abaw_rt.verify import default_grid, run_verify

    candidates = {
        "torch cuda fp32": TorchRunner(ckpt, device="cuda"),
        "torch cuda fp16": TorchRunner(ckpt, device="cuda", precision="fp16"),
        "torch cuda fp16 graphs": TorchRunner(ckpt, device="cuda", precision="fp16", cuda_graphs=True),
    }
    with TorchRunner(ckpt) as ref:
        for r in candidates.values():
            r.activate()
        report = run_verify(ref, candidates, default_grid(ckpt.header.window))
        for r in candidates.values():
            r.deactivate()
    assert report.passed, report.to_dict()


def test_cuda_graphs_replay_fresh_inputs_per_bucket(ckpt):
    from abaw_rt.runners.buckets import ShapeBuckets
    from abaw_rt.runners.torch_runner import TorchRunner

    buckets = ShapeBuckets(batch=(1, 4), time=(75, 300))
    rng = np.random.default_rng(0)
    with (
        TorchRunner(ckpt, "cuda", "fp16") as eager,
        TorchRunner(ckpt, "cuda", "fp16", cuda_graphs=True, buckets=buckets) as g,
    ):
        for batch, time in [(1, 75), (1, 40), (3, 300), (4, 120), (1, 75), (3, 300)]:
            feeds = eager.example_feeds(batch, time, rng=rng, padded=batch > 1)
            want, got = eager.infer(feeds), g.infer(feeds)
            for name in want:
                assert got[name].shape == want[name].shape
                np.testing.assert_allclose(got[name], want[name], atol=2e-2, rtol=0)
        assert sorted(g._graphs) == [(1, 75), (4, 300)]  # one capture per bucket, reused


@pytest.mark.slow
def test_torch_compile_fp16_matches_eager(ckpt):
    pytest.importorskip("triton")
    from abaw_rt.runners.torch_runner import TorchRunner

    with TorchRunner(ckpt, "cuda", "fp16") as eager, TorchRunner(ckpt, "cuda", "fp16", compile=True) as compiled:
        feeds = eager.example_feeds(2, 300, padded=True)
        want, got = eager.infer(feeds), compiled.infer(feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=2e-2, rtol=0)


def test_ort_cuda_provider_passes_verify(ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (pip install 'abaw-rt[gpu]')")
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.runners.ort_runner import OrtRunner
    from abaw_rt.runners.torch_runner import TorchRunner
    from abaw_rt.verify import default_grid, run_verify

    graph = export_onnx(ckpt, tmp_path / "demo.fp16.onnx", precision="fp16", check=False).path
    cand = OrtRunner(graph, provider="cuda")
    with TorchRunner(ckpt) as ref, cand:
        report = run_verify(ref, {"ort cuda fp16": cand}, default_grid(ckpt.header.window))
    assert report.passed, report.to_dict()
