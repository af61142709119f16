"""Runner layer: the backend registry. Backends load lazily, so importing this pulls in no framework."""

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


def make_runner(backend: str, *args, **kwargs) -> Runner:
    return runner_class(backend)(*args, **kwargs)


__all__ = ["RUNNERS", "Runner", "make_runner", "runner_class"]
