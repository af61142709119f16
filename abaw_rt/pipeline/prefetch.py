"""Pipeline layer, stage 1 (prefetch): the decoder in a background thread, a few frames ahead."""

from __future__ import annotations

import queue
import threading
import time as _time
from typing import Callable, Iterator


def prefetch(
    frames: Iterator,
    depth: int = 8,
    convert: bool = True,
    on_frame: Callable[[float], None] | None = None,
) -> Iterator:
    """Decode in a background thread up to ``depth`` frames ahead; yield the frames in order.

    Args:
        frames: ``VideoDecoder.frames()``.
        depth: frames decoded ahead (memory: ``depth`` full-size frames).
        convert: also make each frame's full-size RGB in the thread.
        on_frame: callback(seconds) with the decoder thread's time for each frame (decode and convert).

    Errors raised while decoding (e.g. AbawRtError for a broken file) are raised here, in order.
    Closing the generator early stops the thread and closes the file.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            start = _time.perf_counter()
            for f in frames:
                if convert:
                    f.rgb()
                if not put((f, _time.perf_counter() - start)):
                    return
                start = _time.perf_counter()
            put((end, 0.0))
        except BaseException as exc:  # handed to the consumer, raised there
            put((exc, 0.0))
        finally:
            frames.close()

    thread = threading.Thread(target=work, name="abaw-rt-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, seconds = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            if on_frame:
                on_frame(seconds)
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
