"""Benchmark layer: the result file (JSON schema ``abaw-rt-bench/1``), markdown and PNG views, and comparisons.

Schema (top level)::

    schema      "abaw-rt-bench/1"
    kind        "model" (a sweep) or "pipeline" (``--video``)
    created     ISO date (UTC)
    machine     abaw_rt.machine.machine_info(): cpu, cores, memory, gpu (name, cc, driver/CUDA), os,
                python, versions {torch, onnxruntime, tensorrt, ...}
    source      {"path", "kind", "sha256", "model": {preset-like summary, parameters, mflops_per_frame_t300}}
    config      the SweepConfig (backends, precisions, times, batches, cuda_graphs, warmup, min_iters,
                min_seconds, max_seconds, threads, device, seed)
    timing      what the clock covers: the runner's backend call, device synchronised, numpy in and out
                (host-device copies included for GPU backends)
    cells       [{backend, precision, batch, time, cuda_graphs, status, reason, timing {p50_ms, p90_ms,
                 p99_ms, mean_ms, std_ms, iters}, first_call_ms, frames_per_s, segments_per_s,
                 peak_rss_mb, peak_gpu_mb, extra}]
    speedups    (sweeps with fp32 and a lower precision) [{backend, precision, batch, time, cuda_graphs,
                 fp32_p50_ms, p50_ms, speedup}]: fp32 p50 / p50, both cells of this run
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from abaw_rt.bench.sweep import Cell
from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes

SCHEMA = "abaw-rt-bench/1"
TIMING_NOTE = (
    "Runner.last_inference_time: the backend call only, device synchronised before the clock is read; "
    "numpy in and numpy out, so host-device copies are included for GPU backends; Python overhead of the "
    "feed checks is excluded"
)


def make_report(kind: str, machine: dict, source: dict, config: dict, cells: list[Cell], extra: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "source": source,
        "config": config,
        "timing": TIMING_NOTE,
        "cells": [c.to_dict() for c in cells],
        **(extra or {}),
    }


def save_report(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, json.dumps(report, indent=1).encode())


def load_report(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AbawRtError(f"benchmark file '{path}': no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AbawRtError(f"benchmark file '{path}': not JSON ({exc})") from None
    if report.get("schema") != SCHEMA:
        raise AbawRtError(f"benchmark file '{path}': schema {report.get('schema')!r}, expected {SCHEMA!r}")
    return report


def cells_of(report: dict) -> list[Cell]:
    return [Cell.from_dict(c) for c in report["cells"]]


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


HEADER = ("backend", "precision", "B", "T", "graphs", "p50 ms", "p90 ms", "p99 ms", "frames/s", "first call ms", "RSS MB", "status")


def cell_row(c: Cell) -> tuple[str, ...]:
    t = c.timing
    return (
        c.backend,
        c.precision,
        str(c.batch),
        str(c.time),
        "on" if c.cuda_graphs else "off",
        _fmt(t and t.p50_ms, ".2f"),
        _fmt(t and t.p90_ms, ".2f"),
        _fmt(t and t.p99_ms, ".2f"),
        _fmt(c.frames_per_s, ".0f"),
        _fmt(c.first_call_ms, ".1f"),
        _fmt(c.peak_rss_mb, ".0f"),
        c.status if c.status == "ok" else f"{c.status}: {c.reason}",
    )


def markdown_table(cells: list[Cell], collapse_skips: bool = True) -> str:
    """A markdown table of the measured cells; skipped groups become one line each."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    skipped: dict[tuple, str] = {}
    for c in cells:
        if c.status == "skipped" and collapse_skips:
            skipped.setdefault((c.backend, c.precision, c.cuda_graphs), c.reason or "")
            continue
        lines.append("| " + " | ".join(cell_row(c)) + " |")
    for (backend, precision, graphs), why in skipped.items():
        lines.append(f"| {backend} | {precision} | all | all | {'on' if graphs else 'off'} | | | | | | | skipped: {why} |")
    return "\n".join(lines) + "\n"


