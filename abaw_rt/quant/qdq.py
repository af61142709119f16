"""Quantisation layer: static QDQ INT8 quantisation with onnxruntime's tools, some nodes kept in FP32.

``quantize_static`` with a ``CalibrationDataReader`` (abaw_rt.quant.calib), QDQ format, per-channel INT8
weights, MinMax activation ranges computed once and cached (onnxruntime's ``calibration_cache_path``) so
the search re-quantises without re-calibrating. Only the nodes that carry the FLOPs are quantised
(MatMul, Gemm, Conv); everything else stays FP32. Activations:

* ``u8`` (default, CPU): asymmetric uint8 activations x int8 weights, onnxruntime's fast path on x86
  (VNNI / AMX-INT8 u8s8 kernels);
* ``s8`` (TensorRT): symmetric int8 activations and weights (zero points 0), what TensorRT's explicit
  quantisation accepts.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import Activation

ACTIVATIONS = tuple(a.value for a in Activation)


@dataclass(frozen=True)
class QuantConfig:
    """How the INT8 graph is made."""

    activation: str = "u8"  # "u8" (CPU) or "s8" (TensorRT: symmetric, zero point 0)
    per_channel: bool = True  # one weight scale per output channel (Conv, MatMul/Gemm columns)
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")  # the ops that are quantised (the rest stay FP32)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise AbawRtError(f"activation {self.activation!r}: expected one of {ACTIVATIONS}")

    def to_dict(self) -> dict:
        return {"activation": self.activation, "per_channel": self.per_channel, "op_types": list(self.op_types),
                "weights": "int8 symmetric", "format": "QDQ", "calibration": "MinMax"}


def candidate_nodes(model, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types`` in graph order (every node must have a name: see ``name_nodes``)."""
    return [n.name for n in model.graph.node if n.op_type in op_types]


def name_nodes(model) -> None:
    """Give unnamed or duplicate-named nodes a unique name, so they can be kept high by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def quantize_int8(
    src: Path, dst: Path, calibration: Sequence[dict], keep_fp32: Sequence[str], cfg: QuantConfig, cache: Path
) -> Path:
    """Write the QDQ INT8 graph of ``src`` to ``dst`` with the nodes ``keep_fp32`` left in FP32.

    Args:
        src: the FP32 graph (nodes named).
        dst: where the quantised graph goes.
        calibration: feeds of the calibration data (read only when ``cache`` does not exist yet).
        keep_fp32: node names excluded from quantisation.
        cfg: activation type, per-channel weights, op types.
        cache: onnxruntime's calibration cache (JSON tensor ranges), written on the first call.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from abaw_rt.quant.calib import data_reader

    symmetric = cfg.activation == "s8"
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    reader = None if Path(cache).is_file() else data_reader(calibration)
    try:
        with _quiet():
            quantize_static(
                str(src),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(cfg.op_types),
                per_channel=cfg.per_channel,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(keep_fp32),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra,
                calibration_cache_path=str(cache),
            )
    except AbawRtError:
        raise
    except Exception as exc:
        raise AbawRtError(f"quantising '{src}' failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return Path(dst)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantiser logs every node at INFO and prints progress; keep it off the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
