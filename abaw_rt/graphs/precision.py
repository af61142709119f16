"""Graph layer: where an ONNX graph computes in FP16 and where in FP32 (onnx only; no torch, no TensorRT).

A strongly typed TensorRT build (always on TensorRT 11) takes every tensor's type from the graph,
so the FP16 graph itself must keep the numerically fragile ops in FP32: LayerNorm (variance of
sums overflows FP16), softmax (exp of large scores) and reductions. ``abaw-rt export -p fp16``
writes such a graph; this module checks it before a build.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from abaw_rt.errors import AbawRtError

# Ops whose inputs and outputs must stay FP32 in an FP16 graph.
FP32_OPS = (
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
)
# Ops that carry the bulk of the FLOPs: in an FP16 graph they should compute in FP16.
MATH_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")

_NAMES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass
class PrecisionPlacement:
    """Float types seen at the inputs and outputs of the ops that matter."""

    kept_fp32: Counter = field(default_factory=Counter)  # op type -> nodes of FP32_OPS in float32
    fragile_low: list[str] = field(default_factory=list)  # "op 'name': input x float16" for FP32_OPS not in FP32
    math: Counter = field(default_factory=Counter)  # (op type, dtype name) of MATH_OPS' first input

    @property
    def fp16_math(self) -> int:
        return sum(n for (_, dtype), n in self.math.items() if dtype == "float16")

    @property
    def fp32_math(self) -> int:
        return sum(n for (_, dtype), n in self.math.items() if dtype == "float32")


def precision_placement(model) -> PrecisionPlacement:
    """Inspect a loaded ``onnx.ModelProto`` (types from ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    placement = PrecisionPlacement()
    for node in g.node:
        if node.op_type in FP32_OPS:
            bad = [
                f"{role} '{name}' {_NAMES.get(types.get(name), types.get(name))}"
                for role, names in (("input", node.input[:1]), ("output", node.output[:1]))
                for name in names
                if types.get(name) != onnx.TensorProto.FLOAT
            ]
            if bad:
                placement.fragile_low.append(f"{node.op_type} '{node.name}': {', '.join(bad)}")
            else:
                placement.kept_fp32[node.op_type] += 1
        elif node.op_type in MATH_OPS and node.input:
            placement.math[(node.op_type, _NAMES.get(types.get(node.input[0]), "unknown"))] += 1
    return placement


def check_fp16_graph(path: Path) -> PrecisionPlacement:
    """Refuse an ONNX graph that cannot give a good strongly typed FP16 engine.

    Raises:
        AbawRtError: the graph computes no matmul in FP16 (it is an FP32 graph), or runs LayerNorm,
            softmax or a reduction in a type other than float32.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise AbawRtError(f"ONNX '{path}': not a readable ONNX model ({exc})") from None
    placement = precision_placement(model)
    if placement.fragile_low:
        raise AbawRtError(
            f"ONNX '{path}': {len(placement.fragile_low)} op(s) that must stay FP32 are not "
            f"({'; '.join(placement.fragile_low[:3])}); export the graph with 'abaw-rt export -p fp16'"
        )
    if placement.fp16_math == 0:
        raise AbawRtError(
            f"ONNX '{path}': no matmul or convolution computes in float16, so a strongly typed build "
            "would give an FP32 engine; export the FP16 graph with 'abaw-rt export CHECKPOINT -p fp16'"
        )
    return placement


# Normalisations kept FP32 when a third-party graph is converted (beside FP32_OPS); BatchNorm in eval
# mode is usually folded into the convolutions already.
FP32_NORMS = ("BatchNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization")


def convert_graph_fp16(model):
    """An FP16 copy of any float32 ``onnx.ModelProto`` (an extractor graph): weights and math in float16,
    FP32_OPS and normalisations in float32 behind explicit casts, float32 inputs and outputs kept.

    Uses onnxruntime's converter (``onnxruntime.transformers.float16``) with our block list; the result is
    what ``check_fp16_graph`` accepts and what a strongly typed TensorRT build consumes.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        half = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(FP32_OPS + FP32_NORMS), disable_shape_infer=False
        )
    except Exception as exc:
        raise AbawRtError(f"fp16 conversion failed: {str(exc).splitlines()[0]}") from None
    _sort_nodes(half.graph)
    return half


def _sort_nodes(graph) -> None:
    """Put nodes in topological order (the converter appends its input casts last; ONNX requires the order)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # subgraph inputs or a cycle: keep the rest as they were
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def graph_compute_precision(path: Path) -> str:
    """fp16 when a graph's convolutions/matmuls compute in float16, else fp32 (any ONNX graph)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise AbawRtError(f"ONNX '{path}': not a readable ONNX model ({exc})") from None
    return "fp16" if precision_placement(model).fp16_math else "fp32"
