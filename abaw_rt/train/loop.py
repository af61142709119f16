"""Training layer (torch): the training loop: seeded, deterministic on CPU, resumable, best checkpoint by val metric.

Every epoch re-seeds shuffling and dropout from (seed, epoch) and the learning rate is a pure function
of the step (``schedule``), so a resumed run (``state``) continues exactly as an uninterrupted one would.
The run folder's files are written by ``outputs``; batches come from ``data``, validation from ``evaluate``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import ModelConfig
from abaw_rt.model.fusion import FusionModel
from abaw_rt.train import outputs, state
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.data import TrainData, collate, load_data, window_items
from abaw_rt.train.dataset import normalization_stats
from abaw_rt.train.device import resolve_device, to_device, torch_settings
from abaw_rt.train.evaluate import evaluate
from abaw_rt.train.losses import task_loss
from abaw_rt.train.outputs import TrainResult
from abaw_rt.train.schedule import epoch_order, epoch_seed, lr_at
from abaw_rt.train.state import EpochRecord, Progress


class Reporter:
    """Progress hooks; the CLI shows them with Rich. The base class reports nothing."""

    def message(self, text: str) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch_end(self, loss: float) -> None: ...

    def epoch_end(self, record: EpochRecord) -> None: ...


@dataclass
class _Run:
    """What every epoch of one run shares."""

    cfg: TrainConfig
    data: TrainData
    mcfg: ModelConfig
    stats: dict
    fingerprint: str
    device: str
    out_dir: Path
    reporter: Reporter
    model: FusionModel
    optimizer: torch.optim.Optimizer
    windows: list
    steps_per_epoch: int


def train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    reporter: Reporter | None = None,
    data: TrainData | None = None,
) -> TrainResult:
    """Train one model for ``cfg`` into ``out_dir``.

    Args:
        cfg: the recipe.
        out_dir: the run folder (created).
        resume: continue from ``out_dir/last.safetensors`` when it exists (same recipe and data required).
        reporter: progress hooks.
        data: pre-loaded samples (cross-validation passes its folds); default: read the recipe's data.

    Raises:
        AbawRtError: bad data, a run folder that already holds a different or unrequested run, divergence.
    """
    out_dir = Path(out_dir)
    outputs.check_run_folder(out_dir, resume)
    data = data if data is not None else load_data(cfg)
    data.check()
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data has been read without error
    device = resolve_device(cfg.run.device)
    with torch_settings(device, cfg.run.threads):
        run = _setup(cfg, data, device, out_dir, reporter or Reporter())
        progress = Progress()
        last = out_dir / outputs.LAST
        if resume and last.exists():
            progress = state.resume(last, out_dir, run.model, run.optimizer, cfg.to_dict(), run.fingerprint)
            run.reporter.message(f"resuming '{out_dir}' after epoch {progress.epoch} of {cfg.optim.epochs}")
        resumed_from = progress.epoch
        for epoch in range(progress.epoch, cfg.optim.epochs):
            _epoch(run, progress, epoch)
    best_path = out_dir / outputs.BEST
    return TrainResult(out_dir, best_path, progress.best_epoch, progress.best_metrics, progress.history, resumed_from)


def _setup(cfg: TrainConfig, data: TrainData, device: str, out_dir: Path, reporter: Reporter) -> _Run:
    """Model (seeded init, train-split normalisation), optimiser and the training windows of a run."""
    mcfg = cfg.model_config(data.extractors)
    stats = normalization_stats(data.train, mcfg.modalities)
    torch.manual_seed(cfg.run.seed)
    model = FusionModel(mcfg)
    model.set_normalization({m: (np.asarray(s["mean"]), np.asarray(s["std"])) for m, s in stats.items()})
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    windows = window_items(data.train, cfg.windows.window, cfg.windows.stride)
    steps = math.ceil(len(windows) / cfg.optim.batch_size)
    return _Run(cfg, data, mcfg, stats, data.fingerprint(), device, out_dir, reporter, model, optimizer, windows, steps)


def _epoch(run: _Run, progress: Progress, epoch: int) -> None:
    """One epoch: shuffled steps, validation, the best checkpoint, metrics and the run state."""
    cfg = run.cfg
    t0 = time.perf_counter()
    torch.manual_seed(epoch_seed(cfg.run.seed, epoch))
    order = epoch_order(cfg.run.seed, epoch, len(run.windows))
    run.model.train()
    run.reporter.epoch_start(epoch + 1, cfg.optim.epochs, run.steps_per_epoch)
    losses, lr = [], cfg.optim.lr
    bs = cfg.optim.batch_size
    for b in range(run.steps_per_epoch):
        lr = lr_at(progress.step, run.steps_per_epoch, cfg.optim)
        losses.append(_step(run, [run.windows[i] for i in order[b * bs : (b + 1) * bs]], lr, epoch, progress.step))
        progress.step += 1
        run.reporter.batch_end(losses[-1])
    val_loss, val_metrics = evaluate(run.model, run.data.val, cfg, run.device)
    score = val_metrics["score"]
    record = EpochRecord(epoch + 1, lr, float(np.mean(losses)), val_loss, val_metrics, time.perf_counter() - t0)
    if math.isfinite(score) and score > progress.best_score:
        record.best = True
        progress.best_score, progress.best_epoch = score, epoch + 1
        progress.best_metrics = {"val_loss": val_loss, **val_metrics}
        header = outputs.checkpoint_header(cfg, run.mcfg, run.stats, run.data, run.fingerprint, record, run.device)
        outputs.save_best(run.out_dir / outputs.BEST, header, run.model)
    progress.history.append(record)
    progress.epoch = epoch + 1
    outputs.write_metrics(run.out_dir, progress.history)
    meta = progress.meta(cfg.to_dict(), run.fingerprint)
    state.save_state(run.out_dir / outputs.LAST, run.model, run.optimizer, meta)
    run.reporter.epoch_end(record)


def _step(run: _Run, items: list, lr: float, epoch: int, step: int) -> float:
    """One optimiser step on a batch of windows; returns its loss."""
    tasks, device = [t.value for t in run.cfg.tasks], run.device
    feats, lengths, targets = collate(run.data.train, items, run.mcfg.modalities, tasks)
    lengths_t = torch.from_numpy(lengths).to(device)
    frame_mask = torch.arange(lengths_t.max().item(), device=device)[None, :] < lengths_t[:, None]
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    use_amp = run.cfg.run.amp and device == "cuda"
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
        out = run.model(to_device(feats, device), lengths_t)
    target_t = to_device(targets, device)
    losses = [task_loss(t, out[t], target_t[t], frame_mask) for t in tasks]  # several heads: summed
    loss = losses[0] if len(losses) == 1 else sum(losses[1:], losses[0])
    if not torch.isfinite(loss):
        raise AbawRtError(
            f"training diverged at epoch {epoch + 1}, step {step + 1} (loss {loss.item()}): lower [optim] lr"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.optim.grad_clip)
    run.optimizer.step()
    return loss.item()
