"""Training layer: pair ABAW label files with feature-store videos; normalisation statistics. Torch-free.

Each label file ``<name>.txt`` reads the feature-store video ``<name>``, or, for a two-person file
``<video>_left`` / ``<video>_right`` with no store entry of its own, the shared ``<video>``.
Visual rows of missing-face frames are filled from the nearest face (``abaw_rt.store.fill_from_nearest``,
the same policy as inference). Labels and features may differ in length by ``max_length_mismatch``
frames: extra label lines are dropped, frames past the labels are invalid; a larger gap is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import ModelConfig
from abaw_rt.store import FeatureStore, row_chunks
from abaw_rt.train.annotations import INVALID, base_video, list_annotations, read_annotation


@dataclass(frozen=True)
class VideoSample:
    """One labelled sequence: a label file and the model inputs of the video it annotates."""

    name: str  # label-file stem, e.g. "video10_left"
    source: str  # the feature-store video it reads, e.g. "video10"
    label_path: Path
    inputs: Mapping[str, np.ndarray]  # modality -> (N, D_m) float32 raw features (shared by _left/_right)
    target: np.ndarray  # va (N, 2) float32, expr (N,) int64, au (N, 12) float32; invalid markers included
    fps: float | None = None
    # multi-head runs: the further tasks' targets (task -> array shaped like that task's ``target``)
    other_targets: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.target.shape[0])

    def targets(self, tasks: Sequence[str]) -> dict[str, np.ndarray]:
        """task -> target for a run's tasks; the first is the sample's own ``target``."""
        return {t: self.target if i == 0 else self.other_targets[t] for i, t in enumerate(tasks)}


def resolve_source(name: str, store_videos: set[str] | Sequence[str]) -> str:
    """The feature-store video a label file reads: itself, else its base video (``_left``/``_right``)."""
    if name in store_videos:
        return name
    base = base_video(name)
    if base in store_videos:
        return base
    tried = f"'{name}'" + (f" or '{base}'" if base != name else "")
    raise AbawRtError(f"no features for label file '{name}': the feature store has no video {tried}")


def align_labels(
    target: np.ndarray, frames: int, task: str, tolerance: int, label_path: Path, feature_path: Path
) -> np.ndarray:
    """Fit labels to the feature timeline: drop extra lines, mark missing frames invalid, within ``tolerance``.

    Raises:
        AbawRtError: the lengths differ by more than ``tolerance`` frames, naming both files and the line.
    """
    n = int(target.shape[0])
    if abs(n - frames) > tolerance:
        where = f"line {frames + 2} onwards has no video frame" if n > frames else f"ends at line {n + 1}"
        raise AbawRtError(
            f"annotation '{label_path}': {n} frames of labels ({where}) but features '{feature_path}' have {frames} "
            f"frames; they may differ by at most {tolerance} ([data] max_length_mismatch)"
        )
    if n >= frames:
        return target[:frames]
    pad_shape = (frames - n,) + target.shape[1:]
    return np.concatenate([target, np.full(pad_shape, INVALID[task], dtype=target.dtype)])


def model_inputs(features: Mapping[str, np.ndarray], model_cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Per-extractor (N, D) arrays -> the model's inputs: modality -> (N, sum of its dims), config order."""
    return {
        m: np.ascontiguousarray(
            np.concatenate([features[f.name] for f in model_cfg.features if f.modality == m], axis=1),
            dtype=np.float32,
        )
        for m in model_cfg.modalities
    }


