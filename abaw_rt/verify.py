"""Verification layer: compare candidate runners with a reference over a grid of batches and lengths.

Numeric error per output (max/mean/p99 absolute, max relative) and the task-level drift users care
about: 1 - CCC of each VA channel against the reference track, EXPR argmax agreement, AU decision
flips at 0.5. Only real frames (inside each segment's length) are compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from abaw_rt.metrics import ccc
from abaw_rt.model.config import HEAD_LABELS, LENGTHS
from abaw_rt.runners.base import Runner


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail limits of one candidate against the reference."""

    max_abs: float  # worst |candidate - reference| over all real frames and channels
    p99_abs: float  # 99th percentile of |candidate - reference|
    ccc_drift: float  # 1 - CCC(candidate, reference) per VA channel
    expr_agreement: float  # minimum fraction of frames whose EXPR argmax agrees (decisive frames)
    au_flip_rate: float  # maximum fraction of AU decisions (sigmoid >= 0.5) that flip (decisive frames)
    # A decision counts only where the reference is decisive: its margin (EXPR top-2 logit gap, AU |logit|)
    # exceeds max_abs, so a frame sitting on the boundary within numeric tolerance is not a flip.


DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    # fp32 graphs reorder float sums only: errors of a few ulps of the outputs.
    "fp32": Tolerances(max_abs=1e-4, p99_abs=2e-5, ccc_drift=1e-6, expr_agreement=1.0, au_flip_rate=0.0),
    # fp16 graphs: 10-bit mantissa through 8+ layers; LayerNorm/softmax in FP32.
    "fp16": Tolerances(max_abs=5e-2, p99_abs=1e-2, ccc_drift=1e-3, expr_agreement=0.995, au_flip_rate=0.005),
    # int8 graphs (abaw-rt quantize): judged by the task metric, as the search that made them: 1 - CCC <= 0.02
    # per VA channel, >= 97 % EXPR agreement, <= 3 % AU flips where the reference is decisive (margin > 0.25);
    # element-wise limits only catch a broken graph.
    "int8": Tolerances(max_abs=0.5, p99_abs=0.25, ccc_drift=2e-2, expr_agreement=0.97, au_flip_rate=0.03),
}


