"""Training layer: the challenge metrics on stitched per-video predictions pooled over all frames. Numpy only.

The formulas (CCC, F1) live in ``abaw_rt.metrics``; this module applies them per task with the invalid markers.

Zhou et al. 2023, the ABAW5 task definitions: VA mean CCC of valence and arousal (population moments); EXPR macro F1 over all 8
labels (a class absent from both predictions and labels scores 0); AU mean F1 over the 12 AUs at
threshold 0.5. Invalid frames (VA -5, EXPR -1, AU -1 per element) are left out.
"""

from __future__ import annotations

import numpy as np

from abaw_rt.metrics import ccc, f1_binary, macro_f1
from abaw_rt.model.config import HEAD_LABELS
from abaw_rt.train.annotations import valid_frames


def va_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """pred, target (N, 2). Returns ccc_valence, ccc_arousal and score (their mean)."""
    ok = valid_frames("va", target)
    v = ccc(pred[ok, 0], target[ok, 0])
    a = ccc(pred[ok, 1], target[ok, 1])
    return {"ccc_valence": v, "ccc_arousal": a, "score": (v + a) / 2, "frames": int(ok.sum())}


def expr_metrics(scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """scores (N, 8) logits or probabilities (argmax decides); target (N,) with -1 invalid."""
    ok = valid_frames("expr", target)
    pred = np.argmax(scores[ok], axis=1)
    f1, per_class = macro_f1(pred, target[ok], len(HEAD_LABELS["expr"]))
    out = {"f1": f1, "score": f1, "accuracy": float(np.mean(pred == target[ok])) if ok.any() else 0.0}
    out.update({f"f1_{name}": v for name, v in zip(HEAD_LABELS["expr"], per_class)})
    out["frames"] = int(ok.sum())
    return out


def au_metrics(probs: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """probs (N, 12) probabilities (>= threshold is active); target (N, 12) with -1 invalid per element."""
    ok = valid_frames("au", target)
    per_au = [f1_binary(probs[ok[:, j], j] >= threshold, target[ok[:, j], j] == 1) for j in range(target.shape[1])]
    f1 = float(np.mean(per_au))
    out = {"f1": f1, "score": f1}
    out.update({f"f1_{name}": v for name, v in zip(HEAD_LABELS["au"], per_au)})
    out["frames"] = int(ok.any(axis=1).sum())
    return out


def task_metrics(task: str, stitched: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics of one task. ``stitched``: VA values, EXPR class probabilities, AU probabilities (N, C)."""
    if task == "va":
        return va_metrics(stitched, target)
    if task == "expr":
        return expr_metrics(stitched, target)
    return au_metrics(stitched, target)


def task_loss(task: str, stitched: np.ndarray, target: np.ndarray) -> float:
    """The training loss evaluated on stitched predictions (validation loss): 1-CCC, CE or BCE on valid frames."""
    ok = valid_frames(task, target)
    eps = 1e-7
    if task == "va":
        return 1.0 - float(np.mean([ccc(stitched[ok, i], target[ok, i]) for i in range(2)]))
    if task == "expr":
        if not ok.any():
            return 0.0
        rows = stitched[ok]
        p = np.clip(rows[np.arange(len(rows)), target[ok]], eps, 1.0)
        return float(-np.mean(np.log(p)))
    if not ok.any():
        return 0.0
    p = np.clip(stitched[ok], eps, 1 - eps)
    y = target[ok]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
