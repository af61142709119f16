"""Artefact layer: checkpoints as one safetensors file whose metadata holds a JSON header. Never unpickles.

Layout: the safetensors tensors are the model's ``state_dict`` (float32); the safetensors metadata
key ``abaw_rt`` holds the JSON header: format and version, model config, feature spec, per-modality
normalisation mean/std, label names, window, stride, fps and provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from abaw_rt import __version__
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_write_bytes, bytes_sha256
from abaw_rt.model.config import HEAD_LABELS, ModelConfig

FORMAT = "abaw-rt-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "abaw_rt"
IN_GRAPH = "in-graph"  # header value where an exported graph applies the normalisation itself


@dataclass(frozen=True)
class CheckpointHeader:
    """Everything a runner or the pipeline needs to know about a checkpoint besides its weights."""

    config: ModelConfig
    # {modality: {"mean": [...], "std": [...]}}; None where an exported graph applies them in-graph
    normalization: Mapping[str, Mapping[str, tuple[float, ...]]] | None
    window: int = 300  # segment length w (PAPER.md, "Segments")
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


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint: header and float32 numpy tensors. Never unpickles.

    Raises:
        AbawRtError: missing, unreadable, corrupt or not an abaw-rt checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"checkpoint '{path}': no such file")
    safetensors = require_module("safetensors", "torch")
    st = require_module("safetensors.numpy", "torch")
    data = path.read_bytes()
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        tensors = st.load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise AbawRtError(f"checkpoint '{path}': not a readable safetensors file ({exc})") from None
    if METADATA_KEY not in meta:
        raise AbawRtError(
            f"checkpoint '{path}': safetensors file has no '{METADATA_KEY}' header; not an abaw-rt checkpoint"
        )
    try:
        header_dict = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise AbawRtError(f"checkpoint '{path}': header is not valid JSON ({exc})") from None
    header = CheckpointHeader.from_dict(header_dict, source=f"checkpoint '{path}'")
    if header.normalization is None:
        raise AbawRtError(f"checkpoint '{path}': header has no normalisation statistics (mean/std per modality)")
    return Checkpoint(header=header, tensors=tensors, path=path, sha256=bytes_sha256(data))


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
