"""Pipeline layer, live stages 2-3: faces, visual features and audio features per frame, with load shedding.

Faces are *held* between detections (the last detected face is used until the next detection) rather than
interpolated as offline does: interpolation would hold every frame until the next detection frame. A frame
without a face takes the features of the last frame with one (causal ``fill_from_nearest``; zeros before the
first face). Shedding: when the decoder's queue holds ``shed_backlog`` frames or more, a frame skips detection
and extraction and repeats the previous frame's features (``shed`` is counted and flagged in its NDJSON line).
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


class HoldTracker:
    """``FaceTracker``'s interface for live use: detection every ``every`` frames, the last face held between."""

    def __init__(self, detect, every: int, choice, on_detect=None):
        self._detect = detect
        self.every = every
        self.choice = choice
        self.on_detect = on_detect
        self.detections = 0
        self._track = None  # last face found (guides the choice among several)
        self._face = None  # face held for the frames until the next detection
        self._since = every

    def push(self, frame) -> list:
        import time

        from abaw_rt.pipeline.faces import choose

        if frame.index % self.every == 0 or self._since >= self.every:
            start = time.perf_counter()
            faces = self._detect(frame)
            if self.on_detect:
                self.on_detect(time.perf_counter() - start)
            self.detections += 1
            self._face = choose(faces, self.choice, self._track)
            self._track = self._face or self._track
            self._since = 0
        self._since += 1
        return [(frame, self._face)]

    def finish(self) -> list:
        return []


class FrameFeatures:
    """Captured frames in, ``FrameRow`` s out in order (a frame waits only for the audio around it).

    Args:
        pipe: a ``Pipeline`` inside its context (extractors, detector, config).
        shed_backlog: shed frames while the decoder's queue holds at least this many (0: never shed).
        times: stage timings.
    """

    def __init__(self, pipe, shed_backlog: int, times: StageTimes):
        from abaw_rt.pipeline.stream.audio import LiveAudio
        from abaw_rt.pipeline.video import FaceStage

        self.times = times
        self.shed_backlog = shed_backlog
        self.visual = [e for e in pipe.extractors if e.spec.modality == "visual"]
        self.audio_extractors = [e for e in pipe.extractors if e.spec.modality == "audio"]
        self.audio = LiveAudio(self.audio_extractors, timer=lambda n, s: times.add(f"extract:{n}", s)) if self.audio_extractors else None
        self.faces = None
        if self.visual:
            if pipe.detector is None:
                pipe.no_detector()
            cfg = pipe.config
            tracker = HoldTracker(pipe.detector.detect, cfg.detect_every, cfg.face, lambda s: times.add("detect", s))
            self.faces = FaceStage(self.visual, pipe.detector, cfg, times, tracker=tracker, store=self._store)
        self._new: dict[str, np.ndarray] = {}
        self._held = {e.name: np.zeros(e.spec.dim, np.float32) for e in self.visual}  # last frame with a face
        self._held_face = False
        self._pending: collections.deque[FrameRow] = collections.deque()
        self.shed = 0
        self.last_time: float | None = None

    def _store(self, name: str, idx, feats: np.ndarray) -> None:
        self._new[name] = np.asarray(feats[0], np.float32)

    def check_audio(self, stats, source: str) -> None:
        """Once the stream is open: an audio model needs an audio track."""
        if self.audio_extractors and not stats.audio_stream:
            raise AbawRtError(
                f"source '{source}': has no audio track, but the model needs audio feature(s) "
                f"{[e.name for e in self.audio_extractors]}; use a visual-only model"
            )

    def push(self, cap, backlog: int) -> list[FrameRow]:
        """One captured frame; returns the rows now complete (in frame order)."""
        frame = cap.frame
        self.last_time = frame.time
        if self.audio is not None:
            self.audio.pump(frame.time)
        shed = bool(self.visual) and self.shed_backlog > 0 and backlog >= self.shed_backlog
        face = True
        if shed:
            self.shed += 1
            face = self._held_face
            frame.release()
        elif self.faces is not None:
            self._new = {}
            self.faces.push(frame)  # settles at once (HoldTracker): crops, extraction of a batch of one
            self.faces.batcher.flush()
            face = self.faces.found[-1]
            if face:
                self._held, self._held_face = dict(self._new), True
            else:
                self._held_face = False
        else:
            frame.release()
        self._pending.append(FrameRow(frame.index, frame.time, cap.mono, cap.wall, face, shed, dict(self._held)))
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

    @property
    def detections(self) -> int:
        return self.faces.tracker.detections if self.faces is not None else 0
