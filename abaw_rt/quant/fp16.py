"""Quantisation layer: an FP16 graph from an FP32 one with chosen nodes kept in FP32 (onnxruntime's converter).

onnxruntime's ``convert_float_to_float16`` (float32 inputs and outputs kept) with, always, the ops of
``abaw_rt.graphs.precision.FP32_OPS`` (LayerNorm, softmax, reductions) blocked to FP32, as in
``abaw-rt export -p fp16``, plus the nodes the search keeps high. The result is a strongly typed
graph (what TensorRT 11 consumes as is); the kept nodes' names are recorded in the graph's metadata
for TensorRT 10's per-layer precision constraints on an FP32 graph.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from abaw_rt.graphs.precision import FP32_OPS, MATH_OPS

# Candidate nodes of the FP16 search: the matmuls and convolutions (the FLOPs); elementwise ops follow them.
FP16_CANDIDATE_OPS = MATH_OPS


def lower_fp16(src: Path, dst: Path, keep_fp32: Sequence[str]) -> Path:
    """Write the FP16 graph of ``src`` to ``dst``; ``keep_fp32`` (node names) and FP32_OPS stay FP32."""
    import onnx
    from onnxruntime.transformers import float16

    model = onnx.load(str(src))
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=blocked, node_block_list=list(keep_fp32), disable_shape_infer=False
        )
    onnx.save(low, str(dst))
    return Path(dst)
