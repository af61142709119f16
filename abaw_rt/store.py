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

import contextlib
import fcntl
import io
import json
import os
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


def nearest_rows(valid: np.ndarray) -> np.ndarray | None:
    """For each frame, the index of the nearest valid frame (ties: the earlier one); None when every frame is
    valid or none is (rows stay as they are)."""
    valid = np.asarray(valid, dtype=bool)
    if valid.all() or not valid.any():
        return None
    idx = np.flatnonzero(valid)
    pos = np.arange(len(valid))
    right = np.searchsorted(idx, pos).clip(0, len(idx) - 1)
    left = (right - 1).clip(0, len(idx) - 1)
    take_left = np.abs(pos - idx[left]) <= np.abs(idx[right] - pos)
    return np.where(take_left, idx[left], idx[right])


def fill_from_nearest(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows where ``valid`` is False take the row of the nearest valid frame (ties: the earlier one).

    With no valid frame at all the rows are returned unchanged (the caller decides what that means).
    """
    rows = nearest_rows(valid)
    return x if rows is None else x[rows]


CHUNK_ROWS = 4096  # rows per read when a memory-mapped file is checked or summed


class LazyRows:
    """A (frames, dim) float32 matrix over memory-mapped feature files, read only where it is sliced.

    The files' columns sit side by side (feature groups of one modality, in order); ``rows`` (from
    ``nearest_rows``) maps missing-face frames to the nearest face's row. A slice ``[a:b]`` maps the files,
    copies those rows and unmaps them again, so resident memory stays at one batch whatever the store's size.
    """

    def __init__(self, paths: Sequence[Path], dims: Sequence[int], frames: int, rows: np.ndarray | None = None):
        self.paths, self.dims, self.rows = [Path(p) for p in paths], list(dims), rows
        self.shape = (int(frames), int(sum(dims)))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("LazyRows supports row slices only")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        parts = []
        for path in self.paths:
            mm = _load_npy(path, mmap=True)
            parts.append(mm[self.rows[start:stop]] if self.rows is not None else np.array(mm[start:stop]))
            del mm
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def row_chunks(x, rows: int = CHUNK_ROWS):
    """``x[a:b]`` in chunks of ``rows`` rows: arrays and ``LazyRows`` alike."""
    for a in range(0, len(x), rows):
        yield x[a : a + rows]


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
        """Store one video's features at once. ``extractors`` maps name -> (dim, modality)."""
        n = len(face_found)
        for name, arr in features.items():
            dim = extractors[name][0] if name in extractors else None
            if arr.ndim != 2 or arr.shape != (n, dim):
                raise AbawRtError(f"features '{name}' of video '{video}': got shape {arr.shape}, expected ({n}, {dim})")
        writer = self.writer(video, {k: extractors[k] for k in features}, fps)
        try:
            writer.put(features, face_found)
            writer.close()
        finally:
            writer.abort()

    def writer(self, video: str, extractors: Mapping[str, tuple[int, str]], fps: float | None = None) -> "StoreWriter":
        """A ``StoreWriter`` for one video's features as they come (``extract`` streams them; memory stays flat)."""
        _safe_name(video, "video")
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_extractors(self.index(), video, extractors)
        return StoreWriter(self, video, extractors, fps)

    def _check_extractors(self, idx: dict, video: str, extractors: Mapping[str, tuple[int, str]]) -> None:
        for name, (dim, modality) in extractors.items():
            _safe_name(name, "extractor")
            known = idx["extractors"].get(name)
            if known and (known["dim"] != dim or known["modality"] != modality):
                raise AbawRtError(f"extractor '{name}': store has dim {known['dim']} ({known['modality']}), got {dim} ({modality})")

    def _publish(self, writer: "StoreWriter") -> None:
        """A finished writer's files renamed into place and the video added to the index, under the store's lock."""
        with self._locked():  # several writers (Ray workers) add videos to one store: one index update at a time
            idx = self.index()
            self._check_extractors(idx, writer.video, writer.extractors)
            for name, (dim, modality) in writer.extractors.items():
                idx["extractors"][name] = {"dim": int(dim), "modality": modality}
            for f in writer.files.values():
                f.publish()
            idx["videos"][writer.video] = {"frames": int(writer.frames), "fps": writer.fps}
            atomic_write_bytes(self.root / INDEX, json.dumps(idx, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock on the store folder (``flock``: the kernel releases it even after a SIGKILL)."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def discard_unindexed(self, video: str) -> list[Path]:
        """Remove a video's feature files (and temporary files) that the index does not list: what a writer
        killed mid-write left. A video the index lists is left alone. Returns the files removed."""
        _safe_name(video, "video")
        if not self.root.is_dir():
            return []
        removed = []
        with self._locked():
            if video in self.index()["videos"]:
                return []
            for folder in (p for p in self.root.iterdir() if p.is_dir()):
                for f in folder.iterdir():
                    if f.name == f"{video}.npy" or (f.name.startswith(f".{video}.npy.") and f.name.endswith(".tmp")):
                        f.unlink(missing_ok=True)
                        removed.append(f)
        return removed

    # -- read -----------------------------------------------------------------------------------------
    def read(self, video: str, names: Sequence[str], fill_missing_faces: bool = True) -> StoredVideo:
        """Load a video's features for the named extractors, missing-face rows filled from the nearest face."""
        meta, specs = self._meta(video, names)
        faces = _load_npy(self.root / FACES / f"{video}.npy").astype(bool)
        feats = {}
        for name in names:
            arr = self._checked(video, name, meta, specs[name])
            if fill_missing_faces and specs[name]["modality"] == "visual":
                arr = fill_from_nearest(arr, faces)
            feats[name] = arr.astype(np.float32, copy=False)
        return StoredVideo(features=feats, face_found=faces, fps=meta.get("fps"))

    def read_lazy(self, video: str, names: Sequence[str]) -> tuple[LazyRows, float | None]:
        """The named extractors' columns side by side as memory-mapped ``LazyRows`` (missing faces filled from
        the nearest face for visual ones); the same values as ``read`` concatenated, never all in memory."""
        meta, specs = self._meta(video, names)
        modalities = {specs[n]["modality"] for n in names}
        if len(modalities) != 1:
            raise AbawRtError(f"feature store '{self.root}': {list(names)} mix modalities {sorted(modalities)}")
        rows = None
        if modalities == {"visual"}:
            rows = nearest_rows(_load_npy(self.root / FACES / f"{video}.npy").astype(bool))
        for n in names:
            self._checked(video, n, meta, specs[n], mmap=True)
        paths = [self.root / n / f"{video}.npy" for n in names]
        return LazyRows(paths, [specs[n]["dim"] for n in names], meta["frames"], rows), meta.get("fps")

    def _meta(self, video: str, names: Sequence[str]) -> tuple[dict, dict]:
        _safe_name(video, "video")
        idx = self.index()
        meta = idx["videos"].get(video)
        if meta is None:
            raise AbawRtError(f"feature store '{self.root}': no video '{video}'")
        for name in names:
            if name not in idx["extractors"]:
                raise AbawRtError(
                    f"feature store '{self.root}': no extractor '{name}' (have {sorted(idx['extractors'])})"
                )
        return meta, {n: idx["extractors"][n] for n in names}

    def _checked(self, video: str, name: str, meta: dict, spec: dict, mmap: bool = False) -> np.ndarray:
        """A feature file once its shape and values are checked (chunk by chunk when memory-mapped)."""
        path = self.root / name / f"{video}.npy"
        arr = _load_npy(path, mmap=mmap)
        if arr.shape != (meta["frames"], spec["dim"]):
            raise AbawRtError(f"feature file '{path}': shape {arr.shape}, expected ({meta['frames']}, {spec['dim']})")
        for start, chunk in zip(range(0, len(arr), CHUNK_ROWS), row_chunks(arr)):
            bad = np.argwhere(~np.isfinite(chunk))
            if len(bad):
                raise AbawRtError(f"feature file '{path}': NaN or inf at frame {start + int(bad[0][0]) + 1}")
        return arr


class _NpyAppender:
    """An .npy file of (rows, *shape) written row by row under a temporary name: the header (a fixed 128 bytes
    for any row count) is rewritten with the final count, then ``publish`` renames it into place; the bytes equal
    ``np.save``'s of the whole array."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        import tempfile

        self.path, self.dtype, self.shape, self.rows = Path(path), np.dtype(dtype), tuple(shape), 0
        self.made_folder = not self.path.parent.exists()  # removed again if the video is discarded
        self.path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self.file = os.fdopen(fd, "wb")
        self.file.write(self._header())

    def _header(self) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.shape)})
        return buf.getvalue()

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape:
            raise AbawRtError(f"feature file '{self.path}': rows of shape {rows.shape[1:]}, expected {self.shape}")
        self.file.write(rows.tobytes())
        self.rows += len(rows)

    def finish(self) -> None:
        header = self._header()
        if len(header) != 128:  # np.save pads every 2-D float header of up to 10^12 rows to 128 bytes
            raise AbawRtError(f"feature file '{self.path}': header of {len(header)} bytes, expected 128")
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def publish(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)
        if self.made_folder and not self.path.exists():
            with contextlib.suppress(OSError):  # not empty: another video's files are there now
                self.path.parent.rmdir()


class StoreWriter:
    """One video's features written into a ``FeatureStore`` as they come (``put`` in frame order, then ``close``).

    Each extractor's rows and the face mask go to temporary files beside their final names; ``close`` fixes
    their headers, renames them into place and adds the video to the index (under the store's lock), so a
    reader sees the whole video or none of it; ``abort`` (or a killed writer, through ``discard_unindexed``)
    leaves nothing.
    """

    def __init__(self, store: FeatureStore, video: str, extractors: Mapping[str, tuple[int, str]], fps: float | None):
        self.store, self.video, self.extractors, self.fps = store, video, dict(extractors), fps
        self.frames = 0
        self.files: dict[str, _NpyAppender] = {}
        try:
            for name, (dim, _) in self.extractors.items():
                self.files[name] = _NpyAppender(store.root / name / f"{video}.npy", np.float32, (int(dim),))
            self.files[FACES] = _NpyAppender(store.root / FACES / f"{video}.npy", bool, ())
        except OSError as exc:
            self.abort()
            raise AbawRtError(f"feature store '{store.root}': cannot write ({exc.strerror or exc})") from None

    def put(self, features: Mapping[str, np.ndarray], face_found: np.ndarray) -> None:
        """The next frames' rows: {extractor: (k, dim)} and their (k,) face mask."""
        k = len(face_found)
        for name in self.extractors:
            if name not in features or len(features[name]) != k:
                raise AbawRtError(f"features '{name}' of video '{self.video}': expected {k} rows")
        try:
            for name in self.extractors:
                self.files[name].append(features[name])
            self.files[FACES].append(np.asarray(face_found, dtype=bool))
        except OSError as exc:
            self.abort()
            raise AbawRtError(f"feature store '{self.store.root}': cannot write ({exc.strerror or exc})") from None
        self.frames += k

    def close(self) -> None:
        try:
            for f in self.files.values():
                f.finish()
            self.store._publish(self)
        except OSError as exc:
            raise AbawRtError(f"feature store '{self.store.root}': cannot write ({exc.strerror or exc})") from None
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the temporary files (those already published are not touched)."""
        for f in self.files.values():
            f.discard()


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise AbawRtError(f"feature file '{path}': missing") from None
    except (ValueError, OSError) as exc:
        raise AbawRtError(f"feature file '{path}': unreadable ({exc})") from None
