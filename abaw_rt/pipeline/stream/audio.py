"""Pipeline layer, live stage 3 (audio): per-frame audio features as soon as the samples around a frame are in.

Wraps ``AudioStream`` (the offline path's streaming audio, same windows on the same clock) and hands out one
frame's row at a time, computed as ``AudioStream.finish`` computes all of them: a frame's features are final
once the window after its timestamp has run, so live rows equal offline rows. Windows run in small batches
(``LIVE_BATCH``) rather than the extractor's offline batch, which would hold frames back.
"""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.audio_track import AUDIO_RATE

LIVE_BATCH = 1  # audio windows per extractor call: any more and the newest frame waits for the next one
KEEP_ROWS = 512  # window features kept behind the newest (frames wait for audio by far less)


class LiveAudio:
    """Audio features per frame for the audio extractors of one live stream.

    ``put`` is the decoder's ``audio_sink`` (decoder thread); ``pump``, ``row`` and ``drain`` run in the
    features thread.
    """

    def __init__(self, extractors, timer=None):
        from abaw_rt.pipeline.audio_stream import AudioStream

        self.stream = AudioStream(extractors, timer=timer)
        for c in self.stream.cursors:
            c.batch = min(c.batch, LIVE_BATCH)
        self._rows = {c.extractor.name: np.zeros((0, c.extractor.spec.dim), np.float32) for c in self.stream.cursors}
        self._base = {c.extractor.name: 0 for c in self.stream.cursors}  # window index of _rows[name][0]
        self.put = self.stream.put

    def pump(self, frame_time: float) -> None:
        self.stream.pump(frame_time)
        self._collect()

    def drain(self, last_time: float) -> None:
        """The stream ended: run the remaining windows, so that every frame's row can be made."""
        self.stream.drain(last_time)
        self._collect()

    def _collect(self) -> None:
        for c in self.stream.cursors:
            if not c.feats:
                continue
            name = c.extractor.name
            rows = np.concatenate([self._rows[name]] + c.feats)
            c.feats.clear()
            drop = max(0, len(rows) - KEEP_ROWS)
            self._rows[name], self._base[name] = rows[drop:], self._base[name] + drop

    def row(self, frame_time: float) -> dict[str, np.ndarray] | None:
        """{name: (dim,) float32} for the frame at ``frame_time``, or None while a window it needs has not run."""
        from abaw_rt.pipeline.extractors import Stretch, stretch_to_frames

        t0 = self.stream._t0
        if t0 is None:
            return None
        out = {}
        for c in self.stream.cursors:
            s = c.extractor.spec
            rows, base = self._rows[c.extractor.name], self._base[c.extractor.name]
            pos = (frame_time - t0) * AUDIO_RATE / s.hop
            last = max(int(np.floor(pos + 0.5)), 0) if s.stretch is Stretch.nearest else max(int(np.floor(pos)), 0) + 1
            if last >= base + len(rows):  # the window it needs has not run yet
                return None
            take = lambda idx, rows=rows, base=base: rows[idx - base]  # noqa: E731 (used at once)
            out[c.extractor.name] = stretch_to_frames(np.array([pos]), take, base + len(rows) - 1, s.stretch)[0]
        return out
