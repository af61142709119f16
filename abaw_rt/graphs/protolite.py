"""Graph layer: read an ONNX file's metadata and external-data references straight from the protobuf wire
format, without importing ``onnx`` (which costs 0.1-1.5 s of start-up on a small CPU).

Only what ``read_onnx_info`` and the external-data check need is decoded: ``ModelProto.metadata_props``
and, in the graph (and nested subgraphs), each tensor's name, ``data_location`` and ``external_data``.
Every other field, weights included, is skipped by its length, and the file is memory-mapped, so a
graph of hundreds of MB is scanned in milliseconds. Field numbers are those of onnx.proto3 (stable
since ONNX 1.0).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError

# onnx.proto3 field numbers
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _WireError(ValueError):
    pass


@dataclass(frozen=True)
class ExternalRef:
    """A tensor whose bytes live in another file (``data_location = EXTERNAL``)."""

    tensor: str
    location: str


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, wire type, value) of one message; value is an int or a memoryview slice."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _WireError(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            value = None
        else:
            raise _WireError(f"unsupported wire type {wire} (field {number})")
        if pos > end or number == 0:
            raise _WireError("malformed field")
        yield number, wire, value


def _entry(buf) -> tuple[str, str]:
    key = value = ""
    for number, wire, v in _fields(buf):
        if wire == 2 and number in (1, 2):
            text = bytes(v).decode("utf-8", errors="replace")
            key, value = (text, value) if number == 1 else (key, text)
    return key, value


def _tensor_ref(buf) -> ExternalRef | None:
    name, location, external = "", "", False
    for number, wire, v in _fields(buf):
        if number == _TENSOR_NAME and wire == 2:
            name = bytes(v).decode("utf-8", errors="replace")
        elif number == _TENSOR_DATA_LOCATION and wire == 0:
            external = v == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key, value = _entry(v)
            if key == "location":
                location = value
    return ExternalRef(name, location) if external else None


def _graph_refs(buf, refs: list[ExternalRef]) -> None:
    for number, wire, v in _fields(buf):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            ref = _tensor_ref(v)
            if ref is not None:
                refs.append(ref)
        elif number == _GRAPH_NODE:
            for n, w, attr in _fields(v):
                if n == _NODE_ATTRIBUTE and w == 2:
                    _attribute_refs(attr, refs)


def _attribute_refs(buf, refs: list[ExternalRef]) -> None:
    for number, wire, v in _fields(buf):
        if wire != 2:
            continue
        if number in (_ATTR_T, _ATTR_TENSORS):
            ref = _tensor_ref(v)
            if ref is not None:
                refs.append(ref)
        elif number in (_ATTR_G, _ATTR_GRAPHS):
            _graph_refs(v, refs)


@dataclass(frozen=True)
class ModelSummary:
    metadata: dict[str, str]
    external: tuple[ExternalRef, ...]


def read_model_summary(path: Path, external: bool = True) -> ModelSummary:
    """The metadata_props of an ONNX file and (``external=True``) its external-data references.

    Raises:
        AbawRtError: no such file, or bytes that are not an ONNX protobuf.
    """
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"ONNX '{path}': no such file")
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                raise _WireError("empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    return _summary(view, external)
                finally:
                    view.release()
    except _WireError as exc:
        raise AbawRtError(f"ONNX '{path}': not a readable ONNX model ({exc})") from None
    except OSError as exc:
        raise AbawRtError(f"ONNX '{path}': cannot read it ({exc.strerror or exc})") from None


def _summary(view, external: bool) -> ModelSummary:
    metadata: dict[str, str] = {}
    refs: list[ExternalRef] = []
    seen_graph = False
    for number, wire, v in _fields(view):
        if number == _MODEL_METADATA and wire == 2:
            key, value = _entry(v)
            metadata[key] = value
        elif number == _MODEL_GRAPH and wire == 2:
            seen_graph = True
            if external:
                _graph_refs(v, refs)
        elif wire == 2 and number not in range(1, 30):
            raise _WireError(f"unknown ModelProto field {number}")
    if not seen_graph:
        raise _WireError("no graph")
    return ModelSummary(metadata, tuple(refs))
