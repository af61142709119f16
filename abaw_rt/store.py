"""Data layer: the feature store shared by ``abaw-rt extract`` (writes) and training (reads). Torch-free.

Layout (one folder)::

    <root>/store.json                 {"format": "abaw-rt-features", "format_version": 1,
                                       "extractors": {name: {"dim": D, "modality": "visual"|"audio"}},
                                       "videos": {video: {"frames": N, "fps": F or null}}}
    <root>/<extractor>/<video>.npy    float32 (N, D): one row per video frame, frame i+1 on row i
    <root>/faces/<video>.npy          bool (N,): True where a face was found on that frame

Visual rows of frames without a face are stored as found (zeros, or whatever the extractor gave);
``fill_from_nearest`` applies the one missing-face policy (Zhou et al. 2023, pre-processing) at read time,
in training and inference alike. Audio features are already stretched to the frame timeline.
Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes

FORMAT = "abaw-rt-features"
FORMAT_VERSION = 1
INDEX = "store.json"
FACES = "faces"


@dataclass(frozen=True)
class StoredVideo:
    features: dict[str, np.ndarray]  # extractor -> (N, D) float32
    face_found: np.ndarray  # (N,) bool
    fps: float | None


def fill_from_nearest(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows where ``valid`` is False take the row of the nearest valid frame (ties: the earlier one).

    With no valid frame at all the rows are returned unchanged (the caller decides what that means).
    """
    valid = np.asarray(valid, dtype=bool)
    if valid.all() or not valid.any():
        return x
    idx = np.flatnonzero(valid)
    pos = np.arange(len(valid))
    right = np.searchsorted(idx, pos).clip(0, len(idx) - 1)
    left = (right - 1).clip(0, len(idx) - 1)
    take_left = np.abs(pos - idx[left]) <= np.abs(idx[right] - pos)
    nearest = np.where(take_left, idx[left], idx[right])
    return x[nearest]


def _safe_name(name: str, what: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise AbawRtError(f"{what} name {name!r}: must be a plain file name (no '/', '..')")
    return name


class FeatureStore:
    """A folder of per-video, per-extractor feature arrays plus a face-found mask."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- index ----------------------------------------------------------------------------------------
    def index(self) -> dict:
        path = self.root / INDEX
        if not path.is_file():
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "extractors": {}, "videos": {}}
        try:
            idx = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AbawRtError(f"feature store '{path}': unreadable index ({exc})") from None
        if idx.get("format") != FORMAT or idx.get("format_version") != FORMAT_VERSION:
            raise AbawRtError(f"feature store '{path}': not an abaw-rt feature store (version {FORMAT_VERSION})")
        return idx

    def videos(self) -> list[str]:
        return sorted(self.index()["videos"])

    def extractors(self) -> dict[str, dict]:
        return dict(self.index()["extractors"])

    # -- write ----------------------------------------------------------------------------------------
    def write(
        self,
        video: str,
        features: Mapping[str, np.ndarray],
        face_found: np.ndarray,
        extractors: Mapping[str, tuple[int, str]],
        fps: float | None = None,
    ) -> None:
        """Store one video's features. ``extractors`` maps name -> (dim, modality)."""
        _safe_name(video, "video")
        n = len(face_found)
        idx = self.index()
        for name, arr in features.items():
            _safe_name(name, "extractor")
            dim, modality = extractors[name]
            if arr.ndim != 2 or arr.shape != (n, dim):
                raise AbawRtError(f"features '{name}' of video '{video}': got shape {arr.shape}, expected ({n}, {dim})")
            known = idx["extractors"].get(name)
            if known and (known["dim"] != dim or known["modality"] != modality):
                raise AbawRtError(f"extractor '{name}': store has dim {known['dim']} ({known['modality']}), got {dim} ({modality})")
            idx["extractors"][name] = {"dim": int(dim), "modality": modality}
        self.root.mkdir(parents=True, exist_ok=True)
        for name, arr in features.items():
            (self.root / name).mkdir(exist_ok=True)
            _save_npy(self.root / name / f"{video}.npy", np.asarray(arr, dtype=np.float32))
        (self.root / FACES).mkdir(exist_ok=True)
        _save_npy(self.root / FACES / f"{video}.npy", np.asarray(face_found, dtype=bool))
        idx["videos"][video] = {"frames": int(n), "fps": fps}
        atomic_write_bytes(self.root / INDEX, json.dumps(idx, indent=1, sort_keys=True).encode())

    # -- read -----------------------------------------------------------------------------------------
    def read(self, video: str, names: Sequence[str], fill_missing_faces: bool = True) -> StoredVideo:
        """Load a video's features for the named extractors, missing-face rows filled from the nearest face."""
        _safe_name(video, "video")
        idx = self.index()
        meta = idx["videos"].get(video)
        if meta is None:
            raise AbawRtError(f"feature store '{self.root}': no video '{video}'")
        faces = _load_npy(self.root / FACES / f"{video}.npy").astype(bool)
        feats = {}
        for name in names:
            if name not in idx["extractors"]:
                raise AbawRtError(
                    f"feature store '{self.root}': no extractor '{name}' (have {sorted(idx['extractors'])})"
                )
            arr = _load_npy(self.root / name / f"{video}.npy")
            spec = idx["extractors"][name]
            if arr.shape != (meta["frames"], spec["dim"]):
                raise AbawRtError(
                    f"feature file '{self.root / name / (video + '.npy')}': shape {arr.shape}, expected ({meta['frames']}, {spec['dim']})"
                )
            if not np.all(np.isfinite(arr)):
                bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise AbawRtError(f"feature file '{self.root / name / (video + '.npy')}': NaN or inf at frame {bad + 1}")
            if fill_missing_faces and spec["modality"] == "visual":
                arr = fill_from_nearest(arr, faces)
            feats[name] = arr.astype(np.float32, copy=False)
        return StoredVideo(features=feats, face_found=faces, fps=meta.get("fps"))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise AbawRtError(f"feature file '{path}': missing") from None
    except (ValueError, OSError) as exc:
        raise AbawRtError(f"feature file '{path}': unreadable ({exc})") from None
