"""Engine build layer: ONNX graph -> serialized TensorRT engine (plain plan bytes) plus its JSON sidecar.

``build_engine`` is a chain of named steps, as Polygraphy's loaders are: read the graph, plan the
precision, parse the network, the builder config, the precision flags and constraints, the
optimisation profiles, the timing cache, serialise, and the plan with its sidecar.

Precision (see ``plan_build``): TensorRT 11 builds strongly typed networks only, so an FP16 engine
comes from the FP16 ONNX graph (``abaw-rt export -p fp16``: FP16 math, LayerNorm/softmax in FP32
with explicit casts). TensorRT 10 builds that graph strongly typed too, or an FP32 graph with the
FP16 builder flag and LayerNorm, softmax and reductions constrained to FP32. Graphs made by
``abaw-rt quantize`` (metadata ``abaw_rt.quant``): an INT8 QDQ graph builds with explicit quantisation
(TensorRT 10: INT8 + FP16 flags, LayerNorm/softmax/reductions and the nodes the search kept high
constrained to FP32; 11: strongly typed, the types from the graph); a searched FP16 graph builds on
TensorRT 10 with the FP16 flag and its kept nodes constrained to FP32 by layer name, on 11 strongly
typed. TF32 is off so FP32 engines match torch to FP32 tolerances.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abaw_rt import __version__
from abaw_rt.engines.extractor_graph import extractor_build_interface, qdq_node_count
from abaw_rt.engines.recipes import EngineRecipe, default_timing_cache
from abaw_rt.errors import AbawRtError
from abaw_rt.trt.compat import TrtVersion, import_tensorrt, make_logger
from abaw_rt.trt.profiles import AxisRange, ProfileSpec, default_profiles, validate_profiles

ENGINES_DIR = Path("engines")
DEFAULT_TIMING_CACHE = default_timing_cache()  # ~/.cache/abaw-rt/timing.cache: the same from any folder


@dataclass(frozen=True)
class BuildConfig:
    """How to build one engine; the CLI fills it from options or a recipe."""

    profiles: tuple[ProfileSpec, ...] | None = None  # None: default_profiles(window) of the graph's checkpoint
    precision: str | None = None  # "fp16", "fp32" or "int8"; None: the graph's own precision
    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default
    optimization_level: int = 3  # builder optimisation level 0..5: higher builds slower, may run faster
    timing_cache: Path | None = DEFAULT_TIMING_CACHE  # read before and saved after the build; None: no cache
    out: Path | None = None  # plan path; None: engines/<onnx stem>.<gpu>.plan
    recipe: str | None = None  # name of the recipe the profiles came from (recorded for the rebuild command)
    device: int = 0  # CUDA device to build on (the engine is tuned for it)
    verbose: bool = False  # TensorRT's verbose log
    # Extractor graphs (no abaw-rt header): one profile over the batch axis, every other axis fixed.
    batch: AxisRange | None = None  # --batch; None: the recipe's extractor_batch, else 1:16:32
    recipe_batch: AxisRange | None = None  # the recipe's extractor_batch (recipes are written for both kinds)
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # --shape: sizes after the batch axis, per input

    @classmethod
    def from_recipe(cls, recipe: EngineRecipe, /, **overrides) -> "BuildConfig":
        base = dict(
            profiles=recipe.profiles,
            workspace_mib=recipe.workspace_mib,
            optimization_level=recipe.optimization_level,
            recipe=recipe.name,
            recipe_batch=recipe.extractor_batch,
        )
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class BuildPlan:
    """How a graph of one precision becomes an engine of another, on one TensorRT version."""

    precision: str  # engine precision: fp32, fp16 or int8
    strongly_typed: bool  # types from the graph (TensorRT 11 always; 10 for an FP16 graph)
    fp16_flag: bool  # TensorRT 10 only: FP16 builder flag on an FP32 (or searched FP16 / INT8) graph...
    constrain_fp32: bool  # ...with LayerNorm, softmax, reductions and kept_fp32 constrained to FP32
    int8_flag: bool = False  # TensorRT 10 only: INT8 flag, explicit quantisation of a QDQ graph
    kept_fp32: tuple[str, ...] = ()  # node names ``abaw-rt quantize`` kept high (constrained by layer name on 10)


# How to make the graph an engine of each precision needs, per kind of graph (fusion: export; extractor: zoo fp16).
_MAKE_GRAPH = {
    False: {"fp16": "abaw-rt export CHECKPOINT -p fp16, then abaw-rt build CHECKPOINT_STEM.fp16.onnx",
            "fp32": "abaw-rt export CHECKPOINT -p fp32, then abaw-rt build CHECKPOINT_STEM.fp32.onnx"},
    True: {"fp16": "abaw-rt zoo fp16 GRAPH, then abaw-rt build GRAPH_STEM.fp16.onnx",
           "fp32": "build the fp32 graph the fp16 copy was made from"},
}  # fmt: skip


def plan_build(onnx_precision: str, precision: str, version: TrtVersion, quant: Mapping | None = None,
               qdq_nodes: int | None = None, extractor: bool = False) -> BuildPlan:  # fmt: skip
    """Decide how to build; pure logic, no TensorRT needed.

    Args:
        quant: the graph's ``abaw-rt quantize`` record (``read_quant_record``; None for other graphs).
        qdq_nodes: QuantizeLinear/DequantizeLinear nodes in the graph (None: not counted); an int8 graph needs them.
        extractor: an extractor graph (the hints name ``abaw-rt zoo fp16`` instead of ``abaw-rt export``).

    Raises:
        AbawRtError: a combination the TensorRT version cannot build, with the command to use instead.
    """
    kept = tuple((quant or {}).get("kept_high", ()))
    how = _MAKE_GRAPH[extractor]
    if "int8" in (onnx_precision, precision):
        return _plan_int8(onnx_precision, precision, version, kept, qdq_nodes)
    if precision not in ("fp16", "fp32") or onnx_precision not in ("fp16", "fp32"):
        raise AbawRtError(f"precision {precision!r} from a {onnx_precision!r} graph: expected fp16, fp32 or int8")
    if precision == "fp32" and onnx_precision == "fp16":
        raise AbawRtError(f"an fp32 engine needs the fp32 graph (this one computes in fp16): {how['fp32']}")
    if precision == "fp16" and onnx_precision == "fp32":
        if version.strongly_typed_only:
            raise AbawRtError(
                f"TensorRT {version} builds strongly typed networks only, so an fp16 engine needs the fp16 graph: "
                + how["fp16"]
            )
        return BuildPlan("fp16", strongly_typed=False, fp16_flag=True, constrain_fp32=True)
    if precision == "fp16" and quant and quant.get("mode") == "fp16" and not version.strongly_typed_only:
        # A searched FP16 graph on TensorRT 10: the kept nodes become per-layer FP32 constraints.
        return BuildPlan("fp16", strongly_typed=False, fp16_flag=True, constrain_fp32=True, kept_fp32=kept)
    if version.strongly_typed_only or precision == "fp16":
        return BuildPlan(precision, strongly_typed=True, fp16_flag=False, constrain_fp32=False, kept_fp32=kept)
    return BuildPlan("fp32", strongly_typed=False, fp16_flag=False, constrain_fp32=False)


def _plan_int8(onnx_precision: str, precision: str, version: TrtVersion, kept: tuple[str, ...],
               qdq_nodes: int | None) -> BuildPlan:  # fmt: skip
    if onnx_precision != "int8":
        raise AbawRtError(
            f"an int8 engine needs an int8 QDQ graph (this one is {onnx_precision}): "
            "abaw-rt quantize GRAPH --calib DATA -p int8 --activation s8, then abaw-rt build GRAPH_STEM.int8.onnx"
        )
    if precision != "int8":
        raise AbawRtError(f"an int8 QDQ graph builds an int8 engine (explicit quantisation), not {precision}")
    if qdq_nodes == 0:
        raise AbawRtError(
            "the graph is stamped int8 but has no QuantizeLinear/DequantizeLinear nodes, so TensorRT has nothing to "
            "quantise explicitly (and no calibrator): make it with abaw-rt quantize GRAPH --calib DATA -p int8"
        )
    if version.strongly_typed_only:
        return BuildPlan("int8", strongly_typed=True, fp16_flag=False, constrain_fp32=False, kept_fp32=kept)
    return BuildPlan("int8", strongly_typed=False, fp16_flag=True, constrain_fp32=True, int8_flag=True, kept_fp32=kept)


def default_engine_path(onnx: Path, gpu_slug: str) -> Path:
    """``engines/<onnx stem>.<gpu>.plan``, e.g. ``engines/demo.fp16.nvidia-h100-80gb-hbm3.plan``."""
    return ENGINES_DIR / f"{Path(onnx).stem}.{gpu_slug}.plan"


def build_engine(onnx: Path, cfg: BuildConfig = BuildConfig()) -> Path:
    """Build a TensorRT engine from an ``abaw-rt export`` / ``abaw-rt quantize`` graph or an extractor graph;
    writes the plan and its sidecar.

    Args:
        onnx: the ``.onnx`` graph. A fusion graph (its metadata carry the abaw-rt header) gives the input specs
            the profiles are made from; any other graph is an extractor: one profile over its batch axis
            (``cfg.batch``), every other axis fixed (``extractor_graph``).
        cfg: profiles (or the extractor batch range), precision, workspace, optimisation level, timing cache, out.

    Returns:
        The plan's path (its sidecar is ``<plan stem>.json``).

    Raises:
        AbawRtError: no CUDA device, no TensorRT, an unsupported version, a graph TensorRT cannot
            parse, profiles that do not cover 1..w, or a failed build. Nothing is left behind on failure.
    """
    onnx = Path(onnx)
    info, profiles, quant = read_graph(onnx, cfg)
    extractor = info.header is None
    trt, version, gpu = import_tensorrt(cfg.device)  # checks for a CUDA device before touching TensorRT
    precision = cfg.precision or info.precision
    qdq = qdq_node_count(onnx) if "int8" in (info.precision, precision) else None
    plan = plan_build(info.precision, precision, version, quant, qdq, extractor)
    check_graph_for_plan(onnx, plan, extractor)
    out = output_path(onnx, cfg, gpu.slug)
    trt_logger = make_logger(trt, cfg.verbose)
    trt_builder = trt.Builder(trt_logger)
    trt_network, trt_parser = parse_network(trt, trt_builder, trt_logger, onnx, info, version, plan)
    trt_config = builder_config(trt, trt_builder, cfg)
    constraints = set_precision(trt, trt_network, trt_config, plan, version)
    add_profiles(trt_builder, trt_config, profiles, info.inputs)
    cache_path = attach_timing_cache(trt_config, cfg.timing_cache)
    data = serialise(trt_builder, trt_network, trt_config, f"TensorRT {version}", onnx, gpu.name)
    del trt_parser  # kept alive until the network is built: the parser owns its weights
    save_timing_cache(trt_config, cache_path)
    flags = {"recipe": cfg.recipe, "workspace_mib": cfg.workspace_mib, "optimization_level": cfg.optimization_level,
             "fp16_flag": plan.fp16_flag, "int8_flag": plan.int8_flag, **constraints, "tf32": False,
             "timing_cache": str(cache_path) if cache_path is not None else None, "onnx_precision": info.precision,
             "kept_high": list(plan.kept_fp32), "quant_mode": (quant or {}).get("mode")}  # fmt: skip
    if extractor:
        flags.update(extractor_batch=profiles[0].batch.as_list(), qdq_nodes=qdq,
                     input_shapes={k: list(v) for k, v in info.input_shapes.items()})  # fmt: skip
    sidecar = make_sidecar(onnx, info, plan, profiles, data, version, gpu, flags)
    return write_engine(out, data, sidecar)


# -- the steps --------------------------------------------------------------------------------------------
def read_graph(onnx: Path, cfg: BuildConfig):
    """(interface, profiles, quantize record): a fusion graph's metadata and profiles (validated against its
    window), or an extractor graph's interface and its one batch profile. Decided by the graph's own metadata."""
    from abaw_rt.graphs.metadata import PREFIX, read_metadata_props, read_onnx_info, read_quant_record
    from abaw_rt.graphs.safety import check_external_data

    check_external_data(onnx)
    quant = read_quant_record(onnx)
    if PREFIX + "header" not in read_metadata_props(onnx):
        return extractor_build_interface(onnx, cfg, quant)
    if cfg.batch is not None or cfg.input_shapes:
        raise AbawRtError(
            f"ONNX '{onnx}' is a fusion graph (abaw-rt export): its profiles give batch and time (--profile or "
            "--recipe); --batch and --shape are for extractor graphs"
        )
    info = read_onnx_info(onnx)
    profiles = validate_profiles(cfg.profiles or default_profiles(info.header.window), info.header.window)
    for p in profiles:
        p.shapes(info.inputs)  # every symbolic axis has a range
    return info, profiles, quant


def check_graph_for_plan(onnx: Path, plan: BuildPlan, extractor: bool = False) -> None:
    """A strongly typed FP16 build needs a graph that computes in FP16 with LayerNorm/softmax in FP32."""
    if plan.strongly_typed and plan.precision == "fp16":
        from abaw_rt.graphs.precision import check_fp16_graph

        try:
            check_fp16_graph(onnx)
        except AbawRtError as exc:
            if not extractor:
                raise
            raise AbawRtError(f"{str(exc).split('; ')[0]}; make the fp16 graph with 'abaw-rt zoo fp16 {onnx}'") from None


def output_path(onnx: Path, cfg: BuildConfig, gpu_slug: str) -> Path:
    out = Path(cfg.out) if cfg.out is not None else default_engine_path(onnx, gpu_slug)
    if not out.parent.is_dir():
        if cfg.out is not None:
            raise AbawRtError(f"--out '{out}': folder '{out.parent}' does not exist")
        out.parent.mkdir(parents=True)
    return out


def parse_network(trt, trt_builder, trt_logger, onnx: Path, info, version: TrtVersion, plan: BuildPlan):
    """The network TensorRT's ONNX parser makes of the graph; returns (network, parser): keep the parser alive."""
    flags = _network_flags_trt10(trt, plan.strongly_typed) if version.major == 10 else 0
    trt_network = trt_builder.create_network(flags)
    trt_parser = trt.OnnxParser(trt_network, trt_logger)
    if not trt_parser.parse_from_file(str(onnx.resolve())):
        errors = [str(trt_parser.get_error(i).desc()) for i in range(trt_parser.num_errors)]
        raise AbawRtError(f"ONNX '{onnx}': TensorRT {version} cannot parse it ({'; '.join(errors[:3]) or 'no detail'})")
    names = [trt_network.get_input(i).name for i in range(trt_network.num_inputs)]
    if sorted(names) != sorted(s.name for s in info.inputs):
        declared = "the metadata declares" if info.header is not None else "the graph declares"
        raise AbawRtError(f"ONNX '{onnx}': TensorRT sees inputs {names}, {declared} {[s.name for s in info.inputs]}")
    return trt_network, trt_parser


