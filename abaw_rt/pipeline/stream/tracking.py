"""Pipeline layer, stage 2: faces, in a thread of their own between the decoder and the features.

Every captured frame gets one face (or none) from a tracker: offline, ``faces.FaceTracker`` detects every
N-th frame and interpolates the boxes between (a frame is settled once the next detection frame is in, so
up to N frames wait here); live, ``HoldTracker`` holds the last detected face until the next detection (a
frame is settled at once: interpolation would make every frame wait for the next detection). Running the
detector in its own thread lets it overlap with decoding and with the crops, extractors and fusion of
earlier frames (on two cores the three stages share both).

Shedding (live): while ``shed_backlog`` frames or more wait (in the decoder's queue and this stage's), a
frame skips detection and is passed on marked ``shed``: the features stage then repeats the previous
frame's features instead of extracting.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable

from abaw_rt.pipeline.stream.reader import END, Captured
from abaw_rt.pipeline.stream.stage import StageThread

FACES_QUEUE = 4  # frames settled and waiting for the features stage (each holds its full-size RGB)


@dataclass
class Tracked:
    """A captured frame with its settled face (``faces.Face`` or None)."""

    cap: Captured
    face: object | None
    shed: bool = False  # skipped detection and extraction (live, while behind)

    @property
    def frame(self):
        return self.cap.frame


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


class FaceTrack:
    """The faces stage over a ``FrameReader``: ``get`` and iteration give ``Tracked`` frames in order.

    Args:
        reader: the decode stage (started here).
        tracker: ``FaceTracker`` or ``HoldTracker`` (its detector runs in this stage's thread); None: no faces
            (a model without visual features), frames pass through.
        depth: queue bound (frames settled and waiting for the features stage); 0: no thread of its own.
        shed_backlog: live: skip detection while this many frames wait (0: never). Needs a tracker that
            settles each frame at once (``HoldTracker``), so that shed frames keep their order.
        stall: live: seconds without a frame after which the source counts as ended (None: wait).
        first_stall: the same for the first frame (opening a stream takes longer).
        stopped: polled while waiting (Ctrl-C is a flag).
    """

    def __init__(self, reader, tracker, depth: int = FACES_QUEUE, shed_backlog: int = 0, stall: float | None = None,
                 first_stall: float | None = None, stopped: Callable[[], bool] = lambda: False):
        if shed_backlog and not isinstance(tracker, HoldTracker):
            raise ValueError("shedding needs a tracker that settles every frame at once (HoldTracker)")
        self.reader, self.tracker = reader, tracker
        self.shed_backlog, self.stall, self.stopped = shed_backlog, stall, stopped
        self.first_stall = first_stall if first_stall is not None else stall
        self.stage = StageThread(self._tracked(), depth, "abaw-rt-faces")

    def start(self) -> "FaceTrack":
        self.reader.start()
        self.stage.start()
        return self

    def backlog(self) -> int:
        """Frames decoded and not yet taken by the features stage."""
        return self.reader.backlog() + self.stage.backlog()

    def _tracked(self):
        pending: collections.deque[Captured] = collections.deque()  # frames the tracker holds, in order
        wait = self.first_stall
        while (cap := self.reader.get(wait, self.stopped)) is not END:
            wait = self.stall
            if self.tracker is None:
                yield Tracked(cap, None)
            elif self.shed_backlog and self.backlog() >= self.shed_backlog:
                cap.frame.release()
                yield Tracked(cap, None, shed=True)
            else:
                pending.append(cap)
                yield from self._settled(pending, self.tracker.push(cap.frame))
        if self.tracker is not None:
            yield from self._settled(pending, self.tracker.finish())

    @staticmethod
    def _settled(pending, done):
        for frame, face in done:
            cap = pending.popleft()
            if cap.frame is not frame:  # trackers settle frames in the order they were pushed
                raise RuntimeError(f"face tracker settled frame {frame.index} out of order (pipeline bug)")
            yield Tracked(cap, face)

    def get(self, stopped: Callable[[], bool] = lambda: False):
        """The next ``Tracked`` frame, or ``END`` (the source ended, or ``stopped()``)."""
        return self.stage.get(None, stopped)  # no timeout: never WAITING

    def __iter__(self):
        while (item := self.get()) is not END:
            yield item

    def close(self, wait: float = 1.0) -> None:
        self.stage.close(wait)
        self.reader.close(wait)
