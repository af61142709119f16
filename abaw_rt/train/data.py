"""Training layer: the data of a run (samples of both splits, read from the feature store) and batches of windows.

Torch-free: batches are numpy arrays; the loop moves them to the device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.segments import pad_windows
from abaw_rt.store import FeatureStore
from abaw_rt.train.annotations import INVALID
from abaw_rt.train.config import TrainConfig
from abaw_rt.train.dataset import VideoSample, data_fingerprint, load_split
from abaw_rt.train.windows import training_windows

Item = tuple[int, int, int]  # (sample index, start frame, length)


@dataclass(frozen=True)
class TrainData:
    """Training and validation samples plus the feature store's extractor index (dims and modalities)."""

    train: list[VideoSample]
    val: list[VideoSample]
    extractors: dict[str, dict]

    def check(self) -> None:
        if not self.train or not self.val:
            raise AbawRtError(
                f"training needs videos in both splits (got {len(self.train)} train, {len(self.val)} val)"
            )

    def fingerprint(self) -> str:
        """sha256 of both splits, each on its own: the same videos split differently (another fold) differ."""
        return hashlib.sha256(
            f"train {data_fingerprint(self.train)} val {data_fingerprint(self.val)}".encode()
        ).hexdigest()


def load_data(cfg: TrainConfig) -> TrainData:
    """Read the recipe's feature store and its train/validation label folders."""
    if cfg.extra_tasks:
        raise AbawRtError(
            f"task {[t.value for t in cfg.tasks]}: a recipe reads one task's annotation folder; train several heads "
            "through the Python API with pre-loaded data (abaw_rt.train.loop.train(cfg, out, data=...))"
        )
    store = FeatureStore(cfg.data.features_dir())
    if not (store.root / "store.json").is_file():
        raise AbawRtError(f"feature store '{store.root}': no store.json ([data] root / features)")
    extractors = store.extractors()
    mcfg = cfg.model_config(extractors)
    cache: dict = {}
    tol = cfg.data.max_length_mismatch
    train, val = (
        load_split(store, cfg.data.annotations_dir(split), cfg.task.value, mcfg, tol, cache, cfg.data.memory_map)
        for split in (cfg.data.train_split, cfg.data.val_split)
    )
    overlap = sorted({s.source for s in train} & {s.source for s in val})
    if overlap:
        raise AbawRtError(f"videos {overlap[:5]} are in both the training and validation splits")
    return TrainData(train, val, extractors)


def window_items(samples: Sequence[VideoSample], window: int, stride: int) -> list[Item]:
    """Every training window of every sample (``training_windows``: tail kept)."""
    return [(k, s, n) for k, smp in enumerate(samples) for s, n in training_windows(smp.frames, window, stride)]


def collate(samples: Sequence[VideoSample], items: Sequence[Item], modalities, tasks: Sequence[str]):
    """(sample index, start, length) items -> padded numpy inputs, lengths and {task: padded targets}.

    Padded target frames carry the task's invalid marker, so every loss leaves them out.
    """
    windows = [(samples[k], start, length) for k, start, length in items]
    feats = {m: pad_windows([s.inputs[m][a : a + n] for s, a, n in windows]) for m in modalities}
    targets = {
        t: pad_windows([s.targets(tasks)[t][a : a + n] for s, a, n in windows], INVALID[t]) for t in tasks
    }
    lengths = np.array([n for _, _, n in windows], dtype=np.int64)
    return feats, lengths, targets
