"""Pipeline layer, stage 3 (visual): settled frames -> aligned crops -> batched visual features.

Each frame arrives with its face (``tracking``); one crop per distinct (crop mode, size, margin) of the visual
extractors is cut from its RGB, the crops wait in a ``CropBatcher`` until a batch is full (offline: the
spec's batch; live flushes after every frame), and finished batches go to ``store`` by frame index. The frame's
pixels are released as soon as its crops are cut.
"""

from __future__ import annotations

import numpy as np


class CropStage:
    """Frames with their faces in order -> crops -> features to ``store(name, frame_indices, features)``.

    Args:
        visual: the visual ``FeatureExtractor`` s.
        times: the run's ``StageTimes`` ("rgb", "align", "extract:<name>").
        store: callback receiving each finished batch.
    """

    def __init__(self, visual, times, store):
        from abaw_rt.pipeline.extractors import CropBatcher

        self.visual = visual
        self.times = times
        self.batcher = CropBatcher(visual, store=store, timer=lambda name, s: times.add(f"extract:{name}", s))

    def add(self, frame, face) -> bool:
        """One frame (in order) and its face or None; returns whether it has a face."""
        face = None if frame.lost else face  # a frame that failed to decode: flagged like a missing face
        if face is not None:
            self._crop(frame, face)
        frame.release()
        return face is not None

    def finish(self) -> None:
        """Run the last, partial batches."""
        self.batcher.flush()

    def _crop(self, frame, face) -> None:
        from abaw_rt.pipeline.faces import crop_transform, warp

        times = self.times
        with times.time("rgb"):
            rgb = frame.rgb()  # made for frames with a face only
        with times.time("align"):
            made: dict[tuple, np.ndarray] = {}
            for e in self.visual:
                key = (e.spec.crop, e.image.size, e.spec.margin)
                if key not in made:
                    made[key] = warp(rgb, crop_transform(face, e.spec.crop, e.image.size, e.spec.margin), e.image.size)
        for e in self.visual:  # a full batch runs its extractor here (timed as extract:<name>)
            self.batcher.add(e.name, frame.index, made[(e.spec.crop, e.image.size, e.spec.margin)])
