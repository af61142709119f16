"""Training layer (torch): stitched per-video predictions, the validation loss and metrics, ``abaw-rt evaluate``.

Windows and merging are the inference pipeline's (``plan_segments``, ``to_probabilities``, ``Stitcher``),
so the metric a run reports is what ``abaw-rt infer`` gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from abaw_rt.checkpoint import load_checkpoint
from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import HEAD_LABELS
from abaw_rt.model.fusion import FusionModel, build_model
from abaw_rt.store import FeatureStore
from abaw_rt.pipeline.segments import pad_windows, plan_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, to_probabilities
from abaw_rt.train import metrics as M
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.dataset import VideoSample, load_split
from abaw_rt.train.device import to_device, torch_settings


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


def evaluate_checkpoint(path: Path, root: Path, split: str | None = None, threads: int = 0) -> dict:
    """Score a checkpoint made by ``abaw-rt train`` on stored features: per video and pooled, with its recipe's
    task, windows and stitching (what validation computed during training; the same figures to 1e-6).

    Raises:
        AbawRtError: a checkpoint without a training recipe, a store whose features do not fit it, bad labels.
    """
    ckpt = load_checkpoint(path)
    recipe = ckpt.header.provenance.get("train_config")
    if not isinstance(recipe, dict):
        raise AbawRtError(
            f"checkpoint '{path}': no training recipe in its provenance (train_config); "
            "evaluate scores checkpoints written by abaw-rt train"
        )
    cfg = TrainConfig.from_dict(recipe, source=f"checkpoint '{path}' train_config").replace(data={"root": str(root)})
    split = split or cfg.data.val_split
    store = FeatureStore(cfg.data.features_dir())
    if not (store.root / "store.json").is_file():
        raise AbawRtError(f"feature store '{store.root}': no store.json (--data ROOT holds features/)")
    mcfg = ckpt.header.config
    if cfg.model_config(store.extractors()).features != mcfg.features:
        raise AbawRtError(f"feature store '{store.root}': its extractors' widths differ from checkpoint '{path}'")
    folder = cfg.data.annotations_dir(split)
    samples = load_split(store, folder, cfg.task.value, mcfg, cfg.data.max_length_mismatch, memory_map=True)
    if not samples:
        raise AbawRtError(f"annotations '{folder}': no label files (--split {split})")
    tasks = [t.value for t in cfg.tasks]
    with torch_settings("cpu", threads):
        model = build_model(ckpt, "fp32")
        stitched = predict(model, samples, cfg.windows.window, cfg.windows.stride, cfg.windows.merge.value,
                           cfg.run.eval_batch_size)
    loss, pooled = score_predictions(tasks, stitched, samples)
    per_video = []
    for s, p in zip(samples, stitched):
        v_loss, v_metrics = score_predictions(tasks, [p], [s])
        per_video.append({"video": s.name, "frames": s.frames, "loss": v_loss, **v_metrics})
    return {
        "checkpoint": str(path),
        "task": cfg.task.value,
        "split": split,
        "videos": len(samples),
        "pooled": {"loss": loss, **pooled},
        "per_video": per_video,
    }
