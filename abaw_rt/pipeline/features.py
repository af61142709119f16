"""Pipeline layer: what stages 1-3 hand on for one source (per-frame features, face mask, timestamps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from abaw_rt.pipeline.inputs import Source
from abaw_rt.pipeline.report import StageTimes

Progress = Callable[[str, int, int | None], None]  # (name, frames done, frames expected or None)


@dataclass
class VideoFeatures:
    """Stages 1-3 of one source: per-frame features by extractor name, with the face mask and timestamps."""

    source: Source
    features: dict[str, np.ndarray]  # name -> (n, dim) float32 (``Pipeline.features``; empty when streamed)
    face_found: np.ndarray  # (n,) bool
    frame_times: np.ndarray  # (n,) seconds
    fps: float | None  # measured from the timestamps (declared rate for one-frame videos)
    times: StageTimes
    info: dict = field(default_factory=dict)  # decode / faces / audio facts for the report
    wall: float = 0.0  # seconds for stages 1-3

    @property
    def frames(self) -> int:
        return len(self.frame_times)


def measured_fps(times: np.ndarray) -> float | None:
    """Frames per second from the first to the last timestamp; None for fewer than two frames or no span."""
    if len(times) < 2:
        return None
    span = float(times[-1] - times[0])
    return (len(times) - 1) / span if span > 0 else None


def duration(times: np.ndarray, fps: float | None) -> float:
    """Seconds the frames cover: first to last timestamp plus one frame."""
    if len(times) == 0:
        return 0.0
    step = 1.0 / fps if fps else 1.0 / 25.0
    return float(times[-1] - times[0]) + step
