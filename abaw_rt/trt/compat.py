"""TensorRT runtime layer: which TensorRT versions abaw-rt supports, and the API names used by one version only.

Conventions the API-conformance test (tests/test_trt_api_conformance.py) relies on:

- Only the modules in ``TRT_MODULES`` touch ``tensorrt``, always under the name ``trt``.
- A variable or attribute holding a TensorRT object is named ``trt_*`` (``trt_builder``,
  ``self._trt_context``); every attribute read on ``trt`` or a ``trt_*`` name (and on what its
  methods return) is a TensorRT API name, and so is every keyword argument passed to its methods.
- A name that exists in one supported major version only is listed in ``VERSION_GATED`` and used
  only inside functions whose name ends in ``_trt<major>`` for that version (e.g.
  ``_constrain_precision_trt10``). The test checks each used name against the symbol strings of
  the real Python bindings of every supported version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from abaw_rt.errors import AbawRtError, require_module

SUPPORTED_MAJORS = (10, 11)

# The exact bindings wheels the conformance test reads: one per supported major version.
BINDINGS_WHEELS = {
    10: "tensorrt-cu12-bindings==10.13.3.9",
    11: "tensorrt-cu13-bindings==11.4.0.106",
}

# Modules allowed to use ``tensorrt`` (paths relative to the repository root).
TRT_MODULES = (
    "abaw_rt/trt/compat.py",
    "abaw_rt/engines/builder.py",
    "abaw_rt/runners/trt_runner.py",
)

# TensorRT API names used on one major version only -> the versions that use them.
VERSION_GATED: dict[str, tuple[int, ...]] = {
    # TensorRT 11 builds strongly typed networks only: FP16 comes from the FP16 ONNX graph there.
    # On 10, an FP32 graph can be built with the FP16 flag and per-layer FP32 constraints instead.
    "FP16": (10,),
    # Explicit quantisation of an INT8 QDQ graph: the INT8 flag on 10; 11 takes the Q/DQ types from the graph.
    "INT8": (10,),
    "OBEY_PRECISION_CONSTRAINTS": (10,),
    "precision": (10,),
    "set_output_type": (10,),
    # Deprecated and ignored on 11 (always strongly typed); on 10 it makes an FP16 graph build as typed.
    "STRONGLY_TYPED": (10,),
}


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version such as 10.13.3.9."""

    major: int
    minor: int
    patch: int = 0
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> "TrtVersion":
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not m:
            raise AbawRtError(f"TensorRT version {text!r}: expected a version such as 10.13.3.9")
        return cls(*(int(g) if g is not None else 0 for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}.{self.build}"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 and later build strongly typed networks only."""
        return self.major >= 11


def check_supported(version: TrtVersion) -> TrtVersion:
    """AbawRtError unless ``version`` is a major version this abaw-rt was written and checked against."""
    if version.major not in SUPPORTED_MAJORS:
        raise AbawRtError(
            f"TensorRT {version}: this abaw-rt supports TensorRT {' and '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}"
        )
    return version


def import_tensorrt(device: int = 0):
    """Import ``tensorrt`` after checking that a CUDA device exists; returns (module, version, gpu).

    Raises:
        AbawRtError: no CUDA device (checked first, before TensorRT is touched), ``tensorrt`` not
            installed (names the ``[trt]`` extra), or an unsupported version.
    """
    from abaw_rt.cuda.gpu import require_gpu

    gpu = require_gpu(device)
    trt = require_module("tensorrt", "trt")
    version = check_supported(TrtVersion.parse(trt.__version__))
    return trt, version, gpu


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings and errors (everything with ``verbose``)."""
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
