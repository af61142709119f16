"""Pipeline layer, live stage 4: the window assembler and the fusion runs over windows ending at the newest frame.

The assembler keeps the model's inputs for the last ``window`` frames only (flat memory); every ``hop`` frames
the window ending at the newest frame runs through the fusion runner (batch of one), its outputs turned into
what stitching averages (``stitch.to_probabilities``).
"""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.report import StageTimes


class WindowAssembler:
    """Rows of per-frame features -> the model's inputs of the last ``window`` frames, per modality.

    Args:
        model_cfg: the fusion model's config (its features in order, by modality).
        window: the longest window (frames).
    """

    def __init__(self, model_cfg, window: int):
        self.window = window
        self.names = {m: [f.name for f in model_cfg.features if f.modality == m] for m in model_cfg.modalities}
        dims = {m: sum(f.dim for f in model_cfg.features if f.modality == m) for m in model_cfg.modalities}
        self._buf = {m: np.zeros((2 * window, d), np.float32) for m, d in dims.items()}
        self._n = 0  # rows in the buffers
        self.frames = 0  # rows added in all (the newest frame's index + 1)

    def add(self, features: dict[str, np.ndarray]) -> None:
        if self._n == 2 * self.window:  # keep the newest window - 1 rows at the front (amortised O(1))
            for b in self._buf.values():
                b[: self.window - 1] = b[self._n - self.window + 1 : self._n]
            self._n = self.window - 1
        for m, names in self.names.items():
            self._buf[m][self._n] = np.concatenate([features[n] for n in names])
        self._n += 1
        self.frames += 1

    def latest(self) -> tuple[int, dict[str, np.ndarray]]:
        """(first frame index, {modality: (length, D)}) of the window ending at the newest frame."""
        length = min(self._n, self.window)
        return self.frames - length, {m: b[self._n - length : self._n] for m, b in self._buf.items()}


class WindowRunner:
    """Runs windows through the fusion runner; returns {head: (length, k)} as stitching averages them."""

    def __init__(self, fusion, times: StageTimes):
        self.fusion = fusion
        self.times = times
        self.runs = 0

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from abaw_rt.pipeline.segments import Segment, run_segments
        from abaw_rt.pipeline.stitch import to_probabilities

        length = len(next(iter(inputs.values())))
        (_, out), = run_segments(
            self.fusion, inputs, [Segment(0, length)], 1, on_batch=lambda s, k: self.times.add("fusion", s, k)
        )
        self.runs += 1
        return {h: to_probabilities(h, v) for h, v in out.items()}
