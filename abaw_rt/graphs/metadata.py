"""Graph layer: the self-description an exported ONNX graph carries in its metadata_props (torch-free)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abaw_rt import safe_json
from abaw_rt.checkpoint import CheckpointHeader
from abaw_rt.errors import AbawRtError
from abaw_rt.specs import TensorSpec, specs_to_json

PREFIX = "abaw_rt."


@dataclass(frozen=True)
class OnnxInfo:
    """What a runner needs to know about an exported graph, read back from its metadata."""

    header: CheckpointHeader  # model config, labels, window, stride, fps, provenance; normalization None (in-graph)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str  # "fp32" or "fp16" (compute precision; I/O stays float32)
    checkpoint_sha256: str
    package_version: str
    path: Path | None = None


def metadata_props(
    header: CheckpointHeader, precision: str, checkpoint_sha256: str, package_version: str
) -> dict[str, str]:
    """The key/value pairs written into an ONNX model's metadata_props."""
    cfg = header.config
    head = header.to_dict(include_normalization=False)
    return {
        PREFIX + "header": json.dumps(head),
        PREFIX + "inputs": specs_to_json(cfg.input_specs()),
        PREFIX + "outputs": specs_to_json(cfg.output_specs()),
        PREFIX + "precision": precision,
        PREFIX + "checkpoint_sha256": checkpoint_sha256,
        PREFIX + "version": package_version,
        # Flat, human-readable copies for tools that only list metadata (Netron, onnx.helper.printable_graph).
        PREFIX + "heads": ",".join(cfg.heads),
        PREFIX + "features": ",".join(f"{f.name}:{f.modality}:{f.dim}" for f in cfg.features),
        PREFIX + "labels": json.dumps(head["labels"]),
        PREFIX + "window": str(header.window),
        PREFIX + "stride": str(header.stride),
        PREFIX + "normalization": "in-graph (per-dimension mean/std from the checkpoint, applied in FP32)",
    }


def info_from_props(props: Mapping[str, str], source: str) -> OnnxInfo:
    """Parse metadata_props back into an OnnxInfo; AbawRtError if the graph was not made by abaw-rt export."""
    needed = ("header", "inputs", "outputs", "precision", "checkpoint_sha256", "version")
    missing = [k for k in needed if PREFIX + k not in props]
    if missing:
        raise AbawRtError(
            f"ONNX '{source}': metadata lacks {', '.join(PREFIX + k for k in missing)}; "
            "export it with 'abaw-rt export' so it describes itself"
        )
    what = f"ONNX '{source}': metadata"
    head, ins, outs = (safe_json.loads(props[PREFIX + k], f"{what} {PREFIX + k}") for k in ("header", "inputs", "outputs"))
    try:
        if not isinstance(head, dict):
            raise TypeError(f"{PREFIX}header is a JSON {type(head).__name__}, expected an object")
        header = CheckpointHeader.from_dict(head, source=f"ONNX '{source}'")
        inputs = tuple(TensorSpec.from_dict(d) for d in ins)
        outputs = tuple(TensorSpec.from_dict(d) for d in outs)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AbawRtError(f"ONNX '{source}': unreadable abaw_rt metadata ({exc})") from None
    return OnnxInfo(
        header=header,
        inputs=inputs,
        outputs=outputs,
        precision=props[PREFIX + "precision"],
        checkpoint_sha256=props[PREFIX + "checkpoint_sha256"],
        package_version=props[PREFIX + "version"],
        path=Path(source),
    )


def read_metadata_props(path: Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read without loading its weights (nor importing ``onnx``: see protolite)."""
    from abaw_rt.graphs.protolite import read_model_summary

    return read_model_summary(Path(path), external=False).metadata


def read_onnx_info(path: Path) -> OnnxInfo:
    """Read an exported graph's metadata without loading its weights."""
    return info_from_props(read_metadata_props(path), str(path))


def read_quant_record(path: Path) -> dict | None:
    """The search record (``abaw_rt.quant``) of a graph made by ``abaw-rt quantize``; None for other graphs."""
    text = read_metadata_props(path).get(PREFIX + "quant")
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        raise AbawRtError(f"ONNX '{path}': metadata '{PREFIX}quant' is not JSON") from None
