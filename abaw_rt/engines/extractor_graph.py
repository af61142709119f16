"""Engine build layer: an extractor graph's interface for TensorRT: one profile over the batch axis, the rest fixed.

An extractor graph (any ONNX graph without the header ``abaw-rt export`` writes) has no TensorSpecs of its own:
they are read from the graph. Axis 0 of every input and output is the batch axis (named ``batch``, the range
``--batch MIN:OPT:MAX`` or the recipe's ``extractor_batch``); every other input axis must be fixed, by the
graph or by ``--shape NAME:D1,D2,...`` (the sizes after the batch axis). The precision is the graph's own:
``abaw-rt quantize``'s record (int8 QDQ, or a searched fp16 graph), else fp16 where its convolutions and
matmuls compute in float16 (``abaw-rt zoo fp16``), else fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abaw_rt.errors import AbawRtError
from abaw_rt.specs import BATCH, TensorSpec
from abaw_rt.trt.profiles import AxisRange, ProfileSpec

DEFAULT_EXTRACTOR_BATCH = AxisRange(1, 16, 32)  # without --batch or a recipe's extractor_batch (spec batch 32 fits)
EXTRACTOR_PROFILE = "batch"  # the one profile's name
_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 2: "uint8", 3: "int8", 9: "bool"}
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class ExtractorGraph:
    """What ``build_engine`` needs of an extractor graph (the fusion graph's counterpart is ``OnnxInfo``)."""

    inputs: tuple[TensorSpec, ...]  # axis 0 "batch", the other axes fixed
    outputs: tuple[TensorSpec, ...]  # axis 0 "batch"; other axes fixed or named (TensorRT resolves them)
    precision: str  # fp32, fp16 or int8: what the graph computes in
    input_shapes: Mapping[str, tuple[int, ...]]  # the sizes --shape gave (recorded for the rebuild command)
    header = None  # no fusion model
    checkpoint_sha256 = None  # no checkpoint: the provenance is the graph's own sha256


def extractor_profile(batch: AxisRange) -> ProfileSpec:
    """The one optimisation profile of an extractor engine (its time range is unused: 1)."""
    return ProfileSpec(EXTRACTOR_PROFILE, batch, AxisRange(1, 1, 1))


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``--shape NAME:D1,D2,...`` (the sizes after the batch axis) -> (name, dims)."""
    name, _, dims = text.rpartition(":")
    try:
        sizes = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        sizes = ()
    if not name or not sizes or any(d < 1 for d in sizes):
        raise AbawRtError(f"--shape {text!r}: expected NAME:D1,D2,... (the input's sizes after the batch axis)")
    return name, sizes


def _load(onnx: Path):
    import onnx as onnx_lib

    try:
        return onnx_lib.load(str(onnx), load_external_data=False)
    except Exception as exc:
        raise AbawRtError(f"ONNX '{onnx}': not a readable ONNX model ({exc})") from None


def qdq_node_count(onnx: Path) -> int:
    """QuantizeLinear / DequantizeLinear nodes in the graph (explicit quantisation needs them)."""
    return sum(n.op_type in QDQ_OPS for n in _load(onnx).graph.node)


def _dims(value_info) -> list:
    """Fixed sizes as ints, dynamic ones as their name ('' when unnamed)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else d.dim_param
            for d in value_info.type.tensor_type.shape.dim]  # fmt: skip


def _input_spec(onnx: Path, vi, batch: AxisRange, given: tuple[int, ...] | None) -> TensorSpec:
    """Axis 0 -> "batch"; the others fixed by the graph or ``given``; AbawRtError naming the input and axis."""
    dims, name = _dims(vi), vi.name
    if not dims:
        raise AbawRtError(f"ONNX '{onnx}': input '{name}' is a scalar; an extractor input needs a batch axis first")
    if isinstance(dims[0], int) and (batch.min, batch.max) != (dims[0], dims[0]):
        n = dims[0]
        raise AbawRtError(
            f"ONNX '{onnx}': input '{name}' has a fixed batch of {n} (axis 0); --batch "
            f"{batch.min}:{batch.opt}:{batch.max} needs a dynamic first axis (or give --batch {n}:{n}:{n})"
        )
    rest = dims[1:]
    if given is not None:
        clash = [(i + 1, d, g) for i, (d, g) in enumerate(zip(rest, given)) if isinstance(d, int) and d != g]
        if len(given) != len(rest) or clash:
            raise AbawRtError(
                f"--shape {name}:{','.join(map(str, given))}: the graph's input '{name}' has sizes {rest} after "
                f"the batch axis" + (f" (axis {clash[0][0]} is {clash[0][1]})" if clash else "")
            )
        rest = list(given)
    for i, d in enumerate(rest, start=1):
        if not isinstance(d, int):
            example = ",".join(str(x) if isinstance(x, int) else "N" for x in rest)
            raise AbawRtError(
                f"ONNX '{onnx}': input '{name}' axis {i}{f' ({d!r})' if d else ''} is dynamic; a TensorRT extractor "
                f"engine varies the batch axis only: fix it with --shape {name}:{example}"
            )
    return TensorSpec(name, _ONNX_DTYPES.get(vi.type.tensor_type.elem_type, "float32"), (BATCH, *rest))


