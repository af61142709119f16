"""Test helpers: mutate exported graphs the way real bugs would."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def perturbed_copy(src: Path, dst: Path, scale: float = 0.05, seed: int = 0) -> Path:
    """Copy an ONNX graph with noise added to its largest float initializer (a 'wrong' export)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    floats = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(target)
    noisy = arr + np.random.default_rng(seed).normal(0, scale, arr.shape).astype(arr.dtype)
    target.CopyFrom(numpy_helper.from_array(noisy, target.name))
    onnx.save(model, str(dst))
    return dst


def fixed_time_copy(src: Path, dst: Path, time: int) -> Path:
    """Copy an ONNX graph whose time axis is pinned to one length (what a legacy export can bake in)."""
    import onnx

    model = onnx.load(str(src))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims[1].dim_value = time
    onnx.save(model, str(dst))
    return dst
