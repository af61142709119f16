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
from abaw_rt.pipeline.segments import plan_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, to_probabilities
from abaw_rt.train import metrics as M
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.data import collate
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
) -> list[np.ndarray]:
    """Stitched per-frame predictions per sample (VA values, EXPR / AU probabilities), as inference makes them."""
    task = model.cfg.heads[0]
    modalities = model.cfg.modalities
    plans = [plan_segments(smp.frames, window, stride) for smp in samples]
    items = [(k, seg.start, seg.length) for k, plan in enumerate(plans) for seg in plan]
    stitchers = [Stitcher(smp.frames, {task: len(HEAD_LABELS[task])}, Merge(merge)) for smp in samples]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            feats, lengths, _ = collate(samples, chunk, modalities, task)
            out = model(to_device(feats, device), torch.from_numpy(lengths).to(device))
            raw = out[task].float().cpu().numpy()
            for j, (k, start, n) in enumerate(chunk):
                stitchers[k].add(start, {task: to_probabilities(task, raw[j, :n])})
    finally:
        model.train(was_training)
    return [s.result()[task] for s in stitchers]


def evaluate(model: FusionModel, samples: Sequence[VideoSample], cfg: TrainConfig, device: str) -> tuple[float, dict]:
    """Validation loss and metrics on stitched predictions pooled over all frames of all samples."""
    task = cfg.task.value
    stitched = predict(
        model, samples, cfg.windows.window, cfg.windows.stride, cfg.windows.merge.value, cfg.run.eval_batch_size, device
    )
    pred = np.concatenate(stitched)
    target = np.concatenate([s.target for s in samples])
    return M.task_loss(task, pred, target), M.task_metrics(task, pred, target)
