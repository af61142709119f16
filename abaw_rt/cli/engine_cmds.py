"""CLI layer: engine verbs: build (ONNX -> TensorRT plan + sidecar)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.vocab import Precision, TritonKind
from abaw_rt.errors import AbawRtError


class Target(str, Enum):
    onnx = "onnx"  # ONNX graphs only
    trt = "trt"  # ONNX graphs, then a TensorRT engine from each


RecipeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--recipe", help="Engine recipe: a name in engines/recipes (jetson-orin, t4-a10, h100) or a JSON file."
    ),
]
ProfileOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--profile",
        help="Optimisation profile NAME:BMIN,BOPT,BMAX:TMIN,TOPT,TMAX (batch, time); repeat. Overrides the recipe's.",
    ),
]
BatchOpt = Annotated[
    Optional[str],
    typer.Option(
        "--batch", metavar="MIN:OPT:MAX",
        help="Extractor graphs: the batch axis's profile (default: the recipe's extractor_batch, else 1:16:32).",
    ),
]  # fmt: skip
ShapeOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--shape", metavar="NAME:D1,D2,..",
        help="Extractor graphs: fix a dynamic input's sizes after the batch axis (e.g. input_values:16000); repeat.",
    ),
]  # fmt: skip
TritonOpt = Annotated[
    Optional[Path],
    typer.Option("--triton", metavar="REPO", help="Also write a Triton model repository (REPO/<model>/config.pbtxt)."),
]
TritonKindOpt = Annotated[
    TritonKind, typer.Option("--triton-kind", help="Triton instance kind (an engine plan: gpu only).")
]
TritonBatchOpt = Annotated[int, typer.Option("--triton-max-batch", min=1, help="Triton max_batch_size.")]
TritonInstancesOpt = Annotated[int, typer.Option("--triton-instances", min=1, help="Model instances per device.")]


def write_triton(paths: list[Path], repo: Path, kind: TritonKind, max_batch: int, instances: int) -> list[Path]:
    """One Triton model folder per graph or plan (config checked against Triton's schema), printed."""
    from abaw_rt.artefacts import open_artefact
    from abaw_rt.export.triton import TritonConfig, write_triton_model

    cfg = TritonConfig(max_batch_size=max_batch, instances=instances, kind=kind)
    folders = [write_triton_model(open_artefact(p), repo, cfg) for p in paths]
    for folder in folders:
        err.print(f"wrote Triton model {folder}", highlight=False)
    return folders


def check_triton_repo(repo: Path | None, kind: TritonKind, engine: bool) -> None:
    """Refuse a bad --triton early, before any export or build."""
    if repo is None:
        return
    from abaw_rt.export.triton import check_repo

    check_repo(repo)
    if engine and kind is not TritonKind.gpu:
        raise AbawRtError("--triton-kind cpu: an engine plan runs on a GPU only; export the ONNX graph instead")


def build_config(
    recipe: str | None = None,
    profile: list[str] | None = None,
    precision: str | None = None,
    workspace_mib: int | None = None,
    opt_level: int | None = None,
    timing_cache: Path | None = None,
    out_path: Path | None = None,
    device: int = 0,
    verbose: bool = False,
    batch: str | None = None,
    shapes: list[str] | None = None,
):
    """A BuildConfig from CLI options: a recipe's values, overridden by explicit options."""
    from abaw_rt.engines.builder import DEFAULT_TIMING_CACHE, BuildConfig
    from abaw_rt.engines.extractor_graph import parse_shape
    from abaw_rt.engines.recipes import load_engine_recipe
    from abaw_rt.trt.profiles import AxisRange, ProfileSpec

    kw = dict(
        precision=precision,
        timing_cache=timing_cache if timing_cache is not None else DEFAULT_TIMING_CACHE,
        out=out_path,
        device=device,
        verbose=verbose,
        input_shapes=tuple(parse_shape(s) for s in shapes or ()),
    )
    if batch is not None:
        if batch.count(":") != 2:
            raise AbawRtError(f"--batch {batch!r}: expected MIN:OPT:MAX, e.g. 1:16:32")
        kw.update(batch=AxisRange.parse(batch.replace(":", ","), "--batch"))
    if profile:
        kw.update(profiles=tuple(ProfileSpec.parse(p) for p in profile))
    if workspace_mib is not None:
        kw.update(workspace_mib=workspace_mib)
    if opt_level is not None:
        kw.update(optimization_level=opt_level)
    if recipe is not None:
        r = load_engine_recipe(recipe)
        if profile:
            kw.update(recipe=None)  # profiles no longer the recipe's: the sidecar records them one by one
        return BuildConfig.from_recipe(r, **kw)
    return BuildConfig(**kw)


def print_engines(plans: list[Path], as_json: bool) -> None:
    from abaw_rt.trt.sidecar import read_sidecar, sidecar_path_for

    cars = [(p, read_sidecar(p)) for p in plans]
    if as_json:
        out.print_json(data=[{"plan": str(p), "sidecar": str(sidecar_path_for(p)), **s.to_dict()} for p, s in cars])
        return
    table = Table(title="abaw-rt build")
    for col in ("engine", "TensorRT", "GPU", "precision", "profiles (batch x time)"):
        table.add_column(col, overflow="fold")
    for p, s in cars:
        profiles = "\n".join(f"{q.name}: {q.batch.min}..{q.batch.max}" + (f" x {q.time.min}..{q.time.max}" if s.is_fusion
                              else f" (opt {q.batch.opt}), other axes fixed") for q in s.profiles)  # fmt: skip
        typed = "strongly typed" if s.strongly_typed else "fp16 flag" if s.build_flags.get("fp16_flag") else "fp32"
        table.add_row(
            str(p),
            s.tensorrt_version,
            f"{s.gpu_name} (sm {s.compute_capability})",
            f"{s.precision} ({typed})",
            profiles,
        )
    out.print(table)


@app.command("build")
@user_errors
def build_cmd(
    onnx: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="Graph written by 'abaw-rt export', or an extractor graph.")
    ],
    recipe: RecipeOpt = None,
    profile: ProfileOpt = None,
    batch: BatchOpt = None,
    shape: ShapeOpt = None,
    precision: Annotated[
        Optional[Precision], typer.Option("--precision", "-p", help="Engine precision (default: the graph's).")
    ] = None,
    workspace_mib: Annotated[Optional[int], typer.Option(min=1, help="Builder workspace limit in MiB.")] = None,
    opt_level: Annotated[
        Optional[int], typer.Option(min=0, max=5, help="Builder optimisation level 0..5 (default 3).")
    ] = None,
    timing_cache: Annotated[
        Optional[Path],
        typer.Option(dir_okay=False, help="Timing cache read and updated (default engines/timing.cache)."),
    ] = None,
    no_timing_cache: Annotated[bool, typer.Option("--no-timing-cache", help="Build without a timing cache.")] = False,
    out_path: Annotated[
        Optional[Path], typer.Option("--out", dir_okay=False, help="Plan file (default engines/<graph>.<gpu>.plan).")
    ] = None,
    device: Annotated[int, typer.Option(min=0, help="CUDA device to build on.")] = 0,
    verbose: Annotated[bool, typer.Option(help="TensorRT's verbose log.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    triton: TritonOpt = None,
    triton_kind: TritonKindOpt = TritonKind.gpu,
    triton_max_batch: TritonBatchOpt = 8,
    triton_instances: TritonInstancesOpt = 1,
) -> None:
    """Build a TensorRT engine (plan + JSON sidecar) from an exported ONNX graph or an extractor graph
    (--batch MIN:OPT:MAX: the batch axis's profile, every other axis fixed). Needs an NVIDIA GPU."""
    from abaw_rt.engines.builder import build_engine

    if no_timing_cache and timing_cache is not None:
        raise AbawRtError("--timing-cache and --no-timing-cache: give one or the other")
    check_triton_repo(triton, triton_kind, engine=True)
    cfg = build_config(
        recipe,
        profile,
        precision.value if precision else None,
        workspace_mib,
        opt_level,
        timing_cache,
        out_path,
        device,
        verbose,
        batch,
        shape,
    )
    if no_timing_cache:
        import dataclasses

        cfg = dataclasses.replace(cfg, timing_cache=None)
    with err.status(f"building a TensorRT engine from {onnx.name}"):
        plan = build_engine(onnx, cfg)
    if triton is not None:
        write_triton([plan], triton, triton_kind, triton_max_batch, triton_instances)
    print_engines([plan], as_json)
