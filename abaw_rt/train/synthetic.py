"""Training layer: a synthetic ABAW-format dataset with a planted temporal signal (tests, learnability). Numpy only.

Writes what the real data looks like on disk::

    <root>/features/                                        a feature store (abaw_rt.store layout)
    <root>/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt
    <root>/annotations/EXPR_Classification_Challenge/...     same videos, EXPR files
    <root>/annotations/AU_Detection_Challenge/...            same videos, AU files

The signal: per video, smooth valence/arousal tracks, piecewise-constant expression classes and 12
piecewise-constant AUs. Each visual extractor sees a fixed random projection of them plus per-frame
noise; the audio extractor sees valence/arousal only; ArcFace sees identity only. Labels lag the
face by ``lag`` frames (annotator reaction time), so a frame's label sits in earlier frames' features
and per-frame noise must be averaged over time: the model needs its temporal context.
The files carry what real ones do: invalid markers (-5 / -1) in runs, missing-face frames (zero
rows, ``faces`` False), label files a frame or two longer than the video, and two-person videos with
``_left`` / ``_right`` label files sharing one video's features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import HEAD_LABELS, PAPER_FEATURES
from abaw_rt.store import FeatureStore
from abaw_rt.train.annotations import INVALID, TASK_FOLDERS, write_annotation

# Small widths for tests and CPU runs; the real extractors' widths are in PAPER_FEATURES.
SMALL_DIMS = {"eff": 48, "affectnet8": 24, "rafdb": 24, "arcface": 16, "wav2vec2": 16}
PAPER_DIMS = {name: g.dim for name, g in PAPER_FEATURES.items()}
N_EXPR = len(HEAD_LABELS["expr"])
N_AU = len(HEAD_LABELS["au"])


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate."""

    videos: int = 24  # feature-store videos (a two-person video counts once)
    min_frames: int = 300  # video length drawn uniformly in [min_frames, max_frames]
    max_frames: int = 1200
    val_videos: int = 6  # videos put in Validation_Set (the rest in Train_Set)
    two_person: int = 2  # videos annotated per person as <video>_left / <video>_right
    dims: Mapping[str, int] = field(default_factory=lambda: dict(SMALL_DIMS))  # extractor -> feature width
    noise: float = 2.0  # std of the per-frame feature noise (the projected signal has about unit scale)
    lag: int = 4  # labels lag the face by this many frames
    missing_face_rate: float = 0.04  # about this fraction of frames has no face (zero visual rows)
    invalid_rate: float = 0.03  # about this fraction of frames is marked invalid in each label file
    extra_label_lines: int = 2  # label files run up to this many lines past the video's last frame
    fps: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.videos < 2 or not 1 <= self.val_videos < self.videos:
            raise AbawRtError(f"synthetic: videos {self.videos}, val_videos {self.val_videos}; need 1 <= val < videos")
        if not 1 <= self.min_frames <= self.max_frames:
            raise AbawRtError(f"synthetic: frames {self.min_frames}..{self.max_frames}; need 1 <= min <= max")
        if not 0 <= self.two_person <= self.videos:
            raise AbawRtError(f"synthetic: two_person {self.two_person}; need 0..videos ({self.videos})")
        unknown = sorted(set(self.dims) - set(PAPER_FEATURES))
        if unknown or any(d < 1 for d in self.dims.values()):
            raise AbawRtError(f"synthetic: dims {dict(self.dims)}; names from {sorted(PAPER_FEATURES)}, widths >= 1")


@dataclass(frozen=True)
class SyntheticSummary:
    root: Path
    features: Path
    annotations: dict[str, Path]  # task -> its annotation folder
    train_files: int  # label files per task in Train_Set
    val_files: int
    frames: int  # total video frames


