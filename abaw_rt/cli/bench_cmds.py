"""CLI layer: ``abaw-rt bench``: model sweeps, comparisons of result files and the regression gate."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.cli.options import DecodeThreadsOpt, DetectEveryOpt, DetectorOpt, ExtractorsOpt, ThreadsOpt, pin_threads
from abaw_rt.cuda.gpu import resolve_device
from abaw_rt.vocab import Backend, Device, Precision
from abaw_rt.errors import AbawRtError, missing_module_message


class Graphs(str, Enum):
    off = "off"
    on = "on"
    both = "both"


BenchOutOpt = Annotated[
    Path,
    typer.Option(
        "--out", "--out-dir", file_okay=False,
        help="Folder for the JSON, markdown and PNG (created; default: the scratch folder abaw_rt_bench/).",
    ),
]  # fmt: skip
VideoOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--video", exists=True, dir_okay=False,
        help="Benchmark the whole pipeline on this video (SOURCE: fusion model, default the demo).",
    ),
]  # fmt: skip


@app.command()
@user_errors
def bench(
    source: Annotated[
        Optional[Path],
        typer.Argument(exists=True, dir_okay=False, help="Checkpoint (.safetensors), ONNX graph or engine (.plan)."),
    ] = None,
    backend: Annotated[
        Optional[list[Backend]], typer.Option("--backend", help="Backends to sweep (default: torch, ort, trt).")
    ] = None,
    precision: Annotated[
        Optional[list[Precision]], typer.Option("--precision", "-p", help="Precisions (default: fp32, fp16).")
    ] = None,
    time_: Annotated[
        Optional[list[int]], typer.Option("--time", "-t", min=1, help="Segment lengths (default 1 75 150 300 600 1200).")
    ] = None,
    batch: Annotated[Optional[list[int]], typer.Option("--batch", "-b", min=1, help="Batch sizes (default 1 8 32).")] = None,
    graphs: Annotated[Graphs, typer.Option(help="CUDA graphs off, on, or both (where a backend has them).")] = Graphs.both,
    device: Annotated[Device, typer.Option(help="cpu, or cuda for the GPU backends.")] = Device.cpu,
    threads: ThreadsOpt = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per cell.")] = 3,
    min_iters: Annotated[int, typer.Option(min=1, help="Timed calls per cell, at least.")] = 10,
    min_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds per cell, at least.")] = 1.0,
    max_seconds: Annotated[float, typer.Option(min=0.001, help="A cell stops after this long even below --min-iters.")] = 20.0,
    out_dir: BenchOutOpt = Path("abaw_rt_bench"),
    name: Annotated[Optional[str], typer.Option(help="File stem (default: bench_<device>_<date-time>).")] = None,
    compare_files: Annotated[
        Optional[tuple[Path, Path]],
        typer.Option("--compare", exists=True, dir_okay=False, help="Compare two result files (A B): ratios B/A per cell."),
    ] = None,
    baseline: Annotated[
        Optional[Path], typer.Option(exists=True, dir_okay=False, help="Result file to compare this sweep with.")
    ] = None,
    fail_above_ratio: Annotated[
        Optional[float], typer.Option(min=1.0, help="Exit 1 if any cell's p50 is more than R times the baseline's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result file's content as JSON.")] = False,
    video: VideoOpt = None,
    runs: Annotated[int, typer.Option(min=1, help="With --video: pipeline runs (models loaded once).")] = 3,
    extractors: ExtractorsOpt = None,
    detector: DetectorOpt = None,
    detect_every: DetectEveryOpt = 5,
    decode_threads: DecodeThreadsOpt = 1,
) -> None:
    """Latency and throughput sweep (backend x precision x T x B), the whole pipeline on a video (--video),
    or compare two result files (--compare). --extractors, --detector, --detect-every and --decode-threads
    apply with --video (default: the built-in models)."""
    threads = pin_threads(threads)
    if video is not None:
        _video(
            video, source, backend, precision, device, threads, extractors, detector, detect_every, decode_threads,
            runs, out_dir, name, as_json,
        )
        return
    if compare_files is not None:
        if source is not None:
            raise AbawRtError("--compare takes two result files and no SOURCE")
        return _compare_files(compare_files, fail_above_ratio)
    if source is None:
        raise AbawRtError("SOURCE missing: pass a checkpoint, an ONNX graph or an engine (or --compare A B)")
    if source.suffix.lower() == ".onnx":
        from abaw_rt.zoo.deploy import is_extractor_graph

        if is_extractor_graph(source):  # a feature extractor, not an exported fusion model
            from abaw_rt.cli.zoo_cmds import bench_extractor_cmd

            return bench_extractor_cmd(source, batch, threads, min_seconds, as_json)
    elif source.suffix.lower() in (".plan", ".engine") and _is_extractor_engine(source):
        from abaw_rt.cli.zoo_cmds import bench_extractor_engine_cmd

        return bench_extractor_engine_cmd(source, batch, min_seconds, as_json)
    if fail_above_ratio is not None and baseline is None:
        raise AbawRtError("--fail-above-ratio needs --baseline FILE (or --compare A B)")
    report, path = _sweep(
        source, backend, precision, time_, batch, graphs, device, threads, warmup, min_iters, min_seconds, max_seconds,
        out_dir, name,
    )
    _after_sweep(report, path, baseline, fail_above_ratio, as_json)


def _is_extractor_engine(plan: Path) -> bool:
    """Built from an extractor graph (its sidecar says so), not from a fusion graph."""
    from abaw_rt.artefacts import Kind, open_artefact

    return open_artefact(plan).kind is Kind.extractor_engine


def _compare_files(files: tuple[Path, Path], fail_above_ratio: float | None) -> None:
    """``bench --compare A B``: ratios B/A per cell (exit 1 past --fail-above-ratio)."""
    from abaw_rt.bench.report import compare, load_report

    base, new = load_report(files[0]), load_report(files[1])
    _warn_machines(base, new)
    _print_ratios(compare(base, new), fail_above_ratio, f"{files[1].name} / {files[0].name}")


def _after_sweep(report: dict, path: Path, baseline: Path | None, fail_above_ratio: float | None, as_json: bool) -> None:
    """Print the sweep (--json), compare it with --baseline, and exit 1 if a cell failed."""
    from abaw_rt.bench.report import compare, load_report

    if as_json:
        import json

        out.print_json(json.dumps(report))
    if baseline is not None:
        base = load_report(baseline)
        _warn_machines(base, report)
        _print_ratios(compare(base, report), fail_above_ratio, f"{path.name} / {baseline.name}")
    failed = [c for c in report["cells"] if c["status"] == "error"]
    if failed:
        err.print(f"bench: {len(failed)} cell(s) failed (see 'error' lines above and in {path})", highlight=False)
        raise typer.Exit(1)


def _sweep(source, backend, precision, time_, batch, graphs, device, threads, warmup, min_iters, min_seconds,
           max_seconds, out_dir, name):
    from abaw_rt.bench.backends import RunnerFactory
    from abaw_rt.bench.report import cell_row, make_report, markdown_table, plot_latency, save_report
    from abaw_rt.bench.sweep import SweepConfig, run_sweep
    from abaw_rt.io import atomic_write_bytes
    from abaw_rt.machine import machine_info

    own = _check_source(source, resolve_device(device.value))  # a broken artefact fails every cell: refuse it before anything is written
    cfg = SweepConfig(
        backends=tuple(b.value for b in backend) if backend else SweepConfig.backends,
        precisions=tuple(p.value for p in precision) if precision else _default_precisions(own),
        times=tuple(time_) if time_ else SweepConfig.times,
        batches=tuple(batch) if batch else SweepConfig.batches,
        cuda_graphs={"off": (False,), "on": (True,), "both": (False, True)}[graphs.value],
        warmup=warmup,
        min_iters=min_iters,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        threads=threads,
        device=resolve_device(device.value),
    )
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="abaw-rt-bench-")  # graphs exported for the sweep only
    factory = RunnerFactory(source, device=cfg.device, threads=cfg.threads, workdir=Path(scratch.name))
    table = Table(title=f"abaw-rt bench: {source.name} on {cfg.device}" + (f", {threads} threads" if threads else ""))
    names = ("backend", "prec", "B", "T", "graphs", "p50 ms", "p90 ms", "p99 ms", "frames/s", "1st call ms", "RSS MB", "status")
    # under 110 columns (an 80-column terminal, a pipe): the columns that fit whole; all of them are in the JSON
    shown = range(len(names)) if out.width >= 110 else (0, 1, 2, 3, 4, 5, 7, 8)
    for i in shown:
        table.add_column(names[i], no_wrap=True, justify="right" if i >= 2 else "left")
    total = len(cfg.backends) * len(cfg.precisions) * len(cfg.cuda_graphs) * len(cfg.times) * len(cfg.batches)
    done = [0]

    def progress(cell):
        done[0] += 1
        line = f"bench {done[0]}/{total}: {cell.backend} {cell.precision} B={cell.batch} T={cell.time}"
        status.update(line)
        if not err.is_terminal:  # a log or a pipe: one plain line per cell instead of the spinner
            err.print(line, highlight=False, markup=False)

    with scratch, err.status("bench: preparing runners") as status:
        cells = run_sweep(cfg, factory, progress)
    notes: dict[tuple, str] = {}
    for c in cells:
        if c.status == "ok":
            row = cell_row(c)
            table.add_row(*(row[i] for i in shown))
        else:  # skips and errors: one line per backend/precision/graphs group, below the table
            notes.setdefault((c.status, c.backend, c.precision, c.cuda_graphs), c.reason)
    out.print(table)
    for (status, b, p, g), why in notes.items():
        out.print(f"{status} {b} {p}{' graphs' if g else ''}: {why}", highlight=False, soft_wrap=True, markup=False)
    source_info = {"path": str(source), "kind": report_kind(factory.source)}
    if factory.source.kind.value == "checkpoint":
        from abaw_rt.model.config import flops_per_frame, parameter_count

        ck = factory.source.detail
        source_info.update(
            sha256=ck.sha256,
            heads=list(ck.header.config.heads),
            features=[f.name for f in ck.header.config.features],
            parameters=parameter_count(ck.header.config),
            mflops_per_frame_t300=flops_per_frame(ck.header.config, 300) / 1e6,
        )
    from dataclasses import asdict

    report = make_report("model", machine_info(), source_info, asdict(cfg), cells, extra=_speedups(cells))
    stem = name or f"bench_{cfg.device}_{time.strftime('%Y%m%d-%H%M%S')}"
    path = save_report(report, out_dir / f"{stem}.json")
    md = out_dir / f"{stem}.md"
    atomic_write_bytes(md, markdown_table(cells).encode())
    png = plot_latency(cells, out_dir / f"{stem}.png", f"abaw-rt bench: {source.name} ({cfg.device})")
    out.print(f"saved {path}, {md}" + (f", {png}" if png else " (no plot: pip install matplotlib)"))
    return report, path


def _video(video, source, backend, precision, device, threads, extractors, detector, detect_every, decode_threads,
           runs, out_dir, name, as_json) -> None:
    """``abaw-rt bench --video``: the pipeline of ``abaw-rt infer``, per stage, over ``runs`` runs."""
    from abaw_rt.bench.pipeline_bench import bench_video
    from abaw_rt.bench.report import make_report, save_report
    from abaw_rt.artefacts import RunOptions, open_artefact, open_runner
    from abaw_rt.pipeline.jobs import detector_or_default, spec_or_default
    from abaw_rt.machine import machine_info
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources

    if len(backend or ()) > 1 or len(precision or ()) > 1:
        raise AbawRtError("--video measures one fusion backend and precision: give --backend and -p at most once")
    spec = spec_or_default(extractors)
    det = detector_or_default(detector, spec)
    if source is None:
        from abaw_rt import defaults

        source = defaults.checkpoint_path()
    artefact = open_artefact(source)
    options = RunOptions(precision=precision[0].value if precision else None, device=resolve_device(device.value),
                         threads=threads)  # fmt: skip
    fusion = open_runner(artefact, backend[0].value if backend else None, options)
    config = PipelineConfig(
        detect_every=detect_every, decode_threads=decode_threads, infer_threads=threads, device=resolve_device(device.value), plot=False
    )
    pipeline = Pipeline(spec, config, fusion, det)
    (src,) = collect_sources([video], config.face)
    pipeline.check_sources([src])
    with err.status(f"bench --video {video.name}: {runs} run(s)"):
        with pipeline:
            result = bench_video(pipeline, src, runs)
    from dataclasses import asdict

    report = make_report(
        "pipeline",
        machine_info(),
        {"path": str(source), "kind": report_kind(artefact), "video": str(video)},
        {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(config).items()} | {"runs": runs},
        [],
        extra={"pipeline": result},
    )
    stem = name or f"bench_video_{resolve_device(device.value)}_{time.strftime('%Y%m%d-%H%M%S')}"
    path = save_report(report, out_dir / f"{stem}.json")
    if as_json:
        import json

        out.print_json(json.dumps(report))
        return
    rtf = result["realtime_factor"]
    table = Table(
        title=f"abaw-rt bench --video {video.name}: {result['frames']} frames, {result['duration_s']:.1f} s, "
        f"{runs} runs, x real time {rtf['median']:.1f} (min {rtf['min']:.1f}), models loaded in "
        f"{result['model_load_s']:.2f} s"
    )
    for col in ("stage", "calls", "total s (median)", "share", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col)
    for stage, s in result["stages"].items():
        table.add_row(
            stage, str(s["calls"]), f"{s['total_s_median']:.3f}", f"{s['share_median']:.0%}",
            f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}",
        )
    out.print(table)
    out.print(f"saved {path}", soft_wrap=True, markup=False)


def _default_precisions(artefact) -> tuple[str, ...]:
    """fp32 and fp16, and a graph's own precision when it is another (an int8 graph is measured beside fp32)."""
    from abaw_rt.bench.sweep import SweepConfig

    own = artefact.precision if artefact.kind.value == "fusion-graph" else None
    return tuple(dict.fromkeys(SweepConfig.precisions + ((own,) if own else ())))


