"""TensorRT runtime layer: the JSON sidecar beside each engine plan, and the refusal of an engine that does not fit.

An engine is the plain plan bytes (loadable by trtexec and other tools) plus ``<plan stem>.json``:
TensorRT version, GPU name and compute capability, precision, profiles and their shapes, ONNX and
checkpoint sha256, plan sha256, package version, build flags, date, and the ONNX's own abaw-rt
metadata (so a runner knows the model's interface without the graph). A plan only runs with the
TensorRT version and the GPU it was built for; the runner refuses any other and prints the
command that rebuilds it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from abaw_rt import safe_json
from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes, file_sha256
from abaw_rt.specs import TensorSpec
from abaw_rt.trt.compat import TrtVersion
from abaw_rt.trt.profiles import ProfileSpec

SIDECAR_FORMAT = "abaw-rt-engine"
SIDECAR_VERSION = 1


def sidecar_path_for(plan: Path) -> Path:
    """``engines/demo.fp16.h100.plan`` -> ``engines/demo.fp16.h100.json``."""
    return Path(plan).with_suffix(".json")


@dataclass(frozen=True)
class RuntimeInfo:
    """What the machine about to run an engine has."""

    tensorrt_version: str  # tensorrt.__version__
    gpu_name: str  # CUDA device name
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine plan was built from, with what, and for which machine."""

    tensorrt_version: str  # exact TensorRT version that built the plan; plans are not portable across versions
    gpu_name: str  # GPU the plan was built and tuned on
    compute_capability: str  # its compute capability ("9.0"); plans are not portable across them
    precision: str  # "fp32", "fp16" or "int8": what the engine computes in (I/O stays float32)
    strongly_typed: bool  # built as a strongly typed network (precision from the ONNX graph's types)
    profiles: tuple[ProfileSpec, ...]  # optimisation profiles, in engine order (index = profile number)
    onnx_path: str  # the graph it was built from (absolute, as on the build machine)
    onnx_sha256: str  # that graph's sha256: a runner refuses the engine when the graph beside it changed
    checkpoint_sha256: str | None  # the checkpoint the graph was exported from (None: an extractor graph)
    plan_sha256: str  # the plan bytes this sidecar describes
    package_version: str  # abaw-rt version that built it
    created: str  # ISO 8601 UTC build time
    onnx_metadata: Mapping[str, str] = field(default_factory=dict)  # the graph's abaw_rt.* metadata_props
    build_flags: Mapping[str, Any] = field(default_factory=dict)  # workspace, optimisation level, fp16 flag, ...
    # An extractor graph's interface as built (batch axis "batch", the other axes fixed); empty for the fusion
    # model, whose interface is in ``onnx_metadata``.
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def is_fusion(self) -> bool:
        """Built from a fusion graph: decided by the graph's own metadata (``abaw-rt export`` writes a header)."""
        from abaw_rt.graphs.metadata import PREFIX

        return PREFIX + "header" in self.onnx_metadata

    def onnx_info(self, source: str = "engine"):
        """The model interface (header, input and output specs) recorded from the ONNX metadata."""
        from abaw_rt.graphs.metadata import info_from_props

        return info_from_props(self.onnx_metadata, source)

    def io_specs(self, source: str = "engine") -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """(inputs, outputs): the fusion model's from its metadata, an extractor's as recorded at build time."""
        if self.is_fusion:
            info = self.onnx_info(source)
            return info.inputs, info.outputs
        if not self.inputs or not self.outputs:
            raise AbawRtError(f"{source}: records neither a fusion model's metadata nor an extractor's inputs/outputs")
        return self.inputs, self.outputs

    def profile_shapes(self) -> dict[str, dict[str, dict[str, list[int]]]]:
        """{profile: {input: {"min": shape, "opt": shape, "max": shape}}}, for people and other tools."""
        try:
            inputs = self.io_specs()[0]
        except AbawRtError:
            return {}
        return {
            p.name: {name: dict(zip(("min", "opt", "max"), map(list, s))) for name, s in p.shapes(inputs).items()}
            for p in self.profiles
        }

    def to_dict(self) -> dict:
        return {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_VERSION,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "profiles": [p.to_dict() for p in self.profiles],
            "profile_shapes": self.profile_shapes(),
            "onnx_path": self.onnx_path,
            "onnx_sha256": self.onnx_sha256,
            "checkpoint_sha256": self.checkpoint_sha256,
            "plan_sha256": self.plan_sha256,
            "package_version": self.package_version,
            "created": self.created,
            "build_flags": dict(self.build_flags),
            "onnx_metadata": dict(self.onnx_metadata),
            **({"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
               if self.inputs else {}),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping, source: str) -> "EngineSidecar":
        if not isinstance(d, Mapping) or d.get("format") != SIDECAR_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise AbawRtError(f"engine sidecar '{source}': format {got!r}, expected {SIDECAR_FORMAT!r}")
        if d.get("format_version") != SIDECAR_VERSION:
            raise AbawRtError(
                f"engine sidecar '{source}': format version {d.get('format_version')!r}, "
                f"this abaw-rt reads {SIDECAR_VERSION}"
            )
        try:
            return cls(
                tensorrt_version=str(d["tensorrt_version"]),
                gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                precision=str(d["precision"]),
                strongly_typed=bool(d["strongly_typed"]),
                profiles=tuple(ProfileSpec.from_dict(p, f"engine sidecar '{source}' profile") for p in d["profiles"]),
                onnx_path=str(d["onnx_path"]),
                onnx_sha256=str(d["onnx_sha256"]),
                checkpoint_sha256=None if d["checkpoint_sha256"] is None else str(d["checkpoint_sha256"]),
                plan_sha256=str(d["plan_sha256"]),
                package_version=str(d["package_version"]),
                created=str(d["created"]),
                onnx_metadata=dict(d.get("onnx_metadata", {})),
                build_flags=dict(d.get("build_flags", {})),
                inputs=tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ())),
                outputs=tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ())),
            )
        except KeyError as exc:
            raise AbawRtError(f"engine sidecar '{source}': lacks {exc}") from None
        except (TypeError, ValueError) as exc:
            raise AbawRtError(f"engine sidecar '{source}': unreadable field ({exc})") from None

    def rebuild_command(self, plan: Path | None = None) -> str:
        """The ``abaw-rt build`` command that makes this engine again on the current machine."""
        flags = self.build_flags
        parts = ["abaw-rt", "build", self.onnx_path, "--precision", self.precision]
        if flags.get("recipe"):
            parts += ["--recipe", str(flags["recipe"])]
        if not self.is_fusion:  # an extractor: one profile over the batch axis, fixed sizes given at build time
            parts += ["--batch", ":".join(map(str, self.profiles[0].batch.as_list()))]
            for name, dims in (flags.get("input_shapes") or {}).items():
                parts += ["--shape", f"{name}:{','.join(map(str, dims))}"]
        elif not flags.get("recipe"):
            for p in self.profiles:
                parts += ["--profile", p.cli()]
        if not flags.get("recipe"):
            if flags.get("workspace_mib"):
                parts += ["--workspace-mib", str(flags["workspace_mib"])]
            if flags.get("optimization_level") is not None:
                parts += ["--opt-level", str(flags["optimization_level"])]
        if plan is not None:
            parts += ["--out", str(plan)]
        return shlex.join(parts)


