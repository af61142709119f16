"""Artefact layer: one way from a model file to a runner.

``open_artefact(path)`` says what a file is (a checkpoint, a fusion graph made by ``abaw-rt export``, any other
ONNX graph, a TensorRT engine plan) from its own header, never by trying runtimes; ``open_runner(artefact,
backend, ...)`` makes its runner from one registry keyed by (kind, backend). Every verb and the Python API
go through here (infer, extract, bench, verify, build, export), and so does the one provenance check: a graph
or engine names the checkpoint it was made from by sha256.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from abaw_rt.errors import AbawRtError
from abaw_rt.runners import Runner, runner_class
from abaw_rt.vocab import Backend


class Kind(str, Enum):
    checkpoint = "checkpoint"  # .safetensors with an abaw-rt header: the PyTorch reference
    fusion_graph = "fusion-graph"  # .onnx exported by abaw-rt (metadata describe the model)
    onnx = "onnx"  # any other .onnx (detector, extractor): specs from the graph itself
    engine = "engine"  # .plan / .engine with its JSON sidecar, built from a fusion graph
    extractor_engine = "extractor-engine"  # .plan / .engine built from an extractor graph (interface in the sidecar)

    @property
    def noun(self) -> str:
        return _NOUNS[self]


_NOUNS = {Kind.checkpoint: "a checkpoint", Kind.fusion_graph: "an exported fusion graph", Kind.onnx: "an ONNX graph",
          Kind.engine: "an engine plan", Kind.extractor_engine: "an extractor engine plan"}  # fmt: skip


SUFFIXES = {".safetensors": Kind.checkpoint, ".onnx": Kind.onnx, ".plan": Kind.engine, ".engine": Kind.engine}
DEFAULT_BACKEND = {Kind.checkpoint: Backend.ort, Kind.fusion_graph: Backend.ort, Kind.onnx: Backend.ort,
                   Kind.engine: Backend.trt, Kind.extractor_engine: Backend.trt}  # fmt: skip


def onnx_path_for(checkpoint_path: Path, precision: str, out_dir: Path | None = None) -> Path:
    """Where ``abaw-rt export`` writes a checkpoint's graph: ``<out_dir>/<stem>.<precision>.onnx``."""
    checkpoint_path = Path(checkpoint_path)
    folder = Path(out_dir) if out_dir is not None else checkpoint_path.parent
    return folder / f"{checkpoint_path.stem}.{precision}.onnx"


@dataclass(frozen=True)
class Artefact:
    """A model file and what it says about itself.

    Args:
        path: the file.
        kind: what it is.
        header: the fusion model it holds (config, labels, window, stride); None for a generic ONNX graph.
        precision: the compute precision ("fp32", "fp16", ...); None for a generic ONNX graph.
        source_sha256: provenance: the sha256 of the checkpoint it was made from (a checkpoint: its own).
        detail: the kind's own record: the loaded ``Checkpoint``, the graph's ``OnnxInfo`` or the engine's
            ``EngineSidecar`` (None for a generic graph).
    """

    path: Path
    kind: Kind
    header: object | None = None  # CheckpointHeader
    precision: str | None = None
    source_sha256: str | None = None
    detail: object | None = field(default=None, repr=False)

    @functools.cached_property
    def sha256(self) -> str:
        """The file's own sha256 (read once, in chunks)."""
        if self.kind is Kind.checkpoint and getattr(self.detail, "sha256", None):
            return self.detail.sha256
        from abaw_rt.io import file_sha256

        return file_sha256(self.path)

    def describe(self) -> str:
        extra = f" ({self.precision})" if self.precision else ""
        return f"{self.kind.noun.split(' ', 1)[1]} '{self.path}'{extra}"


