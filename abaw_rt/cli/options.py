"""CLI layer: options shared by several verbs (``--threads``, the pipeline's inputs and front end) and how
``--threads`` is applied."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from abaw_rt.vocab import Backend, Device, FaceChoice, Precision

ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1,
        help="CPU threads for torch and onnxruntime (default: 1 on machines with <= 2 cores, else one per core).",
    ),
]


Inputs = Annotated[
    list[Path],
    typer.Argument(
        metavar="VIDEO",
        help="Videos, folders of videos, or Aff-Wild2 image folders (cropped_aligned/<video>/00001.jpg).",
    ),
]
ExtractorsOpt = Annotated[
    Optional[Path],
    typer.Option("--extractors", dir_okay=False, help="Extractor spec (TOML): the ONNX feature extractors to use."),
]
ExtractorBackendOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--extractor-backend", metavar="NAME=BACKEND",
        help="Run one extractor on an onnxruntime provider (cpu, cuda, tensorrt) or a TensorRT plan built from its "
        "graph (NAME=eff.plan; needs a GPU), instead of the spec's provider/engine; repeat.",
    ),
]  # fmt: skip
DetectorOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--detector", dir_okay=False, help="Face detector: an ONNX graph, or a TOML spec with a 'detector' table."
    ),
]
DetectEveryOpt = Annotated[
    int, typer.Option("--detect-every", min=1, help="Run the detector on every N-th frame; interpolate between.")
]
FaceOpt = Annotated[
    FaceChoice, typer.Option("--face", help="Which face when several: largest, or left/right for two-person videos.")
]
DecodeThreadsOpt = Annotated[
    int, typer.Option("--decode-threads", min=0, help="Video decoder threads (0: FFmpeg's choice).")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the models run.")]
CheckpointOpt = Annotated[
    Optional[Path], typer.Option("--checkpoint", dir_okay=False, help="Fusion checkpoint (.safetensors).")
]
ModelOpt = Annotated[
    Optional[Path], typer.Option("--model", dir_okay=False, help="Exported fusion graph (.onnx) instead of a checkpoint.")
]
EngineOpt = Annotated[
    Optional[Path], typer.Option("--engine", dir_okay=False, help="TensorRT engine plan (from 'abaw-rt build').")
]
BackendOpt = Annotated[
    Optional[Backend], typer.Option("--backend", help="Fusion backend (default: ort; trt with --engine).")
]
PrecisionOpt = Annotated[
    Optional[Precision], typer.Option("--precision", help="Fusion precision (default: the artefact's / fp32).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report(s) as JSON on stdout.")]


def pin_threads(requested: int | None) -> int | None:
    """Resolve ``--threads`` (``machine.default_threads``) and pin torch to it: through OMP/MKL_NUM_THREADS
    before torch is imported (verbs import it lazily), or ``torch.set_num_threads`` if it already is.
    Returns the count for onnxruntime sessions (None: its default)."""
    from abaw_rt.machine import default_threads

    n = default_threads(requested)
    if n is None:
        return None
    if requested is not None or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
