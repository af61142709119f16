"""Training layer: k-fold cross-validation over the training plus validation videos (Zhou et al. 2023: five folds) (torch).

Folds are drawn over videos, not label files: ``<video>_left`` and ``<video>_right`` always land in the
same fold, so no video's features are both trained on and validated on. Each fold is an ordinary run
folder (``fold_1`` ... ``fold_k``) with its own normalisation statistics from its own training part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes, write_rows_csv
from abaw_rt.train.annotations import base_video
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.dataset import VideoSample
from abaw_rt.train.data import TrainData, load_data
from abaw_rt.train.loop import Reporter, train
from abaw_rt.train.outputs import TrainResult

SUMMARY_JSON = "crossval.json"
SUMMARY_CSV = "crossval.csv"


def assign_folds(names: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Label-file stem -> fold (0-based). Videos are shuffled with ``seed`` and dealt round-robin.

    Raises:
        AbawRtError: fewer videos than folds.
    """
    videos = sorted({base_video(n) for n in names})
    if len(videos) < folds:
        raise AbawRtError(f"cross-validation: {len(videos)} videos cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(len(videos))
    fold_of = {videos[i]: k % folds for k, i in enumerate(order)}
    return {n: fold_of[base_video(n)] for n in names}


@dataclass(frozen=True)
class FoldResult:
    fold: int  # 1-based
    train_files: int
    val_files: int
    result: TrainResult


@dataclass(frozen=True)
class CrossvalResult:
    out_dir: Path
    folds: list[FoldResult]

    def summary(self) -> dict:
        """Per-fold best metrics plus mean and (population) std of every metric over folds."""
        rows = [
            {
                "fold": f.fold,
                "best_epoch": f.result.best_epoch,
                "train_files": f.train_files,
                "val_files": f.val_files,
                **f.result.best_metrics,
            }
            for f in self.folds
        ]
        keys = [k for k in rows[0] if k not in ("fold", "best_epoch", "train_files", "val_files")] if rows else []
        agg = {
            k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))} for k in keys
        }
        return {"folds": rows, "aggregate": agg}


def crossval(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    reporter_for: Callable[[int], Reporter] | None = None,
    data: TrainData | None = None,
) -> CrossvalResult:
    """Train ``cfg.run.folds`` models, fold k validating on the k-th share of the train+validation videos.

    Args:
        cfg: the recipe; its train and validation splits are pooled.
        out_dir: holds ``fold_<k>/`` run folders and the summary (``crossval.json``, ``crossval.csv``).
        resume: continue unfinished folds (finished folds are kept as they are).
        reporter_for: fold number (1-based) -> progress hooks of that fold's run.
        data: pre-loaded samples (default: the recipe's data).
    """
    data = data if data is not None else load_data(cfg)
    pool: list[VideoSample] = sorted(data.train + data.val, key=lambda s: s.name)
    fold_of = assign_folds([s.name for s in pool], cfg.run.folds, cfg.run.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for k in range(cfg.run.folds):
        train_part = [s for s in pool if fold_of[s.name] != k]
        val_part = [s for s in pool if fold_of[s.name] == k]
        reporter = reporter_for(k + 1) if reporter_for else None
        res = train(
            cfg,
            out_dir / f"fold_{k + 1}",
            resume=resume,
            reporter=reporter,
            data=TrainData(train_part, val_part, data.extractors),
        )
        results.append(FoldResult(k + 1, len(train_part), len(val_part), res))
        _write_summary(out_dir, CrossvalResult(out_dir, results))
    return CrossvalResult(out_dir, results)


def _write_summary(out_dir: Path, result: CrossvalResult) -> None:
    s = result.summary()
    atomic_write_bytes(out_dir / SUMMARY_JSON, json.dumps(s, indent=1).encode())
    rows = list(s["folds"])
    rows += [{"fold": stat, **{k: v[stat] for k, v in s["aggregate"].items()}} for stat in ("mean", "std")]
    write_rows_csv(out_dir / SUMMARY_CSV, rows)
