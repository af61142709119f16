"""Benchmark layer: the runner of each (backend, precision, CUDA graphs) cell from one artefact, or why not.

Runners come from ``abaw_rt.artefacts.open_runner``, the same path every verb takes; what is the benchmark's
own is choosing the artefact for a cell (a checkpoint's graph for the cell's precision: the exported one
beside it when it is the checkpoint's own, else one exported into the scratch folder) and turning "this
cell cannot run here" into a ``Skip`` with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from abaw_rt.artefacts import Artefact, Kind, RunOptions, onnx_path_for, open_artefact, open_runner
from abaw_rt.bench.sweep import Skip
from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import Backend


class RunnerFactory:
    """Builds runners for the sweep from a checkpoint, an ONNX graph or an engine (``open_artefact``)."""

    def __init__(self, source: Path, device: str = "cpu", threads: int | None = None, workdir: Path | None = None):
        self.source = open_artefact(source)
        self.device = device
        self.threads = threads
        self.workdir = Path(workdir) if workdir else self.source.path.parent

    def __call__(self, backend: str, precision: str, cuda_graphs: bool):
        backend = Backend(backend)
        artefact = self._artefact_for(backend, precision, cuda_graphs)
        options = RunOptions(precision=precision, device=self.device, threads=self.threads, cuda_graphs=cuda_graphs)
        return open_runner(artefact, backend, options)

    def _artefact_for(self, backend: Backend, precision: str, cuda_graphs: bool) -> Artefact:
        kind = self.source.kind
        if backend is Backend.torch:
            if kind is not Kind.checkpoint:
                raise Skip(f"torch needs a checkpoint, got {kind.noun} '{self.source.path.name}'")
            if importlib.util.find_spec("torch") is None:
                raise Skip("torch is not installed: pip install torch==2.13.0 && pip install 'abaw-rt[torch]'")
            if precision == "fp16" and self.device == "cpu":
                raise Skip("torch fp16 is measured on CUDA only (CPU half-precision kernels are not a deployment path)")
            if cuda_graphs and self.device == "cpu":
                raise Skip("CUDA graphs need a CUDA device")
            return self.source
        if backend is Backend.ort:
            if cuda_graphs:
                raise Skip("CUDA graphs are not measured for onnxruntime")
            return self._graph_for(precision)
        if self.device == "cpu":
            raise Skip("TensorRT needs a CUDA GPU (run with --device cuda)")
        if kind is not Kind.engine:
            raise Skip("TensorRT needs an engine: build one with 'abaw-rt build' and pass the .plan")
        return self.source

    def _graph_for(self, precision: str) -> Artefact:
        """The graph to run on onnxruntime at ``precision``: the source itself, a sibling graph of the same
        checkpoint (``va.int8.onnx`` beside ``va.fp32.onnx``), or a checkpoint's own export (never int8:
        an INT8 graph needs calibration data, so it is made by ``abaw-rt quantize``, not here)."""
        kind = self.source.kind
        if kind is Kind.fusion_graph:
            if self.source.precision == precision:
                return self.source
            sibling = self._sibling(precision)
            if sibling is None:
                raise Skip(
                    f"'{self.source.path.name}' is an {self.source.precision} graph and no {precision} graph of the "
                    f"same checkpoint lies beside it (looked for {sibling_names(self.source.path, self.source.precision, precision)[0].name})"
                )
            return sibling
        if kind is not Kind.checkpoint:
            raise Skip(f"onnxruntime needs an ONNX graph or a checkpoint, got {kind.noun} '{self.source.path.name}'")
        for folder in (None, self.workdir):
            path = onnx_path_for(self.source.path, precision, folder)
            if path.is_file():
                graph = open_artefact(path, Kind.fusion_graph)
                if graph.source_sha256 == self.source.sha256 and graph.precision == precision:
                    return graph
        if precision == "int8":
            fp32 = onnx_path_for(self.source.path, "fp32").name
            raise Skip(
                f"no int8 graph of '{self.source.path.name}' beside it: make one with 'abaw-rt quantize {fp32} "
                "--calib FEATURE_STORE'"
            )
        try:
            from abaw_rt.export.onnx_export import export_onnx
        except ImportError as exc:
            raise Skip(f"exporting needs torch ({exc}); pass an exported graph") from None
        out = onnx_path_for(self.source.path, precision, self.workdir)
        return open_artefact(export_onnx(self.source.detail, out, precision=precision).path, Kind.fusion_graph)

    def _sibling(self, precision: str) -> Artefact | None:
        """A graph at ``precision`` beside the source graph, made from the same checkpoint (None: none there)."""
        for path in sibling_names(self.source.path, self.source.precision, precision):
            if not path.is_file():
                continue
            try:
                graph = open_artefact(path, Kind.fusion_graph)
            except AbawRtError:
                continue
            if graph.precision == precision and graph.source_sha256 == self.source.source_sha256:
                return graph
        return None


def sibling_names(graph: Path, own: str | None, precision: str) -> list[Path]:
    """Where the ``precision`` graph of the same checkpoint would be: ``va.int8.onnx`` -> ``va.fp32.onnx``
    (also ``va.fp16-mixed.onnx``, what ``abaw-rt quantize -p fp16`` writes, for fp16)."""
    name = stem = Path(graph).name
    for suffix in (f".{own}.onnx", ".fp16-mixed.onnx", ".onnx"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    names = [f"{stem}.{precision}.onnx"] + ([f"{stem}.fp16-mixed.onnx"] if precision == "fp16" else [])
    return [Path(graph).with_name(n) for n in names if n != name]
