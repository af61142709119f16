"""Training layer: the paper's per-task losses with invalid and padded frames masked out (torch).

Zhou et al. 2023, the ABAW5 task definitions: VA 1 - CCC averaged over valence and arousal (CCC over all valid frames of the
batch, as the authors' code pools them); EXPR cross-entropy ignoring -1; AU BCE with logits masking -1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from abaw_rt.metrics import ccc_terms
from abaw_rt.train.annotations import INVALID


def ccc_torch(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CCC of two 1-D tensors with population moments (differentiable): ``abaw_rt.metrics.ccc_terms``."""
    num, denom = ccc_terms(x, y)
    return num / (denom + eps)


def _zero(out: torch.Tensor) -> torch.Tensor:
    return out.sum() * 0.0  # keeps the graph (and a defined gradient) when a batch has no valid label


def va_loss(out: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """out, target (B, T, 2); frame_mask (B, T) True for real frames. 1 - mean(CCC_v, CCC_a) on valid frames."""
    ok = frame_mask & (target != INVALID["va"]).all(dim=-1)
    if not bool(ok.any()):
        return _zero(out)
    p, y = out[ok], target[ok]
    return 1.0 - (ccc_torch(p[:, 0], y[:, 0]) + ccc_torch(p[:, 1], y[:, 1])) / 2


def expr_loss(out: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """out (B, T, 8) logits; target (B, T) int64 with -1 invalid. Mean cross-entropy over valid frames."""
    y = target.masked_fill(~frame_mask, INVALID["expr"])
    if not bool((y != INVALID["expr"]).any()):
        return _zero(out)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=INVALID["expr"])


def au_loss(out: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """out (B, T, 12) logits; target (B, T, 12) with -1 invalid. Mean BCE over valid (frame, AU) elements."""
    ok = frame_mask[..., None] & (target != INVALID["au"])
    if not bool(ok.any()):
        return _zero(out)
    return F.binary_cross_entropy_with_logits(out[ok], target[ok])


LOSSES = {"va": va_loss, "expr": expr_loss, "au": au_loss}


def task_loss(task: str, out: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    return LOSSES[task](out.float(), target, frame_mask)
