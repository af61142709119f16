"""Training layer: cut a video into training windows (w = 300, s = 200, tail kept). Torch-free.

Zhou et al. 2023, segments, w = 300 / s = 200: training windows start every s frames until one reaches the video's end; that
tail window may be shorter than w (the authors dropped it, and videos shorter than w; we keep both,
padded to the batch and masked). Validation uses the product's inference windows and stitching
(``abaw_rt.pipeline.segments.plan_segments``: full windows plus one aligned to the end;
``abaw_rt.pipeline.stitch.Stitcher``: centre-weighted average of probabilities), so the metrics a run
reports are the metrics ``abaw-rt infer`` gets.
"""

from __future__ import annotations

from abaw_rt.errors import AbawRtError

Window = tuple[int, int]  # (start frame, length)


def training_windows(frames: int, window: int = 300, stride: int = 200) -> list[Window]:
    """Windows at 0, s, 2s, ... until one reaches the end; the last may be shorter (padded, masked)."""
    if frames < 1:
        raise AbawRtError(f"a video of {frames} frames cannot be windowed (expected at least 1 frame)")
    if window < 1 or not 1 <= stride <= window:
        raise AbawRtError(f"window {window}, stride {stride}: expected 1 <= stride <= window")
    out = [(0, min(window, frames))]
    while out[-1][0] + window < frames:
        start = out[-1][0] + stride
        out.append((start, min(window, frames - start)))
    return out
