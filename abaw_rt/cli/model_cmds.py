"""CLI layer: model verbs: init-checkpoint, export, verify, info."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.vocab import ModelSize as Size
from abaw_rt.vocab import Exporter, Precision, Preset
from abaw_rt.cli.engine_cmds import ProfileOpt, RecipeOpt, Target, build_config, print_engines
from abaw_rt.cli.engine_cmds import TritonBatchOpt, TritonInstancesOpt, TritonKindOpt, TritonOpt
from abaw_rt.cli.engine_cmds import check_triton_repo, write_triton
from abaw_rt.vocab import TritonKind
from abaw_rt.cli.options import ThreadsOpt, pin_threads
from abaw_rt.errors import AbawRtError, require_module


@app.command("init-checkpoint")
@user_errors
def init_checkpoint_cmd(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="Checkpoint file to write (.safetensors).")],
    preset_name: Annotated[Preset, typer.Option("--preset", help="The paper's feature set and head.")] = Preset.va,
    size: Annotated[Size, typer.Option(help="Model width: the paper's, or tiny for tests.")] = Size.tiny,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic initialisation.")] = 0,
    window: Annotated[int, typer.Option(min=1, help="Segment length w.")] = 300,
    stride: Annotated[int, typer.Option(min=1, help="Segment stride s (at most w).")] = 200,
) -> None:
    """Write a deterministic, untrained checkpoint (for tests, CI and smoke runs of export/verify)."""
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, preset

    cfg = preset(preset_name.value, **(TINY if size is Size.tiny else {}))
    if stride > window:
        raise AbawRtError(f"--stride {stride}: must be at most --window ({window})")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    path = init_checkpoint(out_path, cfg, seed=seed, window=window, stride=stride)
    out.print(f"wrote {path} ({preset_name.value}, {size.value}, seed {seed})")


@app.command()
@user_errors
def export(
    checkpoint: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="Checkpoint (.safetensors) to export.")
    ],
    precision: Annotated[
        list[Precision], typer.Option("--precision", "-p", help="Graph precision; repeat for several.")
    ] = [Precision.fp32],  # noqa: B006 (Typer reads the default)
    out_dir: Annotated[
        Optional[Path], typer.Option(file_okay=False, help="Folder for the graphs (default: beside the checkpoint).")
    ] = None,
    external_data: Annotated[
        bool, typer.Option(help="Write weights to <graph>.onnx.data beside the graph (needed past 2 GB).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    to: Annotated[
        Target, typer.Option("--to", help="onnx: graphs only; trt: then a TensorRT engine from each (NVIDIA GPU).")
    ] = Target.onnx,
    recipe: RecipeOpt = None,
    profile: ProfileOpt = None,
    exporter: Annotated[
        Exporter, typer.Option(help="torchscript (seconds) or dynamo (torch.export; about a minute for the tiny model).")
    ] = Exporter.torchscript,
    threads: ThreadsOpt = None,
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Step lines on stderr (default: in a terminal).")
    ] = None,
    triton: TritonOpt = None,
    triton_kind: TritonKindOpt = TritonKind.gpu,
    triton_max_batch: TritonBatchOpt = 8,
    triton_instances: TritonInstancesOpt = 1,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch and time), then check it at several lengths against torch."""
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx

    require_checkpoint_file(checkpoint, "export")
    if Precision.int8 in precision:  # before anything is exported: int8 needs data the export does not have
        stem = onnx_path_for(checkpoint, "fp32", out_dir).name
        raise AbawRtError(
            f"-p int8: an INT8 graph needs calibration data; export fp32, then run 'abaw-rt quantize {stem} "
            "--calib FEATURE_STORE' (writes the .int8.onnx graph beside it)"
        )
    check_triton_repo(triton, triton_kind, engine=to is Target.trt)
    threads = pin_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    require_module("torch", "torch")  # before --out-dir is created
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if to is Target.trt:  # refuse early (no GPU, no TensorRT, bad recipe) rather than after the exports
        from abaw_rt.trt.compat import import_tensorrt

        build_cfg = build_config(recipe, profile)
        import_tensorrt(build_cfg.device)
    results = []
    for p in dict.fromkeys(precision):  # keep order, drop repeats
        target = onnx_path_for(checkpoint, p.value, out_dir)
        results.append(
            export_onnx(
                ckpt, target, precision=p.value, exporter=exporter.value,
                progress=_progress(target.name) if (err.is_terminal if progress is None else progress) else None,
            )
        )
    if to is Target.trt:
        from abaw_rt.engines.builder import build_engine

        plans = []
        for r in results:
            with err.status(f"building a TensorRT engine from {r.path.name}"):
                plans.append(build_engine(r.path, build_cfg))
    if triton is not None:  # the engines when built, else the graphs
        write_triton(plans if to is Target.trt else [r.path for r in results], triton, triton_kind,
                     triton_max_batch, triton_instances)
    _print_exports(results, plans if to is Target.trt else None, as_json)