def builder_config(trt, trt_builder, cfg: BuildConfig):
    """Workspace limit, optimisation level, TF32 off."""
    trt_config = trt_builder.create_builder_config()
    if cfg.workspace_mib:
        trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    trt_config.builder_optimization_level = cfg.optimization_level
    trt_config.clear_flag(trt.BuilderFlag.TF32)
    return trt_config


def set_precision(trt, trt_network, trt_config, plan: BuildPlan, version: TrtVersion) -> dict:
    """The plan's builder flags and per-layer FP32 constraints (TensorRT 10; 11 takes the graph's types)."""
    if version.major != 10 or not plan.fp16_flag:
        return {"fp32_constrained_layers": 0, "kept_high_unmatched": []}
    return _constrain_precision_trt10(trt, trt_network, trt_config, plan.int8_flag, plan.kept_fp32)


def add_profiles(trt_builder, trt_config, profiles, inputs) -> None:
    for p in profiles:
        trt_profile = trt_builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.shapes(inputs).items():
            trt_profile.set_shape(name, lo, opt, hi)
        trt_config.add_optimization_profile(trt_profile)


def attach_timing_cache(trt_config, timing_cache: Path | None) -> Path | None:
    """Read the timing cache into the config (a fresh one when it is another GPU's or version's)."""
    if timing_cache is None:
        return None
    cache_path = Path(timing_cache)
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    trt_cache = trt_config.create_timing_cache(blob)
    if not trt_config.set_timing_cache(trt_cache, ignore_mismatch=False):
        # A cache from another GPU or TensorRT version: start a fresh one (it is overwritten after the build).
        trt_cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(trt_cache, ignore_mismatch=False)
    return cache_path


