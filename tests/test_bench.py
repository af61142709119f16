"""bench: sweep logic, skip reporting, the result schema, comparisons and the regression gate (no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.bench.report import SCHEMA, compare, load_report, make_report, markdown_table, regressions, save_report
from abaw_rt.bench.sweep import Cell, Skip, SweepConfig, run_sweep
from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from abaw_rt.machine import machine_info

cli = CliRunner()


class FakeRunner:
    """Reports a scripted backend time per call: 1 ms per frame, so cells are predictable."""

    precision = "fp32"

    def __init__(self, fail_at_time=None):
        self.calls = []
        self.fail_at_time = fail_at_time
        self.active = False

    def activate(self):
        self.active = True
        return self

    def deactivate(self):
        self.active = False

    def example_feeds(self, b, t, rng=None, padded=False):
        return {"x": np.zeros((b, t), np.float32)}

    def infer(self, feeds):
        b, t = feeds["x"].shape
        if t == self.fail_at_time:
            raise AbawRtError(f"input 'x': time {t} is outside the profile")
        self.calls.append((b, t))
        self.last_inference_time = 1e-3 * b * t
        return {}


def test_sweep_measures_every_cell_and_lists_skips_with_reasons():
    runners = {}

    def factory(backend, precision, graphs):
        if backend == "trt":
            raise Skip("TensorRT is not installed")
        if graphs:
            raise Skip("no CUDA graphs on CPU")
        runners[(backend, precision)] = r = FakeRunner(fail_at_time=7 if precision == "fp16" else None)
        return r

    cfg = SweepConfig(backends=("fake", "trt"), precisions=("fp32", "fp16"), times=(3, 7), batches=(1, 2),
                      cuda_graphs=(False, True), warmup=2, min_iters=4, min_seconds=0.0)
    cells = run_sweep(cfg, factory)
    assert len(cells) == 2 * 2 * 2 * 2 * 2  # nothing silently dropped
    by = {c.key: c for c in cells}
    ok = by[("fake", "fp32", 2, 3, False)]
    assert ok.status == "ok" and ok.timing.iters == 4
    assert ok.timing.p50_ms == pytest.approx(6.0) and ok.frames_per_s == pytest.approx(1000.0)
    assert ok.segments_per_s == pytest.approx(2 / 0.006)
    assert ok.first_call_ms is not None and ok.peak_rss_mb > 0
    # 1 first call + 2 warm-up + 4 timed per cell
    assert runners[("fake", "fp32")].calls.count((2, 3)) == 7
    assert by[("trt", "fp16", 1, 7, False)].status == "skipped"
    assert by[("trt", "fp16", 1, 7, False)].reason == "TensorRT is not installed"
    assert by[("fake", "fp32", 1, 3, True)].reason == "no CUDA graphs on CPU"
    err = by[("fake", "fp16", 1, 7, False)]
    assert err.status == "error" and "outside the profile" in err.reason
    assert by[("fake", "fp16", 1, 3, False)].status == "ok"  # one bad shape does not sink the others
    assert not runners[("fake", "fp32")].active  # runners are released


def test_sweep_config_rejects_nonsense():
    with pytest.raises(AbawRtError, match="--batch"):
        SweepConfig(batches=(0,))
    with pytest.raises(AbawRtError, match="--time"):
        SweepConfig(times=())
    with pytest.raises(AbawRtError, match="min-iters"):
        SweepConfig(min_iters=0)


def _report(p50_by_time: dict, tmp_path, name: str) -> dict:
    from abaw_rt.bench.measure import Timing

    cells = [
        Cell("ort", "fp32", 1, t, False, "ok", timing=Timing(p, p, p, p, 0.0, 5), frames_per_s=t / p * 1e3)
        for t, p in p50_by_time.items()
    ]
    cells.append(Cell("trt", "fp16", 1, 75, False, "skipped", "TensorRT is not installed"))
    rep = make_report("model", machine_info(), {"path": "x"}, {"threads": 2}, cells)
    save_report(rep, tmp_path / f"{name}.json")
    return rep


def test_result_file_schema_round_trips(tmp_path):
    rep = _report({75: 2.0, 300: 8.0}, tmp_path, "a")
    again = load_report(tmp_path / "a.json")
    assert again == json.loads(json.dumps(rep))
    assert again["schema"] == SCHEMA and again["kind"] == "model"
    for key in ("cpu", "cores", "python", "versions", "date"):
        assert key in again["machine"]
    assert "numpy" in again["machine"]["versions"]
    assert "synchronised" in again["timing"]
    cell = again["cells"][0]
    assert set(cell["timing"]) == {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iters"}
    md = markdown_table([Cell.from_dict(c) for c in again["cells"]])
    assert "| ort | fp32 | 1 | 75 |" in md and "skipped: TensorRT is not installed" in md
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(AbawRtError, match="schema"):
        load_report(tmp_path / "bad.json")


def test_compare_gives_ratios_and_the_gate_flags_regressions(tmp_path):
    base = _report({75: 2.0, 300: 8.0}, tmp_path, "base")
    new = _report({75: 2.2, 300: 12.0, 600: 20.0}, tmp_path, "new")
    rows = compare(base, new)
    assert [(r["time"], round(r["ratio"], 6)) for r in rows] == [(75, 1.1), (300, 1.5)]  # 600 has no baseline
    assert [r["time"] for r in regressions(rows, 1.2)] == [300]
    res = cli.invoke(app, ["bench", "--compare", str(tmp_path / "base.json"), str(tmp_path / "new.json")])
    assert res.exit_code == 0 and "1.500" in res.stdout
    res = cli.invoke(app, ["bench", "--compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"),
                           "--fail-above-ratio", "1.2"])
    assert res.exit_code == 1 and "regression: 1 cell(s)" in res.stderr
    res = cli.invoke(app, ["bench", "--compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"),
                           "--fail-above-ratio", "2"])
    assert res.exit_code == 0


def test_bench_cli_sweeps_a_checkpoint_and_saves_json_markdown_plot(tiny_ckpt_path, exported, tmp_path):
    pytest.importorskip("torch")
    res = cli.invoke(app, [
        "bench", str(tiny_ckpt_path), "--backend", "ort", "--backend", "trt", "-p", "fp32", "-p", "fp16",
        "-t", "3", "-t", "40", "-b", "2", "--graphs", "off", "--warmup", "0", "--min-iters", "2",
        "--min-seconds", "0", "--threads", "1", "--out-dir", str(tmp_path), "--name", "sweep",
    ])
    assert res.exit_code == 0, res.output
    rep = load_report(tmp_path / "sweep.json")
    ok = [c for c in rep["cells"] if c["status"] == "ok"]
    assert {(c["precision"], c["time"]) for c in ok} == {("fp32", 3), ("fp32", 40), ("fp16", 3), ("fp16", 40)}
    assert all(c["timing"]["iters"] >= 2 and c["peak_rss_mb"] > 0 for c in ok)
    trt = [c for c in rep["cells"] if c["backend"] == "trt"]
    assert len(trt) == 4 and all(c["status"] == "skipped" and c["reason"] for c in trt)
    assert rep["source"]["sha256"] and rep["config"]["threads"] == 1
    assert (tmp_path / "sweep.md").read_text().count("| ort |") == 4
    if (tmp_path / "sweep.png").exists():
        assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.onnx"))  # graphs beside the checkpoint were reused, none left in results


def test_bench_needs_a_source_or_two_files(tmp_path):
    res = cli.invoke(app, ["bench"])
    assert res.exit_code == 2 and "SOURCE missing" in res.stderr
    (tmp_path / "x.txt").write_text("hi")
    res = cli.invoke(app, ["bench", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and "expected a checkpoint" in res.stderr


def test_bench_video_reports_every_stage_over_runs(tmp_path):
    pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    res = cli.invoke(app, ["make-sample-video", str(video), "--seconds", "2", "--width", "320", "--height", "180"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["bench", "--video", str(video), "--runs", "2", "--threads", "1",
                           "--out-dir", str(tmp_path), "--name", "vid"])
    assert res.exit_code == 0, res.output
    rep = load_report(tmp_path / "vid.json")
    assert rep["kind"] == "pipeline" and rep["config"]["runs"] == 2
    p = rep["pipeline"]
    assert p["runs"] == 2 and len(p["per_run"]) == 2 and p["frames"] == 50
    assert {"decode", "detect", "fusion", "stitch", "write"} <= set(p["stages"])
    assert any(s.startswith("extract:") for s in p["stages"])
    assert p["realtime_factor"]["min"] <= p["realtime_factor"]["median"] <= p["realtime_factor"]["max"]
    assert p["model_load_s"] is not None and p["model"]["heads"] == ["va", "expr"]
    assert not list(tmp_path.glob("clip*/"))  # outputs went to a scratch folder, not next to the results
    res = cli.invoke(app, ["bench", "--video", str(video), "--backend", "ort", "--backend", "torch"])
    assert res.exit_code == 2 and "one fusion backend" in res.stderr
