"""Pipeline layer, stage 1 (offline and live): decode a source in a thread into a bounded queue of captured frames.

Each frame is stamped with its capture time (when it left the decoder; for ``realtime`` files, when its
timestamp came due) and the decoder thread's own time for it. A full queue blocks the decoder
(backpressure); a live run sheds work long before that (``tracking``). A live stream (``strict`` off) that
breaks after its first frame, times out or closes simply ends, after what was decoded; an offline file
(``strict``) raises what went wrong. Frames stay in the decoder's pixel format: the full-size RGB is made
only for frames that get a face crop (``crops``), so frames without a face cost no conversion.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.decode import VideoDecoder
from abaw_rt.pipeline.stream.source import LiveSource, open_container
from abaw_rt.pipeline.stream.stage import END, WAITING, StageThread

READ_AHEAD_S = 3.0  # realtime files: decoded ahead of the clock at most this much (frames held: 75 at 25 fps)


@dataclass
class Captured:
    """One decoded frame with the clocks that latency is measured on."""

    frame: object  # DecodedFrame
    mono: float  # time.monotonic() at capture
    wall: float  # time.time() at capture (NDJSON capture_time)
    decode_s: float = 0.0  # the decoder thread's seconds for this frame


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
    """The decode stage. ``get`` returns a ``Captured`` or ``END``, or raises the decoder's ``AbawRtError``.

    Args:
        decoder: a ``VideoDecoder`` (a file) or ``LiveDecoder`` (camera, URL, stdin).
        depth: queue bound (frames); 0: decode in the consumer's thread.
        realtime: release frames at their own pace (a file played as if live).
        strict: raise every decoding error (offline files); off: a stream that breaks after its first frame
            ends there (``ended_by`` says why).
    """

    def __init__(self, decoder, depth: int = 32, realtime: bool = False, strict: bool = False):
        self.decoder = decoder
        self.realtime = realtime
        self.strict = strict
        self.frames_read = 0
        self.ended_by: str | None = None  # "end", "error: ...", "stopped", "stalled: ..."
        self.stage = StageThread(self._captured(), depth, "abaw-rt-decode")

    def start(self) -> "FrameReader":
        self.stage.start()
        return self

    def backlog(self) -> int:
        return self.stage.backlog()

    def _wait_until(self, due: float) -> None:
        while not self.stage.stop.is_set() and (delay := due - time.monotonic()) > 0:
            time.sleep(min(delay, 0.05))

    def _captured(self):
        frames = self.decoder.frames()
        try:
            start = time.perf_counter()
            for f in self._paced(frames) if self.realtime else frames:
                self.frames_read += 1
                cap = Captured(f, time.monotonic(), time.time(), time.perf_counter() - start)
                yield cap
                start = time.perf_counter()
            self.ended_by = "end"
        except AbawRtError as exc:
            self.ended_by = f"error: {exc}"
            if self.strict or self.frames_read == 0:
                raise
        except GeneratorExit:
            self.ended_by = self.ended_by or "stopped"
            raise
        except BaseException as exc:
            self.ended_by = f"error: {exc}"
            raise
        finally:
            frames.close()

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
                yield held.popleft()[1]
        while held:
            self._wait_until(held[0][0])
            yield held.popleft()[1]

    def get(self, stall: float | None = None, stopped=lambda: False):
        """The next frame, or ``END`` when the source ended, sent nothing for ``stall`` seconds, or ``stopped()``
        became true (polled every 0.1 s: Ctrl-C is a flag, so no frame is cut in half)."""
        item = self.stage.get(stall, stopped)
        if item is WAITING:
            self.ended_by = f"stalled: no frame for {stall:g} s"
            return END
        return item

    def __iter__(self):
        while (item := self.get()) is not END:
            yield item

    def close(self, wait: float = 1.0) -> None:
        """Stop decoding; a read blocked in FFmpeg is left to its timeout (daemon thread)."""
        self.stage.close(wait)