def _speedups(cells) -> dict | None:
    """Print the speed-ups over fp32 of this sweep (when it measured fp32 and a lower precision); the report's part."""
    from abaw_rt.bench.report import precision_speedups

    rows = precision_speedups(cells)
    if not rows:
        return None
    table = Table(title="speed-up over fp32, same run (fp32 p50 / p50)")
    for col in ("backend", "prec", "B", "T", "graphs", "fp32 ms", "ms", "speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["backend"], r["precision"], str(r["batch"]), str(r["time"]), "on" if r["cuda_graphs"] else "off",
            f"{r['fp32_p50_ms']:.2f}", f"{r['p50_ms']:.2f}", f"{r['speedup']:.2f}x",
        )
    out.print(table)
    return {"speedups": rows}


def report_kind(artefact) -> str:
    """The source kind in bench reports (schema abaw-rt-bench/1): checkpoint, onnx or engine."""
    return "onnx" if artefact.kind.value == "fusion-graph" else artefact.kind.value


def _check_source(source: Path, device: str):
    """AbawRtError for a corrupt checkpoint, weights that do not fit its config, a graph whose inputs differ
    from its metadata or with hostile external data, or an engine without a readable sidecar or (on cuda)
    built for another GPU or TensorRT, or changed since (checked without deserialising it)."""
    from abaw_rt.artefacts import Kind, open_artefact, open_runner
    from abaw_rt.graphs.metadata import info_from_props

    artefact = open_artefact(source)  # reads the checkpoint, the graph's metadata or the engine's sidecar
    if artefact.kind is Kind.onnx:
        info_from_props(artefact.detail, str(source))  # not an exported fusion graph: says what it lacks
    if artefact.kind is Kind.checkpoint:
        try:
            from abaw_rt.model.fusion import build_model
        except ModuleNotFoundError as exc:  # every cell of a checkpoint needs torch (ort and trt export it first)
            raise AbawRtError(
                missing_module_message("torch", "torch", f"a checkpoint is benchmarked through torch; {exc}")
                + " (or benchmark an exported .onnx graph)"
            ) from None
        build_model(artefact.detail)
    elif artefact.kind is Kind.fusion_graph:
        with open_runner(artefact, "ort"):  # checks external data and the session's real inputs
            pass
    elif artefact.kind is Kind.engine and device == "cuda":
        open_runner(artefact, "trt")  # refuses an engine for another GPU or TensorRT, or changed since
    return artefact


