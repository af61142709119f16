"""Pipeline layer, stages 4-5 for a video while it is decoded: each batch of fusion windows runs as soon as its frames'
features are final, so memory holds only the frames the remaining windows need, not the whole video's features.

The windows, their batches and their order are exactly those of ``predict.predict_windows`` (``plan_segments``:
stride windows ``[k s, k s + w)`` while ``k s < n - w``, then one window ``[n - w, n)``; ``segment_batches``), so
the outputs are the same bytes: a batch of stride windows runs once a frame past its last window has been read
(that window is then surely in the plan) and its frames are final; the last batch (with the end-aligned window,
whose place depends on the length) runs at the end. A frame is final once its face is settled and extracted, the
nearest face it is filled from is known (a later face, or the end) and its audio row can be interpolated.
Frames before ``next window start - stride`` are dropped (the end window starts after that), and stitched rows
there are final and kept only as float32 outputs.
"""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.audio_track import AUDIO_RATE
from abaw_rt.pipeline.stitch import accumulate, merged_rows, window_weights
from abaw_rt.vocab import Merge


class Replan(Exception):
    """The streamed windows cannot be proven equal to the whole-video ones (frame times going backwards at the
    end changed the audio interpolation's clipping); the caller reruns the source on the whole-video path."""


class Rows:
    """A growing (frames, dim) array for absolute frames ``[base, end)``; rows before ``base`` are dropped."""

    def __init__(self, dim: int, dtype=np.float32):
        self.base, self.end = 0, 0
        self.data = np.zeros((256, dim), dtype)

    def put(self, idx: np.ndarray, rows: np.ndarray) -> None:
        need = int(idx[-1]) + 1 - self.base
        if need > len(self.data):
            grown = np.zeros((max(need, len(self.data) * 3 // 2),) + self.data.shape[1:], self.data.dtype)
            grown[: self.end - self.base] = self.data[: self.end - self.base]
            self.data = grown
        self.data[idx - self.base] = rows
        self.end = max(self.end, need + self.base)

    def append(self, rows: np.ndarray) -> None:
        if len(rows):
            self.put(np.arange(self.end, self.end + len(rows)), rows)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.data[idx - self.base]

    def drop(self, upto: int) -> None:
        """Forget rows before ``upto``."""
        k = min(max(upto - self.base, 0), self.end - self.base)
        if k:
            self.data[: self.end - self.base - k] = self.data[k : self.end - self.base]
            self.base += k


class TailStitcher:
    """``stitch.Stitcher`` for a video of unknown length: sums only from ``base`` on, final rows out as float32."""

    def __init__(self, widths: dict[str, int], merge: Merge):
        self.merge = Merge(merge)
        self.sums = {h: Rows(k, np.float64) for h, k in widths.items()}
        self.weight = Rows(1, np.float64)
        self.out = {h: Rows(k, np.float32) for h, k in widths.items()}

    def add(self, start: int, outputs: dict[str, np.ndarray]) -> None:
        length = len(next(iter(outputs.values())))
        for r in (*self.sums.values(), self.weight):
            if r.end < start + length:
                r.put(np.arange(r.end, start + length), np.zeros((start + length - r.end, r.data.shape[1])))
        sl = slice(start - self.weight.base, start + length - self.weight.base)
        w = window_weights(length, self.merge)
        accumulate({h: r.data[sl] for h, r in self.sums.items()}, self.weight.data[sl, 0], w, outputs, self.merge)

    def settle(self, upto: int) -> None:
        """Rows before ``upto`` are covered by every window they will get: out as float32, sums dropped."""
        base = self.weight.base
        if upto <= base:
            return
        merged = merged_rows({h: r.data[: upto - base] for h, r in self.sums.items()},
                             self.weight.data[: upto - base, 0], self.merge, first=base)
        for h, s in self.sums.items():
            self.out[h].append(merged[h])
            s.drop(upto)
        self.weight.drop(upto)

    def result(self, frames: int) -> dict[str, np.ndarray]:
        self.settle(frames)
        return {h: r.data[:frames] for h, r in self.out.items()}


class AudioRows:
    """Per-frame audio features from an ``AudioStream``'s window features as they come (``AudioStream.finish``'s
    interpolation, row by row), dropping window features no later frame needs."""

    def __init__(self, stream, names):
        self.stream = stream
        self.cursors = [c for c in stream.cursors if c.extractor.name in names]
        self.wins = {c.extractor.name: Rows(c.extractor.spec.dim) for c in self.cursors}
        self.rows = {c.extractor.name: Rows(c.extractor.spec.dim) for c in self.cursors}
        self.max_index = {c.extractor.name: -1 for c in self.cursors}  # highest window index used while streaming

    @property
    def done(self) -> int:
        return min((r.end for r in self.rows.values()), default=1 << 62)

    def _collect(self) -> None:
        for c in self.cursors:
            while c.feats:
                self.wins[c.extractor.name].append(c.feats.pop(0))

    def advance(self, frame_times, final: bool = False) -> None:
        """Rows for the next frames whose windows have been computed; ``final`` (after the last frame's windows):
        every remaining frame, clipped to the windows the whole video has (``Replan`` if a streamed row used more)."""
        from abaw_rt.pipeline.extractors import Stretch, audio_window_count, stretch_to_frames

        self._collect()
        t0 = float(frame_times[0])
        for c in self.cursors:
            s, name = c.extractor.spec, c.extractor.name
            rows, wins = self.rows[name], self.wins[name]
            a = rows.end
            ft = np.asarray(frame_times[a:], np.float64)
            if not len(ft):
                continue
            pos = (ft - t0) * AUDIO_RATE / s.hop
            if s.stretch is Stretch.nearest:
                need = np.floor(pos + 0.5).astype(np.int64)
            else:
                need = np.floor(pos).astype(np.int64).clip(0, None) + 1
            low = np.floor(pos + 0.5) if s.stretch is Stretch.nearest else np.floor(pos)
            if len(low) and int(low.clip(0, None).min()) < wins.base:
                raise Replan()
            count = audio_window_count(t0, float(frame_times[-1]), s.hop) if final else None
            if final and self.max_index[name] > count - 1:
                raise Replan()
            if count is None:
                ok = need < wins.end
                k = len(ok) if ok.all() else int(np.argmin(ok))
                if not k:
                    continue
                pos, need = pos[:k], need[:k]
                self.max_index[name] = max(self.max_index[name], int(need.max()))
                top = wins.end - 1
            else:
                top = count - 1
            rows.append(stretch_to_frames(pos, wins.take, top, s.stretch))

    def drop(self, frame: int) -> None:
        """Forget rows before ``frame`` and the window features well before the last one used (frames that go
        back further in time than that make ``advance`` raise ``Replan``)."""
        for name, rows in self.rows.items():
            rows.drop(frame)
            self.wins[name].drop(max(self.max_index[name] - 2, 0))


class WindowFeed:
    """Fusion windows of one video run while it is decoded (see the module docstring).

    Args:
        pipe: the ``Pipeline`` (fusion runner, model config, window, stride, config).
        times: the video's ``StageTimes``.
        stream: the video's ``AudioStream`` or None.
    """

    def __init__(self, pipe, times, stream):
        self.fusion, self.model_cfg, self.times = pipe.fusion, pipe.model_cfg, times
        self.window, self.stride, self.batch = pipe.window, pipe.stride, pipe.config.segment_batch
        self.vis = {e.name: Rows(e.dim) for e in pipe.visual}
        self.stored = {name: 0 for name in self.vis}  # frames before this are stored (or had no face)
        self.audio = AudioRows(stream, {e.name for e in pipe.audio}) if stream is not None else None
        self.stitcher = TailStitcher({s.name: s.shape[-1] for s in self.fusion.output_specs}, pipe.config.merge)
        self.ran: list[list] = []  # the batches of windows run so far
        self.vis_base = 0  # visual rows before this are dropped (it is never after the last face before a kept frame)

    def store(self, name: str, idx, feats: np.ndarray) -> None:
        """``CropBatcher``'s callback: one finished batch of a visual extractor."""
        idx = np.asarray(idx)
        self.vis[name].put(idx, feats)
        self.stored[name] = int(idx[-1]) + 1

    def _final(self, frame_times: list, found: list) -> int:
        """Frames before this have every feature the windows need (faces settled, filled, audio interpolated)."""
        final = len(frame_times)
        if self.vis:
            settled = n = len(found)
            for st in self.stored.values():  # the first face not yet through an extractor
                seg = np.asarray(found[st:n], dtype=bool)
                settled = min(settled, st + int(np.argmax(seg)) if seg.any() else n)
            seg = np.asarray(found[self.vis_base : settled], dtype=bool)
            final = self.vis_base + int(np.flatnonzero(seg)[-1]) + 1 if seg.any() else self.vis_base
        if self.audio is not None:
            self.audio.advance(frame_times)
            final = min(final, self.audio.done)
        return final

    def step(self, frame_times: list, found: list) -> None:
        """Run every batch of stride windows that is surely in the plan and whose frames are final."""
        from abaw_rt.pipeline.segments import Segment

        s, w, b = self.stride, self.window, self.batch
        k0 = len(self.ran) * b
        end = (k0 + b - 1) * s + w
        if len(frame_times) <= end:
            return
        final = self._final(frame_times, found)
        while len(frame_times) > end and final >= end:
            self._run([Segment(k * s, k * s + w) for k in range(k0, k0 + b)], found, final)
            self._drop(found)
            k0 += b
            end = (k0 + b - 1) * s + w

    def _inputs(self, a: int, b: int, found: list, last: int) -> dict[str, np.ndarray]:
        """{modality: (b - a, D)} model inputs of frames [a, b), missing faces filled from frames up to ``last``."""
        from abaw_rt.store import nearest_rows

        rows = {}
        if self.vis:
            near = nearest_rows(np.asarray(found[self.vis_base : last], dtype=bool))
            idx = np.arange(a, b) if near is None else near[a - self.vis_base : b - self.vis_base] + self.vis_base
            rows = {name: r.take(idx) for name, r in self.vis.items()}
        if self.audio is not None:
            rows.update({name: r.take(np.arange(a, b)) for name, r in self.audio.rows.items()})
        cfg = self.model_cfg
        return {m: np.concatenate([rows[f.name] for f in cfg.features if f.modality == m], axis=1)
                for m in cfg.modalities}

    def _run(self, group: list, found: list, last: int) -> None:
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

    def _drop(self, found: list) -> None:
        """After a batch: frames before the next window's start less one stride are no longer needed."""
        keep = len(self.ran) * self.batch * self.stride - self.stride
        self.stitcher.settle(keep)
        seg = np.asarray(found[self.vis_base : keep], dtype=bool)
        # the last face before ``keep`` (the nearest-face fill of a kept frame may need it), else ``keep``
        self.vis_base = self.vis_base + int(np.flatnonzero(seg)[-1]) if seg.any() else max(keep, self.vis_base)
        for r in self.vis.values():
            r.drop(self.vis_base)
        if self.audio is not None:
            self.audio.drop(keep)

    def finish(self, frame_times: list, found: list):
        """The remaining batches (the last has the end-aligned window); returns (merged, decisions, windows)."""
        from abaw_rt.pipeline.segments import plan_segments, segment_batches
        from abaw_rt.pipeline.stitch import decide

        n = len(frame_times)
        groups = segment_batches(plan_segments(n, self.window, self.stride), self.batch)
        if groups[: len(self.ran)] != self.ran:
            raise Replan()
        if self.audio is not None:
            self.audio.advance(frame_times, final=True)
        for group in groups[len(self.ran):]:
            self._run(group, found, n)
        with self.times.time("stitch"):
            merged = self.stitcher.result(n)
            decisions = {h: decide(h, v) for h, v in merged.items()}
        return merged, decisions, sum(len(g) for g in groups)
