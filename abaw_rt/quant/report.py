"""Quantisation layer: the searched graph's self-description, the JSON report and the speed-up on this machine.

The lowered graph keeps its source's metadata, with ``abaw_rt.precision`` set to ``int8`` / ``fp16`` and
``abaw_rt.quant`` holding the search record (mode, activation type, nodes kept high, drift, budget), so
``verify``, ``bench``, ``infer --model`` and ``abaw-rt build`` know what the graph is. The report
(``<graph stem>.quant.json``, schema ``abaw-rt-quant/1``) has the same record plus the ranking, every trial,
the calibration data and the latency of the FP32 and the lowered graph measured here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.graphs.metadata import PREFIX, read_quant_record  # noqa: F401 (re-exported: one reader)
from abaw_rt.io import atomic_write_bytes

SCHEMA = "abaw-rt-quant/1"


def default_out(graph: Path, mode: str) -> Path:
    """``demo.fp32.onnx`` -> ``demo.int8.onnx``; ``fer.onnx`` -> ``fer.int8.onnx``; fp16: ``.fp16-mixed.onnx``."""
    stem = Path(graph).name.removesuffix(".onnx").removesuffix(".fp32")
    return Path(graph).with_name(f"{stem}.{'int8' if mode == 'int8' else 'fp16-mixed'}.onnx")


def report_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name.removesuffix(".onnx") + ".quant.json")


def search_record(result, budget, quant_cfg) -> dict:
    """What the graph's metadata and the report both carry."""
    return {
        "mode": result.mode,
        "budget_met": result.met,
        "kept_high": result.kept_nodes,
        "candidates": len(result.candidates),
        "drift": result.chosen.drift,
        "violations": result.chosen.violations,
        "budget": budget.to_dict(),
        **({"quantization": quant_cfg.to_dict()} if result.mode == "int8" else {"fp32_ops": "LayerNorm, softmax, reductions"}),
    }


def stamp_graph(path: Path, source: Path, record: Mapping) -> None:
    """Copy ``source``'s metadata onto the lowered graph at ``path``, set precision and the search record."""
    import onnx

    src_props = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    model = onnx.load(str(path))
    props = {**src_props, **{p.key: p.value for p in model.metadata_props}}
    props[PREFIX + "precision"] = record["mode"]
    props[PREFIX + "quant"] = json.dumps(record)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "abaw-rt"
    atomic_write_bytes(path, model.SerializeToString())


def measure_speedup(fp32: Path, low: Path, feeds: Mapping[str, np.ndarray], threads: int = 1, rounds: int = 3, calls: int = 3) -> dict:
    """Median latency of both graphs on the same feeds, taking turns in blocks of ``calls`` (one run, one machine)."""
    from abaw_rt.runners.ort_runner import open_session

    sessions = {"fp32": open_session(Path(fp32), "cpu", threads=threads), "low": open_session(Path(low), "cpu", threads=threads)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, dict(feeds))  # warm-up
    for _ in range(rounds):
        for key, s in sessions.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                s.run(None, dict(feeds))
                times[key].append(time.perf_counter() - t0)
    fp32_ms, low_ms = (1e3 * float(np.median(times[k])) for k in ("fp32", "low"))
    shape = {k: list(v.shape) for k, v in feeds.items()}
    return {"threads": threads, "feeds": shape, "fp32_ms": fp32_ms, "lowered_ms": low_ms, "speedup": fp32_ms / low_ms}


def build_report(result, record: Mapping, graph: Path, out: Path, calib_source: Mapping, speed: Mapping | None) -> dict:
    from abaw_rt.machine import machine_info

    return {
        "schema": SCHEMA,
        "graph": str(graph),
        "output": str(out),
        **record,
        "ranking": [{"node": n, "sensitivity": s} for n, s in result.ranking],
        "trials": [
            {"kept": t.kept, "drift": t.drift, "violations": t.violations, "excess": t.excess, "seconds": t.seconds}
            for t in result.trials
        ],
        "max_kept": result.max_kept,
        "search_seconds": result.seconds,
        "calibration": dict(calib_source),
        "speed": dict(speed) if speed else None,
        "machine": machine_info(),
    }


def write_report(path: Path, report: Mapping) -> Path:
    atomic_write_bytes(Path(path), (json.dumps(report, indent=1, default=str) + "\n").encode())
    return Path(path)