def _output_spec(vi) -> TensorSpec:
    dims = _dims(vi)
    shape = [d if isinstance(d, int) else (d or f"{vi.name}_dim{i}") for i, d in enumerate(dims)]
    if shape:
        shape[0] = BATCH
    return TensorSpec(vi.name, _ONNX_DTYPES.get(vi.type.tensor_type.elem_type, "float32"), tuple(shape))


def graph_precision(onnx: Path, model, quant: Mapping | None) -> str:
    """int8 / fp16 from ``abaw-rt quantize``'s record or stamp, else fp16 where the math is float16, else fp32."""
    from abaw_rt.graphs.metadata import PREFIX
    from abaw_rt.graphs.precision import precision_placement

    props = {p.key: p.value for p in model.metadata_props}
    stamped = (quant or {}).get("mode") or props.get(PREFIX + "precision")
    if stamped is not None:
        if stamped not in ("fp32", "fp16", "int8"):
            raise AbawRtError(f"ONNX '{onnx}': metadata precision {stamped!r}, expected fp32, fp16 or int8")
        return stamped
    return "fp16" if precision_placement(model).fp16_math else "fp32"


def read_extractor_graph(onnx: Path, batch: AxisRange, shapes: Mapping[str, tuple[int, ...]],
                         quant: Mapping | None = None) -> ExtractorGraph:  # fmt: skip
    """The interface TensorRT builds for: inputs with a ``batch`` axis and fixed sizes, outputs, precision.

    Raises:
        AbawRtError: an unreadable graph, a dynamic non-batch input axis not fixed by ``shapes`` (naming the input
            and axis), a fixed batch axis outside ``batch``, or ``shapes`` naming an input the graph lacks.
    """
    model = _load(onnx)
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    unknown = sorted(set(shapes) - {vi.name for vi in graph_inputs})
    if unknown:
        raise AbawRtError(f"--shape {unknown[0]}: ONNX '{onnx}' has no such input (it has {[v.name for v in graph_inputs]})")
    inputs = tuple(_input_spec(onnx, vi, batch, shapes.get(vi.name)) for vi in graph_inputs)
    outputs = tuple(_output_spec(vi) for vi in model.graph.output)
    return ExtractorGraph(inputs, outputs, graph_precision(onnx, model, quant), dict(shapes))


def extractor_build_interface(onnx: Path, cfg, quant: Mapping | None):
    """``build_engine``'s (interface, profiles, quant) for an extractor graph, from a ``BuildConfig``.

    The batch range is ``cfg.batch`` (--batch), else the recipe's ``extractor_batch``, else 1:16:32; --profile
    (the fusion model's batch and time ranges) is refused.
    """
    if cfg.profiles is not None and cfg.recipe is None:  # --profile given (a recipe's profiles are the fusion model's)
        raise AbawRtError(
            f"ONNX '{onnx}' is an extractor graph (no abaw-rt header): it takes --batch MIN:OPT:MAX, not --profile "
            "(the fusion model's batch and time ranges)"
        )
    batch = cfg.batch or cfg.recipe_batch or DEFAULT_EXTRACTOR_BATCH
    names = [n for n, _ in cfg.input_shapes]
    if len(set(names)) != len(names):
        raise AbawRtError(f"--shape: input(s) given more than once ({names})")
    graph = read_extractor_graph(onnx, batch, dict(cfg.input_shapes), quant)
    profiles = (extractor_profile(batch),)
    profiles[0].shapes(graph.inputs)  # every input axis has a size
    return graph, profiles, quant