def write_sidecar(plan: Path, sidecar: EngineSidecar) -> Path:
    """Write ``<plan stem>.json`` atomically; returns its path."""
    path = sidecar_path_for(plan)
    atomic_write_bytes(path, (json.dumps(sidecar.to_dict(), indent=2) + "\n").encode())
    return path


def read_sidecar(plan: Path) -> EngineSidecar:
    """Read an engine's sidecar.

    Raises:
        AbawRtError: the plan or its sidecar is missing, or the sidecar is not one abaw-rt wrote.
    """
    plan = Path(plan)
    if not plan.is_file():
        raise AbawRtError(f"engine '{plan}': no such file")
    path = sidecar_path_for(plan)
    if not path.is_file():
        raise AbawRtError(
            f"engine '{plan}': its sidecar '{path}' is missing; abaw-rt runs only engines that carry one "
            "(build it with: abaw-rt build ONNX --out PLAN)"
        )
    try:
        if path.stat().st_size > safe_json.DEFAULT.max_bytes:  # bounded before it is read (hostile sidecars)
            raise AbawRtError(f"engine sidecar '{path}': not readable JSON ({path.stat().st_size} bytes)")
        data = safe_json.loads(path.read_bytes(), f"engine sidecar '{path}'")
    except OSError as exc:
        raise AbawRtError(f"engine sidecar '{path}': not readable JSON ({exc})") from None
    return EngineSidecar.from_dict(data, str(path))


def check_sidecar(sidecar: EngineSidecar, plan: Path, runtime: RuntimeInfo, onnx: Path | None = None) -> bool:
    """Refuse an engine that would not run, or not run the model it claims, on this machine.

    Checks, in order: the plan bytes are the ones the sidecar describes; the running TensorRT is
    the exact version that built it; the GPU has the same compute capability and name; the ONNX
    graph (``onnx``, else the path recorded at build time when it still exists) has the recorded
    sha256.

    Returns:
        Whether an ONNX graph was found and checked.

    Raises:
        AbawRtError: the first mismatch, with the command that rebuilds the engine.
    """
    plan = Path(plan)
    rebuild = sidecar.rebuild_command(plan)
    if file_sha256(plan) != sidecar.plan_sha256:
        raise AbawRtError(
            f"engine '{plan}': the plan's sha256 differs from its sidecar's (replaced without its sidecar?); "
            f"rebuild it: {rebuild}"
        )
    built, running = TrtVersion.parse(sidecar.tensorrt_version), TrtVersion.parse(runtime.tensorrt_version)
    if built != running:
        raise AbawRtError(
            f"engine '{plan}': built with TensorRT {built}, this machine runs TensorRT {running} "
            f"(plans only load in the version that built them); rebuild it: {rebuild}"
        )
    if sidecar.compute_capability != runtime.compute_capability or sidecar.gpu_name != runtime.gpu_name:
        raise AbawRtError(
            f"engine '{plan}': built for {sidecar.gpu_name} (compute capability {sidecar.compute_capability}), "
            f"this GPU is {runtime.gpu_name} ({runtime.compute_capability}); rebuild it: {rebuild}"
        )
    graph = Path(onnx) if onnx is not None else Path(sidecar.onnx_path)
    if onnx is not None and not graph.is_file():
        raise AbawRtError(f"ONNX '{graph}': no such file (given to check engine '{plan}')")
    if not graph.is_file():
        return False
    digest = file_sha256(graph)
    if digest != sidecar.onnx_sha256:
        raise AbawRtError(
            f"engine '{plan}': built from ONNX sha256 {sidecar.onnx_sha256[:12]}…, but '{graph}' is now "
            f"{digest[:12]}… (re-exported since?); rebuild it: {rebuild}"
        )
    return True
