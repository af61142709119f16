"""Graph layer: analytic FLOPs of an ONNX graph from its shapes (Conv, MatMul, Gemm; a multiply-add counts 2).

The count comes from the graph itself, so it holds for the zoo's graphs and for a user's real file alike.
Elementwise work (activations, normalisations, pooling) is left out, as in ``abaw_rt.model.config.flops_per_frame``:
it is small beside the matmuls and convolutions and not what bounds their time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping

from abaw_rt.errors import AbawRtError


def _shapes(model, fixed: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Every tensor's static shape after fixing the graph inputs' symbolic axes (first axis: batch)."""
    import onnx

    for inp in model.graph.input:
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                value = fixed.get(d.dim_param, 1 if i == 0 else None)
                if value is None:
                    raise AbawRtError(
                        f"input '{inp.name}' axis {i} ('{d.dim_param}') is symbolic; give its size to count FLOPs"
                    )
                d.dim_value = int(value)
    del model.graph.value_info[:]  # stale entries (symbolic batch, from a converter) would win over inference
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def graph_flops(path: Path, fixed: Mapping[str, int] | None = None) -> Counter:
    """FLOPs of one call of the graph at batch 1 (or the sizes in ``fixed``), per op type.

    Raises:
        AbawRtError: unreadable graph, or a Conv/MatMul/Gemm whose shapes cannot be inferred.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise AbawRtError(f"ONNX '{path}': not a readable ONNX model ({exc})") from None
    shapes = _shapes(model, dict(fixed or {}))
    flops: Counter = Counter()
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        try:
            out = shapes[node.output[0]]
            if node.op_type == "Conv":
                w = shapes[node.input[1]]  # (Cout, Cin / groups, kh, kw)
                flops["Conv"] += 2 * _prod(out) * _prod(w[1:])
            elif node.op_type == "MatMul":
                a = shapes[node.input[0]]
                flops["MatMul"] += 2 * _prod(out) * a[-1]
            else:
                a = shapes[node.input[0]]
                trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
                flops["Gemm"] += 2 * _prod(out) * (a[0] if trans_a else a[-1])
        except KeyError:
            raise AbawRtError(f"ONNX '{path}': shapes of {node.op_type} '{node.name}' cannot be inferred") from None
    return flops
