"""Pipeline layer, stage 4a: cutting a video's frames into windows of w frames with stride s (Zhou et al. 2023, segments, w = 300 / s = 200)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import LENGTHS


@dataclass(frozen=True)
class Segment:
    start: int  # first frame (0-based)
    end: int  # one past the last frame

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_segments(frames: int, window: int, stride: int) -> list[Segment]:
    """Windows covering every frame: starts 0, s, 2s, ... and one window aligned to the video's end.

    A video no longer than w is one window of its own length (no padding). A longer one gets full
    windows only: the stride ones while they end before the video does, then an end-aligned last
    window [n - w, n) rather than a padded one, so every window has w real frames of context.
    """
    if frames < 1:
        raise AbawRtError(f"segments: {frames} frames, expected at least 1")
    if window < 1 or not 1 <= stride <= window:
        raise AbawRtError(f"segments: window {window}, stride {stride}; expected window >= 1 and 1 <= stride <= window")
    if frames <= window:
        return [Segment(0, frames)]
    starts = list(range(0, frames - window, stride))
    starts.append(frames - window)
    return [Segment(s, s + window) for s in starts]


def segment_batches(plan: list[Segment], batch: int) -> list[list[Segment]]:
    """Group windows for the fusion runner: equal lengths together (only a short video has a shorter one)."""
    if batch < 1:
        raise AbawRtError(f"segment batch {batch}: expected >= 1")
    return [plan[i : i + batch] for i in range(0, len(plan), batch)]


def pad_windows(rows: Sequence[np.ndarray], fill: float = 0.0) -> np.ndarray:
    """Windows of (length_i, ...) rows -> one (batch, max length, ...) array, the tail of shorter ones ``fill``.

    The one window batcher: the fusion runner's feeds here, training and validation batches in ``abaw_rt.train``.
    """
    first = np.asarray(rows[0])
    out = np.full((len(rows), max(len(r) for r in rows)) + first.shape[1:], fill, dtype=first.dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def run_segments(runner, features: dict[str, np.ndarray], plan: list[Segment], batch: int, on_batch=None):
    """Run the fusion runner over the windows in batches; yield (segment, {head: (length, n) float32}).

    Args:
        runner: a fusion Runner (its input specs name the modalities and ``lengths``).
        features: {modality: (frames, D) float32} raw features, one row per frame.
        plan: the windows (``plan_segments``).
        batch: windows per call.
        on_batch: optional callback(seconds, windows) with each call's backend time.
    """
    for group in segment_batches(plan, batch):
        feeds = {m: pad_windows([x[s.start : s.end] for s in group]).astype(np.float32, copy=False)
                 for m, x in features.items()}
        feeds[LENGTHS] = np.array([s.length for s in group], dtype=np.int64)
        out = runner.infer(feeds)
        if on_batch:
            on_batch(runner.last_inference_time or 0.0, len(group))
        for i, s in enumerate(group):
            yield s, {h: np.asarray(v[i, : s.length], dtype=np.float32) for h, v in out.items()}
