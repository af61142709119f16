"""Zoo layer: a graph against its recipe's input/output contract (onnx only), and the HSEmotion feature output.

The contract of a visual extractor: one float image input (B, 3, H, W) whose fixed H, W (if fixed) are the
recipe's ``input_size``; an audio extractor: one float (B, samples) input of the recipe's window (or a
symbolic length). Output: the recipe's feature output (or the graph's only output), shape (B, dim).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError
from abaw_rt.zoo.recipes import Recipe

_FLOAT = 1


@dataclass(frozen=True)
class Contract:
    input: str  # the graph's input name
    output: str | None  # the feature output (None: not found, e.g. a classifier-only file)
    dim: int | None  # its width (None where symbolic or missing)
    outputs: tuple[str, ...]  # every output of the graph


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def check_contract(r: Recipe, path: Path, model=None, need_output: bool = True, dim: int | None = None) -> Contract:
    """Check ``path`` (or the loaded ``model``) against recipe ``r``; AbawRtError naming what differs."""
    import onnx

    where = f"extractor '{r.name}' ('{path}')"
    if model is None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise AbawRtError(f"{where}: not a readable ONNX model ({exc})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise AbawRtError(f"{where}: has inputs {[i.name for i in inputs]}, expected one")
    inp = inputs[0]
    shape = _dims(inp)
    if inp.type.tensor_type.elem_type != _FLOAT:
        raise AbawRtError(f"{where}: input '{inp.name}' is not float32")
    if r.modality == "visual":
        want = r.spec["input_size"]
        ok = len(shape) == 4 and shape[1] == 3 and all(not isinstance(s, int) or s == w for s, w in zip(shape[2:], want))
        expected = f"(batch, 3, {want[0]}, {want[1]})"
    else:
        ok = len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] == r.spec["window"])
        expected = f"(batch, {r.spec['window']}) samples at 16 kHz"
    if not ok:
        raise AbawRtError(f"{where}: input '{inp.name}' has shape {shape}, the recipe expects {expected}")
    outs = {o.name: o for o in model.graph.output}
    names = tuple(outs)
    name = next((n for n in (r.paper_output, r.native_output, *r.release_outputs) if n in outs), None)
    if name is None and r.family not in ("effnet", "wav2vec2") and len(outs) == 1:
        name = names[0]  # ArcFace files name their only output arbitrarily ('683', '1333', ...)
    if name is None:
        if need_output:
            raise AbawRtError(f"{where}: outputs {list(names)}, expected '{r.paper_output}' ({r.public_outputs})")
        return Contract(inp.name, None, None, names)
    oshape = _dims(outs[name])
    width = oshape[-1] if len(oshape) == 2 and isinstance(oshape[-1], int) else None
    if len(oshape) != 2 or (dim is not None and width != dim):
        raise AbawRtError(f"{where}: output '{name}' has shape {oshape}, expected (batch, {dim or 'dim'})")
    return Contract(inp.name, name, width, names)


def expose_classifier_input(model, name: str, what: str):
    """Add the input of the graph's final classifier (Gemm, or MatMul + Add) as output ``name``: the pooled
    feature a classifier-only release (HSEmotion's ONNX) computes but does not give out."""
    import onnx

    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    node = producers.get(g.output[0].name)
    if node is not None and node.op_type == "Add":  # MatMul + Add
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise AbawRtError(f"{what}: its output does not come from a Gemm/MatMul classifier; cannot find the features")
    feature = node.input[0]
    weights = {i.name: i for i in g.initializer}
    w = weights.get(node.input[1])
    if w is None:
        raise AbawRtError(f"{what}: the classifier's weights are not constant; cannot find the feature width")
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0) if node.op_type == "Gemm" else 0
    width = int(w.dims[1] if trans_b else w.dims[0])
    if feature != name:  # the tensor keeps its name inside the graph; an Identity gives it the output's name
        if any(name in n.output for n in g.node):
            raise AbawRtError(f"{what}: a tensor named '{name}' exists already; cannot expose the features as it")
        g.node.append(onnx.helper.make_node("Identity", [feature], [name], name=f"expose_{name}"))
    g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", width]))
    return model
