"""Vocabulary layer: every choice a user names (backend, device, precision, task, size, ...), declared once.

Light on purpose (only ``enum``): the CLI imports it at ``--help`` time, and every layer takes its choices
from here, so a value is spelled in one place and an unknown one is refused with the valid list.
"""

from __future__ import annotations

from enum import Enum


class Backend(str, Enum):
    """Runner backends (``abaw_rt.runners.RUNNERS``)."""

    ort = "ort"  # onnxruntime: CPU, or its CUDA / TensorRT providers
    torch = "torch"  # the PyTorch reference (checkpoints only)
    trt = "trt"  # a TensorRT engine plan


class Device(str, Enum):
    auto = "auto"  # CUDA when one is found, else CPU (training's default)
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"  # normalisation, LayerNorm and softmax stay FP32 in the graph
    int8 = "int8"  # static QDQ INT8 matmuls/convolutions (abaw-rt quantize); the rest FP32


class Activation(str, Enum):
    """INT8 activation type of ``abaw-rt quantize``."""

    u8 = "u8"  # asymmetric uint8 activations x int8 weights: onnxruntime's fast path on x86 CPUs
    s8 = "s8"  # symmetric int8 activations and weights (zero points 0): TensorRT explicit quantisation


class Task(str, Enum):
    """A model head and the task it serves (the same name for both)."""

    va = "va"  # valence/arousal regression, loss 1 - CCC
    expr = "expr"  # 8-class expression, cross-entropy
    au = "au"  # 12 action units, BCE with logits


class Preset(str, Enum):
    """The paper's feature sets (``abaw_rt.model.config.PRESETS``)."""

    va = "va"
    va_arcface = "va_arcface"
    expr = "expr"
    au = "au"


class ModelSize(str, Enum):
    paper = "paper"  # the authors' widths (about 42 M parameters for va)
    tiny = "tiny"  # a small width for tests, CI and smoke runs


class Merge(str, Enum):
    """How overlapping windows are stitched into one per-frame track."""

    centre = "centre"  # weighted average, weight highest at a window's centre
    uniform = "uniform"  # plain average over every window covering the frame (sucv/ABAW3)
    none = "none"  # no averaging: each frame from the one window where it sits most centrally


class FaceChoice(str, Enum):
    largest = "largest"  # the biggest box (default)
    left = "left"  # the leftmost face (Aff-Wild2 "_left" labels of two-person videos)
    right = "right"  # the rightmost face ("_right" labels)


class Exporter(str, Enum):
    """Which torch ONNX exporter ``abaw-rt export`` uses (both graphs pass the same check against torch)."""

    torchscript = "torchscript"  # torch.onnx.export(dynamo=False): about a second for the tiny model
    dynamo = "dynamo"  # torch.export-based: a minute for the tiny model on a 2-core CPU


class CudaBinding(str, Enum):
    """Python bindings the CUDA device-memory layer (``abaw_rt.cuda.memory``) runs on."""

    auto = "auto"  # cuda-python when it imports, else pycuda
    cuda_python = "cuda-python"  # NVIDIA's cuda-bindings (``from cuda.bindings import runtime``)
    pycuda = "pycuda"  # PyCUDA, often what a Jetson image carries


class TritonKind(str, Enum):
    """Where Triton runs a model's instances (``instance_group { kind }``)."""

    gpu = "gpu"  # KIND_GPU: onnxruntime with CUDA (and the TensorRT accelerator), or a TensorRT plan
    cpu = "cpu"  # KIND_CPU: onnxruntime on the CPU (an ONNX graph only)
