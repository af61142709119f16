"""Pipeline layer, stage 3 (audio): audio features computed while the video decodes, in constant memory.

``FeatureExtractor.audio_features`` takes the whole 16 kHz track, which a long video makes large
(3.8 MB per minute, plus copies while the windows are cut). Here the decoder hands each resampled
chunk over as it comes (``VideoDecoder(audio_sink=stream.put)``, called from the decoder thread);
the pipeline's thread lays the chunks on the track exactly as ``decode._assemble`` does (contiguous,
or placed by timestamp across a real gap) and cuts each extractor's windows, and runs them in
batches, as soon as their samples are there and the frames seen so far prove they are needed. Only
samples that some window still needs are kept. The features equal the whole-track path's (same
windows on the same clock, the same nearest / linear stretch to the frames).
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import numpy as np

from abaw_rt.pipeline.audio_track import _GAP_S, AUDIO_RATE


class _Cursor:
    """One extractor's windows: where they lie on the track and which come next."""

    def __init__(self, extractor):
        self.extractor = extractor
        self.window = extractor.spec.window
        self.hop = extractor.spec.hop
        self.batch = extractor.spec.batch
        self.offset: int | None = None  # track index of window 0's first sample (set when both clocks are known)
        self.next = 0  # the next window to cut
        self.feats: list[np.ndarray] = []

    def first_needed(self) -> int:
        return self.next * self.hop + self.offset