@dataclass
class OutputStats:
    """Errors of one output of one candidate, over every frame compared."""

    output: str
    frames: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    task: dict[str, float] = field(default_factory=dict)  # ccc_drift_valence, expr_agreement, au_flip_rate, ...
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def _valid_rows(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B, T, C) -> (sum(lengths), C): the real frames only."""
    return np.concatenate([x[b, : int(n)] for b, n in enumerate(lengths)], axis=0).astype(np.float64)


def output_stats(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerances) -> OutputStats:
    """Statistics of one output given the real frames of reference and candidate, (N, C) each."""
    err = np.abs(cand - ref)
    rel = err / np.maximum(np.abs(ref), 1e-3)
    s = OutputStats(
        output=name,
        frames=int(ref.shape[0]),
        max_abs=float(err.max()) if err.size else 0.0,
        mean_abs=float(err.mean()) if err.size else 0.0,
        p99_abs=float(np.percentile(err, 99)) if err.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
    )
    if not np.all(np.isfinite(cand)):
        s.failures.append("non-finite values")
    if s.max_abs > tol.max_abs:
        s.failures.append(f"max abs error {s.max_abs:.3g} > {tol.max_abs:.3g}")
    if s.p99_abs > tol.p99_abs:
        s.failures.append(f"p99 abs error {s.p99_abs:.3g} > {tol.p99_abs:.3g}")
    if name == "va":
        for i, label in enumerate(HEAD_LABELS["va"]):
            drift = 1.0 - ccc(cand[:, i], ref[:, i])
            s.task[f"ccc_drift_{label}"] = drift
            if drift > tol.ccc_drift:
                s.failures.append(f"1-CCC {label} {drift:.3g} > {tol.ccc_drift:.3g}")
    elif name == "expr":
        top2 = np.sort(ref, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > tol.max_abs
        agree = np.argmax(cand, axis=1) == np.argmax(ref, axis=1)
        s.task["expr_agreement"] = float(agree.mean()) if agree.size else 1.0
        s.task["expr_agreement_decisive"] = float(agree[decisive].mean()) if decisive.any() else 1.0
        if s.task["expr_agreement_decisive"] < tol.expr_agreement:
            s.failures.append(f"EXPR argmax agreement {s.task['expr_agreement_decisive']:.4f} < {tol.expr_agreement}")
    elif name == "au":
        flips = (cand >= 0) != (ref >= 0)  # sigmoid(x) >= 0.5  <=>  x >= 0
        decisive = np.abs(ref) > tol.max_abs
        s.task["au_flip_rate"] = float(flips.mean()) if flips.size else 0.0
        s.task["au_flip_rate_decisive"] = float(flips[decisive].mean()) if decisive.any() else 0.0
        if s.task["au_flip_rate_decisive"] > tol.au_flip_rate:
            s.failures.append(f"AU flip rate {s.task['au_flip_rate_decisive']:.4f} > {tol.au_flip_rate}")
    return s


def compare_outputs(
    ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray], lengths: np.ndarray, tol: Tolerances
) -> dict[str, OutputStats]:
    """Compare one batch of outputs on real frames only."""
    return {
        name: output_stats(name, _valid_rows(ref[name], lengths), _valid_rows(cand[name], lengths), tol) for name in ref
    }


@dataclass(frozen=True)
class VerifyCase:
    batch: int
    time: int
    padded: bool  # segments of different lengths in one batch


def default_grid(
    window: int, batches: Sequence[int] = (1, 4), lengths: Sequence[int] | None = None
) -> list[VerifyCase]:
    """Batches x lengths (1, a prime, w-1, w, 2w by default); batches > 1 are also run padded."""
    lengths = lengths or sorted({1, 7, max(window - 1, 1), window, 2 * window})
    cases = []
    for b in batches:
        for t in lengths:
            cases.append(VerifyCase(b, t, False))
            if b > 1 and t > 1:
                cases.append(VerifyCase(b, t, True))
    return cases


@dataclass
class CandidateReport:
    name: str  # e.g. "ort fp16 (model.fp16.onnx)"
    precision: str
    tolerances: Tolerances
    outputs: dict[str, OutputStats]
    cases: int
    error: str | None = None  # the candidate failed to run

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.passed for s in self.outputs.values())


@dataclass
class VerifyReport:
    reference: str
    candidates: list[CandidateReport]
    grid: list[VerifyCase]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.candidates)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "grid": [asdict(c) for c in self.grid],
            "candidates": [
                {
                    "name": c.name,
                    "precision": c.precision,
                    "passed": c.passed,
                    "error": c.error,
                    "cases": c.cases,
                    "tolerances": asdict(c.tolerances),
                    "outputs": {k: {**asdict(v), "passed": v.passed} for k, v in c.outputs.items()},
                }
                for c in self.candidates
            ],
        }


def run_verify(
    reference: Runner,
    candidates: Mapping[str, Runner],
    grid: Sequence[VerifyCase],
    tolerances: Mapping[str, Tolerances] | None = None,
    seed: int = 0,
) -> VerifyReport:
    """Run every case through the reference and each candidate and pool the errors per output.

    Args:
        reference: the runner taken as truth (TorchRunner fp32).
        candidates: display name -> runner; each is judged with the tolerances of its precision.
        grid: the (batch, time, padded) cases.
        tolerances: per precision, defaults to DEFAULT_TOLERANCES.
        seed: seeds the random features.
    """
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    rng = np.random.default_rng(seed)
    feeds_list = [reference.example_feeds(c.batch, c.time, rng=rng, padded=c.padded) for c in grid]
    ref_out = [reference.infer(f) for f in feeds_list]
    reports = []
    for name, runner in candidates.items():
        tol = tolerances[runner.precision]
        pooled_ref: dict[str, list[np.ndarray]] = {}
        pooled_cand: dict[str, list[np.ndarray]] = {}
        error = None
        for feeds, ref in zip(feeds_list, ref_out):
            try:
                cand = runner.infer(feeds)
            except Exception as exc:  # a candidate that cannot run fails verify, it does not crash it
                error = f"batch {feeds[LENGTHS].shape[0]}, length {feeds[next(iter(feeds))].shape[1]}: {exc}"
                break
            for out_name in ref:
                pooled_ref.setdefault(out_name, []).append(_valid_rows(ref[out_name], feeds[LENGTHS]))
                pooled_cand.setdefault(out_name, []).append(_valid_rows(cand[out_name], feeds[LENGTHS]))
        outputs = {}
        if error is None:
            for out_name in pooled_ref:
                r = np.concatenate(pooled_ref[out_name])
                c = np.concatenate(pooled_cand[out_name])
                outputs[out_name] = output_stats(out_name, r, c, tol)
        reports.append(CandidateReport(name, runner.precision, tol, outputs, len(grid), error))
    return VerifyReport(reference=f"{reference.name} {reference.precision}", candidates=reports, grid=list(grid))
