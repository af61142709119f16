"""Pipeline layer, stage 3 (offline): one video's per-frame features, assembled as they become final.

Visual features arrive from the crop batches by frame index (frames without a face get none), audio
features from the streaming audio windows (``AudioStream``), and a frame is *final* once every feature the
consumers need is known: its face settled and extracted, its audio row computable, and, when missing faces
are filled from the nearest face (``fill``, what the fusion model takes), the next face known. Rows before
what the consumer still needs are dropped, so memory holds a window's worth of frames, not the video.

``hold`` keeps every frame until the end (nothing is final before ``finish``): the whole-video path, taken
when the streamed audio rows cannot be proven equal to the whole track's (``Replan``).
"""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.audio_track import AUDIO_RATE


class Replan(Exception):
    """Streamed rows cannot be proven equal to the whole-video ones (frame times going backwards at the end
    changed the audio interpolation's clipping); the caller reruns the source with ``hold``."""


class Rows:
    """A growing (frames, dim) array for absolute frames ``[base, end)``; rows before ``base`` are dropped.
    Rows never put (frames without a face) read as zeros."""

    def __init__(self, dim: int, dtype=np.float32):
        self.base, self.end = 0, 0
        self.data = np.zeros((256, dim), dtype)

    def put(self, idx: np.ndarray, rows: np.ndarray) -> None:
        need = int(idx[-1]) + 1 - self.base
        if need > len(self.data):
            grown = np.zeros((max(need, len(self.data) * 3 // 2),) + self.data.shape[1:], self.data.dtype)
            grown[: self.end - self.base] = self.data[: self.end - self.base]
            self.data = grown
        if need > self.end - self.base:  # rows left over from before a drop read as zeros
            self.data[self.end - self.base : need] = 0
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


class FeatureRows:
    """One video's per-frame features by extractor name, final frame by frame (see the module docstring).

    Args:
        visual: {name: dim} of the visual extractors (their crop batches call ``store``).
        stream: the video's ``AudioStream``, or None.
        audio: names of the audio extractors to take from ``stream``.
        fill: missing-face rows take the nearest face's (so a frame waits for the next face); off for the
            feature store, which keeps rows as found (zeros).
        hold: nothing is final before ``finish`` (the whole-video path).
    """

    def __init__(self, visual: dict[str, int], stream=None, audio=(), fill: bool = True, hold: bool = False):
        self.vis = {name: Rows(dim) for name, dim in visual.items()}
        self.stored = {name: 0 for name in self.vis}  # frames before this are stored (or had no face)
        self.audio = AudioRows(stream, set(audio)) if stream is not None and audio else None
        self.fill, self.hold = fill, hold
        self.vis_base = 0  # visual rows before this are dropped (with fill: never after the last face before a kept frame)
        self.ended = False

    def store(self, name: str, idx, feats: np.ndarray) -> None:
        """``CropBatcher``'s callback: one finished batch of a visual extractor."""
        idx = np.asarray(idx)
        self.vis[name].put(idx, feats)
        self.stored[name] = int(idx[-1]) + 1

    def final(self, frame_times, found) -> int:
        """Frames before this have every feature (faces settled and extracted, filled, audio rows made)."""
        if self.hold and not self.ended:
            return 0
        final = len(frame_times)
        if self.vis and not self.ended:
            settled = n = len(found)
            for st in self.stored.values():  # the first face not yet through an extractor
                seg = np.asarray(found[st:n], dtype=bool)
                settled = min(settled, st + int(np.argmax(seg)) if seg.any() else n)
            final = settled
            if self.fill:  # frames after the last face wait for the next one (it may be nearer)
                seg = np.asarray(found[self.vis_base : settled], dtype=bool)
                final = self.vis_base + int(np.flatnonzero(seg)[-1]) + 1 if seg.any() else self.vis_base
        if self.audio is not None:
            if not self.ended:
                self.audio.advance(frame_times)
            final = min(final, self.audio.done)
        return final

    def finish(self, frame_times) -> None:
        """After the last frame (its crops flushed, the audio stream's last windows run): every frame is final."""
        self.ended = True
        if self.audio is not None:
            self.audio.advance(frame_times, final=True)

    def take(self, a: int, b: int, found, last: int) -> dict[str, np.ndarray]:
        """{name: (b - a, dim)} features of frames [a, b); with ``fill``, missing faces take the nearest face among
        frames before ``last`` (every face up to ``last`` is known)."""
        from abaw_rt.store import nearest_rows

        rows = {}
        if self.vis:
            idx = np.arange(a, b)
            if self.fill:
                near = nearest_rows(np.asarray(found[self.vis_base : last], dtype=bool))
                idx = idx if near is None else near[a - self.vis_base : b - self.vis_base] + self.vis_base
            rows = {name: r.take(idx) for name, r in self.vis.items()}
        if self.audio is not None:
            rows.update({name: r.take(np.arange(a, b)) for name, r in self.audio.rows.items()})
        return rows

    def drop(self, keep: int, found) -> None:
        """Frames before ``keep`` are no longer needed (with ``fill``, the last face before it is kept: the
        nearest-face fill of a kept frame may need it)."""
        if self.vis:
            seg = np.asarray(found[self.vis_base : keep], dtype=bool)
            if self.fill and seg.any():
                self.vis_base += int(np.flatnonzero(seg)[-1])
            else:
                self.vis_base = max(keep, self.vis_base)
            for r in self.vis.values():
                r.drop(self.vis_base)
        if self.audio is not None:
            self.audio.drop(keep)
