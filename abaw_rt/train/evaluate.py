"""Training layer (torch): stitched per-video predictions and the validation loss and metrics on them.

Windows and merging are the inference pipeline's (``plan_segments``, ``to_probabilities``, ``Stitcher``),
so the metric a run reports is what ``abaw-rt infer`` gets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from abaw_rt.model.config import HEAD_LABELS
from abaw_rt.model.fusion import FusionModel
from abaw_rt.pipeline.segments import pad_windows, plan_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, to_probabilities
from abaw_rt.train import metrics as M
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.dataset import VideoSample
from abaw_rt.train.device import to_device


@torch.no_grad()
def predict(
    model: FusionModel,
    samples: Sequence[VideoSample],
    window: int,
    stride: int,
    merge: str = "centre",
    batch_size: int = 32,
    device: str = "cpu",
) -> list[dict[str, np.ndarray]]:
    """Stitched per-frame predictions per sample, {head: VA values or EXPR / AU probabilities}, as inference
    makes them."""
    heads = model.cfg.heads
    modalities = model.cfg.modalities
    plans = [plan_segments(smp.frames, window, stride) for smp in samples]
    items = [(k, seg.start, seg.length) for k, plan in enumerate(plans) for seg in plan]
    sizes = {h: len(HEAD_LABELS[h]) for h in heads}
    stitchers = [Stitcher(smp.frames, sizes, Merge(merge)) for smp in samples]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            feats = {m: pad_windows([samples[k].inputs[m][a : a + n] for k, a, n in chunk]) for m in modalities}
            lengths = np.array([n for _, _, n in chunk], dtype=np.int64)
            out = model(to_device(feats, device), torch.from_numpy(lengths).to(device))
            raw = {h: out[h].float().cpu().numpy() for h in heads}
            for j, (k, start, n) in enumerate(chunk):
                stitchers[k].add(start, {h: to_probabilities(h, raw[h][j, :n]) for h in heads})
    finally:
        model.train(was_training)
    return [s.result() for s in stitchers]


def score_predictions(
    tasks: Sequence[str], stitched: Sequence[dict[str, np.ndarray]], samples: Sequence[VideoSample]
) -> tuple[float, dict]:
    """Loss and metrics pooled over all frames of ``samples``. One task: its metrics as they are; several:
    each task's metrics prefixed ``<task>_``, the loss and ``score`` summed over tasks."""
    loss, metrics = 0.0, {}
    for task in tasks:
        pred = np.concatenate([p[task] for p in stitched])
        target = np.concatenate([s.targets(tasks)[task] for s in samples])
        task_loss, task_metrics = M.task_loss(task, pred, target), M.task_metrics(task, pred, target)
        if len(tasks) == 1:
            return task_loss, task_metrics
        loss += task_loss
        metrics.update({f"{task}_{k}": v for k, v in task_metrics.items()})
    metrics["score"] = float(sum(metrics[f"{t}_score"] for t in tasks))
    return loss, metrics


def evaluate(model: FusionModel, samples: Sequence[VideoSample], cfg: TrainConfig, device: str) -> tuple[float, dict]:
    """Validation loss and metrics on stitched predictions pooled over all frames of all samples."""
    stitched = predict(
        model, samples, cfg.windows.window, cfg.windows.stride, cfg.windows.merge.value, cfg.run.eval_batch_size, device
    )
    return score_predictions([t.value for t in cfg.tasks], stitched, samples)
