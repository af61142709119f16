"""Pipeline layer: a video file through the streaming stages as fast as it decodes (``infer`` and ``extract``).

Three threads, joined by bounded queues: the decoder (``reader.FrameReader``), faces (``tracking.FaceTrack``:
detection every N-th frame, boxes interpolated between) and this one: crops and visual features
(``crops.CropStage``), audio features (``AudioStream``, fed by the decoder as it demuxes), the per-frame rows
(``rows.FeatureRows``), then a consumer: the fusion windows of the stride plan (``plan.PlanWindows``, whose
final rows go to the sinks, e.g. an ``outputs.OutputFolder``) for ``infer``, or the feature store
(``StoreFeed``) for ``extract``. Only what later stages still need is held, so memory does not grow with the
video (what does: 9 bytes a frame of timestamps and face mask for the report, and the sinks' own records).
``live.LiveRun`` composes the same stages for a live source.
"""

from __future__ import annotations

import time
from array import array
from typing import Callable

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.checks import no_face
from abaw_rt.pipeline.features import Progress, VideoFeatures, measured_fps
from abaw_rt.pipeline.inputs import Source
from abaw_rt.pipeline.report import CallTimes, StageTimes

STEP_EVERY = 32  # frames between two looks at what is final (``StoreFeed``): the look scans the held frames


class StoreFeed:
    """Final rows of features (as found: no filling) handed to ``writer.put(features, face_found)`` in frame order.

    ``writer``: a ``store.StoreWriter`` (``extract``), or ``ArrayRecord`` (every row kept, for ``Pipeline.features``).
    """

    def __init__(self, rows, writer):
        self.rows, self.writer = rows, writer
        self.done = 0

    def step(self, frame_times, found) -> None:
        if len(frame_times) % STEP_EVERY == 0:
            self._put(self.rows.final(frame_times, found), found)

    def finish(self, frame_times, found) -> None:
        self.rows.finish(frame_times)
        self._put(len(frame_times), found)

    def _put(self, upto: int, found) -> None:
        if upto <= self.done:
            return
        self.writer.put(self.rows.take(self.done, upto, found, upto), np.asarray(found[self.done : upto], bool))
        self.rows.drop(upto, found)
        self.done = upto


