"""Training layer (torch): the run state in ``last.safetensors`` (model + AdamW + history) that ``--resume`` reads.

A resumed run continues exactly as an uninterrupted one would: the state holds every tensor of the model and
the optimiser, the step, the best epoch so far and the history; a changed recipe or changed data is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_write_bytes

STATE_FORMAT = "abaw-rt-train-state"
STATE_KEY = "abaw_rt_train"
# Settings that may change when a run is resumed (where it runs, not what it computes).
RESUMABLE_CHANGES = {"run.device", "run.threads", "run.eval_batch_size", "run.amp", "run.folds", "data.memory_map"}


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
class Progress:
    """Where a run stands after its last finished epoch (what the run state records besides the tensors)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    best_score: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)

    def meta(self, config: dict, fingerprint: str) -> dict:
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "config": config,
            "data_sha256": fingerprint,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "history": [r.row() for r in self.history],
        }

    @classmethod
    def from_meta(cls, meta: dict) -> "Progress":
        history = [EpochRecord.from_row(r) for r in meta["history"]]
        return cls(meta["epoch"], meta["step"], meta["best_score"], meta["best_epoch"], meta["best_metrics"], history)


def save_state(path: Path, model, optimizer, meta: dict) -> None:
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


def read_state_meta(path: Path) -> dict:
    """The JSON header of a run state, checked (never unpickled; read before any data is)."""
    safetensors = require_module("safetensors", "torch")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {})[STATE_KEY])
    except Exception as exc:  # corrupt, truncated or foreign file
        raise AbawRtError(f"run state '{path}': unreadable ({exc}); delete it to start the run afresh") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise AbawRtError(f"run state '{path}': not an abaw-rt training state")
    return meta


def read_state(path: Path) -> tuple[dict, dict]:
    st = require_module("safetensors.torch", "torch")
    meta = read_state_meta(path)
    try:
        tensors = st.load(path.read_bytes())
    except Exception as exc:  # corrupt or foreign file
        raise AbawRtError(f"run state '{path}': unreadable ({exc}); delete it to start the run afresh") from None
    return meta, tensors


def restore(model, optimizer, meta: dict, tensors: dict) -> None:
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


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Settings that differ between two recipe dicts, except those a resume may change."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{name}.")
        elif va != vb and name not in RESUMABLE_CHANGES:
            out.append(f"{name} {va!r} -> {vb!r}")
    return out


def resume(path: Path, out_dir: Path, model, optimizer, config: dict, fingerprint: str) -> Progress:
    """Load the run state into ``model`` and ``optimizer``; refuse a changed recipe or changed data."""
    meta, tensors = read_state(path)
    diff = config_diff(meta["config"], config)
    if diff:
        raise AbawRtError(f"cannot resume '{out_dir}': the recipe changed ({'; '.join(diff[:4])})")
    if meta["data_sha256"] != fingerprint:
        raise AbawRtError(f"cannot resume '{out_dir}': the training or validation data changed since the run began")
    restore(model, optimizer, meta, tensors)
    return Progress.from_meta(meta)