def artefact_kind(path: Path) -> Kind:
    """The kind a file name promises; ``open_artefact`` then checks the file says the same."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise AbawRtError(
            f"'{path}': expected a checkpoint (.safetensors), an ONNX graph (.onnx) or an engine plan (.plan)"
        )
    return kind


def open_artefact(path: Path | str, kind: Kind | None = None) -> Artefact:
    """Read what a model file says about itself (header, precision, provenance), without loading a runtime.

    Args:
        path: a checkpoint, an ONNX graph or an engine plan.
        kind: the kind the caller needs; AbawRtError when the file is another kind. ``Kind.onnx`` takes any
            ``.onnx`` file as a plain graph (detectors, extractors) without reading its metadata.

    Raises:
        AbawRtError: a missing or unreadable file, or one of another kind than asked.
    """
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"'{path}': no such file")
    if kind is Kind.onnx and artefact_kind(path) is Kind.onnx:
        return Artefact(path, Kind.onnx)  # run as a plain graph: its specs come from the session, nothing to read
    found = _READERS[artefact_kind(path)](path)
    if kind is Kind.fusion_graph and found.kind is Kind.onnx:
        from abaw_rt.graphs.metadata import info_from_props

        info_from_props(found.detail, str(path))  # raises, naming the metadata an exported graph carries
    if kind is not None and found.kind is not kind:
        raise AbawRtError(f"'{path}' is {found.kind.noun}, expected {kind.noun}")
    return found


def _read_checkpoint(path: Path) -> Artefact:
    from abaw_rt.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return Artefact(path, Kind.checkpoint, ckpt.header, "fp32", ckpt.sha256, ckpt)


def _read_onnx(path: Path) -> Artefact:
    """A fusion graph carries the header ``abaw-rt export`` writes; any other graph is a plain one, even with
    other ``abaw_rt.*`` keys (``abaw-rt quantize`` stamps an extractor graph's precision and search record)."""
    from abaw_rt.graphs.metadata import PREFIX, read_metadata_props, info_from_props

    props = read_metadata_props(path)
    if PREFIX + "header" not in props:
        return Artefact(path, Kind.onnx, detail=props)
    info = info_from_props(props, str(path))
    return Artefact(path, Kind.fusion_graph, info.header, info.precision, info.checkpoint_sha256, info)


def _read_engine(path: Path) -> Artefact:
    from abaw_rt.trt.sidecar import read_sidecar

    sidecar = read_sidecar(path)
    if not sidecar.is_fusion:  # built from an extractor graph: its provenance is that graph's sha256
        sidecar.io_specs(f"engine sidecar of '{path}'")  # refuses a sidecar that records no interface
        return Artefact(path, Kind.extractor_engine, None, sidecar.precision, sidecar.onnx_sha256, sidecar)
    header = sidecar.onnx_info(source=f"engine sidecar of '{path}'").header
    return Artefact(path, Kind.engine, header, sidecar.precision, sidecar.checkpoint_sha256, sidecar)


_READERS: dict[Kind, Callable[[Path], Artefact]] = {
    Kind.checkpoint: _read_checkpoint,
    Kind.onnx: _read_onnx,
    Kind.engine: _read_engine,
}


def check_provenance(artefact: Artefact, checkpoint: Artefact) -> None:
    """A graph or engine must have been made from this very checkpoint (sha256 recorded at export)."""
    if artefact.source_sha256 == checkpoint.sha256:
        return
    got = (artefact.source_sha256 or "none")[:12]
    graph = artefact.kind is not Kind.engine
    made = "was exported from another checkpoint" if graph else "was built from another checkpoint's graph"
    how = "re-export it" if graph else "re-export and rebuild it"
    raise AbawRtError(
        f"{artefact.describe()} {made} (sha256 {got}…, '{checkpoint.path}' is {checkpoint.sha256[:12]}…); "
        f"{how}: abaw-rt export {checkpoint.path}" + ("" if graph else " --to trt")
    )


def check_engine_graph(engine: Artefact, onnx: Path, what: str = "engine") -> None:
    """An extractor engine must have been built from this very graph (its sidecar records the graph's sha256)."""
    import dataclasses

    from abaw_rt.io import file_sha256

    digest = file_sha256(onnx)
    if engine.source_sha256 == digest:
        return
    rebuild = dataclasses.replace(engine.detail, onnx_path=str(onnx)).rebuild_command(engine.path)
    raise AbawRtError(
        f"{what}: {engine.describe()} was built from another graph (sha256 {(engine.source_sha256 or 'none')[:12]}…, "
        f"'{onnx}' is {digest[:12]}…); rebuild it: {rebuild}"
    )


@dataclass(frozen=True)
class RunOptions:
    """How to run an artefact; every backend takes what applies to it and refuses what cannot apply."""

    precision: str | None = None  # None: the artefact's own; a checkpoint on ort picks its exported graph
    device: str = "cpu"  # "cpu" or "cuda" ("cuda:N" for torch and trt)
    threads: int | None = None  # intra-op CPU threads (None: the backend's default)
    cuda_graphs: bool = False  # torch (CUDA) and trt: capture and replay one CUDA graph per shape bucket
    provider: str | None = None  # ort: "cpu", "cuda" or "tensorrt" (None: from the device)
    what: str = "ONNX"  # how error messages name a generic graph ("extractor 'fer'")
    spin: bool = False  # ort, generic graphs: idle intra-op threads spin between calls
    onnx: Path | None = None  # trt: the graph to check the engine against (default: the path its sidecar records)


def _provider(opts: RunOptions) -> str:
    return opts.provider or ("cpu" if opts.device == "cpu" else "cuda")


def _no_cuda_graphs(artefact: Artefact, opts: RunOptions, backend: str) -> None:
    if opts.cuda_graphs:
        raise AbawRtError(f"{artefact.describe()}: CUDA graphs are not available with --backend {backend}")


def _torch_from_checkpoint(artefact: Artefact, opts: RunOptions) -> Runner:
    return runner_class("torch")(
        artefact.detail, device=opts.device, precision=opts.precision or "fp32", threads=opts.threads,
        cuda_graphs=opts.cuda_graphs,
    )  # fmt: skip


def _ort_from_checkpoint(artefact: Artefact, opts: RunOptions) -> Runner:
    """A checkpoint on onnxruntime runs its exported graph (``abaw-rt export``), checked to be its own."""
    precision = opts.precision or "fp32"
    graph_path = onnx_path_for(artefact.path, precision)
    if not graph_path.is_file():
        raise AbawRtError(
            f"checkpoint '{artefact.path}' has no exported {precision} graph at '{graph_path}': run "
            f"'abaw-rt export {artefact.path} -p {precision}', or use --backend torch"
        )
    graph = open_artefact(graph_path, Kind.fusion_graph)
    check_provenance(graph, artefact)
    return _ort_from_graph(graph, opts)


def _ort_from_graph(artefact: Artefact, opts: RunOptions) -> Runner:
    _no_cuda_graphs(artefact, opts, "ort")
    runner = runner_class("ort")(artefact.path, provider=_provider(opts), threads=opts.threads)
    _check_precision(artefact, opts, runner.precision)
    return runner


def _ort_from_onnx(artefact: Artefact, opts: RunOptions) -> Runner:
    _no_cuda_graphs(artefact, opts, "ort")
    from abaw_rt.runners.onnx_generic import OnnxModelRunner

    return OnnxModelRunner(artefact.path, provider=_provider(opts), threads=opts.threads, what=opts.what,
                           spin=opts.spin)  # fmt: skip


def _trt_from_engine(artefact: Artefact, opts: RunOptions) -> Runner:
    device = opts.device if opts.device.startswith("cuda") else "cuda"
    runner = runner_class("trt")(artefact.path, device=device, cuda_graphs=opts.cuda_graphs)
    _check_precision(artefact, opts, runner.precision)
    return runner


def _trt_from_extractor_engine(artefact: Artefact, opts: RunOptions) -> Runner:
    """An extractor engine: TrtRunner with the interface its sidecar records, checked against ``opts.onnx``."""
    device = opts.device if opts.device.startswith("cuda") else "cuda"
    runner = runner_class("trt")(artefact.path, device=device, onnx=opts.onnx, cuda_graphs=opts.cuda_graphs,
                                 what=opts.what)  # fmt: skip
    _check_precision(artefact, opts, runner.precision)
    return runner


def _check_precision(artefact: Artefact, opts: RunOptions, runs_at: str) -> None:
    if opts.precision is not None and opts.precision != runs_at:
        raise AbawRtError(f"{artefact.describe()} runs in {runs_at}, but precision {opts.precision} was asked")


# (kind, backend) -> the one factory for it. A pair that is not here cannot run, and says why.
RUNNER_FACTORIES: dict[tuple[Kind, Backend], Callable[[Artefact, RunOptions], Runner]] = {
    (Kind.checkpoint, Backend.torch): _torch_from_checkpoint,
    (Kind.checkpoint, Backend.ort): _ort_from_checkpoint,
    (Kind.fusion_graph, Backend.ort): _ort_from_graph,
    (Kind.onnx, Backend.ort): _ort_from_onnx,
    (Kind.engine, Backend.trt): _trt_from_engine,
    (Kind.extractor_engine, Backend.trt): _trt_from_extractor_engine,
}
_WHY_NOT = {
    (Kind.checkpoint, Backend.trt): "build an engine first ('abaw-rt export CKPT --to trt' or 'abaw-rt build') "
    "and pass the plan (--engine PLAN)",
    (Kind.fusion_graph, Backend.torch): "it runs with --backend ort (the torch backend runs the checkpoint it "
    "was exported from)",
    (Kind.fusion_graph, Backend.trt): "build an engine from it first ('abaw-rt build GRAPH') and pass the plan",
    (Kind.engine, Backend.ort): "a TensorRT plan runs with --backend trt",
    (Kind.engine, Backend.torch): "a TensorRT plan runs with --backend trt",
    (Kind.extractor_engine, Backend.ort): "a TensorRT plan runs with --backend trt (onnxruntime runs its graph)",
    (Kind.extractor_engine, Backend.torch): "a TensorRT plan runs with --backend trt",
}


def open_runner(
    artefact: Artefact | Path | str, backend: Backend | str | None = None, options: RunOptions = RunOptions()
) -> Runner:
    """The runner for an artefact on a backend (None: ort, or trt for an engine). Not yet active.

    Raises:
        AbawRtError: a backend that cannot run this kind of file (saying what to do instead), a precision the
            artefact does not run in, a graph exported from another checkpoint, a missing export.
    """
    if not isinstance(artefact, Artefact):
        artefact = open_artefact(artefact)
    if options.device.split(":")[0] not in ("cpu", "cuda"):
        raise AbawRtError(f"device {options.device!r}: expected 'cpu' or 'cuda'")
    chosen = Backend(backend) if backend is not None else DEFAULT_BACKEND[artefact.kind]
    factory = RUNNER_FACTORIES.get((artefact.kind, chosen))
    if factory is None:
        why = _WHY_NOT.get((artefact.kind, chosen), f"no {chosen.value} runner for {artefact.kind.noun}")
        raise AbawRtError(f"{artefact.describe()} cannot run with backend {chosen.value}: {why}")
    runner = factory(artefact, options)
    runner.artefact = artefact
    return runner


def open_extractor_engine(plan: Path | str, onnx: Path | None = None, what: str = "extractor", hint: str = "") -> Runner:
    """An extractor engine's TrtRunner (not yet active), checked against ``onnx`` (default: the graph its sidecar
    records). Without a CUDA device it refuses before TensorRT is imported (tensorrt-lean crashes without one).

    Raises:
        AbawRtError: not an extractor engine (or no sidecar), no CUDA GPU (``hint`` says what to do instead),
            another TensorRT or GPU, a plan or graph that changed since the build.
    """
    from abaw_rt.cuda.gpu import cuda_devices

    engine = open_artefact(plan, Kind.extractor_engine)
    if not cuda_devices():
        raise AbawRtError(f"{what}: engine '{plan}' needs a CUDA GPU and this machine has none" + (f"; {hint}" if hint else ""))
    return open_runner(engine, Backend.trt, RunOptions(device="cuda", onnx=onnx, what=what))


def open_graph(path: Path | str, provider: str = "cpu", threads: int | None = None, what: str = "ONNX",
               spin: bool = False) -> Runner:  # fmt: skip
    """A plain graph (detector, extractor) on onnxruntime: ``open_runner`` for ``Kind.onnx``, named ``what``."""
    if not Path(path).is_file():
        raise AbawRtError(f"{what} '{path}': no such file")
    options = RunOptions(provider=provider, threads=threads, what=what, spin=spin)
    return open_runner(open_artefact(path, Kind.onnx), Backend.ort, options)
