"""Pipeline layer, stage 4b: merging overlapping window predictions into one per frame, then the decisions.

Window outputs are first turned into what is averaged: VA values as they are, EXPR softmax
probabilities, AU sigmoid probabilities (Zhou et al. 2023, segments, w = 300 / s = 200: average before argmax or threshold).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import Merge

AU_THRESHOLD = 0.5  # Zhou et al. 2023, the ABAW5 task definitions: AU sigmoid >= 0.5



def centre_weights(length: int) -> np.ndarray:
    """Triangular weights 1..ceil(length/2)..1, positive everywhere so the video's first and last frames count."""
    t = np.arange(length)
    return np.minimum(t + 1, length - t).astype(np.float64)


def window_weights(length: int, merge: Merge) -> np.ndarray:
    """Each frame's weight in a window of ``length`` frames: 1 (uniform) or ``centre_weights`` (centre, none)."""
    return np.ones(length) if merge is Merge.uniform else centre_weights(length)


def accumulate(sums: Mapping[str, np.ndarray], weight: np.ndarray, w: np.ndarray,
               outputs: Mapping[str, np.ndarray], merge: Merge) -> None:
    """Add a window's outputs ({head: (n, k)}) into the n frames they cover, in place.

    ``sums`` ({head: (n, k)} float64) and ``weight`` ((n,) float64) are views of those frames' running sums and
    weights; ``w`` is the frames' weights in the window (``window_weights``). ``Merge.none`` keeps the
    best-placed window's values (ties keep the earlier window)."""
    if merge is Merge.none:
        better = w > weight
        for h, v in outputs.items():
            sums[h][better] = v[better]
        weight[...] = np.where(better, w, weight)
        return
    for h, v in outputs.items():
        sums[h] += w[:, None] * v
    weight += w


def merged_rows(sums: Mapping[str, np.ndarray], weight: np.ndarray, merge: Merge, first: int = 0) -> dict[str, np.ndarray]:
    """{head: (n, k) float32} merged values of n frames from their sums and weights; AbawRtError naming the first
    frame no window covered (``first``: the absolute index of row 0)."""
    missing = np.flatnonzero(weight == 0)
    if len(missing):
        raise AbawRtError(f"stitch: frame {int(missing[0]) + first + 1} is covered by no window (segment plan bug)")
    if merge is Merge.none:
        return {h: v.astype(np.float32) for h, v in sums.items()}
    return {h: (v / weight[:, None]).astype(np.float32) for h, v in sums.items()}


def to_probabilities(head: str, values: np.ndarray) -> np.ndarray:
    """A head's raw output -> the quantity averaged across windows."""
    values = np.asarray(values, dtype=np.float64)
    if head == "expr":
        z = np.exp(values - values.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if head == "au":
        return 1.0 / (1.0 + np.exp(-values))
    return values


class Stitcher:
    """Accumulates window outputs for one video and returns one row per frame.

    Args:
        frames: the video's frame count.
        widths: {head: outputs per frame}.
        merge: how overlapping windows combine.
    """

    def __init__(self, frames: int, widths: Mapping[str, int], merge: Merge = Merge.centre):
        self.frames = frames
        self.merge = Merge(merge)
        self._sum = {h: np.zeros((frames, k)) for h, k in widths.items()}
        self._weight = np.zeros(frames)

    def add(self, start: int, outputs: Mapping[str, np.ndarray]) -> None:
        """One window's outputs ({head: (length, k)}, already through ``to_probabilities``) starting at ``start``."""
        length = len(next(iter(outputs.values())))
        if start < 0 or start + length > self.frames:
            raise AbawRtError(f"stitch: window [{start}, {start + length}) outside the video's {self.frames} frames")
        sl = slice(start, start + length)
        w = window_weights(length, self.merge)
        accumulate({h: v[sl] for h, v in self._sum.items()}, self._weight[sl], w, outputs, self.merge)

    def result(self) -> dict[str, np.ndarray]:
        """{head: (frames, k) float32} merged values; AbawRtError if a frame was never covered."""
        return merged_rows(self._sum, self._weight, self.merge)


def decide(head: str, merged: np.ndarray) -> np.ndarray:
    """Per-frame decisions: VA clipped to [-1, 1], EXPR argmax class, AU probability >= 0.5 -> 1."""
    if head == "va":
        return np.clip(merged, -1.0, 1.0)
    if head == "expr":
        return merged.argmax(axis=-1).astype(np.int64)
    if head == "au":
        return (merged >= AU_THRESHOLD).astype(np.int64)
    raise AbawRtError(f"unknown head {head!r}")
