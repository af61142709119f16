"""Training layer (torch): the run folder: best checkpoint, per-epoch metrics, and the never-overwrite rule.

A run folder holds::

    best.safetensors   the best epoch's weights as an abaw-rt checkpoint (``abaw-rt export`` reads it)
    last.safetensors   model + AdamW state after the last finished epoch, for ``--resume`` (not a checkpoint)
    metrics.csv/.json  one row per epoch: lr, train loss, validation loss and metrics, seconds, best
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from abaw_rt import __version__
from abaw_rt.checkpoint import CheckpointHeader, save_checkpoint
from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes, write_rows_csv
from abaw_rt.model.config import ModelConfig
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.data import TrainData
from abaw_rt.train.dataset import common_fps
from abaw_rt.train.state import EpochRecord, read_state_meta

BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this call started


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
        read_state_meta(last)


def write_metrics(out_dir: Path, history: Sequence[EpochRecord]) -> None:
    rows = [r.row() for r in history]
    atomic_write_bytes(out_dir / METRICS_JSON, json.dumps(rows, indent=1).encode())
    write_rows_csv(out_dir / METRICS_CSV, rows)


def checkpoint_header(
    cfg: TrainConfig, mcfg: ModelConfig, stats: dict, data: TrainData, fingerprint: str, record: EpochRecord, device: str
) -> CheckpointHeader:
    """The best checkpoint's header: model config, train-split normalisation, windows and provenance."""
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


def save_best(path: Path, header: CheckpointHeader, model) -> None:
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    save_checkpoint(path, header, state)
