"""Base layer (numpy): the challenge's formulas: CCC and F1, used by verification, training losses and metrics.

``ccc_terms`` is written with operators and ``.mean()`` only, so the same formula serves numpy arrays
(``ccc``: metrics, verification drift) and torch tensors (the differentiable 1 - CCC training loss).
"""

from __future__ import annotations

import numpy as np


def ccc_terms(x, y):
    """Numerator 2 cov(x, y) and denominator var x + var y + (mean x - mean y)^2 of the concordance correlation
    coefficient, population moments (Zhou et al. 2023, "Tasks"). Works on numpy arrays and torch tensors alike."""
    mx, my = x.mean(), y.mean()
    vx = ((x - mx) ** 2).mean()
    vy = ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return 2 * cov, vx + vy + (mx - my) ** 2


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient in float64. Two constant, equal sequences score 1; otherwise a zero
    denominator scores 0; empty sequences score 0."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    num, denom = ccc_terms(x, y)
    if denom == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(num / denom)


def f1_binary(pred: np.ndarray, target: np.ndarray) -> float:
    """F1 of the positive class; 0 where it is undefined (no positives predicted nor labelled)."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    tp = np.sum(pred & target)
    denom = 2 * tp + np.sum(pred & ~target) + np.sum(~pred & target)
    return float(2 * tp / denom) if denom else 0.0


def macro_f1(pred: np.ndarray, target: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    """Macro F1 over labels ``range(n_classes)``, zero division = 0 (sklearn ``labels=range(n), zero_division=0``)."""
    per_class = [f1_binary(pred == c, target == c) for c in range(n_classes)]
    return float(np.mean(per_class)), per_class
