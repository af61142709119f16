"""Training layer: the training loop (torch): seeded, deterministic on CPU, resumable, best checkpoint by val metric.

A run folder holds::

    best.safetensors   the best epoch's weights as an abaw-rt checkpoint (``abaw-rt export`` reads it)
    last.safetensors   model + AdamW state after the last finished epoch, for ``--resume`` (not a checkpoint)
    metrics.csv/.json  one row per epoch: lr, train loss, validation loss and metrics, seconds, best

Every epoch re-seeds shuffling and dropout from (seed, epoch) and the learning rate is a pure function
of the step, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from abaw_rt import __version__
from abaw_rt.checkpoint import CheckpointHeader, save_checkpoint
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_write_bytes, write_rows_csv
from abaw_rt.model.config import HEAD_LABELS, ModelConfig
from abaw_rt.model.fusion import FusionModel
from abaw_rt.pipeline.segments import plan_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, to_probabilities
from abaw_rt.store import FeatureStore
from abaw_rt.train import metrics as M
from abaw_rt.train.annotations import INVALID
from abaw_rt.train.config import Device, OptimSection, TrainConfig
from abaw_rt.train.dataset import VideoSample, common_fps, data_fingerprint, load_split, normalization_stats
from abaw_rt.train.losses import task_loss
from abaw_rt.train.windows import training_windows

BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
STATE_FORMAT = "abaw-rt-train-state"
STATE_KEY = "abaw_rt_train"
# Settings that may change when a run is resumed (where it runs, not what it computes).
RESUMABLE_CHANGES = {"run.device", "run.threads", "run.eval_batch_size", "run.amp", "run.folds"}


@dataclass(frozen=True)
class TrainData:
    """Training and validation samples plus the feature store's extractor index (dims and modalities)."""

    train: list[VideoSample]
    val: list[VideoSample]
    extractors: dict[str, dict]


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    lr: float  # learning rate at the epoch's last step
    train_loss: float  # mean over the epoch's batches
    val_loss: float  # the task loss on the stitched validation predictions
    metrics: dict[str, float]  # validation metrics on stitched predictions; "score" picks the best epoch
    seconds: float
    best: bool = False

    def row(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            **{f"val_{k}": v for k, v in self.metrics.items()},
            "seconds": self.seconds,
            "best": self.best,
        }

    @classmethod
    def from_row(cls, r: dict) -> "EpochRecord":
        metrics = {k[4:]: v for k, v in r.items() if k.startswith("val_") and k != "val_loss"}
        return cls(r["epoch"], r["lr"], r["train_loss"], r["val_loss"], metrics, r["seconds"], r["best"])


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this call started


class Reporter:
    """Progress hooks; the CLI shows them with Rich. The base class reports nothing."""

    def message(self, text: str) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch_end(self, loss: float) -> None: ...

    def epoch_end(self, record: EpochRecord) -> None: ...


# -- data -------------------------------------------------------------------------------------------------
def load_data(cfg: TrainConfig) -> TrainData:
    """Read the recipe's feature store and its train/validation label folders."""
    store = FeatureStore(cfg.data.features_dir())
    if not (store.root / "store.json").is_file():
        raise AbawRtError(f"feature store '{store.root}': no store.json ([data] root / features)")
    extractors = store.extractors()
    mcfg = cfg.model_config(extractors)
    cache: dict = {}
    tol = cfg.data.max_length_mismatch
    train = load_split(store, cfg.data.annotations_dir(cfg.data.train_split), cfg.task.value, mcfg, tol, cache)
    val = load_split(store, cfg.data.annotations_dir(cfg.data.val_split), cfg.task.value, mcfg, tol, cache)
    overlap = sorted({s.source for s in train} & {s.source for s in val})
    if overlap:
        raise AbawRtError(f"videos {overlap[:5]} are in both the training and validation splits")
    return TrainData(train, val, extractors)


def _collate(samples: Sequence[VideoSample], items: Sequence[tuple[int, int, int]], modalities, task: str):
    """(sample index, start, length) items -> padded numpy inputs, lengths and targets."""
    t = max(length for _, _, length in items)
    b = len(items)
    first = samples[items[0][0]]
    feats = {m: np.zeros((b, t, first.inputs[m].shape[1]), dtype=np.float32) for m in modalities}
    tshape = first.target.shape[1:]
    target = np.full((b, t) + tshape, INVALID[task], dtype=first.target.dtype)
    lengths = np.zeros(b, dtype=np.int64)
    for i, (k, start, length) in enumerate(items):
        s = samples[k]
        for m in modalities:
            feats[m][i, :length] = s.inputs[m][start : start + length]
        target[i, :length] = s.target[start : start + length]
        lengths[i] = length
    return feats, lengths, target


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
    """Stitched per-frame predictions per sample (VA values, EXPR / AU probabilities), as inference makes them.

    Windows and merging are the inference pipeline's (``plan_segments``, ``to_probabilities``, ``Stitcher``).
    """
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
            feats, lengths, _ = _collate(samples, chunk, modalities, task)
            out = model(
                {m: torch.from_numpy(v).to(device) for m, v in feats.items()}, torch.from_numpy(lengths).to(device)
            )
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


