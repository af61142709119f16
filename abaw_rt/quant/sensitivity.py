"""Quantisation layer: rank candidate nodes by the error each adds when lowered (one run of each graph).

The FP32 graph and the fully lowered graph are run once on one held-aside batch with every candidate's
input and output exposed. A node's sensitivity is the relative error (||low - fp32||^2 / ||fp32||^2) of
its output minus the worst relative error already on its activation inputs: the error it adds itself
(its own weight and input quantisation, or FP16 rounding), not the error it inherits from upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _exposed(model, names: Sequence[str]):
    """A copy of ``model`` that also outputs the tensors ``names`` (those whose type shape inference knows)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    have = {o.name for o in model.graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in dict.fromkeys(names):
        if name in types and name not in have and types[name]:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return out


def _run_exposed(path: Path, names: Sequence[str], feeds: Mapping[str, np.ndarray], threads: int | None) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    model = _exposed(onnx.load(str(path)), names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    # No graph fusions: a fused node would hide the intermediate tensors asked for.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    return dict(zip(wanted, session.run(wanted, dict(feeds))))


def _rel_err(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.all(np.isfinite(b64)):
        return float("inf")
    return float(((b64 - a64) ** 2).sum() / max((a64**2).sum(), 1e-30))


def node_sensitivity(
    fp32_graph: Path, low_graph: Path, nodes: Sequence[str], feeds: Mapping[str, np.ndarray], threads: int | None = None
) -> dict[str, float]:
    """Sensitivity of each named node of ``fp32_graph`` (see the module docstring); higher is worse."""
    import onnx

    model = onnx.load(str(fp32_graph), load_external_data=False)
    consts = {i.name for i in model.graph.initializer}
    wanted = set(nodes)
    io: dict[str, tuple[list[str], list[str]]] = {}
    for n in model.graph.node:
        if n.name in wanted:
            acts = [t for t in n.input if t and t not in consts]
            io[n.name] = (acts, [t for t in n.output if t])
    names = [t for ins, outs in io.values() for t in ins + outs]
    ref = _run_exposed(fp32_graph, names, feeds, threads)
    low = _run_exposed(low_graph, names, feeds, threads)
    scores = {}
    for name in nodes:
        ins, outs = io.get(name, ([], []))
        out_err = max((e for e in (_rel_err(ref.get(t), low.get(t)) for t in outs) if e is not None), default=0.0)
        in_err = max((e for e in (_rel_err(ref.get(t), low.get(t)) for t in ins) if e is not None), default=0.0)
        scores[name] = max(out_err - in_err, 0.0) if np.isfinite(out_err) else float("inf")
    return scores
