"""Reporting layer: per-stage timings (p50/p90/p99 per call), the run's environment, the per-video report dict."""

from __future__ import annotations

import sys
import time
from array import array
from collections import defaultdict
from contextlib import contextmanager

import numpy as np


class StageTimes:
    """Wall-clock seconds per call, grouped by stage ("decode", "detect", "extract:eff", "fusion", ...)."""

    def __init__(self) -> None:
        # compact float32 arrays (4 bytes a call, not a 32-byte Python float in a list): a stage such as
        # "decode" records one call per frame, and long videos must not grow memory for it
        self.calls: dict[str, array] = defaultdict(lambda: array("f"))
        self.items: dict[str, int] = defaultdict(int)  # frames / crops / windows handled per stage

    def add(self, stage: str, seconds: float, items: int = 1) -> None:
        self.calls[stage].append(float(seconds))
        self.items[stage] += items

    @contextmanager
    def time(self, stage: str, items: int = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, items)

    def total(self, stage: str) -> float:
        return float(sum(self.calls.get(stage, ())))

    def summary(self, wall: float | None = None) -> dict[str, dict]:
        """{stage: calls, items, total_s, share of the wall time, p50/p90/p99 per call in ms}."""
        out = {}
        for stage, xs in self.calls.items():
            arr = np.asarray(xs, dtype=np.float64) * 1000.0
            p50, p90, p99 = np.percentile(arr, [50, 90, 99]) if len(arr) else (0.0, 0.0, 0.0)
            out[stage] = {
                "calls": len(xs),
                "items": int(self.items[stage]),
                "total_s": round(float(arr.sum()) / 1000.0, 6),
                "share": round(float(arr.sum()) / 1000.0 / wall, 4) if wall else None,
                "p50_ms": round(float(p50), 4),
                "p90_ms": round(float(p90), 4),
                "p99_ms": round(float(p99), 4),
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
