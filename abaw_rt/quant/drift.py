"""Quantisation layer: task-level drift of a lowered graph against its FP32 original, and the budget it must meet.

Drift is measured on the held-aside data against the FP32 graph's own outputs (no labels needed), on real
frames only:

* ``va``: |ΔCCC| per dimension, 1 - CCC(lowered track, FP32 track) for valence and for arousal;
* ``expr``: 1 - macro F1 of the lowered argmax against the FP32 argmax, and argmax agreement;
* ``au``: 1 - mean F1 of the lowered decisions (logit >= 0) against the FP32 decisions, and the flip rate;
* extractor graphs: mean cosine similarity of each sample's output vector with the FP32 one (worst output).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import HEAD_LABELS, LENGTHS


@dataclass(frozen=True)
class Budget:
    """The most drift a lowered graph may show (``--budget key=value``, repeatable or comma-separated)."""

    ccc: float = 0.01  # max |ΔCCC| of each VA dimension
    expr_f1: float = 0.01  # max 1 - EXPR macro F1 against the FP32 argmax
    expr_agreement: float = 0.99  # min fraction of frames whose EXPR argmax agrees
    au_f1: float = 0.01  # max 1 - AU mean F1 against the FP32 decisions
    au_flips: float = 0.01  # max fraction of AU decisions that flip
    cosine: float = 0.99  # min mean cosine similarity of extractor features

    def to_dict(self) -> dict:
        return asdict(self)


_MINIMA = ("expr_agreement", "cosine")  # budget keys that are lower bounds (the rest are upper bounds)


def parse_budget(items: Sequence[str] | None) -> Budget:
    """``["ccc=0.005", "expr_f1=0.02,au_flips=0.02"]`` -> Budget; unknown keys and bad values refused."""
    known = {f.name for f in fields(Budget)}
    values: dict[str, float] = {}
    for item in items or ():
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in known:
                raise AbawRtError(f"--budget {part!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
            try:
                v = float(value)
            except ValueError:
                raise AbawRtError(f"--budget {part!r}: {value!r} is not a number") from None
            if not 0.0 <= v <= 1.0:
                raise AbawRtError(f"--budget {part!r}: expected a value in [0, 1]")
            values[key.strip()] = v
    return Budget(**values)


def _real_rows(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    if lengths is None:
        return x.reshape(x.shape[0], -1).astype(np.float64)
    return np.concatenate([x[b, : int(n)] for b, n in enumerate(lengths)], axis=0).astype(np.float64)


def pooled(outputs: Sequence[Mapping[str, np.ndarray]], feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Outputs of many batches -> per output, the real rows (fusion: frames; extractor: samples) stacked."""
    names = list(outputs[0]) if outputs else []
    return {
        name: np.concatenate([_real_rows(np.asarray(o[name]), f.get(LENGTHS)) for o, f in zip(outputs, feeds)])
        for name in names
    }


def task_drift(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray], kind: str) -> dict[str, float]:
    """Drift metrics of pooled candidate outputs against pooled FP32 outputs (see the module docstring)."""
    from abaw_rt.train.metrics import ccc, f1_binary, macro_f1

    drift: dict[str, float] = {}
    if not all(np.all(np.isfinite(c)) for c in cand.values()):
        drift["non_finite"] = 1.0
    if kind == "extractor":
        drift["cosine"] = min(_mean_cosine(ref[k], cand[k]) for k in ref)
        return drift
    if "va" in ref:
        for i, label in enumerate(HEAD_LABELS["va"]):
            drift[f"ccc_{label}"] = abs(1.0 - ccc(cand["va"][:, i], ref["va"][:, i]))
    if "expr" in ref:
        r, c = ref["expr"].argmax(1), cand["expr"].argmax(1)
        present = sorted(set(r.tolist()) | set(c.tolist()))  # classes absent from both do not count against
        drift["expr_f1"] = 1.0 - macro_f1(np.searchsorted(present, c), np.searchsorted(present, r), len(present))[0]
        drift["expr_agreement"] = float(np.mean(r == c)) if r.size else 1.0
    if "au" in ref:
        r, c = ref["au"] >= 0, cand["au"] >= 0
        drift["au_f1"] = 1.0 - float(np.mean([f1_binary(c[:, j], r[:, j]) if r[:, j].any() or c[:, j].any() else 1.0 for j in range(r.shape[1])]))
        drift["au_flips"] = float(np.mean(r != c)) if r.size else 0.0
    return drift


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), np.where(np.abs(a - b).max(1) == 0, 1.0, 0.0))
    return float(cos.mean()) if cos.size else 1.0


def violations(drift: Mapping[str, float], budget: Budget) -> list[str]:
    """What exceeds the budget, one phrase each (empty: within budget)."""
    out = []
    if drift.get("non_finite"):
        out.append("non-finite outputs")
    for key, value in drift.items():
        limit_key = "ccc" if key.startswith("ccc_") else key
        if not hasattr(budget, limit_key):
            continue
        limit = getattr(budget, limit_key)
        if limit_key in _MINIMA and value < limit:
            out.append(f"{key} {value:.4g} < {limit:g}")
        elif limit_key not in _MINIMA and value > limit:
            out.append(f"{key} {value:.4g} > {limit:g}")
    return out


def excess(drift: Mapping[str, float], budget: Budget) -> float:
    """How far past the budget, as the worst ratio drift / allowed drift (<= 1: within); ranks failed trials."""
    if drift.get("non_finite"):
        return float("inf")
    worst = 0.0
    for key, value in drift.items():
        limit_key = "ccc" if key.startswith("ccc_") else key
        if not hasattr(budget, limit_key):
            continue
        limit = getattr(budget, limit_key)
        lost, allowed = (1.0 - value, 1.0 - limit) if limit_key in _MINIMA else (value, limit)
        worst = max(worst, lost / max(allowed, 1e-12))  # a zero budget still ranks trials by their drift
    return worst
