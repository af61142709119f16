"""Artefact layer: checkpoints as one safetensors file whose metadata holds a JSON header. Never unpickles.

Layout: the safetensors tensors are the model's ``state_dict`` (float32); the safetensors metadata
key ``abaw_rt`` holds the JSON header: format and version, model config, feature spec, per-modality
normalisation mean/std, label names, window, stride, fps and provenance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from abaw_rt import __version__, safe_json
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_write_bytes
from abaw_rt.model.config import HEAD_LABELS, ModelConfig

FORMAT = "abaw-rt-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "abaw_rt"
IN_GRAPH = "in-graph"  # header value where an exported graph applies the normalisation itself
MAX_HEADER_BYTES = 16 << 20  # safetensors header (JSON); ours are a few hundred kB even at the paper's widths
MAX_TENSORS = 10_000  # tensor entries in one file (the paper's model has about 150)
MAX_DATA_BYTES = 4 << 30  # tensor data in one file (the paper's model is 168 MB as float32)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


@dataclass(frozen=True)
class CheckpointHeader:
    """Everything a runner or the pipeline needs to know about a checkpoint besides its weights."""

    config: ModelConfig
    # {modality: {"mean": [...], "std": [...]}}; None where an exported graph applies them in-graph
    normalization: Mapping[str, Mapping[str, tuple[float, ...]]] | None
    window: int = 300  # segment length w (Zhou et al. 2023, "Segments")
    stride: int = 200  # segment stride s
    fps: float | None = None  # frame rate the features were made at, when known
    provenance: Mapping[str, Any] = field(default_factory=dict)  # who/what/when made it

    def __post_init__(self) -> None:
        if not (isinstance(self.window, int) and self.window >= 1):
            raise AbawRtError(f"window: got {self.window!r}, expected an integer >= 1")
        if not (isinstance(self.stride, int) and 1 <= self.stride <= self.window):
            raise AbawRtError(f"stride: got {self.stride!r}, expected an integer in 1..window ({self.window})")
        for m in self.config.modalities if self.normalization is not None else ():
            stats = self.normalization.get(m)
            dim = self.config.modality_dim(m)
            if stats is None or set(stats) != {"mean", "std"}:
                raise AbawRtError(f"normalization for '{m}': expected 'mean' and 'std' lists of {dim} values")
            for key in ("mean", "std"):
                arr = np.asarray(stats[key], dtype=np.float64)
                if arr.shape != (dim,) or not np.all(np.isfinite(arr)):
                    raise AbawRtError(
                        f"normalization {m}.{key}: got shape {arr.shape}, expected ({dim},) finite values"
                    )
            if np.any(np.asarray(stats["std"]) <= 0):
                raise AbawRtError(f"normalization {m}.std: every value must be > 0")

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        return {h: HEAD_LABELS[h] for h in self.config.heads}

    def normalization_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.normalization is None:
            raise AbawRtError("this header has no normalisation statistics: they are applied inside the exported graph")
        return {
            m: (np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32))
            for m, s in self.normalization.items()
        }

    def to_dict(self, include_normalization: bool = True) -> dict:
        cfg = self.config.to_dict()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": cfg,
            "features": [{"name": f["name"], "dim": f["dim"], "modality": f["modality"]} for f in cfg["features"]],
            "normalization": (
                {m: {k: [float(x) for x in v] for k, v in s.items()} for m, s in self.normalization.items()}
                if include_normalization and self.normalization is not None
                else IN_GRAPH
            ),
            "labels": {h: list(v) for h, v in self.labels.items()},
            "window": self.window,
            "stride": self.stride,
            "fps": self.fps,
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "checkpoint") -> "CheckpointHeader":
        if d.get("format") != FORMAT:
            raise AbawRtError(f"{source}: not an abaw-rt checkpoint (format {d.get('format')!r}, expected {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise AbawRtError(
                f"{source}: checkpoint format version {d.get('format_version')!r}, this abaw-rt reads {FORMAT_VERSION}"
            )
        try:
            return cls(
                config=ModelConfig.from_dict(d["config"]),
                normalization=None if d["normalization"] == IN_GRAPH else d["normalization"],
                window=d["window"],
                stride=d["stride"],
                fps=d.get("fps"),
                provenance=d.get("provenance", {}),
            )
        except KeyError as exc:
            raise AbawRtError(f"{source}: header lacks {exc}") from None
        except AbawRtError as exc:
            raise AbawRtError(f"{source}: {exc}") from None


def default_normalization(cfg: ModelConfig) -> dict[str, dict[str, tuple[float, ...]]]:
    """Identity statistics (mean 0, std 1) for every modality of a config."""
    return {m: {"mean": (0.0,) * cfg.modality_dim(m), "std": (1.0,) * cfg.modality_dim(m)} for m in cfg.modalities}


@dataclass(frozen=True)
class Checkpoint:
    header: CheckpointHeader
    tensors: Mapping[str, np.ndarray]
    path: Path | None = None
    sha256: str | None = None


def save_checkpoint(path: Path, header: CheckpointHeader, tensors: Mapping[str, np.ndarray]) -> Path:
    """Write a checkpoint atomically. Tensors are stored as float32 (or their integer dtype)."""
    st = require_module("safetensors.numpy", "torch")
    path = Path(path)
    if not path.parent.is_dir():
        raise AbawRtError(f"checkpoint '{path}': folder '{path.parent}' does not exist")
    arrays = {
        k: np.ascontiguousarray(v, dtype=np.float32 if np.issubdtype(np.asarray(v).dtype, np.floating) else None)
        for k, v in tensors.items()
    }
    meta = {METADATA_KEY: json.dumps(header.to_dict())}
    return atomic_write_bytes(path, st.save(arrays, metadata=meta))


def read_safetensors(path: Path, what: str) -> tuple[dict[str, str], dict[str, tuple], int]:
    """A safetensors file's metadata and tensor index, read from its header alone (never the tensors).

    Returns ``(metadata, {name: (dtype, shape, begin, end)}, data_start)``; offsets are relative to
    ``data_start``. The header length, its JSON (size, depth, entries), every entry and the data section's
    size are checked against the file's size and this module's bounds first.

    Raises:
        AbawRtError: not a readable safetensors file (with the reason), or over a bound.
    """
    bad = f"{what}: not a readable safetensors file"
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AbawRtError(f"{bad} ({size} bytes, shorter than its 8-byte header length)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise AbawRtError(
                f"{bad} (its header claims {n} bytes; the file has {size - 8} after the length and at most "
                f"{MAX_HEADER_BYTES} are read)"
            )
        raw = f.read(n)
    limits = safe_json.JsonLimits(max_bytes=MAX_HEADER_BYTES, max_depth=8, max_entries=16 * MAX_TENSORS)
    try:
        index = safe_json.loads(raw, f"{bad}: header", limits)
    except AbawRtError as exc:
        raise AbawRtError(str(exc)) from None
    if not isinstance(index, dict):
        raise AbawRtError(f"{bad} (its header is not a JSON object)")
    meta = index.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise AbawRtError(f"{bad} (its __metadata__ is not a table of strings)")
    if len(index) > MAX_TENSORS:
        raise AbawRtError(f"{what}: {len(index)} tensors in its header, expected at most {MAX_TENSORS}")
    entries = {name: _entry(name, e, bad) for name, e in index.items()}
    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != end:
            raise AbawRtError(f"{bad} (tensor '{name}' starts at byte {begin} of the data, expected {end})")
        end = stop
    if end > MAX_DATA_BYTES:
        raise AbawRtError(f"{what}: {end} bytes of tensor data, expected at most {MAX_DATA_BYTES}")
    if 8 + n + end != size:
        raise AbawRtError(f"{bad} (its header describes {8 + n + end} bytes, the file has {size})")
    return meta, entries, 8 + n


def _entry(name: str, e, bad: str) -> tuple:
    if not isinstance(e, dict) or e.get("dtype") not in DTYPES:
        raise AbawRtError(f"{bad} (tensor '{name}': no dtype of {sorted(DTYPES)})")
    shape, offsets = e.get("shape"), e.get("data_offsets")
    ints = lambda xs, k: isinstance(xs, list) and len(xs) in k and all(type(x) is int and x >= 0 for x in xs)  # noqa: E731
    if not ints(shape, range(9)) or not ints(offsets, (2,)) or offsets[0] > offsets[1]:
        raise AbawRtError(f"{bad} (tensor '{name}': shape {shape!r}, data_offsets {offsets!r})")
    dtype = np.dtype(DTYPES[e["dtype"]])
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != offsets[1] - offsets[0]:
        raise AbawRtError(f"{bad} (tensor '{name}': shape {shape} does not fill its {offsets[1] - offsets[0]} bytes)")
    return dtype, tuple(shape), offsets[0], offsets[1]


def map_tensors(path: Path, entries: Mapping[str, tuple], data_start: int) -> dict[str, np.ndarray]:
    """The tensors of ``read_safetensors`` as copy-on-write memory maps (pages are read when used)."""
    size = os.path.getsize(path)
    whole = np.memmap(path, dtype=np.uint8, mode="c") if size else np.zeros(0, np.uint8)
    out = {}
    for name, (dtype, shape, begin, end) in entries.items():
        raw = whole[data_start + begin : data_start + end]
        if (data_start + begin) % dtype.itemsize:  # unaligned: a copy (torch wants aligned memory)
            raw = np.array(raw)
        out[name] = raw.view(dtype).reshape(shape)
    return out


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint: header and float32 numpy tensors (memory-mapped, copy-on-write). Never unpickles.

    The safetensors header is read and bounded first (``read_safetensors``), and the weights are checked
    against the model config's size before any tensor byte is read: a 40 GB file is refused in
    milliseconds. Weights that are not all finite (NaN, inf) are refused too.

    Raises:
        AbawRtError: missing, unreadable, corrupt, oversized, non-finite or not an abaw-rt checkpoint.
    """
    from abaw_rt.io import file_sha256, missing_reason
    from abaw_rt.model.config import parameter_count

    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"checkpoint '{path}': {missing_reason(path, 'file')}")
    what = f"checkpoint '{path}'"
    meta, entries, data_start = read_safetensors(path, what)
    if METADATA_KEY not in meta:
        raise AbawRtError(f"{what}: safetensors file has no '{METADATA_KEY}' header; not an abaw-rt checkpoint")
    header_dict = safe_json.loads(meta[METADATA_KEY], f"{what}: header")
    if not isinstance(header_dict, dict):
        raise AbawRtError(f"{what}: header is a JSON {type(header_dict).__name__}, expected an object")
    header = CheckpointHeader.from_dict(header_dict, source=what)
    if header.normalization is None:
        raise AbawRtError(f"{what}: header has no normalisation statistics (mean/std per modality)")
    expected = parameter_count(header.config)
    stored = sum(int(np.prod(e[1], dtype=np.int64)) for e in entries.values())
    if stored > 2 * expected + 65536:
        raise AbawRtError(
            f"{what}: holds {stored} weights, but its model config has {expected} parameters "
            "(weights do not match its model config)"
        )
    tensors = map_tensors(path, entries, data_start)
    for name, arr in tensors.items():
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise AbawRtError(
                f"{what}: tensor '{name}' holds {bad} non-finite value(s) (NaN or inf); the weights are broken"
            )
    return Checkpoint(header=header, tensors=tensors, path=path, sha256=file_sha256(path))


def init_checkpoint(
    path: Path, cfg: ModelConfig, seed: int = 0, window: int = 300, stride: int = 200, note: str = ""
) -> Path:
    """Create a deterministic, freshly initialised checkpoint (tests, CI, smoke runs)."""
    from abaw_rt.model.fusion import init_state  # torch needed only here

    header = CheckpointHeader(
        config=cfg,
        normalization=default_normalization(cfg),
        window=window,
        stride=stride,
        provenance={
            "created_by": f"abaw-rt {__version__} init-checkpoint",
            "seed": seed,
            "trained": False,
            "note": note or "randomly initialised weights: for tests and smoke runs, not for predictions",
        },
    )
    return save_checkpoint(path, header, init_state(cfg, seed))
