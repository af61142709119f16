"""Pipeline layer, streaming: one stage in its own thread, handing its items on through a bounded queue.

A stage is a generator (decode frames, track faces) run in a thread; its items wait in a queue of at most
``depth`` (a full queue blocks the thread: backpressure, never unbounded buffering). An exception raised in
the thread is handed on in order and raised in the consumer. ``depth`` 0 runs the generator in the
consumer's own thread when asked (no thread at all), which is what a profiler or a debugger wants.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

END = object()  # the stage's generator is exhausted
WAITING = object()  # ``get`` timed out (the stage is still running)


class StageThread:
    """Runs ``items`` (a generator) in a thread named ``name``; ``get`` and iteration hand its items on in order.

    Args:
        items: the stage's generator; it is closed when the stage is (``close``), in its own thread.
        depth: queue bound; 0: no thread, the generator runs inside ``get``.
        name: the thread's name (seen in profilers and ``py-spy dump``).
    """

    def __init__(self, items: Iterator, depth: int, name: str):
        self.items = items
        self.depth = depth
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True) if depth > 0 else None

    def start(self) -> "StageThread":
        if self._thread is not None:
            self._thread.start()
        return self

    def backlog(self) -> int:
        """Items waiting in the queue."""
        return self.queue.qsize() if self._thread is not None else 0

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
            self._put(END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self.items.close()

    def get(self, timeout: float | None = None, stopped: Callable[[], bool] = lambda: False):
        """The next item; ``END`` once the generator is exhausted (or ``stopped()`` became true, polled every
        0.1 s); ``WAITING`` when nothing came within ``timeout`` seconds. Raises what the generator raised."""
        if self._done:
            return END
        if self._thread is None:
            return self._inline()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stopped():
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return WAITING
                continue
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._done = item is END
            return item
        return END

    def _inline(self):
        try:
            return next(self.items)
        except StopIteration:
            self._done = True
            return END
        except BaseException:
            self._done = True
            raise

    def __iter__(self):
        while (item := self.get()) is not END:
            yield item

    def close(self, wait: float = 10.0) -> None:
        """Stop the thread (a blocked put gives up within 0.05 s) and close the generator."""
        self.stop.set()
        if self._thread is None or self._thread.ident is None:  # inline, or never started
            self.items.close()
        elif self._thread.is_alive():
            self._thread.join(timeout=wait)