def _smooth(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """A smooth random track with unit standard deviation (white noise through a Gaussian filter)."""
    half = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    x = np.convolve(rng.standard_normal(n + 2 * half), k / k.sum(), mode="valid")
    return (x - x.mean()) / (x.std() + 1e-9)


def _segments(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[tuple[int, int]]:
    out, t = [], 0
    while t < n:
        length = int(rng.integers(lo, hi + 1))
        out.append((t, min(n, t + length)))
        t += length
    return out


def _runs_mask(rng: np.random.Generator, n: int, rate: float, lo: int, hi: int) -> np.ndarray:
    """A boolean mask with about ``rate`` of ``n`` frames set, in runs of lo..hi frames."""
    mask = np.zeros(n, dtype=bool)
    target = int(rate * n)
    while mask.sum() < target:
        length = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, max(1, n - length)))
        mask[start : start + length] = True
    return mask


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Ground-truth tracks of one video over n frames: va (n, 2), expr (n,), au (n, 12)."""
    va = np.tanh(0.8 * np.stack([_smooth(rng, n, 12.0), _smooth(rng, n, 12.0)], axis=1))
    expr = np.empty(n, dtype=np.int64)
    prev = -1
    for a, b in _segments(rng, n, 25, 90):
        c = int(rng.integers(0, N_EXPR - 1))
        c = c + 1 if c >= prev else c  # never the same class twice in a row
        expr[a:b], prev = c, c
    au = np.zeros((n, N_AU), dtype=np.float32)
    for j in range(N_AU):
        for a, b in _segments(rng, n, 20, 80):
            au[a:b, j] = float(rng.random() < 0.4)
    return {"va": va.astype(np.float32), "expr": expr, "au": au}


def _signal(lat: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 22-dim per-frame signal the visual extractors project: VA, expression one-hot, AUs (+-1)."""
    onehot = np.eye(N_EXPR, dtype=np.float32)[lat["expr"]] * 2.0 - 0.25
    return np.concatenate([lat["va"] * 1.5, onehot, lat["au"] * 2.0 - 1.0], axis=1)


def make_synthetic(root: Path, spec: SyntheticSpec = SyntheticSpec()) -> SyntheticSummary:
    """Write a synthetic ABAW-format dataset under ``root`` (the folder must be empty or absent)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise AbawRtError(f"synthetic dataset folder '{root}' is not empty; choose a new folder")
    rng = np.random.default_rng(spec.seed)
    dims = dict(spec.dims)
    extractors = {name: (dim, PAPER_FEATURES[name].modality) for name, dim in dims.items()}
    n_signal = 2 + N_EXPR + N_AU
    # Fixed projections per extractor: the "extractor" of this synthetic world.
    proj = {
        name: rng.standard_normal((n_signal, d)).astype(np.float32) / np.sqrt(n_signal) * 2.0
        for name, d in dims.items()
    }
    store = FeatureStore(root / "features")
    folders = {t: root / "annotations" / TASK_FOLDERS[t] for t in TASK_FOLDERS}
    for folder in folders.values():
        for split in ("Train_Set", "Validation_Set"):
            (folder / split).mkdir(parents=True, exist_ok=True)

    order = rng.permutation(spec.videos)
    val_set = set(order[: spec.val_videos].tolist())
    two_person = set(rng.permutation(spec.videos)[: spec.two_person].tolist())
    train_files = val_files = total = 0
    for v in range(spec.videos):
        name = f"synth_{v:03d}"
        n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
        total += n
        horizon = n + spec.lag + spec.extra_label_lines
        lat = _latents(rng, horizon)
        sig = _signal(lat)[spec.lag : spec.lag + n]  # frame t's face shows what is labelled at t + lag
        faces = ~_runs_mask(rng, n, spec.missing_face_rate, 3, 30)
        identity = rng.standard_normal(max(dims.values())).astype(np.float32)
        feats = {}
        for fname, d in dims.items():
            noise = spec.noise * rng.standard_normal((n, d)).astype(np.float32)
            if fname == "arcface":  # identity: constant per video, no emotion
                x = np.broadcast_to(identity[:d], (n, d)) + 0.1 * noise
            elif fname == "wav2vec2":  # audio: valence and arousal only, and never missing
                x = sig[:, :2] @ proj[fname][:2] * 3.0 + noise
            else:
                x = sig @ proj[fname] + noise
            if extractors[fname][1] == "visual":
                x = np.where(faces[:, None], x, 0.0)  # no face: the extractor gave nothing
            feats[fname] = x.astype(np.float32)
        store.write(name, feats, faces, extractors, fps=spec.fps)

        split = "Validation_Set" if v in val_set else "Train_Set"
        people = [f"{name}_left", f"{name}_right"] if v in two_person else [name]
        for person in people:
            lines = n + int(rng.integers(0, spec.extra_label_lines + 1))
            for task, folder in folders.items():
                target = lat[task][:lines].copy()
                bad = _runs_mask(rng, lines, spec.invalid_rate, 5, 40)
                target[bad] = INVALID[task]
                if task == "au":  # a few single AUs unannotated as well
                    target[rng.random(target.shape) < spec.invalid_rate / 4] = INVALID["au"]
                write_annotation(folder / split / f"{person}.txt", task, target)
            if split == "Train_Set":
                train_files += 1
            else:
                val_files += 1
    return SyntheticSummary(root, store.root, folders, train_files, val_files, total)
