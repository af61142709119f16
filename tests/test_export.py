"""Export: dynamic axes, self-describing metadata, FP16 precision placement, the multi-length check."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.export.onnx_export import check_exported, check_lengths_for, export_onnx  # noqa: E402
from abaw_rt.graphs.metadata import read_onnx_info  # noqa: E402
from tests.helpers import fixed_time_copy, perturbed_copy  # noqa: E402


def test_graph_inputs_and_outputs_have_dynamic_batch_and_time(exported):
    model = onnx.load(str(exported["fp32"].path), load_external_data=False)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(model.graph.input) + list(model.graph.output)
    }
    assert dims["visual"] == ["batch", "time", 2304]
    assert dims["audio"] == ["batch", "time", 512]
    assert dims["lengths"] == ["batch"]
    assert dims["va"] == ["batch", "time", 2]
    assert dims["expr"] == ["batch", "time", 8]
    assert dims["au"] == ["batch", "time", 12]


def test_metadata_carries_what_a_runner_needs(exported, tiny_ckpt):
    info = read_onnx_info(exported["fp16"].path)
    assert info.precision == "fp16"
    assert info.checkpoint_sha256 == tiny_ckpt.sha256
    assert info.header.config == tiny_ckpt.header.config
    assert (info.header.window, info.header.stride) == (40, 25)
    assert info.header.normalization is None  # applied in-graph
    assert [s.name for s in info.inputs] == ["visual", "audio", "lengths"]
    assert [s.name for s in info.outputs] == ["va", "expr", "au"]
    props = {p.key: p.value for p in onnx.load(str(exported["fp16"].path), load_external_data=False).metadata_props}
    assert props["abaw_rt.heads"] == "va,expr,au"
    assert props["abaw_rt.features"].startswith("eff:visual:1280,affectnet8:visual:512")
    assert json.loads(props["abaw_rt.labels"])["va"] == ["valence", "arousal"]
    assert "in-graph" in props["abaw_rt.normalization"]
    assert props["abaw_rt.version"]


def test_export_ran_the_multi_length_check(exported):
    assert exported["fp32"].checked_lengths == check_lengths_for(40) == (1, 7, 39, 40, 41, 80, 211)
    assert exported["fp32"].max_abs_error < 1e-4
    assert 0 < exported["fp16"].max_abs_error < 5e-2  # fp16 really computes in half precision


def _elem_types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return g, types


def test_fp16_graph_keeps_layernorm_and_softmax_in_fp32(exported):
    g, types = _elem_types(onnx.load(str(exported["fp16"].path)))
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    ops = Counter(n.op_type for n in g.node)
    assert ops["LayerNormalization"] == 2 * 2 and ops["Softmax"] == 2  # 2 layers in TINY
    for node in g.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.input[0]] == fp32, node.name
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            assert types[node.input[0]] == fp16, node.name
    # I/O stays float32 so the same feeds serve every precision
    assert all(types[v.name] == fp32 for v in g.input if v.name != "lengths")
    assert all(types[v.name] == fp32 for v in g.output)


def test_fp32_graph_has_no_half_precision(exported):
    g, types = _elem_types(onnx.load(str(exported["fp32"].path)))
    assert onnx.TensorProto.FLOAT16 not in set(types.values())


def test_external_data_is_written_beside_the_graph_and_loads(tiny_ckpt, tmp_path):
    from abaw_rt.runners.ort_runner import OrtRunner

    res = export_onnx(tiny_ckpt, tmp_path / "ext.onnx", precision="fp32", external_data=True)
    assert res.external_data is not None and res.external_data.is_file()
    assert res.external_data.parent == tmp_path
    assert res.path.stat().st_size < res.external_data.stat().st_size  # the weights moved out
    with OrtRunner(res.path) as r:
        out = r.infer(r.example_feeds(2, 9, padded=True))
    assert out["va"].shape == (2, 9, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([res.path.name, res.external_data.name])


def test_a_graph_with_a_baked_length_fails_the_check(exported, tiny_ckpt, tmp_path):
    baked = fixed_time_copy(exported["fp32"].path, tmp_path / "baked.onnx", time=17)
    with pytest.raises(AbawRtError, match="fails at length 1"):
        check_exported(baked, tiny_ckpt, "fp32", check_lengths_for(40))


def test_a_numerically_wrong_graph_fails_the_check(exported, tiny_ckpt, tmp_path):
    bad = perturbed_copy(exported["fp32"].path, tmp_path / "bad.onnx")
    with pytest.raises(AbawRtError, match="differs from torch at length"):
        check_exported(bad, tiny_ckpt, "fp32", (7,))


def test_export_refuses_bad_requests(tiny_ckpt, tmp_path):
    with pytest.raises(AbawRtError, match="precision 'int8'"):
        export_onnx(tiny_ckpt, tmp_path / "x.onnx", precision="int8")
    with pytest.raises(AbawRtError, match="does not exist"):
        export_onnx(tiny_ckpt, tmp_path / "missing" / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_exported_graph_matches_torch_on_a_long_padded_batch(exported, tiny_ckpt):
    from abaw_rt.runners.ort_runner import OrtRunner
    from abaw_rt.runners.torch_runner import TorchRunner

    with TorchRunner(tiny_ckpt) as ref, OrtRunner(exported["fp32"].path) as ort:
        feeds = ref.example_feeds(5, 123, rng=np.random.default_rng(5), padded=True)
        a, b = ref.infer(feeds), ort.infer(feeds)
    for name in a:
        for i, n in enumerate(feeds["lengths"]):
            np.testing.assert_allclose(b[name][i, :n], a[name][i, :n], atol=1e-4, rtol=0)
