"""Runner layer: shape buckets, so CUDA graphs (one per captured shape) cover every batch and length.

A batch of B segments of T frames is padded up to the smallest bucket (B', T') that holds it:
extra frames and extra segments are zeros, extra segments get ``lengths`` 1. The model never lets
padding reach a real frame (causal TCN, masked attention keys), so the real frames' outputs are
those of the unpadded call; the outputs are cut back to (B, T). Torch-free (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import LENGTHS
from abaw_rt.specs import BATCH, TIME, TensorSpec


@dataclass(frozen=True)
class ShapeBuckets:
    """Sizes that batches and lengths are rounded up to; a size past the last bucket is kept as is."""

    batch: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # segments per call
    time: tuple[int, ...] = (75, 150, 300, 600, 1200)  # frames per segment (w = 300 and its halves/multiples)

    def __post_init__(self) -> None:
        for name in ("batch", "time"):
            v = getattr(self, name)
            if not v or any(not isinstance(x, int) or x < 1 for x in v) or list(v) != sorted(set(v)):
                raise AbawRtError(f"shape buckets '{name}': got {v}, expected increasing positive integers")

    def bucket(self, batch: int, time: int) -> tuple[int, int]:
        return _round_up(batch, self.batch), _round_up(time, self.time)


def _round_up(size: int, sizes: Sequence[int]) -> int:
    return next((s for s in sizes if s >= size), size)


def pad_feeds(
    feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], batch: int, time: int
) -> dict[str, np.ndarray]:
    """Pad every input to ``batch`` segments of ``time`` frames (zeros; padded segments get length 1)."""
    out = {}
    for spec in specs:
        arr = feeds[spec.name]
        target = tuple(batch if d == BATCH else time if d == TIME else arr.shape[i] for i, d in enumerate(spec.shape))
        if target == arr.shape:
            out[spec.name] = arr
            continue
        fill = 1 if spec.name == LENGTHS else 0
        padded = np.full(target, fill, dtype=arr.dtype)
        padded[tuple(slice(0, n) for n in arr.shape)] = arr
        out[spec.name] = padded
    return out


def unpad_outputs(outputs: Mapping[str, np.ndarray], batch: int, time: int) -> dict[str, np.ndarray]:
    """Cut (B', T', C) outputs back to (batch, time, C), as fresh contiguous arrays."""
    return {k: np.ascontiguousarray(v[:batch, :time]) for k, v in outputs.items()}
