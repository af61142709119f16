"""Quantisation layer: the budget search: which nodes go back to higher precision so drift stays within budget.

From the fully lowered graph (all candidates INT8, or FP16), nodes are ranked by sensitivity
(abaw_rt.quant.sensitivity) and the k most sensitive are kept high; k is found by bisection, assuming
drift falls as k grows: try k = 0, then k = max_kept (if that fails, the budget cannot be met and the
best trial is reported), then halve the interval until the smallest passing k is known. About
2 + log2(candidates) graphs are built and measured.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.quant.calib import CalibrationSet
from abaw_rt.quant.drift import Budget, excess, pooled, task_drift, violations
from abaw_rt.quant.qdq import QuantConfig


@dataclass
class Trial:
    """One lowered graph measured on the held-aside data."""

    kept: int  # how many of the most sensitive nodes stayed high
    drift: dict[str, float]
    violations: list[str]
    excess: float  # worst drift / allowed (<= 1: within budget)
    seconds: float = 0.0  # build + measure time

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class SearchResult:
    mode: str  # "int8" or "fp16"
    candidates: list[str]  # nodes that can be lowered, in graph order
    ranking: list[tuple[str, float]]  # (node, sensitivity), most sensitive first
    trials: list[Trial]
    chosen: Trial  # the passing trial with the fewest nodes kept, else the best failing one
    met: bool
    max_kept: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def kept_nodes(self) -> list[str]:
        return [name for name, _ in self.ranking[: self.chosen.kept]]


def bisect_kept(n: int, trial: Callable[[int], Trial], max_kept: int | None = None) -> tuple[Trial, bool, list[Trial]]:
    """The fewest of the ``n`` ranked nodes to keep high so that ``trial(k)`` is within budget.

    Returns:
        (chosen trial, budget met, every trial in order). When even ``max_kept`` fails, the chosen trial is
        the one with the least excess.
    """
    limit = n if max_kept is None else max(0, min(n, max_kept))
    trials = [trial(0)]
    if trials[0].ok or limit == 0:
        return trials[0], trials[0].ok, trials
    trials.append(trial(limit))
    if not trials[-1].ok:
        return min(trials, key=lambda t: t.excess), False, trials
    lo, hi, best = 0, limit, trials[-1]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = trial(mid)
        trials.append(t)
        if t.ok:
            hi, best = mid, t
        else:
            lo = mid
    return best, True, trials


@dataclass(frozen=True)
class SearchConfig:
    mode: str = "int8"  # "int8" (QDQ) or "fp16"
    budget: Budget = Budget()
    max_kept: int | None = None  # keep at most this many nodes high (None: all candidates may be)
    quant: QuantConfig = QuantConfig()
    threads: int | None = None  # onnxruntime intra-op threads while measuring


def search_precision(graph: Path, out: Path, calib: CalibrationSet, cfg: SearchConfig, progress=None) -> SearchResult:
    """Run the budget search on ``graph`` and write the chosen lowered graph to ``out`` (metadata not yet set).

    Args:
        graph: the FP32 ONNX graph.
        out: where the chosen graph goes (written to a temporary name first).
        calib: calibration and held-aside feeds.
        cfg: mode, budget, limits.
        progress: optional callable(str) told about each step.
    """
    import onnx

    from abaw_rt.quant.qdq import candidate_nodes, name_nodes

    if cfg.mode not in ("int8", "fp16"):
        raise AbawRtError(f"precision {cfg.mode!r}: the search lowers to 'int8' or 'fp16'")
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=".abaw-rt-quant.", dir=Path(out).parent))
    try:
        model = onnx.load(str(graph))
        name_nodes(model)
        base = work / "base.onnx"
        onnx.save(model, str(base))
        from abaw_rt.quant.fp16 import FP16_CANDIDATE_OPS

        op_types = cfg.quant.op_types if cfg.mode == "int8" else FP16_CANDIDATE_OPS
        candidates = candidate_nodes(model, op_types)
        del model
        if not candidates:
            raise AbawRtError(f"ONNX '{graph}': no {'/'.join(op_types)} node to lower")
        lower = _lowering(base, work, calib, cfg)
        say(f"reference outputs on {len(calib.held_aside)} held-aside batches")
        ref = pooled(_run_all(base, calib.held_aside, cfg.threads), calib.held_aside)

        def measure(path: Path, kept: int, t0: float) -> Trial:
            got = pooled(_run_all(path, calib.held_aside, cfg.threads), calib.held_aside)
            drift = task_drift(ref, got, calib.kind)
            return Trial(kept, drift, violations(drift, cfg.budget), excess(drift, cfg.budget), time.perf_counter() - t0)

        say(f"lowering all {len(candidates)} candidate nodes to {cfg.mode}")
        t0 = time.perf_counter()
        all_low = lower(())
        first = measure(all_low, 0, t0)
        from abaw_rt.quant.sensitivity import node_sensitivity

        say("ranking nodes by sensitivity")
        scores = node_sensitivity(base, all_low, candidates, calib.held_aside[0], cfg.threads)
        all_low.unlink()
        ranking = sorted(((n, scores.get(n, 0.0)) for n in candidates), key=lambda x: -x[1])

        def trial(k: int) -> Trial:
            if k == 0:
                return first
            t0 = time.perf_counter()
            say(f"trial: {k} node(s) kept high")
            path = lower([n for n, _ in ranking[:k]])
            result = measure(path, k, t0)
            path.unlink()
            return result

        chosen, met, trials = bisect_kept(len(candidates), trial, cfg.max_kept)
        final = lower([n for n, _ in ranking[: chosen.kept]])
        shutil.move(str(final), str(out))
        limit = len(candidates) if cfg.max_kept is None else min(len(candidates), cfg.max_kept)
        return SearchResult(cfg.mode, candidates, ranking, trials, chosen, met, limit, time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lowering(base: Path, work: Path, calib: CalibrationSet, cfg: SearchConfig) -> Callable[[Sequence[str]], Path]:
    """A function: nodes kept high -> path of a freshly lowered graph in ``work``."""
    counter = iter(range(1_000_000))
    cache = work / "calibration.json"

    def lower(keep: Sequence[str]) -> Path:
        dst = work / f"trial{next(counter)}.onnx"
        if cfg.mode == "int8":
            from abaw_rt.quant.qdq import quantize_int8

            return quantize_int8(base, dst, calib.calibration, keep, cfg.quant, cache)
        from abaw_rt.quant.fp16 import lower_fp16

        return lower_fp16(base, dst, keep)

    return lower


def _run_all(path: Path, feeds_list: Sequence[dict], threads: int | None) -> list[dict]:
    from abaw_rt.runners.ort_runner import open_session

    session = open_session(Path(path), "cpu", threads=threads)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, dict(f)))) for f in feeds_list]