def serialise(trt_builder, trt_network, trt_config, version: str, onnx: Path, gpu_name: str) -> bytes:
    trt_serialized = trt_builder.build_serialized_network(trt_network, trt_config)
    if trt_serialized is None:
        raise AbawRtError(
            f"{version} failed to build an engine from '{onnx}' on {gpu_name} (see the log above; "
            "a larger --workspace-mib or smaller profiles may help)"
        )
    return bytes(trt_serialized)


def save_timing_cache(trt_config, cache_path: Path | None) -> None:
    from abaw_rt.io import atomic_write_bytes

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(trt_config.get_timing_cache().serialize()))


def make_sidecar(onnx: Path, info, plan: BuildPlan, profiles, data: bytes, version, gpu, flags: dict):
    import onnx as onnx_lib

    from abaw_rt.graphs.metadata import PREFIX
    from abaw_rt.io import bytes_sha256, file_sha256
    from abaw_rt.trt.sidecar import EngineSidecar

    props = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
    return EngineSidecar(
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
        build_flags=flags,
        inputs=info.inputs if info.header is None else (),  # an extractor's interface (the fusion's is in metadata)
        outputs=info.outputs if info.header is None else (),
    )


def write_engine(out: Path, data: bytes, sidecar) -> Path:
    """The plan, then its sidecar; neither is left behind when the sidecar cannot be written."""
    from abaw_rt.io import atomic_write_bytes
    from abaw_rt.trt.sidecar import write_sidecar

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


