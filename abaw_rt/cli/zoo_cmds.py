"""CLI layer: ``abaw-rt zoo``: the paper's extractors (build, import, recipes, fp16) and their verify/bench."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import ModelSize

zoo = typer.Typer(no_args_is_help=True, help="The paper's feature extractors: reference graphs, recipes, import.")
app.add_typer(zoo, name="zoo")


class Dims(str, Enum):
    paper = "paper"  # the widths the paper states (eff 1280, wav2vec2 512): match the presets
    native = "native"  # the public networks' own widths (eff 1408, wav2vec2 1024)


@zoo.command("build")
@user_errors
def build_cmd(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="Folder for the graphs and the paper-*.toml specs.")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Extractor to build; repeat (default: all).")] = None,
    size: Annotated[ModelSize, typer.Option(help="paper widths, or tiny for tests and CI.")] = ModelSize.paper,
    dims: Annotated[Dims, typer.Option(help="Feature widths: the paper's (default) or the networks' native ones.")] = Dims.paper,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build the reference extractor graphs (random weights, the public files' I/O) and the paper's specs."""
    from abaw_rt.zoo.build import build_zoo

    with err.status(f"building {len(only) if only else 'all'} extractor graph(s) at {size.value} size"):
        result = build_zoo(folder, only, size.value, dims.value, seed)
    for name, path in result.graphs.items():
        out.print(f"wrote {path} ({name})")
    for preset, path in result.specs.items():
        out.print(f"wrote {path} (preset {preset})")


@zoo.command("import")
@user_errors
def import_cmd(
    source: Annotated[Path, typer.Argument(exists=True, help="ONNX file, DAN .pth, or a local wav2vec2 model folder.")],
    name: Annotated[str, typer.Option("--as", help="Recipe: eff, affectnet8, rafdb, arcface, wav2vec2.")],
    out_path: Annotated[Optional[Path], typer.Option("--out", dir_okay=False, help="Graph to write (default: NAME.onnx beside the spec or here).")] = None,
    spec: Annotated[Optional[Path], typer.Option(dir_okay=False, help="Spec to add the extractor to (created if missing).")] = None,
    classes: Annotated[Optional[int], typer.Option(min=1, help="DAN: classes of the checkpoint (default: read from it).")] = None,
) -> None:
    """Convert (DAN .pth, wav2vec2 folder) or check (ONNX) a real extractor file against its recipe; add it to a spec."""
    from abaw_rt.zoo.build import import_extractor

    target = out_path or ((spec.parent if spec else Path(".")) / f"{name}.onnx")
    if target.resolve() == source.resolve():
        raise AbawRtError(f"--out '{target}' is the source file; choose another path")
    contract = import_extractor(source, name, target, spec, classes)
    out.print(f"wrote {target}: input '{contract.input}', output '{contract.output}' ({contract.dim}-d)")
    if spec:
        out.print(f"wrote {spec} (extractor '{name}')")


@zoo.command("recipes")
@user_errors
def recipes_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """The known extractors: paper/native widths, preprocessing, where to get each file, licence, sha256."""
    import dataclasses
    import json

    from abaw_rt.zoo.recipes import RECIPES

    if as_json:
        out.print_json(json.dumps({n: dataclasses.asdict(r) for n, r in RECIPES.items()}))
        return
    t = Table("name", "model", "dims paper/native", "file", "licence", "sha256")
    for n, r in RECIPES.items():
        t.add_row(n, r.family, f"{r.paper_dim}/{r.native_dim}", r.public_file, r.licence, r.sha256)
    out.print(t)


@zoo.command("fp16")
@user_errors
def fp16_cmd(
    graph: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="float32 extractor graph.")],
    out_path: Annotated[Optional[Path], typer.Option("--out", dir_okay=False, help="Default: <stem>.fp16.onnx.")] = None,
) -> None:
    """FP16 copy of an extractor graph (normalisations, softmax and reductions FP32; float32 I/O)."""
    from abaw_rt.zoo.deploy import to_fp16

    target = out_path or graph.with_name(f"{graph.stem}.fp16.onnx")
    out.print(f"wrote {to_fp16(graph, target)}; check it: abaw-rt verify {graph} --onnx {target}")