# -- schedule ---------------------------------------------------------------------------------------------
def lr_at(step: int, steps_per_epoch: int, optim: OptimSection) -> float:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to ``min_lr`` at the last step (Zhou et al. 2023)."""
    total = max(1, steps_per_epoch * optim.epochs)
    warm = int(round(optim.warmup_epochs * steps_per_epoch))
    if step < warm:
        return optim.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# -- run state (resume) -----------------------------------------------------------------------------------
def _save_state(path: Path, model, optimizer, meta: dict) -> None:
    st = require_module("safetensors.torch", "torch")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{idx}.{name}"] = t.detach().cpu().reshape(-1).contiguous()
    meta = {**meta, "param_groups": opt["param_groups"]}
    data = st.save(tensors, metadata={STATE_KEY: json.dumps(meta)})
    atomic_write_bytes(path, data)


def _read_state(path: Path) -> tuple[dict, dict]:
    st = require_module("safetensors.torch", "torch")
    safetensors = require_module("safetensors", "torch")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[STATE_KEY])
        tensors = st.load(path.read_bytes())
    except Exception as exc:  # corrupt or foreign file
        raise AbawRtError(f"run state '{path}': unreadable ({exc}); delete it to start the run afresh") from None
    if meta.get("format") != STATE_FORMAT:
        raise AbawRtError(f"run state '{path}': not an abaw-rt training state")
    return meta, tensors


def _restore(model, optimizer, meta: dict, tensors: dict) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            p = params[int(idx)]
            # "step" stays a CPU scalar (AdamW's default); moments go back to their parameter's shape and device
            state.setdefault(int(idx), {})[name] = (
                value.reshape(()) if name == "step" else value.reshape(p.shape).to(p.device)
            )
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{name}.")
        elif va != vb and name not in RESUMABLE_CHANGES:
            out.append(f"{name} {va!r} -> {vb!r}")
    return out


# -- outputs ----------------------------------------------------------------------------------------------
def _write_metrics(out_dir: Path, history: Sequence[EpochRecord]) -> None:
    rows = [r.row() for r in history]
    atomic_write_bytes(out_dir / METRICS_JSON, json.dumps(rows, indent=1).encode())
    write_rows_csv(out_dir / METRICS_CSV, rows)


def _header(
    cfg: TrainConfig,
    mcfg: ModelConfig,
    stats: dict,
    data: TrainData,
    fingerprint: str,
    record: EpochRecord,
    device: str,
) -> CheckpointHeader:
    return CheckpointHeader(
        config=mcfg,
        normalization=stats,
        window=cfg.windows.window,
        stride=cfg.windows.stride,
        fps=common_fps(data.train + data.val),
        provenance={
            "created_by": f"abaw-rt {__version__} train",
            "trained": True,
            "recipe": cfg.name,
            "task": cfg.task.value,
            "train_config": cfg.to_dict(),
            "epochs": cfg.optim.epochs,
            "best_epoch": record.epoch,
            "metrics": {"val_loss": record.val_loss, **record.metrics},
            "data_sha256": fingerprint,
            "train_files": len(data.train),
            "val_files": len(data.val),
            "normalization_from": "training split",
            "seed": cfg.run.seed,
            "device": device,
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _resolve_device(device: Device) -> str:
    if device is Device.cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device is Device.cuda:
        raise AbawRtError("[run] device 'cuda': torch sees no CUDA device (use 'auto' or 'cpu')")
    return "cpu"


def check_run_folder(out_dir: Path, resume: bool) -> None:
    """Refuse a folder that already holds a run unless it is to be resumed (never overwrite a run), and a run
    state that is not readable (checked from its header, before any data is read)."""
    last = Path(out_dir) / LAST
    if last.exists() and not resume:
        raise AbawRtError(
            f"run folder '{out_dir}' already holds a run ({LAST}): pass --resume to continue it, "
            "or choose another --out"
        )
    if last.exists():
        safetensors = require_module("safetensors", "torch")
        try:
            with safetensors.safe_open(str(last), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})[STATE_KEY])
        except Exception as exc:  # corrupt, truncated or foreign file (never unpickled)
            raise AbawRtError(f"run state '{last}': unreadable ({exc}); delete it to start the run afresh") from None
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise AbawRtError(f"run state '{last}': not an abaw-rt training state")


# -- the loop ---------------------------------------------------------------------------------------------
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
    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    check_run_folder(out_dir, resume)
    last_path, best_path = out_dir / LAST, out_dir / BEST
    data = data if data is not None else load_data(cfg)
    if not data.train or not data.val:
        raise AbawRtError(f"training needs videos in both splits (got {len(data.train)} train, {len(data.val)} val)")
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data has been read without error
    task = cfg.task.value
    mcfg = cfg.model_config(data.extractors)
    stats = normalization_stats(data.train, mcfg.modalities)
    # both splits, each on its own: the same videos split differently (another fold) are different data
    fingerprint = hashlib.sha256(
        f"train {data_fingerprint(data.train)} val {data_fingerprint(data.val)}".encode()
    ).hexdigest()
    device = _resolve_device(cfg.run.device)
    use_amp = cfg.run.amp and device == "cuda"

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    if device == "cuda":  # cuBLAS needs this for deterministic matmuls; must be set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=device == "cuda")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    try:
        torch.manual_seed(cfg.run.seed)
        model = FusionModel(mcfg)
        model.set_normalization({m: (np.asarray(s["mean"]), np.asarray(s["std"])) for m, s in stats.items()})
        model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

        windows = [
            (k, s, n)
            for k, smp in enumerate(data.train)
            for s, n in training_windows(smp.frames, cfg.windows.window, cfg.windows.stride)
        ]
        steps_per_epoch = math.ceil(len(windows) / cfg.optim.batch_size)
        history: list[EpochRecord] = []
        start_epoch, step, best_score, best_epoch, best_metrics = 0, 0, -math.inf, 0, {}
        if resume and last_path.exists():
            meta, tensors = _read_state(last_path)
            diff = _config_diff(meta["config"], cfg.to_dict())
            if diff:
                raise AbawRtError(f"cannot resume '{out_dir}': the recipe changed ({'; '.join(diff[:4])})")
            if meta["data_sha256"] != fingerprint:
                raise AbawRtError(
                    f"cannot resume '{out_dir}': the training or validation data changed since the run began"
                )
            _restore(model, optimizer, meta, tensors)
            start_epoch, step = meta["epoch"], meta["step"]
            best_score, best_epoch, best_metrics = meta["best_score"], meta["best_epoch"], meta["best_metrics"]
            history = [EpochRecord.from_row(r) for r in meta["history"]]
            reporter.message(f"resuming '{out_dir}' after epoch {start_epoch} of {cfg.optim.epochs}")
        resumed_from = start_epoch

        for epoch in range(start_epoch, cfg.optim.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(cfg.run.seed, epoch))
            order = np.random.default_rng([cfg.run.seed, epoch]).permutation(len(windows))
            model.train()
            reporter.epoch_start(epoch + 1, cfg.optim.epochs, steps_per_epoch)
            losses = []
            lr = cfg.optim.lr
            for b in range(steps_per_epoch):
                items = [windows[i] for i in order[b * cfg.optim.batch_size : (b + 1) * cfg.optim.batch_size]]
                feats, lengths, target = _collate(data.train, items, mcfg.modalities, task)
                feats_t = {m: torch.from_numpy(v).to(device) for m, v in feats.items()}
                lengths_t = torch.from_numpy(lengths).to(device)
                target_t = torch.from_numpy(target).to(device)
                frame_mask = torch.arange(lengths_t.max().item(), device=device)[None, :] < lengths_t[:, None]
                lr = lr_at(step, steps_per_epoch, cfg.optim)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                    out = model(feats_t, lengths_t)[task]
                loss = task_loss(task, out, target_t, frame_mask)
                if not torch.isfinite(loss):
                    raise AbawRtError(
                        f"training diverged at epoch {epoch + 1}, step {step + 1} (loss {loss.item()}): "
                        "lower [optim] lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                step += 1
                losses.append(loss.item())
                reporter.batch_end(losses[-1])

            val_loss, val_metrics = evaluate(model, data.val, cfg, device)
            score = val_metrics["score"]
            record = EpochRecord(epoch + 1, lr, float(np.mean(losses)), val_loss, val_metrics, time.perf_counter() - t0)
            if math.isfinite(score) and score > best_score:
                record.best = True
                best_score, best_epoch, best_metrics = score, epoch + 1, {"val_loss": val_loss, **val_metrics}
                state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
                save_checkpoint(best_path, _header(cfg, mcfg, stats, data, fingerprint, record, device), state)
            history.append(record)
            _write_metrics(out_dir, history)
            _save_state(
                last_path,
                model,
                optimizer,
                {
                    "format": STATE_FORMAT,
                    "epoch": epoch + 1,
                    "step": step,
                    "config": cfg.to_dict(),
                    "data_sha256": fingerprint,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_metrics": best_metrics,
                    "history": [r.row() for r in history],
                },
            )
            reporter.epoch_end(record)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    return TrainResult(out_dir, best_path, best_epoch, best_metrics, history, resumed_from)
