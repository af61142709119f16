"""Tensor layer: tensor specs declared once, used for ONNX axes, runner input checks and engine profiles."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from abaw_rt.errors import AbawRtError

Dim = Union[int, str]  # a fixed size, or a symbolic axis name such as "batch" or "time"

BATCH = "batch"
TIME = "time"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a model's interface.

    Args:
        name: the tensor's name in every artefact (ONNX input/output, engine binding, feed key).
        dtype: numpy dtype name ("float32", "int64").
        shape: fixed sizes and symbolic axis names, e.g. ("batch", "time", 2304).
        value_range: optional inclusive (low, high) bounds on the values; either may be an axis
            name, resolved from the feeds' shapes (``lengths`` must lie in 1..time).
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    value_range: tuple[Dim, Dim] | None = None

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorSpec":
        vr = d.get("value_range")
        return cls(
            name=str(d["name"]),
            dtype=str(d["dtype"]),
            shape=tuple(d["shape"]),
            value_range=tuple(vr) if vr is not None else None,
        )


def specs_to_json(specs: Sequence[TensorSpec]) -> str:
    return json.dumps([s.to_dict() for s in specs])


def specs_from_json(text: str) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(d) for d in json.loads(text))


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Check feeds against specs: names, dtypes, ranks, fixed sizes, shared symbolic axes, value ranges.

    Returns:
        The resolved symbolic axes, e.g. {"batch": 2, "time": 300}.

    Raises:
        AbawRtError: naming the tensor, what arrived and what was expected.
    """
    expected = {s.name for s in specs}
    missing = sorted(expected - set(feeds))
    extra = sorted(set(feeds) - expected)
    if missing or extra:
        want = ", ".join(f"'{s.name}' {s.describe()}" for s in specs)
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise AbawRtError(f"{'; '.join(parts)}; expected inputs: {want}")

    axes: dict[str, int] = {}
    axis_source: dict[str, str] = {}
    for spec in specs:
        arr = feeds[spec.name]
        if not isinstance(arr, np.ndarray):
            raise AbawRtError(
                f"input '{spec.name}': got {type(arr).__name__}, expected a numpy array {spec.describe()}"
            )
        if arr.dtype != np.dtype(spec.dtype):
            raise AbawRtError(f"input '{spec.name}': got dtype {arr.dtype}, expected {spec.dtype}")
        got = tuple(arr.shape)
        if len(got) != len(spec.shape):
            raise AbawRtError(f"input '{spec.name}': got shape {got}, expected {_shape_str(spec.shape)}")
        for size, dim in zip(got, spec.shape):
            if isinstance(dim, int):
                if size != dim:
                    raise AbawRtError(f"input '{spec.name}': got shape {got}, expected {_shape_str(spec.shape)}")
            elif dim in axes and axes[dim] != size:
                raise AbawRtError(
                    f"input '{spec.name}': axis '{dim}' is {size} but input '{axis_source[dim]}' has {axes[dim]}"
                )
            elif dim not in axes:
                if size < 1:
                    raise AbawRtError(f"input '{spec.name}': axis '{dim}' is {size}, expected at least 1")
                axes[dim] = size
                axis_source[dim] = spec.name

    for spec in specs:
        if spec.value_range is None:
            continue
        lo, hi = (axes.get(v, v) if isinstance(v, str) else v for v in spec.value_range)
        arr = feeds[spec.name]
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise AbawRtError(
                f"input '{spec.name}': values must lie in [{lo}, {hi}] "
                f"({spec.value_range[0]}..{spec.value_range[1]}), got min {arr.min()} max {arr.max()}"
            )
    return axes


def _shape_str(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("B" if d == BATCH else "T" if d == TIME else str(d) for d in shape) + ")"
