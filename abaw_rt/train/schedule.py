"""Training layer: the learning-rate schedule and per-epoch seeds, pure functions of the step and epoch."""

from __future__ import annotations

import math

import numpy as np

from abaw_rt.train.config import OptimSection


def lr_at(step: int, steps_per_epoch: int, optim: OptimSection) -> float:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to ``min_lr`` at the last step (Zhou et al. 2023)."""
    total = max(1, steps_per_epoch * optim.epochs)
    warm = int(round(optim.warmup_epochs * steps_per_epoch))
    if step < warm:
        return optim.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of one epoch (dropout), derived from (seed, epoch) so a resumed run draws the same."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_order(seed: int, epoch: int, windows: int):
    """The shuffled order of the training windows in one epoch."""
    return np.random.default_rng([seed, epoch]).permutation(windows)