@zoo.command("drift")
@user_errors
def drift_cmd(
    reference: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Reference extractor graph (fp32).")],
    candidate: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Candidate graph (e.g. its fp16 copy).")],
    checkpoint: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Fusion checkpoint that uses the feature.")],
    feature: Annotated[str, typer.Option(help="The checkpoint's feature this extractor gives (e.g. eff).")],
    frames: Annotated[int, typer.Option(min=2, help="Frames in the test segment.")] = 96,
    output: Annotated[Optional[str], typer.Option(help="Graph output to use (default: the first).")] = None,
) -> None:
    """Downstream drift: the fusion output (1 - CCC, EXPR agreement, AU flips) with the candidate extractor."""
    import json

    from abaw_rt.zoo.deploy import downstream_drift

    out.print_json(json.dumps(downstream_drift(reference, candidate, checkpoint, feature, frames, output)))


def verify_extractor_cmd(reference: Path, graphs, batches, provider: str, seed: int, as_json: bool,
                         engines=None) -> None:  # fmt: skip
    """``abaw-rt verify REF.onnx --onnx CAND.onnx --engine CAND.plan``: extractor parity (exit 1 on failure)."""
    from abaw_rt.zoo.deploy import verify_extractor

    if not graphs and not engines:
        raise AbawRtError(f"extractor graph '{reference}': pass the candidate graph(s) with --onnx or engine(s) with --engine")
    report = verify_extractor(reference, graphs or (), tuple(batches or (1, 4, 16)), seed, provider, engines=engines or ())
    if as_json:
        import json

        out.print_json(json.dumps(report))
    else:
        t = Table("candidate", "precision", "output", "max abs", "max rel", "cosine min", "result")
        for c in report["candidates"]:
            for name, s in c["outputs"].items() or {"-": {}}.items():
                t.add_row(Path(c["graph"]).name, c["precision"], name, f"{s.get('max_abs', 0):.3g}",
                          f"{s.get('max_rel', 0):.3g}", f"{s.get('cosine_min', 0):.6f}",
                          "ok" if s.get("passed") else "FAIL " + "; ".join(s.get("failures", [c["error"] or ""])))  # fmt: skip
        out.print(t)
    if not report["passed"]:
        raise typer.Exit(1)


def bench_extractor_engine_cmd(plan: Path, batches, min_seconds: float, as_json: bool) -> None:
    """``abaw-rt bench EXTRACTOR.plan``: an extractor engine's latency/throughput against batch (needs a GPU)."""
    import json

    from abaw_rt.bench.extractor_bench import bench_extractor_engine

    result = bench_extractor_engine(plan, tuple(batches or ()), min_seconds=min_seconds)
    if as_json:
        out.print_json(json.dumps(result))
        return
    t = Table("batch", "p50 ms", "ms / item", "items / s", title=f"{plan.name} ({result['precision']}, {result['gpu']})")
    for r in result["rows"]:
        t.add_row(str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['ms_per_item']:.3f}", f"{r['items_per_s']:.1f}")
    out.print(t)


def bench_extractor_cmd(graph: Path, batches, threads: int | None, min_seconds: float, as_json: bool) -> None:
    """``abaw-rt bench EXTRACTOR.onnx``: latency/throughput against batch beside the FLOP-bound time."""
    from abaw_rt.bench.extractor_bench import bench_extractor

    result = bench_extractor(graph, tuple(batches or (1, 4, 16, 32)), threads or 1, min_seconds=min_seconds)
    if as_json:
        import json

        out.print_json(json.dumps(result))
        return
    t = Table("batch", "p50 ms", "ms / item", "items / s", "FLOP-bound ms / item", "ratio")
    for r in result["rows"]:
        t.add_row(str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['ms_per_item']:.2f}", f"{r['items_per_s']:.1f}",
                  f"{r['flop_bound_ms_per_item']:.2f}", f"{r['ratio_to_flop_bound']:.2f}")  # fmt: skip
    out.print(t)
    out.print(f"{result['gflops_per_item']:.3f} GFLOPs per item; matmul rate {result['matmul_gflops_per_s']:.0f} GFLOP/s "
              f"at {result['threads']} thread(s)")  # fmt: skip
