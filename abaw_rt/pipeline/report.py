"""Reporting layer: per-stage timings (p50/p90/p99 per call), the run's environment, the per-video report dict."""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections import defaultdict
from contextlib import contextmanager

import numpy as np


class CallTimes:
    """One stage's calls in constant memory: exact count, total, min and max, and a histogram of the seconds
    in log-spaced bins (32 per octave, 0.1 us to 3 h) for the percentiles, which land within 1.1 % of the
    exact ones. A video's stages record a call or more per frame; a list of them grew 4 to 8 bytes a call."""

    PER_OCTAVE = 32
    LOW = 1e-7  # seconds; faster calls count in the first bin
    BINS = 1 + int(math.log2(1e4 / LOW) * PER_OCTAVE)  # 1170 (9 KiB); slower than 1e4 s: the last bin

    def __init__(self) -> None:
        self.count, self.total, self.low, self.high = 0, 0.0, math.inf, 0.0
        self.bins = array("q", bytes(8 * self.BINS))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds < self.low:
            self.low = seconds
        if seconds > self.high:
            self.high = seconds
        k = int(math.log2(seconds / self.LOW) * self.PER_OCTAVE) if seconds > self.LOW else 0
        self.bins[k if k < self.BINS else self.BINS - 1] += 1

    def percentiles(self, qs) -> list[float]:
        """Seconds at each percentile in ``qs`` (0..100): the geometric centre of the bin holding the sample of
        rank round(q/100 (count - 1)), kept within the exact min and max; the first and last rank: those."""
        if not self.count:
            return [0.0 for _ in qs]
        cum = np.cumsum(np.frombuffer(self.bins, dtype=np.int64))
        out = []
        for q in qs:
            rank = int(q / 100 * (self.count - 1) + 0.5)
            k = int(np.searchsorted(cum, rank, side="right"))
            centre = self.LOW * 2 ** ((k + 0.5) / self.PER_OCTAVE)
            out.append(self.low if rank == 0 else self.high if rank == self.count - 1 else
                       min(max(centre, self.low), self.high))
        return out


class StageTimes:
    """Wall-clock seconds per call, grouped by stage ("decode", "detect", "extract:eff", "fusion", ...), in
    constant memory per stage (``CallTimes``), however long the video."""

    def __init__(self) -> None:
        self.calls: dict[str, CallTimes] = defaultdict(CallTimes)
        self.items: dict[str, int] = defaultdict(int)  # frames / crops / windows handled per stage

    def add(self, stage: str, seconds: float, items: int = 1) -> None:
        self.calls[stage].add(float(seconds))
        self.items[stage] += items

    @contextmanager
    def time(self, stage: str, items: int = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, items)

    def adopt(self, stage: str, calls: CallTimes) -> None:
        """A stage timed elsewhere (another thread's own ``CallTimes``), one item per call."""
        self.calls[stage], self.items[stage] = calls, calls.count

    def total(self, stage: str) -> float:
        calls = self.calls.get(stage)
        return calls.total if calls is not None else 0.0

    def summary(self, wall: float | None = None) -> dict[str, dict]:
        """{stage: calls, items, total_s, share of the wall time, p50/p90/p99 per call in ms}."""
        out = {}
        for stage, c in self.calls.items():
            p50, p90, p99 = (1000.0 * x for x in c.percentiles((50, 90, 99)))
            out[stage] = {
                "calls": c.count,
                "items": int(self.items[stage]),
                "total_s": round(c.total, 6),
                "share": round(c.total / wall, 4) if wall else None,
                "p50_ms": round(p50, 4),
                "p90_ms": round(p90, 4),
                "p99_ms": round(p99, 4),
            }
        return out


def environment() -> dict:
    """Versions and machine, for every report (the shared ``abaw_rt.machine.machine_info``)."""
    from abaw_rt.machine import machine_info

    return machine_info()


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, MiB.

    Linux: VmHWM of /proc/self/status (getrusage's ru_maxrss survives exec, so a child started by a big
    parent would report the parent's peak). Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except Exception:
        return None


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing happens).

    glibc keeps what is freed inside its heap resident until the top of the heap is free, and arrays that grow
    as a video goes leave such holes behind them; a video's decoder frees its demuxer's sample index (about 90
    bytes a frame for MP4) when it closes. Called then, this lowered the peak of ``infer`` on a 30-minute
    video by about 5 MB (README, "Live and streaming inference").
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return
    trim(0)
