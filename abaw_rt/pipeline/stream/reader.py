"""Pipeline layer, live stage 1: decode a live source in a thread into a bounded queue of captured frames.

Each frame is stamped with its capture time (when it left the decoder; for ``realtime`` files, when its
timestamp came due). A full queue blocks the decoder (backpressure); the consumer sheds work long before
that (``frames``). A read that times out, a closed pipe or the end of a file ends the stream; what was
decoded is handed on first.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.decode import VideoDecoder
from abaw_rt.pipeline.stream.source import LiveSource, open_container

END = object()  # the stream ended (closed, stalled, or the file's end)
READ_AHEAD_S = 3.0  # realtime files: decoded ahead of the clock at most this much (frames held: 75 at 25 fps)


@dataclass
class Captured:
    """One decoded frame with the clocks that latency is measured on."""

    frame: object  # DecodedFrame
    mono: float  # time.monotonic() at capture
    wall: float  # time.time() at capture (NDJSON capture_time)


class LiveDecoder(VideoDecoder):
    """``VideoDecoder`` reading a camera, URL or stdin: opened through ``source.open_container``."""

    def __init__(self, source: LiveSource, timeout: float, **kw):
        super().__init__(Path(source.name), **kw)
        self.path = source.text  # messages name the source as given (a URL is no path)
        self.source = source
        self.timeout = timeout

    def _open_container(self):
        return open_container(self.source, self.timeout)

    def _check_coverage(self) -> None:
        if self.stats.frames == 0:
            raise AbawRtError(f"source '{self.source.text}': no video frames arrived")


class FrameReader:
    """The decode thread. ``get`` returns a ``Captured``, ``END``, or raises the decoder's ``AbawRtError``.

    Args:
        decoder: a ``LiveDecoder`` (or a ``VideoDecoder`` for a file).
        depth: queue bound (frames).
        convert: make each frame's RGB in the thread (the consumer's crops need it).
        realtime: release frames at their own pace (a file played as if live).
    """

    def __init__(self, decoder, depth: int = 32, convert: bool = True, realtime: bool = False):
        self.decoder = decoder
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.convert = convert
        self.realtime = realtime
        self.stop = threading.Event()
        self.frames_read = 0
        self.ended_by: str | None = None  # "end", "error: ...", "stopped"
        self._thread = threading.Thread(target=self._work, name="abaw-rt-live-decode", daemon=True)

    def start(self) -> "FrameReader":
        self._thread.start()
        return self

    def backlog(self) -> int:
        return self.queue.qsize()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _wait_until(self, due: float) -> None:
        while not self.stop.is_set() and (delay := due - time.monotonic()) > 0:
            time.sleep(min(delay, 0.05))

    def _release(self, f) -> bool:
        if self.convert and not f.lost:
            f.rgb()
        if not self._put(Captured(f, time.monotonic(), time.time())):
            self.ended_by = "stopped"
            return False
        self.frames_read += 1
        return True

    def _paced(self, frames):
        """``realtime``: each frame released when its timestamp comes due, decoding up to ``READ_AHEAD_S``
        ahead: a file may store its audio a second or more after the video of the same time (MP4
        interleaving), which a camera would deliver together; reading ahead hands that audio over in time."""
        held: collections.deque = collections.deque()
        origin = None
        for f in frames:
            origin = origin if origin is not None else (time.monotonic(), f.time)
            held.append((origin[0] + (f.time - origin[1]), f))
            while held and (held[0][0] <= time.monotonic() or held[-1][0] - held[0][0] > READ_AHEAD_S):
                self._wait_until(held[0][0])
                if not self._release(held.popleft()[1]):
                    return False
        while held:
            self._wait_until(held[0][0])
            if not self._release(held.popleft()[1]):
                return False
        return True

    def _work(self) -> None:
        frames = self.decoder.frames()
        try:
            if self.realtime:
                if not self._paced(frames):
                    return
            else:
                for f in frames:
                    if not self._release(f):
                        return
            self.ended_by = "end"
            self._put(END)
        except AbawRtError as exc:
            # frames already read: the stream stalled or broke mid-way; it ends cleanly after them
            self.ended_by = f"error: {exc}"
            self._put(exc if self.frames_read == 0 else END)
        except BaseException as exc:  # handed to the consumer, raised there
            self.ended_by = f"error: {exc}"
            self._put(exc)
        finally:
            frames.close()

    def get(self, stall: float, stopped=lambda: False):
        """The next frame, or ``END`` when the source ended, sent nothing for ``stall`` seconds, or ``stopped()``
        became true (polled every 0.1 s: Ctrl-C is a flag, so no frame is cut in half)."""
        deadline = time.monotonic() + stall
        while not stopped():
            try:
                item = self.queue.get(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    self.ended_by = f"stalled: no frame for {stall:g} s"
                    return END
                continue
            if isinstance(item, BaseException):
                raise item
            return item
        return END

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=1.0)  # a read blocked in FFmpeg is left to its timeout (daemon thread)