def _constrain_precision_trt10(trt, trt_network, trt_config, int8: bool, kept: tuple[str, ...]) -> dict:
    """TensorRT 10, weakly typed: FP16 (and INT8) flags, LayerNorm, softmax, reductions and the kept nodes in FP32.

    Returns:
        The build flags to record: layers constrained, kept node names no layer carries.
    """
    trt_config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        trt_config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: the Q/DQ nodes say where
    trt_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    fp32_types = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    constrained, matched = 0, set()
    for i in range(trt_network.num_layers):
        trt_layer = trt_network.get_layer(i)
        node = kept_node_of(trt_layer.name, kept)
        if trt_layer.type in fp32_types or node is not None:
            trt_layer.precision = trt.float32
            for j in range(trt_layer.num_outputs):
                trt_layer.set_output_type(j, trt.float32)
            constrained += 1
            matched.add(node)
    return {"fp32_constrained_layers": constrained, "kept_high_unmatched": sorted(set(kept) - matched)}


def kept_node_of(layer_name: str, kept: tuple[str, ...]) -> str | None:
    """The kept ONNX node a TensorRT layer comes from: TensorRT's ONNX parser names a node's layer after the
    node and further layers of the same node ``<node>_<n>``. Constraining one layer too many to FP32 costs
    speed only, never accuracy."""
    if layer_name in kept:
        return layer_name
    base, _, suffix = layer_name.rpartition("_")
    return base if suffix.isdigit() and base in kept else None
