"""CLI layer: the quantize verb: an INT8 (or mixed FP16) graph whose precision is chosen by a task-metric budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import Activation, Precision


@app.command()
@user_errors
def quantize(
    graph: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="FP32 ONNX graph (abaw-rt export, or an extractor).")],
    calib: Annotated[
        Path,
        typer.Option("--calib", exists=True, help="Calibration data: a feature-store folder (fusion graphs) or a .npy array of the input (extractors)."),
    ],
    budget: Annotated[
        Optional[list[str]],
        typer.Option("--budget", help="Drift allowed, KEY=VALUE (ccc, expr_f1, expr_agreement, au_f1, au_flips, cosine); repeat or comma-separate."),
    ] = None,
    precision: Annotated[Precision, typer.Option("--precision", "-p", help="Lower to int8 (QDQ) or fp16.")] = Precision.int8,
    activation: Annotated[Activation, typer.Option(help="INT8 activations: u8 for CPUs, s8 for TensorRT.")] = Activation.u8,
    max_kept: Annotated[Optional[int], typer.Option(min=0, help="Keep at most this many nodes in higher precision.")] = None,
    max_calib: Annotated[int, typer.Option(min=1, help="Calibration batches at most (store windows, array chunks).")] = 64,
    max_held: Annotated[int, typer.Option(min=1, help="Held-aside batches the drift is measured on, at most.")] = 16,
    threads: Annotated[Optional[int], typer.Option(min=1, help="onnxruntime threads (search and speed measurement).")] = None,
    speed: Annotated[bool, typer.Option(help="Measure FP32 vs lowered latency here (B=1, one window).")] = True,
    out_path: Annotated[Optional[Path], typer.Option("--out", dir_okay=False, help="Output graph (default: <stem>.int8.onnx beside GRAPH).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Lower GRAPH to INT8 (or FP16), returning the most sensitive nodes to FP32 until drift is within budget.

    Writes the graph and its report (<out stem>.quant.json). Exits 1 when the budget cannot be met (the
    graph with the best reachable drift is still written, its report says so).
    """
    from abaw_rt.quant.calib import CalibConfig, open_calibration
    from abaw_rt.quant.drift import parse_budget
    from abaw_rt.quant.qdq import QuantConfig
    from abaw_rt.quant.report import build_report, default_out, measure_speedup, report_path, search_record, stamp_graph, write_report
    from abaw_rt.quant.search import SearchConfig, search_precision

    if precision is Precision.fp32:
        raise AbawRtError("--precision fp32: quantize lowers a graph to int8 or fp16")
    the_budget = parse_budget(budget)
    target = out_path or default_out(graph, precision.value)
    if not target.parent.is_dir():
        raise AbawRtError(f"--out '{target}': folder '{target.parent}' does not exist")
    if target.resolve() == graph.resolve():
        raise AbawRtError(f"--out '{target}': would overwrite the input graph")
    with err.status(f"reading calibration data {calib}"):
        data = open_calibration(calib, graph, CalibConfig(max_calib=max_calib, max_held=max_held))
    cfg = SearchConfig(precision.value, the_budget, max_kept, QuantConfig(activation=activation.value), threads)
    with err.status(f"searching {precision.value} precision of {graph.name}") as status:
        result = search_precision(graph, target, data, cfg, progress=lambda msg: status.update(f"{graph.name}: {msg}"))
    record = search_record(result, the_budget, cfg.quant)
    stamp_graph(target, graph, record)
    measured = None
    if speed:
        with err.status("measuring latency (fp32 vs lowered)"):
            measured = measure_speedup(graph, target, data.held_aside[0], threads=threads or 1)
    report = build_report(result, record, graph, target, data.source, measured)
    written = write_report(report_path(target), report)
    if as_json:
        out.print_json(data=report)
    else:
        _print(report, target, written)
    if not result.met:
        raise typer.Exit(1)


def _print(report: dict, graph: Path, written: Path) -> None:
    table = Table(title=f"abaw-rt quantize ({report['mode']}): {graph}")
    for col in ("kept high", "drift", "budget", "speed-up"):
        table.add_column(col, overflow="fold")
    drift = "\n".join(f"{k} {v:.4g}" for k, v in report["drift"].items())
    speed = report["speed"]
    speed_text = f"{speed['speedup']:.2f}x ({speed['fp32_ms']:.1f} -> {speed['lowered_ms']:.1f} ms)" if speed else "-"
    verdict = "[green]met[/]" if report["budget_met"] else "[red]NOT met[/]"
    table.add_row(f"{len(report['kept_high'])} of {report['candidates']}", drift, verdict, speed_text)
    out.print(table)
    if not report["budget_met"]:
        out.print(
            f"budget not met even with {report['max_kept']} node(s) kept high: best reachable drift "
            f"{'; '.join(report['violations'])}", highlight=False, soft_wrap=True,
        )
    out.print(f"wrote {graph} and {written} (search {report['search_seconds']:.1f} s)", highlight=False)
