"""Pipeline layer, stage 1 (timeline): frame indices by timestamp, and the frames a damaged stream lost.

A packet whose presentation time the decoder's output passed without giving its frame was lost (data
that failed to decode); the decoder fills such frames in so that frame i stays frame i.
"""

from __future__ import annotations

import heapq


class Timeline:
    """The presentation times of the video packets sent to the decoder, against the frames that came out:
    a packet whose time was passed without its frame was lost (a frame that failed to decode)."""

    def __init__(self):
        self.pending: list[int] = []  # heap of packet pts not yet matched by a frame

    def sent(self, packet) -> None:
        if packet.pts is not None and not packet.is_discard:
            heapq.heappush(self.pending, packet.pts)

    def passed(self, pts: int | None, last: int | None) -> list[int]:
        """Packet times before ``pts`` (None: all) that never gave a frame, after the last frame's ``last``."""
        lost = []
        while self.pending and (pts is None or self.pending[0] <= pts):
            p = heapq.heappop(self.pending)
            if p != pts and last is not None and p > last and (not lost or p != lost[-1]):
                lost.append(p)
        return lost

    def forget(self, last: int | None) -> None:
        """Drop the packet times at or before ``last`` (the latest frame's): ``passed`` never counts them as lost,
        so a long stream without errors holds only the packets the decoder has not yet given back (a few)."""
        while last is not None and self.pending and self.pending[0] <= last:
            heapq.heappop(self.pending)


class Clock:
    """Frame indices and increasing timestamps, kept in ``stats`` (frames, first_time, last_time)."""

    def __init__(self, stats, time_base, fallback_rate: float):
        self.stats, self.time_base, self.rate = stats, time_base, fallback_rate
        self.last: float | None = None
        self.last_pts: int | None = None

    def place(self, pts: int | None, t: float | None) -> int:
        """The next frame's index; its time (``last``) is ``t``, or the clock continued at the declared rate."""
        if t is None:  # no timestamp: continue the clock at the declared rate
            t = 0.0 if self.last is None else self.last + 1.0 / self.rate
        if self.last is not None and t <= self.last:
            self.stats.non_increasing += 1
            t = self.last + 1e-6
        self.last = t
        if pts is not None:
            self.last_pts = pts if self.last_pts is None else max(self.last_pts, pts)
        if self.stats.first_time is None:
            self.stats.first_time = t
        self.stats.last_time = t
        self.stats.frames += 1
        return self.stats.frames - 1
