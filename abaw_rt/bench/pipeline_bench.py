"""Benchmark layer: the whole-video pipeline (``abaw-rt bench --video``), per stage, over several runs.

Models are loaded once (reported apart as ``model_load_s``); each run is a full ``Pipeline.infer`` of the
video plus writing its outputs into a scratch folder, timed as the ``write`` stage. Per stage the figures
are the ones ``abaw-rt infer`` reports (calls, total seconds, share of the wall time, p50/p90/p99 per call),
aggregated over runs: the median of each run's value, and the spread of the run totals.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _aggregate(per_run: list[dict]) -> dict:
    stages: dict[str, dict] = {}
    names = {name for r in per_run for name in r}
    for name in sorted(names):
        rows = [r[name] for r in per_run if name in r]
        totals = [row["total_s"] for row in rows]
        stages[name] = {
            "runs": len(rows),
            "calls": int(np.median([row["calls"] for row in rows])),
            "total_s_median": float(np.median(totals)),
            "total_s_min": float(np.min(totals)),
            "total_s_max": float(np.max(totals)),
            "share_median": float(np.median([row["share"] for row in rows if row.get("share") is not None] or [0.0])),
            "p50_ms": float(np.median([row["p50_ms"] for row in rows])),
            "p90_ms": float(np.median([row["p90_ms"] for row in rows])),
            "p99_ms": float(np.median([row["p99_ms"] for row in rows])),
        }
    return stages


def bench_video(pipeline, source, runs: int, plot: bool = False) -> dict:
    """Run ``pipeline`` (already entered) on ``source`` ``runs`` times; returns the aggregated figures."""
    reports, walls = [], []
    with tempfile.TemporaryDirectory(prefix="abaw-rt-bench-video-") as scratch:
        for _ in range(runs):
            start = time.perf_counter()
            report = pipeline.infer_folder(source, Path(scratch), plot=plot)
            wall = time.perf_counter() - start
            write_s = max(wall - report["wall_s"], 0.0)  # rows are written as they come; this is the rest (report, plot)
            stages = dict(report["stages"])
            stages["write"] = {
                "calls": 1, "items": 1, "total_s": write_s, "share": write_s / wall,
                "p50_ms": write_s * 1e3, "p90_ms": write_s * 1e3, "p99_ms": write_s * 1e3,
            }
            for row in stages.values():  # shares of the whole run, writing included
                row["share"] = row["total_s"] / wall
            reports.append({**report, "stages": stages, "wall_with_write_s": wall})
            walls.append(wall)
    last = reports[-1]
    duration = last["duration_s"]
    rtf = [duration / w for w in walls]
    return {
        "video": str(source.path),
        "frames": last["frames"],
        "duration_s": duration,
        "fps": last.get("fps"),
        "runs": runs,
        "model_load_s": pipeline.load_seconds,
        "wall_s": {"median": float(np.median(walls)), "min": float(np.min(walls)), "max": float(np.max(walls))},
        "realtime_factor": {"median": float(np.median(rtf)), "min": float(np.min(rtf)), "max": float(np.max(rtf))},
        "frames_per_s_median": last["frames"] / float(np.median(walls)),
        "stages": _aggregate([r["stages"] for r in reports]),
        "peak_rss_mb": last.get("peak_rss_mb"),
        "threads": last.get("threads"),
        "model": last.get("model"),
        "segments": last.get("segments"),
        "extractors": last.get("extractors"),
        "detector": last.get("detector"),
        "per_run": [
            {"wall_s": w, "realtime_factor": duration / w, "stages": {k: v["total_s"] for k, v in r["stages"].items()}}
            for w, r in zip(walls, reports)
        ],
    }