class ArrayRecord:
    """A ``StoreFeed`` writer keeping every row: {name: (n, dim)} arrays at the end."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {}

    def put(self, features: dict[str, np.ndarray], face_found: np.ndarray) -> None:
        for name, rows in features.items():
            self.parts.setdefault(name, []).append(np.array(rows, np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.parts.items()}


class VideoRun:
    """One video file through the stages with the loaded models of ``pipe`` (a ``Pipeline`` inside its context).

    Args:
        pipe: the pipeline.
        source: the video.
        progress: callback(name, frames done, frames expected) every 10 frames.
        expected: frames expected (the container's count), for progress.
        fill: missing faces take the nearest face's features (the fusion model's inputs; off for the store).
        hold: keep every frame until the end (the whole-video path, after ``rows.Replan``).
    """

    def __init__(self, pipe, source: Source, progress: Progress | None = None, expected: int | None = None,
                 fill: bool = True, hold: bool = False):
        from abaw_rt.pipeline.audio_stream import AudioStream
        from abaw_rt.pipeline.decode import VideoDecoder

        self.pipe, self.source, self.fill, self.hold = pipe, source, fill, hold
        self.report = (lambda done: progress(source.name, done, expected)) if progress else None
        self.times = times = StageTimes()
        self.visual = [e for e in pipe.extractors if e.spec.modality == "visual"]
        self.audio = [e for e in pipe.extractors if e.spec.modality == "audio"]
        self.stream = AudioStream(self.audio, timer=lambda n, s: times.add(f"extract:{n}", s)) if self.audio else None
        config = pipe.config
        self.decoder = VideoDecoder(source.path, threads=config.decode_threads, audio=bool(self.audio),
                                    max_side=config.max_side, audio_sink=self.stream.put if self.stream else None)
        self.frame_times = array("d")  # 8 bytes a frame, not a 32-byte Python float in a list
        self.found = array("B")  # 1 byte a frame: a face was found
        self.skipped: list[str] = []  # audio extractors left out (extract, a video without audio)
        self.detect_times = CallTimes()  # the faces thread's detector calls, into ``times`` at the end
        self.rows = self.crops = self.track = None

    def run(self, consumer: Callable) -> VideoFeatures:
        """Read the whole video; ``consumer(rows, times)`` (called at the first frame) makes the stage after the
        rows (``plan.PlanWindows`` or ``StoreFeed``); returns what the report needs (``features`` empty)."""
        wall0 = time.perf_counter()
        stage = self._stages()
        try:
            item = self._next(stage)
            consume = self._start(consumer) if item is not None else None
            while item is not None:
                self._frame(item, consume)
                item = self._next(stage)
        finally:
            stage.close()
        self._finish(consume)
        return self._features(time.perf_counter() - wall0)

    def _stages(self):
        """The decoder and faces threads (``prefetch`` 0: both run in this thread, on demand)."""
        from abaw_rt.pipeline.faces import FaceTracker
        from abaw_rt.pipeline.stream.reader import FrameReader
        from abaw_rt.pipeline.stream.tracking import FACES_QUEUE, FaceTrack

        config = self.pipe.config
        reader = FrameReader(self.decoder, config.prefetch, strict=True)
        tracker = None
        if self.visual:
            if self.pipe.detector is None:
                self.pipe.no_detector()
            tracker = FaceTracker(self.pipe.detector.detect, config.detect_every, config.face,
                                  on_detect=self.detect_times.add)
        self.track = FaceTrack(reader, tracker, FACES_QUEUE if config.prefetch else 0)
        return self.track.start()

    def _next(self, stage):
        """The next frame and its face, or None at the end; the wait is timed ("wait": this thread idle)."""
        from abaw_rt.pipeline.stream.reader import END

        t = time.perf_counter()
        item = stage.get()
        self.times.add("wait", time.perf_counter() - t)
        return None if item is END else (item.cap, item.face)

    def _start(self, consumer: Callable):
        """At the first frame (the streams are open): the rows stage and the consumer."""
        from abaw_rt.pipeline.stream.crops import CropStage
        from abaw_rt.pipeline.stream.rows import FeatureRows

        audio = []
        for e in self.audio:
            if self.decoder.stats.audio_stream:
                audio.append(e.name)
            elif self.pipe.fusion is not None:
                raise AbawRtError(f"video '{self.source.path}': has no audio track, but the model needs audio "
                                  f"feature '{e.name}'")
            else:
                self.skipped.append(e.name)  # extract: a video without audio keeps only its visual features
        self.rows = FeatureRows({e.name: e.spec.dim for e in self.visual}, self.stream if audio else None, audio,
                                fill=self.fill, hold=self.hold)
        if self.visual:
            self.crops = CropStage(self.visual, self.times, self.rows.store)
        return consumer(self.rows, self.times)

    def _frame(self, item, consume) -> None:
        cap, face = item
        frame = cap.frame
        self.times.add("decode", cap.decode_s)
        self.frame_times.append(frame.time)
        if self.stream is not None:
            self.stream.pump(frame.time)
        if self.crops is not None:
            self.found.append(self.crops.add(frame, face))
        else:
            self.found.append(1)
            frame.release()
        consume.step(self.frame_times, self.found)
        if self.report and frame.index % 10 == 0:
            self.report(frame.index + 1)

    def _finish(self, consume) -> None:
        """The last crops and audio windows, the no-face check, then the consumer's last rows."""
        n = len(self.frame_times)
        if self.crops is not None:
            self.times.adopt("detect", self.detect_times)
            self.crops.finish()
            if not any(self.found):
                no_face(self.pipe, self.source, n)
        if self.rows is not None and self.rows.audio is not None:
            self.stream.finish_windows(np.asarray(self.frame_times, np.float64))
        if self.report:
            self.report(n)
        consume.finish(self.frame_times, self.found)

    def _features(self, wall: float) -> VideoFeatures:
        from abaw_rt.pipeline.facts import audio_facts, decode_facts, face_facts

        ft = np.frombuffer(self.frame_times, np.float64)
        stats, config = self.decoder.stats, self.pipe.config
        found = np.frombuffer(self.found, np.uint8).astype(bool)
        info = {
            "decode": decode_facts(stats, config),
            "faces": face_facts(bool(self.visual), found, self.track.tracker.detections if self.visual else 0, config),
            "audio": audio_facts(bool(self.audio), self.stream, stats, ft, self.skipped),
        }
        fps = measured_fps(ft) or stats.declared_fps
        return VideoFeatures(self.source, {}, found, ft, fps, self.times, info, wall=wall)
