"""Engine build layer: ONNX graph -> serialized TensorRT engine (plain plan bytes) plus its JSON sidecar.

Precision (see ``plan_build``): TensorRT 11 builds strongly typed networks only, so an FP16 engine
comes from the FP16 ONNX graph (``abaw-rt export -p fp16``: FP16 math, LayerNorm/softmax in FP32
with explicit casts). TensorRT 10 builds that graph strongly typed too, or an FP32 graph with the
FP16 builder flag and LayerNorm, softmax and reductions constrained to FP32. TF32 is off so FP32
engines match torch to FP32 tolerances.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from abaw_rt import __version__
from abaw_rt.engines.recipes import EngineRecipe
from abaw_rt.errors import AbawRtError
from abaw_rt.trt.compat import TrtVersion, import_tensorrt, make_logger
from abaw_rt.trt.profiles import ProfileSpec, default_profiles, validate_profiles

ENGINES_DIR = Path("engines")
DEFAULT_TIMING_CACHE = ENGINES_DIR / "timing.cache"


@dataclass(frozen=True)
class BuildConfig:
    """How to build one engine; the CLI fills it from options or a recipe."""

    profiles: tuple[ProfileSpec, ...] | None = None  # None: default_profiles(window) of the graph's checkpoint
    precision: str | None = None  # "fp16" or "fp32"; None: the graph's own precision
    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default
    optimization_level: int = 3  # builder optimisation level 0..5: higher builds slower, may run faster
    timing_cache: Path | None = DEFAULT_TIMING_CACHE  # read before and saved after the build; None: no cache
    out: Path | None = None  # plan path; None: engines/<onnx stem>.<gpu>.plan
    recipe: str | None = None  # name of the recipe the profiles came from (recorded for the rebuild command)
    device: int = 0  # CUDA device to build on (the engine is tuned for it)
    verbose: bool = False  # TensorRT's verbose log

    @classmethod
    def from_recipe(cls, recipe: EngineRecipe, /, **overrides) -> "BuildConfig":
        base = dict(
            profiles=recipe.profiles,
            workspace_mib=recipe.workspace_mib,
            optimization_level=recipe.optimization_level,
            recipe=recipe.name,
        )
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class BuildPlan:
    """How a graph of one precision becomes an engine of another, on one TensorRT version."""

    precision: str  # engine precision
    strongly_typed: bool  # types from the graph (TensorRT 11 always; 10 for an FP16 graph)
    fp16_flag: bool  # TensorRT 10 only: FP16 builder flag on an FP32 graph...
    constrain_fp32: bool  # ...with LayerNorm, softmax and reductions constrained to FP32


def plan_build(onnx_precision: str, precision: str, version: TrtVersion) -> BuildPlan:
    """Decide how to build; pure logic, no TensorRT needed.

    Raises:
        AbawRtError: a combination the TensorRT version cannot build, with the command to use instead.
    """
    if precision not in ("fp16", "fp32") or onnx_precision not in ("fp16", "fp32"):
        raise AbawRtError(f"precision {precision!r} from a {onnx_precision!r} graph: expected fp16 or fp32")
    if precision == "fp32" and onnx_precision == "fp16":
        raise AbawRtError(
            "an fp32 engine needs the fp32 graph (this one computes in fp16): "
            "abaw-rt export CHECKPOINT -p fp32, then abaw-rt build CHECKPOINT_STEM.fp32.onnx"
        )
    if precision == "fp16" and onnx_precision == "fp32":
        if version.strongly_typed_only:
            raise AbawRtError(
                f"TensorRT {version} builds strongly typed networks only, so an fp16 engine needs the fp16 graph: "
                "abaw-rt export CHECKPOINT -p fp16, then abaw-rt build CHECKPOINT_STEM.fp16.onnx"
            )
        return BuildPlan("fp16", strongly_typed=False, fp16_flag=True, constrain_fp32=True)
    if version.strongly_typed_only or precision == "fp16":
        return BuildPlan(precision, strongly_typed=True, fp16_flag=False, constrain_fp32=False)
    return BuildPlan("fp32", strongly_typed=False, fp16_flag=False, constrain_fp32=False)


def default_engine_path(onnx: Path, gpu_slug: str) -> Path:
    """``engines/<onnx stem>.<gpu>.plan``, e.g. ``engines/demo.fp16.nvidia-h100-80gb-hbm3.plan``."""
    return ENGINES_DIR / f"{Path(onnx).stem}.{gpu_slug}.plan"


def build_engine(onnx: Path, cfg: BuildConfig = BuildConfig()) -> Path:
    """Build a TensorRT engine from an ``abaw-rt export`` graph; writes the plan and its JSON sidecar.

    Args:
        onnx: the ``.onnx`` graph (its abaw-rt metadata gives the input specs the profiles are made from).
        cfg: profiles, precision, workspace, optimisation level, timing cache, output path.

    Returns:
        The plan's path (its sidecar is ``<plan stem>.json``).

    Raises:
        AbawRtError: no CUDA device, no TensorRT, an unsupported version, a graph TensorRT cannot
            parse, profiles that do not cover 1..w, or a failed build. Nothing is left behind on failure.
    """
    from abaw_rt.graphs.metadata import read_onnx_info
    from abaw_rt.graphs.safety import check_external_data
    from abaw_rt.io import atomic_write_bytes, bytes_sha256, file_sha256
    from abaw_rt.trt.sidecar import EngineSidecar, write_sidecar

    onnx = Path(onnx)
    info = read_onnx_info(onnx)
    check_external_data(onnx)
    precision = cfg.precision or info.precision
    profiles = validate_profiles(cfg.profiles or default_profiles(info.header.window), info.header.window)
    for p in profiles:
        p.shapes(info.inputs)  # every symbolic axis has a range
    trt, version, gpu = import_tensorrt(cfg.device)  # checks for a CUDA device before touching TensorRT
    plan = plan_build(info.precision, precision, version)
    if plan.strongly_typed and precision == "fp16":
        from abaw_rt.graphs.precision import check_fp16_graph

        check_fp16_graph(onnx)
    out = Path(cfg.out) if cfg.out is not None else default_engine_path(onnx, gpu.slug)
    if not out.parent.is_dir():
        if cfg.out is not None:
            raise AbawRtError(f"--out '{out}': folder '{out.parent}' does not exist")
        out.parent.mkdir(parents=True)

    trt_logger = make_logger(trt, cfg.verbose)
    trt_builder = trt.Builder(trt_logger)
    flags = _network_flags_trt10(trt, plan.strongly_typed) if version.major == 10 else 0
    trt_network = trt_builder.create_network(flags)
    trt_parser = trt.OnnxParser(trt_network, trt_logger)
    if not trt_parser.parse_from_file(str(onnx.resolve())):
        errors = [str(trt_parser.get_error(i).desc()) for i in range(trt_parser.num_errors)]
        raise AbawRtError(f"ONNX '{onnx}': TensorRT {version} cannot parse it ({'; '.join(errors[:3]) or 'no detail'})")
    names = [trt_network.get_input(i).name for i in range(trt_network.num_inputs)]
    if sorted(names) != sorted(s.name for s in info.inputs):
        raise AbawRtError(
            f"ONNX '{onnx}': TensorRT sees inputs {names}, the metadata declares {[s.name for s in info.inputs]}"
        )

    trt_config = trt_builder.create_builder_config()
    if cfg.workspace_mib:
        trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    trt_config.builder_optimization_level = cfg.optimization_level
    trt_config.clear_flag(trt.BuilderFlag.TF32)
    constrained = _constrain_precision_trt10(trt, trt_network, trt_config) if plan.fp16_flag else 0
    for p in profiles:
        trt_profile = trt_builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.shapes(info.inputs).items():
            trt_profile.set_shape(name, lo, opt, hi)
        trt_config.add_optimization_profile(trt_profile)
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache is not None else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        trt_cache = trt_config.create_timing_cache(blob)
        if not trt_config.set_timing_cache(trt_cache, ignore_mismatch=False):
            # A cache from another GPU or TensorRT version: start a fresh one (it is overwritten below).
            trt_cache = trt_config.create_timing_cache(b"")
            trt_config.set_timing_cache(trt_cache, ignore_mismatch=False)

    trt_serialized = trt_builder.build_serialized_network(trt_network, trt_config)
    if trt_serialized is None:
        raise AbawRtError(
            f"TensorRT {version} failed to build an engine from '{onnx}' on {gpu.name} (see the log above; "
            "a larger --workspace-mib or smaller profiles may help)"
        )
    data = bytes(trt_serialized)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(trt_config.get_timing_cache().serialize()))

    import onnx as onnx_lib

    from abaw_rt.graphs.metadata import PREFIX

    props = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
    sidecar = EngineSidecar(
        tensorrt_version=str(version),
        gpu_name=gpu.name,
        compute_capability=gpu.cc,
        precision=plan.precision,
        strongly_typed=plan.strongly_typed,
        profiles=profiles,
        onnx_path=str(onnx.resolve()),
        onnx_sha256=file_sha256(onnx),
        checkpoint_sha256=info.checkpoint_sha256,
        plan_sha256=bytes_sha256(data),
        package_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        onnx_metadata={k: v for k, v in props.items() if k.startswith(PREFIX)},
        build_flags={
            "recipe": cfg.recipe,
            "workspace_mib": cfg.workspace_mib,
            "optimization_level": cfg.optimization_level,
            "fp16_flag": plan.fp16_flag,
            "fp32_constrained_layers": constrained,
            "tf32": False,
            "timing_cache": str(cache_path) if cache_path is not None else None,
            "onnx_precision": info.precision,
        },
    )
    atomic_write_bytes(out, data)
    try:
        write_sidecar(out, sidecar)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _network_flags_trt10(trt, strongly_typed: bool) -> int:
    """TensorRT 10: networks are strongly typed only on request (11 always is and ignores the flag)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0


def _constrain_precision_trt10(trt, trt_network, trt_config) -> int:
    """TensorRT 10, FP32 graph: FP16 flag, with LayerNorm, softmax and reductions obeying FP32.

    Returns:
        The number of layers constrained.
    """
    trt_config.set_flag(trt.BuilderFlag.FP16)
    trt_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    fp32_types = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    constrained = 0
    for i in range(trt_network.num_layers):
        trt_layer = trt_network.get_layer(i)
        if trt_layer.type in fp32_types:
            trt_layer.precision = trt.float32
            for j in range(trt_layer.num_outputs):
                trt_layer.set_output_type(j, trt.float32)
            constrained += 1
    return constrained
