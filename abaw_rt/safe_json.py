"""IO layer: bounded JSON parsing for headers that come from files (checkpoints, ONNX metadata, engine sidecars).

``json.loads`` recurses once per nesting level (a header of 100 000 ``[`` is a RecursionError traceback)
and builds every value before anyone can look at the count (600 000 dummy entries: 20 s, 1.3 GB).
``loads`` measures the text first, in C-speed passes (a regex strips the strings, numpy counts the
brackets and separators), and refuses in one line what is too large, too deep or has too many entries,
before the standard parser sees it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from abaw_rt.errors import AbawRtError

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a JSON document: its size in bytes, its nesting depth and its number of values."""

    max_bytes: int = 16 << 20
    max_depth: int = 32
    max_entries: int = 1_000_000  # array items plus object members, all levels together


DEFAULT = JsonLimits()


def measure(data: bytes) -> tuple[int, int]:
    """(nesting depth, entries) of a JSON text, without parsing it: brackets and separators outside strings."""
    bare = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    opens = (bare == ord("[")) | (bare == ord("{"))
    closes = (bare == ord("]")) | (bare == ord("}"))
    step = opens.astype(np.int32) - closes.astype(np.int32)
    depth = int(np.cumsum(step).max(initial=0))
    entries = int(np.count_nonzero(bare == ord(","))) + int(np.count_nonzero(opens))
    return depth, entries


def loads(text: str | bytes, what: str, limits: JsonLimits = DEFAULT):
    """Parse JSON from an untrusted file within ``limits``.

    Args:
        text: the JSON text.
        what: names the source in messages, e.g. ``"checkpoint 'a.safetensors': header"``.

    Raises:
        AbawRtError: too large, nested too deep, too many entries, or not readable JSON (one line each).
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > limits.max_bytes:
        raise AbawRtError(f"{what}: {len(data)} bytes of JSON, expected at most {limits.max_bytes}")
    depth, entries = measure(data)
    if depth > limits.max_depth:
        raise AbawRtError(f"{what}: JSON nested {depth} levels deep, expected at most {limits.max_depth}")
    if entries > limits.max_entries:
        raise AbawRtError(f"{what}: JSON with about {entries} entries, expected at most {limits.max_entries}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AbawRtError(f"{what}: not readable JSON ({exc})") from None
