"""Pipeline layer: the live run, composing the streaming stages (reader -> frames -> windows -> stitch -> sinks).

Two threads: the decoder (``reader.FrameReader``, a bounded queue after it) and this one (faces, features,
fusion, stitching, sinks). A full queue blocks the decoder; long before it fills, frames are shed
(``frames.FrameFeatures``). The run ends when the source closes, stalls (``stall`` seconds without a frame)
or on Ctrl-C; every frame received is then made final with the windows run so far plus one ending at the
last frame, and handed to the sinks.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import asdict, dataclass

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.report import StageTimes
from abaw_rt.pipeline.stream import DEFAULT_HOP, DEFAULT_LOOKAHEAD
from abaw_rt.pipeline.stream.reader import END, FrameReader, LiveDecoder
from abaw_rt.pipeline.stream.sinks import Latency, emit
from abaw_rt.pipeline.stream.source import LiveSource



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

    def check(self) -> None:
        if self.lookahead < 0:
            raise AbawRtError(f"--lookahead {self.lookahead}: expected >= 0 frames")
        if self.hop < 1:
            raise AbawRtError(f"--hop {self.hop}: expected >= 1 frame")
        if self.timeout <= 0 or self.stall <= 0:
            raise AbawRtError(f"--timeout {self.timeout}: expected > 0 seconds")


class LiveRun:
    """One live source through a loaded ``Pipeline`` (inside its context), to ``sinks``.

    Args:
        pipe: the pipeline (models loaded, a fusion runner).
        source: the parsed SOURCE.
        cfg: lookahead, hop and the real-time knobs.
        sinks: objects with ``put(emitted, emit_wall, latency_s)`` (``sinks.NdjsonSink``, ``RecordSink``).
    """

    def __init__(self, pipe, source: LiveSource, cfg: LiveConfig, sinks):
        from abaw_rt.pipeline.stream.frames import FrameFeatures
        from abaw_rt.pipeline.stream.stitch import LiveStitcher
        from abaw_rt.pipeline.stream.windows import WindowAssembler, WindowRunner

        cfg.check()
        self.pipe, self.source, self.cfg = pipe, source, cfg
        self.times = StageTimes()
        self.latency = Latency()
        self.sinks = list(sinks) + [self.latency]
        paced = source.kind != "file" or cfg.realtime  # a file read as fast as it decodes never sheds: it waits
        self.features = FrameFeatures(pipe, cfg.shed_backlog if paced else 0, self.times)
        self.assembler = WindowAssembler(pipe.model_cfg, pipe.window)
        self.windows = WindowRunner(pipe.fusion, self.times)
        widths = {s.name: s.shape[-1] for s in pipe.fusion.output_specs}
        self.stitcher = LiveStitcher(widths, pipe.config.merge, cfg.lookahead)
        self.last_window_end = -1  # newest frame of the last window run
        self.frames = 0
        self.interrupted = False
        self.first_time: float | None = None
        self.last_time: float | None = None

    def run(self) -> dict:
        """Read until the source ends or Ctrl-C; flush; return the run's summary (KeyboardInterrupt is not
        re-raised: ``summary["interrupted"]`` says so and the CLI exits 130)."""
        wall0 = time.perf_counter()
        config = self.pipe.config
        decoder = LiveDecoder(self.source, self.cfg.timeout, threads=config.decode_threads,
                              audio=bool(self.features.audio_extractors), max_side=config.max_side,
                              audio_sink=self.features.audio.put if self.features.audio is not None else None)
        reader = FrameReader(decoder, self.cfg.queue, convert=bool(self.features.visual), realtime=self.cfg.realtime)
        reader.start()
        try:
            with self._signals_as_flag():
                self._read(reader, decoder)
        except KeyboardInterrupt as exc:  # Ctrl-C before the handlers were in (or off the main thread)
            self.interrupted = getattr(exc, "signum", 2)
        finally:
            reader.close()
        for row in self.features.finish():
            self._row(row)
        self._flush()
        return self._summary(reader, decoder, time.perf_counter() - wall0)

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

    def _read(self, reader: FrameReader, decoder) -> None:
        stopped = lambda: bool(self.interrupted)  # noqa: E731
        first = self.cfg.timeout + self.cfg.stall  # the first frame: opening may take the timeout
        item = reader.get(first, stopped)
        if item is END:
            if self.interrupted:
                return
            raise AbawRtError(f"source '{self.source.text}': no video frame within {first:g} s")
        self.features.check_audio(decoder.stats, self.source.text)
        while item is not END:
            for row in self.features.push(item, reader.backlog()):
                self._row(row)
            item = reader.get(self.cfg.stall, stopped)

    def _row(self, row) -> None:
        row.index = self.frames  # consecutive, as the assembler counts
        self.frames += 1
        self.first_time = row.time if self.first_time is None else self.first_time
        self.last_time = row.time
        self.stitcher.add_frame(row)
        self.assembler.add(row.features)
        if self.frames % self.cfg.hop == 0:
            self._run_window()
        emit(self.sinks, self.stitcher.ready(self.last_window_end), self.frames)

    def _run_window(self) -> None:
        start, inputs = self.assembler.latest()
        self.stitcher.add_window(start, self.windows.run(inputs))
        self.last_window_end = self.frames - 1

    def _flush(self) -> None:
        if self.frames == 0:
            return
        if self.last_window_end != self.frames - 1:
            self._run_window()
        emit(self.sinks, self.stitcher.ready(self.last_window_end) + self.stitcher.flush(), self.frames)

    def _summary(self, reader: FrameReader, decoder, wall: float) -> dict:
        span = (self.last_time - self.first_time) if self.frames > 1 else 0.0
        fps = (self.frames - 1) / span if span > 0 else decoder.stats.declared_fps
        return {
            "source": self.source.text,
            "kind": self.source.kind,
            "frames": self.frames,
            "fps": round(fps, 4) if fps else None,
            "wall_s": round(wall, 3),
            "ended_by": "interrupted" if self.interrupted else reader.ended_by,
            "interrupted": bool(self.interrupted),
            "signal": int(self.interrupted) if self.interrupted else None,
            "live": asdict(self.cfg),
            "window": self.pipe.window,
            "windows_run": self.windows.runs,
            "shed_frames": self.features.shed,
            "detections": self.features.detections,
            "latency": self.latency.summary(),
            "latency_bound_ms": round(1000.0 * self.cfg.lookahead / fps + 150.0, 1) if fps else None,
            "stages": self.times.summary(wall),
        }