def _print_exports(results, plans, as_json: bool) -> None:
    """The exported graphs (and engines built from them) as JSON or a table."""
    if as_json:
        out.print_json(
            data=[
                {
                    "path": str(r.path),
                    "precision": r.precision,
                    "external_data": str(r.external_data) if r.external_data else None,
                    "checked_lengths": list(r.checked_lengths),
                    "max_abs_error": r.max_abs_error,
                    **({"engine": str(plans[i])} if plans is not None else {}),
                }
                for i, r in enumerate(results)
            ]
        )
        return
    table = Table(title="abaw-rt export")
    for col in ("graph", "precision", "lengths checked vs torch", "max |Δ|"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(str(r.path), r.precision, ", ".join(map(str, r.checked_lengths)), f"{r.max_abs_error:.2e}")
    out.print(table)
    if plans is not None:
        print_engines(plans, as_json=False)


@app.command()
@user_errors
def verify(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Reference checkpoint.")],
    onnx: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--onnx",
            exists=True,
            dir_okay=False,
            help="Graph to check; repeat. Default: the exported fp32/fp16 graphs beside the checkpoint.",
        ),
    ] = None,
    batch: Annotated[
        Optional[list[int]], typer.Option("--batch", "-b", min=1, help="Batch sizes (default 1, 4).")
    ] = None,
    length: Annotated[
        Optional[list[int]], typer.Option("--length", "-t", min=1, help="Segment lengths (default 1, 7, w-1, w, 2w).")
    ] = None,
    provider: Annotated[str, typer.Option(help="onnxruntime provider: cpu, cuda or tensorrt.")] = "cpu",
    engine: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--engine", exists=True, dir_okay=False, help="TensorRT engine plan to check (trt backend); repeat."
        ),
    ] = None,
    fp32_atol: Annotated[Optional[float], typer.Option(min=0.0, help="Max abs error allowed for fp32 graphs.")] = None,
    fp16_atol: Annotated[Optional[float], typer.Option(min=0.0, help="Max abs error allowed for fp16 graphs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random features.")] = 0,
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check ONNX graphs and TensorRT engines against the torch reference: error and task drift. Exits 1 on failure.
    With an extractor graph as CHECKPOINT: its candidate graphs (--onnx) and engines (--engine, needs a GPU) against
    it, per output and by cosine similarity."""
    import dataclasses

    if checkpoint.suffix.lower() == ".onnx":
        from abaw_rt.cli.zoo_cmds import verify_extractor_cmd

        return verify_extractor_cmd(checkpoint, onnx, batch, provider, seed, as_json, engine)

    from abaw_rt.artefacts import Kind, RunOptions, onnx_path_for, open_artefact, open_runner
    from abaw_rt.trt.profiles import fits_any
    from abaw_rt.verify import DEFAULT_TOLERANCES, default_grid, run_verify

    require_checkpoint_file(checkpoint, "verify")
    threads = pin_threads(threads)
    ckpt = open_artefact(checkpoint, Kind.checkpoint)
    beside = [p for p in (onnx_path_for(checkpoint, x.value) for x in Precision) if p.is_file()]
    graphs = list(onnx or ([] if engine else beside))  # with --engine only, check just the engines
    if not graphs and not engine:
        raise AbawRtError(
            f"no ONNX graph to verify beside '{checkpoint}': run 'abaw-rt export {checkpoint} -p fp32 -p fp16' or pass --onnx"
        )
    tolerances = dict(DEFAULT_TOLERANCES)
    for prec, atol in (("fp32", fp32_atol), ("fp16", fp16_atol)):
        if atol is not None:
            tolerances[prec] = dataclasses.replace(tolerances[prec], max_abs=atol)
    grid = default_grid(ckpt.header.window, batches=tuple(batch or (1, 4)), lengths=length)
    candidates = _open_candidates(ckpt, graphs, engine or (), provider, threads)
    if engine and not length and not batch:  # the default grid, cut to what the engines accept
        engines = [r for r in candidates.values() if r.artefact.kind is Kind.engine]
        grid = [c for c in grid if all(fits_any(r.profiles, c.batch, c.time) for r in engines)]
    reference = open_runner(ckpt, "torch", RunOptions(threads=threads))
    with err.status(f"verifying {len(candidates)} graph(s) over {len(grid)} cases"):
        with reference:
            for r in candidates.values():
                r.activate()
            try:
                report = run_verify(reference, candidates, grid, tolerances, seed=seed)
            finally:
                for r in candidates.values():
                    r.deactivate()
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        _print_verify(report)
    if not report.passed:
        raise typer.Exit(1)


def _open_candidates(ckpt, graphs, engines, provider: str, threads: int | None) -> dict:
    """Runners for the graphs (onnxruntime ``provider``) and engines to verify, each checked to come from ``ckpt``."""
    from abaw_rt.artefacts import Kind, RunOptions, check_provenance, open_artefact, open_runner

    to_check = [(g, Kind.fusion_graph, RunOptions(provider=provider, threads=threads), f"ort-{provider}") for g in graphs]
    to_check += [(p, Kind.engine, RunOptions(device="cuda"), "trt") for p in engines]
    candidates = {}
    for path, kind, options, label in to_check:
        artefact = open_artefact(path, kind)
        runner = open_runner(artefact, options=options)  # an engine for another GPU or TensorRT is refused first
        check_provenance(artefact, ckpt)
        candidates[f"{path.name} ({label})"] = runner
    return candidates


def _progress(name: str):
    """Export steps as plain lines on stderr (readable in a terminal, a log or a pipe)."""
    start = time.perf_counter()

    def say(line: str) -> None:
        err.print(f"export {name}: {line} ({time.perf_counter() - start:.1f} s)", highlight=False, markup=False, soft_wrap=True)

    return say


def require_checkpoint_file(path: Path, verb: str) -> None:
    """A graph or an engine given where a checkpoint is expected: say what the file is and what the verb takes."""
    what = {".onnx": "an ONNX graph", ".plan": "a TensorRT engine", ".engine": "a TensorRT engine"}.get(path.suffix)
    if what is None:
        return
    hint = {
        "export": "it is already exported; check it with: abaw-rt verify CKPT --onnx " + str(path),
        "verify": f"pass the checkpoint it came from with the graph: abaw-rt verify CKPT --{'onnx' if path.suffix == '.onnx' else 'engine'} {path}",
    }[verb]
    raise AbawRtError(f"'{path}' is {what}; 'abaw-rt {verb}' takes a checkpoint (.safetensors): {hint}")


def _print_verify(report) -> None:
    table = Table(title=f"abaw-rt verify (reference: {report.reference}, {len(report.grid)} cases)")
    for col in ("candidate", "out", "max|Δ|", "mean|Δ|", "p99|Δ|", "task drift", "result"):
        table.add_column(col, overflow="fold")
    for c in report.candidates:
        if c.error:
            table.add_row(c.name, "-", "", "", "", c.error, "[red]FAIL[/]")
            continue
        for name, s in c.outputs.items():
            drift = "\n".join(f"{k.replace('ccc_drift_', '1-CCC ')} {v:.3g}" for k, v in s.task.items())
            verdict = "[green]ok[/]" if s.passed else "[red]FAIL[/]"
            table.add_row(c.name, name, f"{s.max_abs:.1e}", f"{s.mean_abs:.1e}", f"{s.p99_abs:.1e}", drift, verdict)
    out.print(table)
    for c in report.candidates:
        for name, s in c.outputs.items():
            for failure in s.failures:
                out.print(f"FAIL {c.name} '{name}': {failure}", highlight=False, soft_wrap=True)
    out.print("[green]verify passed[/]" if report.passed else "[red]verify FAILED[/]")


@app.command()
@user_errors
def info(
    artefact: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A checkpoint, an ONNX graph or an engine plan.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything the file says, as JSON.")] = False,
) -> None:
    """What a checkpoint, ONNX graph or engine sidecar says about itself: a summary, or everything with --json."""
    from abaw_rt.artefacts import Kind, open_artefact

    a = open_artefact(artefact)
    kind = a.kind.noun.split(" ", 1)[1]  # "checkpoint", "exported fusion graph", ...
    if a.kind in (Kind.engine, Kind.extractor_engine):
        data = a.detail.to_dict()
    elif a.kind is Kind.fusion_graph:
        i = a.detail
        data = {
            "precision": i.precision,
            "checkpoint_sha256": i.checkpoint_sha256,
            "exported_by": i.package_version,
            "inputs": [s.to_dict() for s in i.inputs],
            "outputs": [s.to_dict() for s in i.outputs],
            **i.header.to_dict(),
        }
    elif a.kind is Kind.onnx:
        data = {"kind": a.kind.value, "metadata_props": a.detail, "note": "not exported by abaw-rt"}
    else:
        from abaw_rt.model.config import parameter_count

        data = a.header.to_dict(include_normalization=False)
        data["normalization"] = {m: f"{a.header.config.modality_dim(m)} dims" for m in a.header.config.modalities}
        data.update(sha256=a.sha256, parameters=parameter_count(a.header.config))
    if as_json:
        out.print_json(json.dumps(data))
        return
    for key, value in info_summary(kind, data):
        out.print(f"{key + ':':<12} {value}", highlight=False, markup=False, soft_wrap=True)


def _features(features) -> str:
    return ", ".join(f"{f.get('name')} {f.get('dim')} ({f.get('modality')})" for f in features or [])


def info_summary(kind: str, data: dict) -> list[tuple[str, str]]:
    """A few lines a person reads: what the file is, its model, features, heads, windows and identity."""
    cfg = data.get("config") or {}
    rows = [("file", kind)]
    if cfg:
        heads = cfg.get("heads") or []
        rows.append(("heads", ", ".join(heads)))
        rows.append(("features", _features(cfg.get("features"))))
        if "parameters" in data:
            rows.append(("parameters", f"{data['parameters'] / 1e6:.2f} M"))
    for key in ("window", "stride", "fps", "precision"):
        if data.get(key) is not None:
            rows.append((key, str(data[key])))
    for key in ("inputs", "outputs"):
        if data.get(key):
            rows.append((key, ", ".join(f"{s['name']} {tuple(s['shape'])}" for s in data[key])))
    for key in ("sha256", "checkpoint_sha256", "tensorrt_version", "gpu", "exported_by"):
        if data.get(key):
            rows.append((key.replace("_", " "), str(data[key])))
    rows.append(("more", "abaw-rt info FILE --json prints everything"))
    return rows