def load_samples(
    store: FeatureStore,
    label_paths: Sequence[Path],
    task: str,
    model_cfg: ModelConfig,
    tolerance: int,
    cache: dict | None = None,
    memory_map: bool = False,
) -> list[VideoSample]:
    """Read label files and their videos' features (per modality, groups concatenated in config order).

    ``cache`` (source video -> inputs) lets ``_left``/``_right`` files and several splits share one copy.
    ``memory_map``: inputs are ``LazyRows`` over the store's files (read per window) instead of arrays.
    """
    cache = {} if cache is None else cache
    index = store.index()
    videos = set(index["videos"])
    names = [f.name for f in model_cfg.features]
    samples = []
    for path in label_paths:
        path = Path(path)
        target = read_annotation(path, task)
        source = resolve_source(path.stem, videos)
        if source not in cache:
            cache[source] = _inputs(store, source, model_cfg, memory_map)
        inputs = cache[source]
        frames = next(iter(inputs.values())).shape[0]
        feature_path = store.root / names[0] / f"{source}.npy"
        target = align_labels(target, frames, task, tolerance, path, feature_path)
        samples.append(VideoSample(path.stem, source, path, inputs, target, fps=index["videos"][source].get("fps")))
    return samples


def _inputs(store: FeatureStore, source: str, model_cfg: ModelConfig, memory_map: bool) -> dict:
    """modality -> (frames, dim) float32 inputs of one store video: an array, or ``LazyRows`` when memory-mapped."""
    if memory_map:
        return {
            m: store.read_lazy(source, [f.name for f in model_cfg.features if f.modality == m])[0]
            for m in model_cfg.modalities
        }
    return model_inputs(store.read(source, [f.name for f in model_cfg.features]).features, model_cfg)


def load_split(
    store: FeatureStore,
    folder: Path,
    task: str,
    model_cfg: ModelConfig,
    tolerance: int,
    cache: dict | None = None,
    memory_map: bool = False,
) -> list[VideoSample]:
    """All label files of one split folder with their features."""
    return load_samples(store, list_annotations(folder), task, model_cfg, tolerance, cache, memory_map)


def normalization_stats(samples: Sequence[VideoSample], modalities: Sequence[str]) -> dict[str, dict[str, tuple]]:
    """Per-dimension mean and std (population) of each modality over the given samples' frames.

    Each feature-store video counts once (``_left``/``_right`` share it). Dimensions with std below 1e-6
    get std 1 (a constant feature carries nothing; dividing by ~0 would blow up any other value).
    """
    if not samples:
        raise AbawRtError("normalisation statistics need at least one training video")
    seen: dict[str, VideoSample] = {}
    for s in samples:
        seen.setdefault(s.source, s)
    stats = {}
    for m in modalities:
        total = sq = None
        count = 0
        for s in seen.values():
            for chunk in row_chunks(s.inputs[m]):
                x = chunk.astype(np.float64)
                # the running sum as the first row: one sequential sum over rows, however the rows are chunked
                total = x.sum(0) if total is None else np.concatenate([total[None], x]).sum(0)
                sq = (x * x).sum(0) if sq is None else np.concatenate([sq[None], x * x]).sum(0)
                count += x.shape[0]
        mean = total / count
        var = np.maximum(sq / count - mean * mean, 0.0)
        std = np.sqrt(var)
        std[std < 1e-6] = 1.0
        stats[m] = {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}
    return stats


def data_fingerprint(samples: Sequence[VideoSample]) -> str:
    """sha256 over every sample's name, aligned labels and features (each video's features hashed once)."""
    h = hashlib.sha256()
    feature_hash: dict[str, str] = {}
    for s in sorted(samples, key=lambda s: s.name):
        if s.source not in feature_hash:
            fh = hashlib.sha256()
            for m in sorted(s.inputs):
                fh.update(m.encode())
                for chunk in row_chunks(s.inputs[m]):
                    fh.update(np.ascontiguousarray(chunk).tobytes())
            feature_hash[s.source] = fh.hexdigest()
        h.update(f"{s.name}|{s.source}|{feature_hash[s.source]}|".encode())
        h.update(np.ascontiguousarray(s.target).tobytes())
        for task in sorted(s.other_targets):
            h.update(task.encode())
            h.update(np.ascontiguousarray(s.other_targets[task]).tobytes())
    return h.hexdigest()


def common_fps(samples: Sequence[VideoSample]) -> float | None:
    """The frame rate shared by all samples, or None when unknown or mixed."""
    rates = {s.fps for s in samples}
    return rates.pop() if len(rates) == 1 else None
