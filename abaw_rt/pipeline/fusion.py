"""Pipeline layer: opening the fusion runner named by --checkpoint, --model or --engine."""

from __future__ import annotations

from pathlib import Path

from abaw_rt.errors import AbawRtError


def load_fusion(
    checkpoint: Path | None = None,
    model: Path | None = None,
    backend: str | None = None,
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    engine: Path | None = None,
):
    """The fusion Runner for ``--checkpoint`` (torch, or its exported graph with ort), ``--model`` (an ONNX
    graph, ort) or ``--engine`` (a TensorRT plan, trt), through ``abaw_rt.artefacts.open_runner``.
    ``backend`` None: ort, or trt for an engine.

    Raises:
        AbawRtError: nothing or several given, a file of another kind than its option says, a backend that
            cannot run the artefact, a missing export.
    """
    from abaw_rt.artefacts import Kind, RunOptions, open_artefact, open_runner

    given = [(n, v) for n, v in (("--checkpoint", checkpoint), ("--model", model), ("--engine", engine)) if v]
    if not given:
        raise AbawRtError(
            "no fusion model: pass --checkpoint CHECKPOINT.safetensors, --model GRAPH.onnx or --engine PLAN "
            "('abaw-rt infer' uses the built-in demo model, abaw_rt.defaults.checkpoint_path(), when none is given)"
        )
    if len(given) > 1:
        raise AbawRtError(f"pass one of --checkpoint, --model, --engine (got {' and '.join(n for n, _ in given)})")
    option, path = given[0]
    want = {"--checkpoint": Kind.checkpoint, "--model": Kind.fusion_graph, "--engine": Kind.engine}[option]
    try:
        artefact = open_artefact(path, want)
    except AbawRtError as exc:
        raise AbawRtError(f"{option}: {exc}") from None
    return open_runner(artefact, backend, RunOptions(precision=precision, device=device, threads=threads))
