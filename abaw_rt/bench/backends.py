"""Benchmark layer: make the runner of each (backend, precision, CUDA graphs) cell from one artefact, or say why not."""

from __future__ import annotations

import inspect
from pathlib import Path

from abaw_rt.bench.sweep import Skip, artefact_kind
from abaw_rt.errors import AbawRtError, missing_module_message


class RunnerFactory:
    """Builds runners for the sweep from a checkpoint, an ONNX graph or an engine.

    From a checkpoint, ONNX graphs are taken from beside it when they were exported from the same
    checkpoint, else exported into ``workdir`` once per precision.
    """

    def __init__(self, source: Path, device: str = "cpu", threads: int | None = None, workdir: Path | None = None):
        self.source = Path(source)
        self.kind = artefact_kind(self.source)
        self.device = device
        self.threads = threads
        self.workdir = Path(workdir) if workdir else self.source.parent
        self._checkpoint = None

    def checkpoint(self):
        if self._checkpoint is None:
            from abaw_rt.checkpoint import load_checkpoint

            self._checkpoint = load_checkpoint(self.source)
        return self._checkpoint

    def __call__(self, backend: str, precision: str, cuda_graphs: bool):
        make = {"torch": self._torch, "ort": self._ort, "trt": self._trt}.get(backend)
        if make is None:
            raise AbawRtError(f"--backend {backend!r}: expected torch, ort or trt")
        return make(precision, cuda_graphs)

    def _torch(self, precision: str, cuda_graphs: bool):
        if self.kind != "checkpoint":
            raise Skip(f"torch needs a checkpoint, got {self.kind} '{self.source.name}'")
        try:
            from abaw_rt.runners.torch_runner import TorchRunner
        except ImportError as exc:
            raise Skip(missing_module_message("torch", "torch", str(exc))) from None
        if precision == "fp16" and self.device == "cpu":
            raise Skip("torch fp16 is measured on CUDA only (CPU half-precision kernels are not a deployment path)")
        kwargs = {}
        if cuda_graphs:
            if self.device == "cpu":
                raise Skip("CUDA graphs need a CUDA device")
            if "cuda_graphs" not in inspect.signature(TorchRunner.__init__).parameters:
                raise Skip("this TorchRunner has no CUDA-graph option")
            kwargs["cuda_graphs"] = True
        return TorchRunner(self.checkpoint(), device=self.device, precision=precision, threads=self.threads, **kwargs)

    def _ort(self, precision: str, cuda_graphs: bool):
        from abaw_rt.runners.ort_runner import OrtRunner

        if cuda_graphs:
            raise Skip("CUDA graphs are not measured for onnxruntime")
        provider = "cpu" if self.device == "cpu" else "cuda"
        return OrtRunner(self._onnx_for(precision), provider=provider, threads=self.threads)

    def _onnx_for(self, precision: str) -> Path:
        from abaw_rt.graphs.metadata import read_onnx_info

        if self.kind == "onnx":
            info = read_onnx_info(self.source)
            if info.precision != precision:
                raise Skip(f"'{self.source.name}' is an {info.precision} graph; pass a checkpoint to measure {precision}")
            return self.source
        if self.kind != "checkpoint":
            raise Skip(f"onnxruntime needs an ONNX graph or a checkpoint, got {self.kind} '{self.source.name}'")
        from abaw_rt.export.onnx_export import onnx_path_for

        ckpt = self.checkpoint()
        beside = onnx_path_for(self.source, precision)
        if beside.is_file() and read_onnx_info(beside).checkpoint_sha256 == ckpt.sha256:
            return beside
        cached = onnx_path_for(self.source, precision, self.workdir)
        if cached.is_file() and read_onnx_info(cached).checkpoint_sha256 == ckpt.sha256:
            return cached
        try:
            from abaw_rt.export.onnx_export import export_onnx
        except ImportError as exc:
            raise Skip(f"exporting needs torch ({exc}); pass an exported graph") from None
        return export_onnx(ckpt, cached, precision=precision).path

    def _trt(self, precision: str, cuda_graphs: bool):
        from abaw_rt.runners import runner_class

        try:
            cls = runner_class("trt")
        except AbawRtError as exc:
            raise Skip(str(exc)) from None
        if self.device == "cpu":
            raise Skip("TensorRT needs a CUDA GPU (run with --device cuda)")
        if self.kind != "engine":
            raise Skip("TensorRT needs an engine: build one with 'abaw-rt build' and pass the .plan")
        try:
            return cls(self.source, **({"cuda_graphs": True} if cuda_graphs else {}))
        except TypeError:
            raise Skip("this TrtRunner has no CUDA-graph option") from None
