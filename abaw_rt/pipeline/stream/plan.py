"""Pipeline layer, stage 4 (offline): the stride plan's fusion windows, each batch run as soon as its frames are final.

The windows, their batches and their order are those of the whole-video plan (``segments.plan_segments``:
stride windows ``[k s, k s + w)`` while ``k s < n - w``, then one window ``[n - w, n)``; ``segment_batches``),
whatever the video's length, so the outputs are the same bytes as running the plan on the whole video: a batch
of stride windows runs once a frame past its last window has arrived (that window is then surely in the plan)
and its frames are final (``rows.FeatureRows``); the last batch (with the end-aligned window, whose place
depends on the length) runs at the end. Frames before ``next window start - stride`` are settled (the end
window starts after that): their stitched rows go to the sinks and are forgotten.
"""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.outputs import FinalRows
from abaw_rt.pipeline.stream.rows import Replan


class PlanWindows:
    """Fusion windows of one source run while it is read (see the module docstring); final rows go to ``sinks``.

    Args:
        pipe: the ``Pipeline`` (fusion runner, model config, window, stride, config).
        rows: the source's ``FeatureRows`` (filled).
        times: the source's ``StageTimes``.
        sinks: objects with ``put(FinalRows)``.
    """

    def __init__(self, pipe, rows, times, sinks):
        from abaw_rt.pipeline.stream.stitch import TailStitcher

        self.fusion, self.model_cfg, self.times = pipe.fusion, pipe.model_cfg, times
        self.window, self.stride, self.batch = pipe.window, pipe.stride, pipe.config.segment_batch
        self.rows, self.sinks = rows, sinks
        self.stitcher = TailStitcher({s.name: s.shape[-1] for s in self.fusion.output_specs}, pipe.config.merge)
        self.ran: list[list] = []  # the batches of windows run so far
        self.count = 0  # windows in the plan (known at the end)

    def step(self, frame_times, found) -> None:
        """Run every batch of stride windows that is surely in the plan and whose frames are final."""
        from abaw_rt.pipeline.segments import Segment

        s, w, b = self.stride, self.window, self.batch
        k0 = len(self.ran) * b
        end = (k0 + b - 1) * s + w
        if len(frame_times) <= end:
            return
        final = self.rows.final(frame_times, found)
        while len(frame_times) > end and final >= end:
            self._run([Segment(k * s, k * s + w) for k in range(k0, k0 + b)], found, final)
            keep = len(self.ran) * b * s - s  # the end-aligned window starts at or after this
            self._settle(keep, frame_times, found)
            self.rows.drop(keep, found)
            k0 += b
            end = (k0 + b - 1) * s + w

    def finish(self, frame_times, found) -> None:
        """The remaining batches (the last has the end-aligned window), then every frame to the sinks."""
        from abaw_rt.pipeline.segments import plan_segments, segment_batches

        n = len(frame_times)
        groups = segment_batches(plan_segments(n, self.window, self.stride), self.batch)
        if groups[: len(self.ran)] != self.ran:
            raise Replan()
        self.rows.finish(frame_times)
        for group in groups[len(self.ran):]:
            self._run(group, found, n)
        self._settle(n, frame_times, found)
        self.count = sum(len(g) for g in groups)

    def _inputs(self, a: int, b: int, found, last: int) -> dict[str, np.ndarray]:
        """{modality: (b - a, D)} model inputs of frames [a, b)."""
        rows = self.rows.take(a, b, found, last)
        cfg = self.model_cfg
        return {m: np.concatenate([rows[f.name] for f in cfg.features if f.modality == m], axis=1)
                for m in cfg.modalities}

    def _run(self, group: list, found, last: int) -> None:
        from abaw_rt.pipeline.segments import Segment, run_segments
        from abaw_rt.pipeline.stitch import to_probabilities

        a, b = group[0].start, max(g.end for g in group)
        inputs = self._inputs(a, b, found, last)
        shifted = [Segment(g.start - a, g.end - a) for g in group]
        times = self.times
        for seg, out in run_segments(
            self.fusion, inputs, shifted, len(group), on_batch=lambda sec, k: times.add("fusion", sec, k)
        ):
            with times.time("stitch"):
                self.stitcher.add(seg.start + a, {h: to_probabilities(h, v) for h, v in out.items()})
        self.ran.append(group)

    def _settle(self, upto: int, frame_times, found) -> None:
        from abaw_rt.pipeline.stitch import decide

        start = self.stitcher.base
        with self.times.time("stitch"):
            merged = self.stitcher.settle(upto)
            if not merged:
                return
            decisions = {h: decide(h, v) for h, v in merged.items()}
        rows = FinalRows(start, np.asarray(frame_times[start:upto], np.float64),
                         np.asarray(found[start:upto], bool), merged, decisions)
        for sink in self.sinks:
            sink.put(rows)
