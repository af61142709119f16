"""Benchmark layer: timing one runner on one shape honestly (warm-up, minimum iterations and time, peak RSS)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one cell, in milliseconds (backend call only: Runner.last_inference_time)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    iters: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Timing":
        t = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(
            p50_ms=float(np.percentile(t, 50)),
            p90_ms=float(np.percentile(t, 90)),
            p99_ms=float(np.percentile(t, 99)),
            mean_ms=float(t.mean()),
            std_ms=float(t.std()),
            iters=len(t),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakRss:
    """Samples RSS in a background thread while the block runs; ``peak`` is the highest seen (bytes)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakRss":
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def time_calls(
    call: Callable[[], float],
    warmup: int,
    min_iters: int,
    min_seconds: float,
    max_seconds: float | None = None,
) -> list[float]:
    """Run ``call`` (which returns its own measured seconds) warmup times untimed, then until both
    ``min_iters`` calls and ``min_seconds`` have passed (or ``max_seconds``, if given, with at least 1 call)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        times.append(call())
        elapsed = time.perf_counter() - start
        if len(times) >= min_iters and elapsed >= min_seconds:
            break
        if max_seconds is not None and elapsed >= max_seconds:
            break
    return times


def runner_call(runner, feeds: Mapping[str, np.ndarray]) -> Callable[[], float]:
    """A zero-argument call that runs one inference and returns the runner's own backend time."""

    def call() -> float:
        runner.infer(feeds)
        return runner.last_inference_time

    return call


def time_in_turns(
    runners: Mapping[str, object], feeds: Mapping[str, np.ndarray], warmup: int, min_iters: int, min_seconds: float,
    rounds: int = 2,
) -> dict[str, Timing]:
    """Each runner in turn runs a block of calls (warm-up, then ``min_iters`` and ``min_seconds / rounds``), and
    the turns repeat ``rounds`` times so slow drift of the machine hits every backend alike.

    Blocks rather than call-by-call interleaving: onnxruntime's worker threads spin for a while after each
    run and would steal the cores from the next backend's call (on 2 cores that doubled torch's small-shape
    latency). This is how backends are compared as ratios measured in one run.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            times[name] += time_calls(runner_call(r, feeds), warmup, min_iters, min_seconds / rounds)
    return {name: Timing.of(t) for name, t in times.items()}


def matmul_rate(threads: int, m: int = 2048, k: int = 2048, n: int = 2048, trials: int = 5) -> float:
    """fp32 GFLOP/s of torch.mm on (m, k) x (k, n) with ``threads`` threads: the best of several ~0.3 s trials,
    so that a moment of other load on the machine does not lower the bound. Needs torch."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.3:
            torch.mm(a, b)
            calls += 1
        best = max(best, 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return best
