"""Export layer: a Triton Inference Server model repository for an exported fusion graph or engine plan.

``write_triton_model(artefact, repo, cfg)`` writes ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.onnx``
(or ``model.plan``). The tensors come from the artefact's own specs (``OnnxInfo.inputs`` / ``outputs``, declared
once in ``ModelConfig``): the batch axis becomes ``max_batch_size``, the time axis ``-1``, and ``lengths`` (one
value per sequence) ``dims: [1]`` reshaped to a scalar, as Triton's documentation asks for a batch-only tensor.
The text is checked against Triton's own model-configuration protobuf (``tritonclient``'s ``model_config_pb2``)
before anything is written, and the model folder is written beside its final place and renamed into it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from abaw_rt.errors import AbawRtError, missing_module_message
from abaw_rt.specs import BATCH, TIME, TensorSpec
from abaw_rt.vocab import TritonKind

DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "engine": ("tensorrt_plan", "model.plan")}


@dataclass(frozen=True)
class TritonConfig:
    """How Triton serves one model.

    Args:
        name: the model's name in the repository (default: the artefact's file stem, dots as underscores).
        max_batch_size: the largest batch the dynamic batcher forms (an engine's profiles cap it).
        instances: model instances per device (instance_group count): more overlap requests on one GPU.
        kind: gpu or cpu instances (an engine plan runs on a GPU only).
        tensorrt_accelerator: ONNX on a GPU: let onnxruntime's TensorRT execution provider compile the graph.
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch (microseconds).
    """

    name: str | None = None
    max_batch_size: int = 8
    instances: int = 1
    kind: TritonKind = TritonKind.gpu
    tensorrt_accelerator: bool = True
    max_queue_delay_us: int = 100

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise AbawRtError(f"--triton-max-batch {self.max_batch_size}: expected at least 1")
        if self.instances < 1:
            raise AbawRtError(f"--triton-instances {self.instances}: expected at least 1")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise AbawRtError(f"--triton-name '{self.name}': expected a folder name (no '/', not starting with '.')")


@lru_cache(maxsize=1)
def model_config_pb2():
    """Triton's ``model_config_pb2`` from the ``tritonclient`` package.

    Loaded from its file: ``tritonclient.grpc``'s ``__init__`` needs grpcio (``tritonclient[grpc]``), whose wheels
    pin an older protobuf; the schema module itself needs only protobuf.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise AbawRtError(missing_module_message("tritonclient", "triton", "Triton's model-configuration schema"))
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise AbawRtError(f"'{path}': not found; tritonclient {path.parent.parent} lacks the model-config schema")
    module_spec = importlib.util.spec_from_file_location("abaw_rt_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _dims(spec: TensorSpec) -> tuple[list[int], bool]:
    """Triton dims without the batch axis (time -> -1); True when a batch-only tensor needs reshape to []."""
    if not spec.shape or spec.shape[0] != BATCH:
        raise AbawRtError(f"tensor '{spec.name}' {spec.describe()}: expected the batch axis first")
    dims = [-1 if d == TIME else d for d in spec.shape[1:]]
    if any(not isinstance(d, int) for d in dims):
        raise AbawRtError(f"tensor '{spec.name}' {spec.describe()}: only batch and time may be symbolic for Triton")
    return (dims, False) if dims else ([1], True)


def _tensor_block(spec: TensorSpec) -> str:
    if spec.dtype not in DATA_TYPES:
        raise AbawRtError(f"tensor '{spec.name}': dtype {spec.dtype} has no Triton type (known: {sorted(DATA_TYPES)})")
    dims, scalar = _dims(spec)
    lines = [f'    name: "{spec.name}"', f"    data_type: {DATA_TYPES[spec.dtype]}", f"    dims: {dims}"]
    if scalar:
        lines.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_text(
    name: str, platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], cfg: TritonConfig,
    precision: str = "fp32",
) -> str:
    """The ``config.pbtxt`` text for one model (protobuf text format of ``inference.ModelConfig``)."""
    kind = "KIND_GPU" if cfg.kind is TritonKind.gpu else "KIND_CPU"
    parts = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {cfg.max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {cfg.max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {cfg.instances}\n    kind: {kind}\n  }}\n]",
    ]
    if platform == PLATFORMS["onnx"][0] and cfg.kind is TritonKind.gpu and cfg.tensorrt_accelerator:
        mode = "FP16" if precision == "fp16" else "FP32"
        parts.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            f'      parameters {{ key: "precision_mode" value: "{mode}" }}\n'
            '      parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
            "    } ]\n  }\n}"
        )
    return "\n".join(parts) + "\n"


