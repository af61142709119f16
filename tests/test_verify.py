"""verify: metrics against reference formulas, the pass path and the failure path through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app
from abaw_rt.verify import DEFAULT_TOLERANCES, Tolerances, ccc, default_grid, output_stats
from tests.helpers import perturbed_copy

pytest.importorskip("torch")
cli = CliRunner()


def test_ccc_matches_the_definition_with_population_moments():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=500), rng.normal(size=500) * 0.5 + 0.3
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    want = 2 * cov / (np.var(x) + np.var(y) + (x.mean() - y.mean()) ** 2)
    assert ccc(x, y) == pytest.approx(want, abs=1e-12)
    assert ccc(x, x) == pytest.approx(1.0)


def test_decision_metrics_count_only_decisive_frames():
    tol = Tolerances(max_abs=1.0, p99_abs=1.0, ccc_drift=1.0, expr_agreement=1.0, au_flip_rate=0.0)
    ref = np.array([[5.0, 0.0], [0.1, 0.0]])  # second frame is a near-tie (margin 0.1 < max_abs)
    cand = np.array([[4.9, 0.0], [0.0, 0.1]])
    s = output_stats("expr", ref, cand, tol)
    assert s.task["expr_agreement"] == 0.5 and s.task["expr_agreement_decisive"] == 1.0 and s.passed
    au_ref = np.array([[3.0, -0.05]])
    au_cand = np.array([[-3.0, 0.05]])  # a decisive flip and a near-zero one
    s = output_stats("au", au_ref, au_cand, tol)
    assert s.task["au_flip_rate"] == 1.0 and s.task["au_flip_rate_decisive"] == 1.0
    assert not s.passed and "AU flip rate" in s.failures[-1]


def test_grid_covers_lengths_and_padded_batches():
    grid = default_grid(300)
    assert {c.time for c in grid} == {1, 7, 299, 300, 600}
    assert any(c.padded and c.batch == 4 for c in grid)
    assert all(not c.padded for c in grid if c.batch == 1)


def test_verify_passes_on_good_graphs_and_reports_json(tiny_ckpt_path, exported):
    res = cli.invoke(app, ["verify", str(tiny_ckpt_path), "--json", "-b", "1", "-b", "3", "-t", "5", "-t", "40"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] is True
    names = [c["name"] for c in report["candidates"]]
    assert any("fp32" in n for n in names) and any("fp16" in n for n in names)
    fp16 = next(c for c in report["candidates"] if c["precision"] == "fp16")
    assert set(fp16["outputs"]) == {"va", "expr", "au"}
    assert 0 < fp16["outputs"]["va"]["max_abs"] < DEFAULT_TOLERANCES["fp16"].max_abs
    assert "ccc_drift_valence" in fp16["outputs"]["va"]["task"]
    assert "au_flip_rate" in fp16["outputs"]["au"]["task"]
    assert len(report["grid"]) == 6  # 2 lengths x (b=1, b=3, b=3 padded)


def test_a_perturbed_graph_fails_verify(tiny_ckpt_path, exported, tmp_path):
    bad = perturbed_copy(exported["fp32"].path, tmp_path / "perturbed.onnx", scale=0.05)
    res = cli.invoke(app, ["verify", str(tiny_ckpt_path), "--onnx", str(bad), "-t", "5", "-t", "40"])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.stdout and "verify FAILED" in res.stdout


def test_tolerance_options_are_applied(tiny_ckpt_path, exported):
    res = cli.invoke(
        app, ["verify", str(tiny_ckpt_path), "--onnx", str(exported["fp16"].path), "--fp16-atol", "1e-9", "-t", "5"]
    )
    assert res.exit_code == 1 and "max abs error" in res.stdout


def test_graph_of_another_checkpoint_is_refused(exported, tmp_path):
    other = tmp_path / "other.safetensors"
    assert cli.invoke(app, ["init-checkpoint", str(other), "--preset", "va", "--seed", "1"]).exit_code == 0
    res = cli.invoke(app, ["verify", str(other), "--onnx", str(exported["fp32"].path)])
    assert res.exit_code == 2
    assert "exported from another checkpoint" in res.stderr


def test_no_graph_to_verify_says_how_to_make_one(tmp_path):
    ck = tmp_path / "lonely.safetensors"
    cli.invoke(app, ["init-checkpoint", str(ck)])
    res = cli.invoke(app, ["verify", str(ck)])
    assert res.exit_code == 2 and "abaw-rt export" in res.stderr