def plot_latency(cells: list[Cell], path: Path, title: str) -> Path | None:
    """PNG: p50 latency vs segment length, one line per backend/precision/graphs, one panel per batch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [c for c in cells if c.status == "ok"]
    batches = sorted({c.batch for c in ok})
    if not batches:
        return None
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        series: dict[str, list[tuple[int, float]]] = {}
        for c in ok:
            if c.batch == b:
                label = f"{c.backend} {c.precision}" + (" graphs" if c.cuda_graphs else "")
                series.setdefault(label, []).append((c.time, c.timing.p50_ms))
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("segment length T (frames)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"batch {b}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


_MODEL_KEYS = ("sha256", "heads", "features", "parameters")
_MACHINE_KEYS = ("cpu", "cores", "gpu")


def check_same_model(base: dict, new: dict) -> None:
    """AbawRtError when two result files measured different models (a ratio between them means nothing)."""
    a, b = base.get("source") or {}, new.get("source") or {}
    for key in _MODEL_KEYS:
        if key in a and key in b and a[key] != b[key]:
            raise AbawRtError(
                f"the two benchmark files measured different models ({key} {a[key]!r} vs {b[key]!r}; "
                f"'{a.get('path')}' vs '{b.get('path')}'): compare runs of one model"
            )


def machine_differences(base: dict, new: dict) -> list[str]:
    """What differs between the machines of two result files (cpu, cores, gpu), for a warning."""
    a, b = base.get("machine") or {}, new.get("machine") or {}
    return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in _MACHINE_KEYS if a.get(k) != b.get(k)]


MIN_EFFECT_MS = 0.25  # below this a p50 difference is timer and scheduler noise on any machine


def _spread(cell: Cell) -> float:
    """How much a cell's own calls scattered: p99 - p50 (on a shared CPU the tail holds the preemptions)."""
    return max(cell.timing.p99_ms - cell.timing.p50_ms, 0.0)


def compare(base: dict, new: dict) -> list[dict]:
    """Cell-by-cell p50 ratios new/base over the cells both measured (ok in both), with the noise of each pair.

    Raises:
        AbawRtError: the files measured different models, or share no measured cell.
    """
    check_same_model(base, new)
    base_cells = {c.key: c for c in cells_of(base) if c.status == "ok"}
    rows = []
    for c in cells_of(new):
        b = base_cells.get(c.key)
        if c.status != "ok" or b is None:
            continue
        rows.append(
            {
                "backend": c.backend,
                "precision": c.precision,
                "batch": c.batch,
                "time": c.time,
                "cuda_graphs": c.cuda_graphs,
                "base_p50_ms": b.timing.p50_ms,
                "new_p50_ms": c.timing.p50_ms,
                "ratio": c.timing.p50_ms / b.timing.p50_ms,
                "noise_ms": max(_spread(b), _spread(c), MIN_EFFECT_MS),
            }
        )
    if not rows:
        raise AbawRtError("the two benchmark files share no measured cell (backend, precision, batch, time, graphs)")
    return rows


def regressions(rows: list[dict], max_ratio: float) -> list[dict]:
    """Cells slower than ``max_ratio`` x the baseline by more than their noise (the larger p99 - p50 of the two
    runs, at least MIN_EFFECT_MS): one noisy run on a busy machine does not fail the gate, a real slow-down does."""
    return [r for r in rows if r["ratio"] > max_ratio and r["new_p50_ms"] - r["base_p50_ms"] > r.get("noise_ms", 0.0)]


def precision_speedups(cells: list[Cell], base: str = "fp32") -> list[dict]:
    """Speed-up of each lower precision over ``base`` in the same sweep: p50(base) / p50(precision) for every
    (backend, batch, time, graphs) measured (ok) at both; one run, one machine, so load shifts both alike."""
    ok = {c.key: c for c in cells if c.status == "ok"}
    rows = []
    for c in cells:
        ref = ok.get((c.backend, base, c.batch, c.time, c.cuda_graphs))
        if c.status != "ok" or c.precision == base or ref is None:
            continue
        rows.append({
            "backend": c.backend, "precision": c.precision, "batch": c.batch, "time": c.time, "cuda_graphs": c.cuda_graphs,
            f"{base}_p50_ms": ref.timing.p50_ms, "p50_ms": c.timing.p50_ms, "speedup": ref.timing.p50_ms / c.timing.p50_ms,
        })
    return rows
