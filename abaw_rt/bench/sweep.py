"""Benchmark layer: the model sweep behind ``abaw-rt bench``: backend x precision x batch x time (x CUDA graphs).

Every cell reports p50/p90/p99/mean/std of the backend call, frames/s and segments/s, the cost of the
first call after a shape change, and peak host RSS (and peak GPU memory where torch sees a GPU).
Backends or cells that cannot run here are listed as skipped with the reason, never dropped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from abaw_rt.bench.measure import PeakRss, Timing, runner_call, time_calls
from abaw_rt.errors import AbawRtError


@dataclass(frozen=True)
class SweepConfig:
    """What to measure and how long."""

    backends: tuple[str, ...] = ("torch", "ort", "trt")  # runner registry names
    precisions: tuple[str, ...] = ("fp32", "fp16")
    times: tuple[int, ...] = (1, 75, 150, 300, 600, 1200)  # segment lengths (frames)
    batches: tuple[int, ...] = (1, 8, 32)  # segments per call
    cuda_graphs: tuple[bool, ...] = (False, True)  # measured both ways where the backend has them
    warmup: int = 3  # untimed calls per cell, after the first call
    min_iters: int = 10  # timed calls per cell at least ...
    min_seconds: float = 1.0  # ... and at least this long
    max_seconds: float = 20.0  # a cell stops after this long even below min_iters (reported in iters)
    threads: int | None = None  # CPU intra-op threads for torch and onnxruntime (None: their default)
    device: str = "cpu"  # "cpu" or "cuda"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("times", "batches"):
            vals = getattr(self, name)
            if not vals or any(v < 1 for v in vals):
                raise AbawRtError(f"--{name[:-1]}: got {list(vals)}, expected values >= 1")
        if self.min_iters < 1 or self.warmup < 0 or self.min_seconds < 0 or self.max_seconds <= 0:
            raise AbawRtError("--min-iters >= 1, --warmup >= 0, --min-seconds >= 0 and --max-seconds > 0 are required")


@dataclass
class Cell:
    backend: str
    precision: str
    batch: int
    time: int
    cuda_graphs: bool
    status: str  # "ok", "skipped" or "error"
    reason: str | None = None
    timing: Timing | None = None
    first_call_ms: float | None = None  # the first call at this shape (after another shape): allocation, tuning
    frames_per_s: float | None = None
    segments_per_s: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.backend, self.precision, self.batch, self.time, self.cuda_graphs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["timing"] = self.timing.to_dict() if self.timing else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        d = dict(d)
        d["timing"] = Timing(**d["timing"]) if d.get("timing") else None
        return cls(**d)


# A factory returns a ready (not yet active) runner, or raises Skip with the reason.
RunnerFactory = Callable[[str, str, bool], object]


class Skip(Exception):
    """Raised by a runner factory: this backend/precision/option cannot run here, and why."""


def _gpu_peak_mb(reset: bool = False) -> float | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def run_sweep(cfg: SweepConfig, factory: RunnerFactory, progress: Callable[[Cell], None] | None = None) -> list[Cell]:
    """Measure every cell; ``factory(backend, precision, cuda_graphs)`` makes the runner or raises Skip."""
    cells: list[Cell] = []
    rng = np.random.default_rng(cfg.seed)

    def emit(cell: Cell) -> None:
        cells.append(cell)
        if progress:
            progress(cell)

    for backend in cfg.backends:
        for precision in cfg.precisions:
            for graphs in cfg.cuda_graphs:
                shapes = [(b, t) for b in cfg.batches for t in cfg.times]
                try:
                    runner = factory(backend, precision, graphs)
                    runner.activate()
                except Skip as why:
                    for b, t in shapes:
                        emit(Cell(backend, precision, b, t, graphs, "skipped", str(why)))
                    continue
                except AbawRtError as exc:
                    for b, t in shapes:
                        emit(Cell(backend, precision, b, t, graphs, "error", str(exc)))
                    continue
                try:
                    for b, t in shapes:
                        emit(_measure(runner, cfg, backend, precision, graphs, b, t, rng))
                finally:
                    runner.deactivate()
    return cells


def _measure(runner, cfg: SweepConfig, backend, precision, graphs, b, t, rng) -> Cell:
    cell = Cell(backend, precision, b, t, graphs, "ok")
    try:
        feeds = runner.example_feeds(b, t, rng=rng)
        _gpu_peak_mb(reset=True)
        with PeakRss() as rss:
            start = time.perf_counter()
            runner.infer(feeds)  # first call at a new shape
            cell.first_call_ms = (time.perf_counter() - start) * 1e3
            times = time_calls(runner_call(runner, feeds), cfg.warmup, cfg.min_iters, cfg.min_seconds, cfg.max_seconds)
    except AbawRtError as exc:
        cell.status, cell.reason = "error", str(exc)
        return cell
    except MemoryError:
        cell.status, cell.reason = "error", "out of host memory"
        return cell
    cell.timing = Timing.of(times)
    cell.frames_per_s = b * t / (cell.timing.p50_ms / 1e3)
    cell.segments_per_s = b / (cell.timing.p50_ms / 1e3)
    cell.peak_rss_mb = rss.peak / 2**20
    cell.peak_gpu_mb = _gpu_peak_mb()
    return cell

