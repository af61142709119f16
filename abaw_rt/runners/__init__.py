"""Runner layer: backend name -> Runner class. Backends load lazily, so importing this pulls in no framework.

Files become runners through ``abaw_rt.artefacts.open_runner`` (one registry keyed by file kind and backend).
"""

from __future__ import annotations

import importlib

from abaw_rt.errors import AbawRtError
from abaw_rt.runners.base import Runner

# name -> "module:Class".
RUNNERS: dict[str, str | None] = {
    "torch": "abaw_rt.runners.torch_runner:TorchRunner",
    "ort": "abaw_rt.runners.ort_runner:OrtRunner",
    "trt": "abaw_rt.runners.trt_runner:TrtRunner",
}


def runner_class(backend: str) -> type[Runner]:
    """The Runner class for a backend name; AbawRtError for unknown or not-yet-available backends."""
    if backend not in RUNNERS:
        raise AbawRtError(f"backend {backend!r}: expected one of {sorted(RUNNERS)}")
    target = RUNNERS[backend]
    if target is None:
        raise AbawRtError(f"backend {backend!r} is not available in this version of abaw-rt")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["RUNNERS", "Runner", "runner_class"]
