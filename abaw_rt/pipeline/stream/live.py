"""Pipeline layer: the live run, composing the streaming stages (reader -> faces -> features -> windows -> stitch
-> sinks).

Three threads: the decoder (``reader.FrameReader``), faces (``tracking.FaceTrack`` with a ``HoldTracker``),
each with a bounded queue after it, and this one (crops and features, fusion, stitching, sinks): the stages
``offline.VideoRun`` runs for a file, with the live policies (faces held, windows ending at the newest frame,
a lookahead). A full queue blocks the stage before it; long before they fill, frames are shed (the faces
stage) and so are fusion windows (``LiveRun._shed_window``; one still runs every ``shed_hop`` frames).
The run ends when the source closes, stalls (``stall`` seconds without a frame)
or on Ctrl-C; every frame received is then made final with the windows run so far plus one ending at the
last frame, and handed to the sinks.

``reconnect`` (network URLs only): when the source closes or stalls, the session so far is flushed as above,
and the URL is reopened up to ``reconnect`` times, ``reconnect_wait`` s apart (a session that delivers a frame
resets the count). Each session starts fresh (faces, audio clock, windows: no window spans a gap, whose length
is unknown); frame indices continue, and times continue after the last frame: the new session's first frame
is placed ``max(1/fps, capture gap)`` after it, so a stream whose timestamps restart never goes backwards.
NDJSON ``session`` counts the reconnects before a frame; the summary has ``reconnects``, ``lost_s`` and ``gaps``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import asdict, dataclass

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.report import CallTimes, StageTimes
from abaw_rt.pipeline.stream import DEFAULT_HOP, DEFAULT_LOOKAHEAD
from abaw_rt.pipeline.stream.reader import END, FrameReader, LiveDecoder
from abaw_rt.pipeline.stream.sinks import Latency, emit
from abaw_rt.pipeline.stream.source import URL_SCHEMES, LiveSource
from abaw_rt.pipeline.stream.tracking import FaceTrack, HoldTracker
_KIND_NAMES = {"file": "a file", "camera": "a camera", "stdin": "stdin", "url": "a URL"}


@dataclass(frozen=True)
class LiveConfig:
    """How a live run behaves; the CLI fills it in."""

    lookahead: int = DEFAULT_LOOKAHEAD  # later frames that must arrive before a frame is emitted (0: causal)
    hop: int = DEFAULT_HOP  # a window ending at the newest frame runs every hop frames
    realtime: bool = False  # a file: release its frames at their own pace (as if live)
    timeout: float = 10.0  # seconds for opening the source and for each read
    stall: float = 10.0  # seconds without a frame after which the stream counts as ended
    queue: int = 32  # decoded frames buffered between the decoder and the features stage
    shed_backlog: int = 8  # frames waiting in that queue from which frames are shed (0: never shed)
    shed_hop: int = 25  # while shedding, a window still runs at least every this many frames
    reconnect: int = 0  # network URLs: reopen a closed or stalled source up to this many times per break (0: never)
    reconnect_wait: float = 1.0  # seconds between two attempts (a server restarting needs a moment)

    def check(self) -> None:
        if self.lookahead < 0:
            raise AbawRtError(f"--lookahead {self.lookahead}: expected >= 0 frames")
        if self.hop < 1:
            raise AbawRtError(f"--hop {self.hop}: expected >= 1 frame")
        if self.shed_hop < 1:
            raise AbawRtError(f"--shed-hop {self.shed_hop}: expected >= 1 frame")
        if self.timeout <= 0 or self.stall <= 0:
            raise AbawRtError(f"--timeout {self.timeout}: expected > 0 seconds")
        if self.reconnect < 0 or self.reconnect_wait < 0:
            raise AbawRtError(f"--reconnect {self.reconnect} --reconnect-wait {self.reconnect_wait}: expected >= 0")

    def check_source(self, source: LiveSource) -> None:
        """``reconnect`` is for network URLs; on a file, camera or stdin it is refused, not ignored."""
        if self.reconnect and source.kind != "url":
            raise AbawRtError(
                f"--reconnect {self.reconnect}: source '{source.text}' is {_KIND_NAMES[source.kind]}, not a network URL "
                f"({', '.join(URL_SCHEMES)}); there is nothing to reopen"
            )


class LiveRun:
    """One live source through a loaded ``Pipeline`` (inside its context), to ``sinks``.

    Args:
        pipe: the pipeline (models loaded, a fusion runner).
        source: the parsed SOURCE.
        cfg: lookahead, hop, the real-time knobs and reconnection.
        sinks: objects with ``put(rows, emit_wall, emit_mono)`` taking ``FinalRows`` (``sinks.NdjsonSink``,
            ``outputs.OutputFolder`` for --out).
    """

    def __init__(self, pipe, source: LiveSource, cfg: LiveConfig, sinks):
        from abaw_rt.pipeline.stream.stitch import LiveStitcher
        from abaw_rt.pipeline.stream.windows import WindowRunner

        cfg.check()
        cfg.check_source(source)
        self.pipe, self.source, self.cfg = pipe, source, cfg
        self.times = StageTimes()
        self.latency = Latency()
        self.sinks = list(sinks) + [self.latency]
        self.windows = WindowRunner(pipe.fusion, self.times)
        widths = {s.name: s.shape[-1] for s in pipe.fusion.output_specs}
        self.stitcher = LiveStitcher(widths, cfg.lookahead, pipe.window)
        self.last_window_end = -1  # newest frame of the last window run
        self.windows_shed = 0  # window runs skipped while behind (``_window_due``)
        self.frames = 0
        self.interrupted = False
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.last_mono: float | None = None
        self.session = 0  # reconnects so far
        self.base = 0  # index of this session's first frame
        self.offset = 0.0  # added to this session's stream times (they restart when the source is reopened)
        self.gaps: list[dict] = []
        self.done = {"shed": 0, "detections": 0}  # counts of the sessions before this one
        self.detect_times = CallTimes()  # the faces thread's detector calls, into ``times`` at the end
        self.features = self.tracker = None
        self._fresh()

    def _fresh(self) -> None:
        """Per-session state: faces, features and audio clock, and the window assembler."""
        from abaw_rt.pipeline.stream.frames import FrameFeatures
        from abaw_rt.pipeline.stream.windows import WindowAssembler

        if self.features is not None:
            self.done = {"shed": self.done["shed"] + self.features.shed,
                         "detections": self.done["detections"] + self._detections()}
        self.features = FrameFeatures(self.pipe, self.times)
        self.assembler = WindowAssembler(self.pipe.model_cfg, self.pipe.window)
        self.base = self.frames
        self._ended = False

    def _open(self) -> None:
        from abaw_rt.pipeline.stream.tracking import FACES_QUEUE

        config, cfg = self.pipe.config, self.cfg
        audio = self.features.audio
        self.decoder = LiveDecoder(self.source, cfg.timeout, threads=config.decode_threads,
                                   audio=bool(self.features.audio_extractors), max_side=config.max_side,
                                   audio_sink=audio.put if audio is not None else None)
        self.reader = FrameReader(self.decoder, cfg.queue, realtime=cfg.realtime)
        self.tracker = None
        if self.features.visual:
            self.tracker = HoldTracker(self.pipe.detector.detect, config.detect_every, config.face, self.detect_times.add)
        paced = self.source.kind != "file" or cfg.realtime  # a file read as fast as it decodes never sheds
        self.track = FaceTrack(self.reader, self.tracker, FACES_QUEUE, cfg.shed_backlog if paced and self.tracker else 0,
                               stall=cfg.stall, first_stall=cfg.timeout + cfg.stall, stopped=self._stopped).start()

    def _detections(self) -> int:
        return self.tracker.detections if self.tracker is not None else 0

    def run(self) -> dict:
        """Read until the source ends (after any reconnections) or Ctrl-C; flush; return the run's summary
        (KeyboardInterrupt is not re-raised: ``summary["interrupted"]`` says so and the CLI exits 130)."""
        wall0 = time.perf_counter()
        self._open()
        try:
            with self._signals_as_flag():
                item = self.track.get(self._stopped)
                if item is END and not self.interrupted and self.reader.frames_read == 0:
                    raise AbawRtError(f"source '{self.source.text}': no video frame within "
                                      f"{self.cfg.timeout + self.cfg.stall:g} s")
                while item is not END:
                    self.features.check_audio(self.decoder.stats, self.source)
                    self._read(item)
                    item = self._reconnect()
        except KeyboardInterrupt as exc:  # Ctrl-C before the handlers were in (or off the main thread)
            self.interrupted = getattr(exc, "signum", 2)
        finally:
            self.track.close()
        self._end_session()
        return self._summary(time.perf_counter() - wall0)

    def _stopped(self) -> bool:
        return bool(self.interrupted)

    @contextlib.contextmanager
    def _signals_as_flag(self):
        """While reading, SIGINT and SIGTERM only set ``interrupted``; the loop stops between two frames."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def flag(signum, frame):
            self.interrupted = signum

        previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _read(self, item) -> None:
        """One session, from its first captured frame until its source ends."""
        while item is not END:
            for row in self.features.push(item):
                self._row(row)
            item = self.track.get(self._stopped)

    def _reconnect(self):
        """The session ended: with ``reconnect``, flush it and reopen the URL; the new session's first frame,
        or ``END`` (no reconnection asked, interrupted, or every attempt failed: ``reader.ended_by`` says why)."""
        if not self.cfg.reconnect or self.interrupted:
            return END
        broke = self.reader.ended_by
        self._end_session()
        for attempt in range(1, self.cfg.reconnect + 1):
            if self._sleep(self.cfg.reconnect_wait):
                return END
            self.track.close()
            self._fresh()
            self._open()
            try:
                item = self.track.get(self._stopped)
                if item is not END:
                    self.features.check_audio(self.decoder.stats, self.source)
            except AbawRtError as exc:
                self.reader.ended_by, item = f"error: {exc}", END
            if item is not END:
                self._new_session(item, broke, attempt)
                return item
            if self.interrupted:
                return END
        self.reader.ended_by = f"reconnect failed ({self.cfg.reconnect} attempts, last: {self.reader.ended_by})"
        return END

    def _sleep(self, seconds: float) -> bool:
        """Wait, polling Ctrl-C; True when interrupted."""
        until = time.monotonic() + seconds
        while not self.interrupted and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        return bool(self.interrupted)

    def _new_session(self, first, broke: str, attempts: int) -> None:
        """Place the new session's frames after the last one: ``max(1/fps, capture gap)`` later."""
        step = 1.0 / (self.decoder.stats.declared_fps or 25.0)
        gap = first.cap.mono - self.last_mono
        self.offset = self.last_time + max(step, gap) - first.frame.time
        self.session += 1
        self.gaps.append({"after_frame": self.frames - 1, "ended_by": broke, "attempts": attempts,
                          "lost_s": round(max(0.0, gap - step), 3)})

    def _end_session(self) -> None:
        """Every frame of this session made final (its frames waiting for audio, one window at the end)."""
        if self._ended:
            return
        self._ended = True
        for row in self.features.finish():
            self._row(row)
        self._flush()

    def _row(self, row) -> None:
        row.index = self.frames  # consecutive over sessions; the assembler counts from the session's start
        row.time += self.offset
        row.session = self.session
        self.frames += 1
        self.first_time = row.time if self.first_time is None else self.first_time
        self.last_time, self.last_mono = row.time, row.mono
        self.stitcher.add_frame(row)
        self.assembler.add(row.features)
        if (self.frames - self.base) % self.cfg.hop == 0:
            if self._shed_window():
                self.windows_shed += 1
            else:
                self._run_window()
        emit(self.sinks, self.stitcher.ready(self.last_window_end), self.frames)

    def _shed_window(self) -> bool:
        """Behind (the decoder's queue holds ``shed_backlog`` frames or more, as for the frames): skip this window,
        unless the last one ran ``shed_hop`` frames ago. The frames it would have made final wait for the next."""
        shed_at = self.track.shed_backlog
        behind = shed_at > 0 and self.track.backlog() >= shed_at
        return behind and self.frames - 1 - self.last_window_end < self.cfg.shed_hop

    def _run_window(self) -> None:
        start, inputs = self.assembler.latest()
        self.stitcher.add_window(self.base + start, self.windows.run(inputs))
        self.last_window_end = self.frames - 1

    def _flush(self) -> None:
        if self.frames == self.base:
            return
        if self.last_window_end != self.frames - 1:
            self._run_window()
        emit(self.sinks, self.stitcher.ready(self.last_window_end), self.frames)
        emit(self.sinks, self.stitcher.flush(), self.frames)

    def _stages(self, wall: float) -> dict:
        if self.detect_times.count:
            self.times.adopt("detect", self.detect_times)
        return self.times.summary(wall)

    def model_future_frames(self) -> int | None:
        """Later frames the model's output for a frame can depend on (``ModelConfig.future_frames``); None:
        its whole window (or a graph without a config). At a lookahead this large, live's windows see all that
        offline's see after a frame."""
        cfg = self.pipe.model_cfg
        return None if cfg is None else cfg.future_frames

    def _summary(self, wall: float) -> dict:
        lost = sum(g["lost_s"] for g in self.gaps)
        span = (self.last_time - self.first_time - lost) if self.frames > 1 else 0.0
        fps = (self.frames - 1) / span if span > 0 else self.decoder.stats.declared_fps
        return {
            "source": self.source.text,
            "kind": self.source.kind,
            "frames": self.frames,
            "fps": round(fps, 4) if fps else None,
            "wall_s": round(wall, 3),
            "ended_by": "interrupted" if self.interrupted else self.reader.ended_by,
            "interrupted": bool(self.interrupted),
            "signal": int(self.interrupted) if self.interrupted else None,
            "live": asdict(self.cfg),
            "window": self.pipe.window,
            "windows_run": self.windows.runs,
            "windows_shed": self.windows_shed,
            "shed_frames": self.done["shed"] + self.features.shed,
            "detections": self.done["detections"] + self._detections(),
            "reconnects": len(self.gaps),
            "lost_s": round(lost, 3),
            "gaps": self.gaps,
            "latency": self.latency.summary(),
            "latency_bound_ms": round(1000.0 * self.cfg.lookahead / fps + 150.0, 1) if fps else None,
            "model_future_frames": self.model_future_frames(),
            "stages": self._stages(wall),
        }