def _warn_machines(base: dict, new: dict) -> None:
    from abaw_rt.bench.report import machine_differences

    diff = machine_differences(base, new)
    if diff:
        err.print(f"warning: the two runs are from different machines ({'; '.join(diff)}): ratios compare machines "
                  "as much as code", highlight=False, markup=False, soft_wrap=True)


def _print_ratios(rows, fail_above_ratio, title) -> None:
    from abaw_rt.bench.report import regressions

    worse = regressions(rows, fail_above_ratio) if fail_above_ratio is not None else []
    table = Table(title=f"p50 ratio {title}")
    for col in ("backend", "prec", "B", "T", "graphs", "base ms", "new ms", "ratio"):
        table.add_column(col)
    for r in rows:
        bad = fail_above_ratio is not None and r in worse
        table.add_row(
            r["backend"], r["precision"], str(r["batch"]), str(r["time"]), "on" if r["cuda_graphs"] else "off",
            f"{r['base_p50_ms']:.2f}", f"{r['new_p50_ms']:.2f}", f"[red]{r['ratio']:.3f}[/]" if bad else f"{r['ratio']:.3f}",
        )
    out.print(table)
    if fail_above_ratio is not None:
        rule = f"{fail_above_ratio}x the baseline by more than the runs' noise (p99 - p50, >= 0.25 ms)"
        if worse:
            err.print(f"regression: {len(worse)} cell(s) slower than {rule}", highlight=False)
            raise typer.Exit(1)
        out.print(f"no cell slower than {rule}", highlight=False)
