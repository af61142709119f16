"""Runners: one interface, inputs checked against the declared specs before any backend runs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.runners import RUNNERS, runner_class  # noqa: E402
from abaw_rt.runners.ort_runner import OrtRunner  # noqa: E402
from abaw_rt.runners.torch_runner import TorchRunner  # noqa: E402
from abaw_rt.verify import DEFAULT_TOLERANCES, compare_outputs  # noqa: E402


@pytest.fixture(params=["torch", "ort-fp32", "ort-fp16"])
def runner(request, tiny_ckpt, exported):
    if request.param == "torch":
        r = TorchRunner(tiny_ckpt)
    else:
        r = OrtRunner(exported[request.param.split("-")[1]].path)
    with r:
        yield r


def test_every_runner_agrees_with_the_reference(runner, tiny_ckpt):
    feeds = runner.example_feeds(3, 29, rng=np.random.default_rng(0), padded=True)
    with TorchRunner(tiny_ckpt) as ref:
        want = ref.infer(feeds)
    got = runner.infer(feeds)
    assert runner.last_inference_time is not None and runner.last_inference_time > 0
    stats = compare_outputs(want, got, feeds["lengths"], DEFAULT_TOLERANCES[runner.precision])
    assert all(s.passed for s in stats.values()), {k: s.failures for k, s in stats.items()}
    assert {k: v.shape for k, v in got.items()} == {"va": (3, 29, 2), "expr": (3, 29, 8), "au": (3, 29, 12)}


def _good(runner):
    return runner.example_feeds(2, 10)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.pop("audio"), r"missing input\(s\) \['audio'\]"),
        (lambda f: f.update(extra=np.zeros(1, np.float32)), r"unexpected input\(s\) \['extra'\]"),
        (lambda f: f.update(visual=f["visual"].astype(np.float64)), "input 'visual': got dtype float64, expected float32"),
        (lambda f: f.update(visual=f["visual"][0]), r"input 'visual': got shape \(10, 2304\), expected \(B, T, 2304\)"),
        (lambda f: f.update(visual=f["visual"][..., :1280]), r"input 'visual': got shape \(2, 10, 1280\), expected \(B, T, 2304\)"),
        (lambda f: f.update(audio=f["audio"][:, :7]), "axis 'time' is 7 but input 'visual' has 10"),
        (lambda f: f.update(lengths=f["lengths"][:1]), "axis 'batch' is 1 but input 'visual' has 2"),
        (lambda f: f.update(lengths=np.array([10, 0])), r"input 'lengths': values must lie in \[1, 10\]"),
        (lambda f: f.update(lengths=np.array([11, 3])), r"input 'lengths': values must lie in \[1, 10\]"),
        (lambda f: f.update(lengths=[10, 10]), "input 'lengths': got list, expected a numpy array"),
        (lambda f: f.update(visual=f["visual"][:, :0], audio=f["audio"][:, :0]), "axis 'time' is 0, expected at least 1"),
    ],
)
def test_bad_feeds_are_refused_before_the_backend_runs(runner, mutate, message):
    feeds = _good(runner)
    mutate(feeds)
    with pytest.raises(AbawRtError, match=message):
        runner.infer(feeds)


def test_runner_must_be_active(tiny_ckpt):
    r = TorchRunner(tiny_ckpt)
    with pytest.raises(AbawRtError, match="not active"):
        r.infer(r.example_feeds(1, 3))


def test_registry_picks_backends_by_name(tiny_ckpt):
    assert runner_class("torch") is TorchRunner and runner_class("ort") is OrtRunner
    assert "trt" in RUNNERS
    with pytest.raises(AbawRtError, match="backend 'tensorflow'"):
        runner_class("tensorflow")


def test_unavailable_provider_and_device_are_clear_errors(exported, tiny_ckpt):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(AbawRtError, match=r"abaw-rt\[gpu\]"):
            OrtRunner(exported["fp32"].path, provider="cuda").activate()
    with pytest.raises(AbawRtError, match="provider 'vulkan'"):
        OrtRunner(exported["fp32"].path, provider="vulkan")
    with pytest.raises(AbawRtError, match="precision 'bf16'"):
        TorchRunner(tiny_ckpt, precision="bf16")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AbawRtError, match="no CUDA device"):
            TorchRunner(tiny_ckpt, device="cuda").activate()


def test_onnx_without_our_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(AbawRtError, match="metadata lacks abaw_rt.header"):
        OrtRunner(tmp_path / "foreign.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(AbawRtError, match="not a readable ONNX model"):
        OrtRunner(tmp_path / "text.onnx")


def test_external_data_outside_the_model_folder_is_refused(exported, tmp_path):
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(exported["fp32"].path))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    set_external_data(init, location="../../etc/passwd")
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(model, str(tmp_path / "hostile.onnx"))
    with pytest.raises(AbawRtError, match="outside the model's folder"):
        OrtRunner(tmp_path / "hostile.onnx")
