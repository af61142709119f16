"""Pipeline layer, live stage 3: visual and audio features per frame, as rows for the window assembler.

Frames arrive with their face from the faces stage (``tracking``: the last detected face held between
detections). Each frame's crops are extracted at once (a batch of one). A frame without a face takes the
features of the last frame with one (causal ``fill_from_nearest``; zeros before the first face). A frame the
faces stage shed (compute fell behind) repeats the previous frame's features (``shed`` is counted and
flagged in its NDJSON line). A frame waits here only for the audio around it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.report import StageTimes


@dataclass
class FrameRow:
    """One frame's features, ready for the window assembler."""

    index: int
    time: float  # presentation time, seconds
    mono: float  # capture, time.monotonic()
    wall: float  # capture, time.time()
    face: bool
    shed: bool
    features: dict[str, np.ndarray] = field(default_factory=dict)  # extractor name -> (dim,)
    session: int = 0  # reconnects of the source before this frame (``LiveConfig.reconnect``)


class FrameFeatures:
    """Frames with their faces (``tracking.Tracked``) in, ``FrameRow`` s out in order.

    Args:
        pipe: a ``Pipeline`` inside its context (extractors, detector, config).
        times: stage timings.
    """

    def __init__(self, pipe, times: StageTimes):
        from abaw_rt.pipeline.stream.audio import LiveAudio
        from abaw_rt.pipeline.stream.crops import CropStage

        self.times = times
        self.visual = [e for e in pipe.extractors if e.spec.modality == "visual"]
        self.audio_extractors = [e for e in pipe.extractors if e.spec.modality == "audio"]
        self.audio = LiveAudio(self.audio_extractors, timer=lambda n, s: times.add(f"extract:{n}", s)) if self.audio_extractors else None
        self.crops = None
        if self.visual:
            if pipe.detector is None:
                pipe.no_detector()
            self.crops = CropStage(self.visual, times, store=self._store)
        self._new: dict[str, np.ndarray] = {}
        self._held = {e.name: np.zeros(e.spec.dim, np.float32) for e in self.visual}  # last frame with a face
        self._held_face = False
        self._pending: collections.deque[FrameRow] = collections.deque()
        self.shed = 0
        self.last_time: float | None = None

    def _store(self, name: str, idx, feats: np.ndarray) -> None:
        self._new[name] = np.asarray(feats[0], np.float32)

    def check_audio(self, stats, source) -> None:
        """Once the stream is open: an audio model needs an audio track (``source``: the ``LiveSource``)."""
        if self.audio_extractors and not stats.audio_stream:
            hint = (" or send camera and microphone together, e.g. ffmpeg -f v4l2 -i /dev/video0 -f alsa -i default "
                    "-f mpegts - | abaw-rt live -") if source.kind == "camera" else ""
            raise AbawRtError(
                f"source '{source.text}': has no audio track, but the model needs audio feature(s) "
                f"{[e.name for e in self.audio_extractors]}; use a visual-only model{hint}"
            )

    def push(self, tracked) -> list[FrameRow]:
        """One frame and its face; returns the rows now complete (in frame order)."""
        cap, frame = tracked.cap, tracked.frame
        self.last_time = frame.time
        if self.audio is not None:
            self.audio.pump(frame.time)
        face = True
        if tracked.shed:
            self.shed += 1
            face = self._held_face
            frame.release()
        elif self.crops is not None:
            self._new = {}
            face = self.crops.add(frame, tracked.face)
            self.crops.finish()  # extraction of a batch of one, at once
            if face:
                self._held = dict(self._new)
            self._held_face = face
        else:
            frame.release()
        self._pending.append(FrameRow(frame.index, frame.time, cap.mono, cap.wall, face, tracked.shed, dict(self._held)))
        return self._ready()

    def _ready(self, final: bool = False) -> list[FrameRow]:
        out = []
        while self._pending:
            row = self._pending[0]
            if self.audio is not None:
                extra = self.audio.row(row.time)
                if extra is None:
                    if not final:
                        break
                    raise AbawRtError(f"live audio: frame {row.index} has no audio features after the stream ended")
                row.features.update(extra)
            out.append(self._pending.popleft())
        return out

    def finish(self) -> list[FrameRow]:
        """The stream ended: the frames still waiting for audio."""
        if self.audio is not None and self.last_time is not None:
            self.audio.drain(self.last_time)
        return self._ready(final=True)