class AudioStream:
    """Streaming audio features for the audio extractors of one video.

    Args:
        extractors: active ``FeatureExtractor``s of modality audio.
        timer: callback(name, seconds) for each batch an extractor runs.
    """

    def __init__(self, extractors: Sequence, timer: Callable[[str, float], None] | None = None):
        self.cursors = [_Cursor(e) for e in extractors]
        self.timer = timer
        self._queue: collections.deque = collections.deque()
        self.start: float | None = None  # time of the track's first sample (as AudioTrack.start)
        self._pos = 0  # where the next contiguous chunk goes (track index), as in _assemble
        self._length = 0  # samples on the track so far (its end, as in _assemble)
        self._data = np.zeros(1 << 16, np.float32)  # track samples [buf_start, buf_start + n) in data[:n]
        self._n = 0
        self._buf_start = 0
        self._t0: float | None = None  # first frame's time
        self._limit = 0.0  # latest frame time seen: windows past what the frames need are not cut yet

    # -- decoder thread ------------------------------------------------------------------------------
    def put(self, time: float | None, samples: np.ndarray) -> None:
        """A resampled mono 16 kHz chunk with the time of its first sample (thread-safe)."""
        self._queue.append((time, samples))

    # -- pipeline thread -----------------------------------------------------------------------------
    @property
    def end(self) -> float | None:
        return None if self.start is None else self.start + self._length / AUDIO_RATE

    @property
    def seconds(self) -> float:
        return self._length / AUDIO_RATE

    def pump(self, frame_time: float) -> None:
        """Take the chunks decoded so far and run every batch of windows that is complete and needed."""
        if self._t0 is None:
            self._t0 = frame_time
        self._limit = max(self._limit, frame_time)
        self._take()
        self._run(final=False)

    def finish(self, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        """After the last frame: the remaining windows, then {extractor name: (n, dim) features per frame}."""
        from abaw_rt.pipeline.extractors import audio_window_count, stretch_to_frames

        frame_times = np.asarray(frame_times, np.float64)
        self.finish_windows(frame_times)
        out = {}
        t0 = float(frame_times[0])
        for c in self.cursors:
            s = c.extractor.spec
            count = audio_window_count(t0, float(frame_times[-1]), s.hop)  # as audio_features
            feats = np.concatenate(c.feats)[:count]
            pos = (frame_times - t0) * AUDIO_RATE / s.hop
            out[c.extractor.name] = stretch_to_frames(pos, feats.__getitem__, count - 1, s.stretch)
        return out

    def finish_windows(self, frame_times: np.ndarray) -> None:
        """After the last frame: the remaining windows, left in ``cursors[i].feats`` (``finish`` without gathering)."""
        if self._t0 is None:
            self._t0 = float(frame_times[0])
        self._limit = float(frame_times[-1])
        self._take()
        self._run(final=True)

    def drain(self, last_time: float) -> None:
        """Streaming use, after the last frame: cut and run every remaining window the frames need
        (``finish`` without gathering the features; the caller has taken them from ``cursors[i].feats``)."""
        if self._t0 is None:
            self._t0 = last_time
        self._limit = max(self._limit, last_time)
        self._take()
        self._run(final=True)

    # -- internals -------------------------------------------------------------------------------------
    def _take(self) -> None:
        while self._queue:
            t, x = self._queue.popleft()
            if len(x):
                self._place(t, np.asarray(x, np.float32))
        if self.start is not None and self._t0 is not None:
            for c in self.cursors:
                if c.offset is None:  # window 0 is centred on the first frame (audio_features' origin)
                    origin = self._t0 - c.window / (2 * AUDIO_RATE)
                    c.offset = -int(round((self.start - origin) * AUDIO_RATE))
        self._trim()

    def _place(self, t: float | None, x: np.ndarray) -> None:
        """``decode._assemble``, one chunk at a time."""
        if self.start is None:
            self.start = float(t) if t is not None else 0.0
        if t is not None:
            at = int(round((t - self.start) * AUDIO_RATE))
            if abs(at - self._pos) > _GAP_S * AUDIO_RATE:
                self._pos = max(at, 0)
        lo, hi = self._pos, self._pos + len(x)
        self._pos = hi
        self._length = max(self._length, hi)
        need = hi - self._buf_start
        if need > self._n:  # extend (a gap is silence)
            if need > len(self._data):
                grown = np.zeros(max(2 * len(self._data), need), np.float32)
                grown[: self._n] = self._data[: self._n]
                self._data = grown
            self._data[self._n : need] = 0.0
            self._n = need
        a = max(lo, self._buf_start)  # a chunk placed back over samples already used: only the rest lands
        if a < hi:
            self._data[a - self._buf_start : hi - self._buf_start] = x[a - lo :]

    def _trim(self) -> None:
        if any(c.offset is None for c in self.cursors):
            return
        keep_from = min((c.first_needed() for c in self.cursors), default=self._buf_start)
        drop = min(max(keep_from - self._buf_start, 0), self._n)
        if drop:
            self._data[: self._n - drop] = self._data[drop : self._n]
            self._n -= drop
            self._buf_start += drop

    def _cut(self, c: _Cursor, k: int) -> np.ndarray:
        """Window k of cursor c: track samples [k*hop + offset, + window), silence outside the track."""
        lo = k * c.hop + c.offset
        out = np.zeros(c.window, np.float32)
        a, b = max(lo, self._buf_start), min(lo + c.window, self._buf_start + self._n, self._length)
        if a < b:
            out[a - lo : b - lo] = self._data[a - self._buf_start : b - self._buf_start]
        return out

    def _run(self, final: bool) -> None:
        import time as _time

        for c in self.cursors:
            if c.offset is None:
                if not final:
                    continue
                c.offset = 0  # no audio at all: every window is silence
            needed = int(np.floor((self._limit - self._t0) * AUDIO_RATE / c.hop)) + 2  # windows 0..needed-1
            if final:
                ready = needed
            else:  # a window is final once the track has passed its end (later chunks only go after it)
                ready = min(needed, (self._pos - c.offset - c.window) // c.hop + 1)
            while c.next < ready and (final or ready - c.next >= c.batch):
                n = min(c.batch, ready - c.next)
                windows = np.stack([self._cut(c, k) for k in range(c.next, c.next + n)])
                start = _time.perf_counter()
                c.feats.append(c.extractor.run_windows(windows))
                if self.timer:
                    self.timer(c.extractor.name, _time.perf_counter() - start)
                c.next += n
        self._trim()