def parse_config(text: str, source: str = "config.pbtxt"):
    """Parse config text into Triton's ``ModelConfig`` message; AbawRtError naming the problem if it does not."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise AbawRtError(f"'{source}': not a valid Triton model configuration ({exc})") from None


def check_repo(repo: Path) -> None:
    """A repository is a folder (made if missing); AbawRtError when the path is a file."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise AbawRtError(f"--triton '{repo}': is a file, expected a folder for the Triton model repository")


def write_triton_model(artefact, repo: Path, cfg: TritonConfig = TritonConfig()) -> Path:
    """Write one model folder of a Triton repository from an exported fusion graph or an engine plan.

    Args:
        artefact: an ``abaw_rt.artefacts.Artefact`` of kind fusion-graph or engine.
        repo: the repository folder (made if missing; other models in it are left alone).
        cfg: batching, instances and device.

    Returns:
        The model folder ``repo/<name>``.
    """
    kind = artefact.kind.value
    if kind not in ("fusion-graph", "engine"):
        raise AbawRtError(f"'{artefact.path}' is {artefact.kind.noun}; Triton export needs a fusion graph or engine")
    info = artefact.detail if kind == "fusion-graph" else artefact.detail.onnx_info(f"engine sidecar of '{artefact.path}'")
    platform, filename = PLATFORMS["onnx" if kind == "fusion-graph" else "engine"]
    if kind == "engine":
        cfg = _engine_config(artefact.detail, cfg)
    name = cfg.name or artefact.path.stem.replace(".", "_")
    text = config_text(name, platform, info.inputs, info.outputs, cfg, artefact.precision or "fp32")
    parse_config(text, f"{name}/config.pbtxt")  # check against Triton's schema before writing
    check_repo(repo)
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=repo))
    try:
        (staged / "1").mkdir()
        (staged / "config.pbtxt").write_text(text, encoding="utf-8")
        shutil.copyfile(artefact.path, staged / "1" / filename)
        for extra in _external_files(artefact):
            shutil.copyfile(artefact.path.parent / extra, staged / "1" / extra)
        os.chmod(staged, 0o755)
        return _publish(staged, repo / name)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _engine_config(sidecar, cfg: TritonConfig) -> TritonConfig:
    """An engine runs on a GPU only, and no batch above its profiles' largest."""
    if cfg.kind is not TritonKind.gpu:
        raise AbawRtError("--triton-kind cpu: an engine plan runs on a GPU only; export the ONNX graph instead")
    top = max((p.batch.max for p in sidecar.profiles), default=cfg.max_batch_size)
    return dataclasses.replace(cfg, max_batch_size=min(cfg.max_batch_size, top))


def _external_files(artefact) -> list[str]:
    """The graph's external-data files (copied beside model.onnx under their own names: the graph names them)."""
    if artefact.kind.value != "fusion-graph":
        return []
    from abaw_rt.graphs.protolite import read_model_summary

    return sorted({ref.location for ref in read_model_summary(artefact.path, external=True).external})


def _publish(staged: Path, target: Path) -> Path:
    """Rename the staged folder into place; a model folder already there is replaced whole, never merged."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
