"""The FP16 ONNX graph a strongly typed TensorRT build consumes: FP16 math, LayerNorm and softmax in FP32."""

from __future__ import annotations

import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.graphs.precision import check_fp16_graph, precision_placement

pytest.importorskip("torch")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def graphs(tiny_cfg, exported):
    """The session's tiny model (conftest) and its exported fp16 graph."""
    return tiny_cfg, exported["fp16"].path


def test_fp16_graph_keeps_layernorm_and_softmax_in_fp32(graphs):
    import onnx

    cfg, path = graphs
    placement = precision_placement(onnx.load(str(path)))
    assert placement.fragile_low == []
    # Every LayerNorm (two per encoder layer) and every softmax (one per layer) is there, in float32.
    assert placement.kept_fp32["LayerNormalization"] == 2 * cfg.n_layers
    assert placement.kept_fp32["Softmax"] == cfg.n_layers
    # ...while the matmuls compute in float16.
    assert placement.fp16_math > 0 and placement.fp32_math == 0
    assert check_fp16_graph(path).fp16_math == placement.fp16_math


def _graph(tmp_path, elem_type):
    """MatMul then LayerNorm, all in one float type."""
    import onnx
    from onnx import helper

    h = elem_type
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("LayerNormalization", ["y", "g", "b"], ["z"], name="ln_half", axis=-1),
        ],
        "g",
        [helper.make_tensor_value_info("x", h, [2, 4])],
        [helper.make_tensor_value_info("z", h, [2, 4])],
        initializer=[
            helper.make_tensor("w", h, [4, 4], [0.0] * 16),
            helper.make_tensor("g", h, [4], [1.0] * 4),
            helper.make_tensor("b", h, [4], [0.0] * 4),
        ],
    )
    path = tmp_path / f"ln_{elem_type}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_an_fp32_graph_is_refused_for_a_strongly_typed_fp16_build(tmp_path):
    from onnx import TensorProto

    path = _graph(tmp_path, TensorProto.FLOAT)
    with pytest.raises(AbawRtError, match="no matmul or convolution computes in float16.*-p fp16"):
        check_fp16_graph(path)


def test_a_layernorm_in_fp16_is_refused(tmp_path):
    from onnx import TensorProto

    path = _graph(tmp_path, TensorProto.FLOAT16)
    with pytest.raises(AbawRtError, match=r"LayerNormalization 'ln_half': input 'y' float16, output 'z' float16"):
        check_fp16_graph(path)
    with pytest.raises(AbawRtError, match="not a readable ONNX model"):
        check_fp16_graph(tmp_path / "missing.onnx")
