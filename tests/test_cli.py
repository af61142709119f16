"""CLI: light start-up, one-line errors with non-zero exits, and the export -> verify path."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app

cli = CliRunner()
HEAVY = ("torch", "onnxruntime", "av", "tensorrt", "cuda", "onnx", "onnxscript", "matplotlib", "cv2")


def test_help_imports_no_heavy_framework():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from abaw_rt.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "print('HEAVY', heavy); print('SECONDS', time.perf_counter() - t)\n" % (HEAVY,)
    )
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    heavy_line = next(line for line in res.stdout.splitlines() if line.startswith("HEAVY"))
    assert heavy_line == "HEAVY []", heavy_line
    assert "export" in res.stdout and "verify" in res.stdout
    print(f"abaw-rt --help: {wall:.2f} s wall including interpreter start")  # reported, not asserted


def test_console_script_runs():
    res = subprocess.run(["abaw-rt", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("abaw-rt ")


def test_export_then_verify_through_the_cli(tmp_path):
    pytest.importorskip("torch")
    ck = tmp_path / "m.safetensors"
    assert cli.invoke(app, ["init-checkpoint", str(ck), "--preset", "expr"]).exit_code == 0
    out_dir = tmp_path / "graphs" / "new"  # created when missing, like infer and bench
    res = cli.invoke(app, ["export", str(ck), "-p", "fp32", "--out-dir", str(out_dir), "--json"])
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)
    assert result["path"] == str(out_dir / "m.fp32.onnx") and result["checked_lengths"][-1] == 600
    info = json.loads(cli.invoke(app, ["info", result["path"], "--json"]).stdout)
    assert info["precision"] == "fp32" and info["config"]["heads"] == ["expr"]
    res = cli.invoke(app, ["verify", str(ck), "--onnx", result["path"], "-t", "3", "-b", "2"])
    assert res.exit_code == 0 and "verify passed" in res.stdout


def test_info_on_a_checkpoint(tiny_ckpt_path):
    res = cli.invoke(app, ["info", str(tiny_ckpt_path), "--json"])
    data = json.loads(res.stdout)
    assert data["window"] == 40 and data["parameters"] > 0 and data["normalization"]["visual"] == "2304 dims"
    summary = cli.invoke(app, ["info", str(tiny_ckpt_path)]).stdout.splitlines()  # a few lines a person reads
    assert summary[0].split() == ["file:", "checkpoint"] and len(summary) <= 12
    assert any(line.startswith("window:") and line.split()[-1] == "40" for line in summary)
    assert any(line.startswith("sha256:") for line in summary)


def _one_line_error(res):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def test_corrupt_checkpoint_gives_one_line_and_no_output(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    res = cli.invoke(app, ["export", str(bad), "-p", "fp32", "-p", "fp16"])
    assert res.exit_code == 2
    assert "bad.safetensors" in _one_line_error(res)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.safetensors"]


def test_options_out_of_range_are_refused(tmp_path):
    res = cli.invoke(app, ["init-checkpoint", str(tmp_path / "x.safetensors"), "--window", "100", "--stride", "101"])
    assert res.exit_code == 2 and "--stride 101" in _one_line_error(res)
    res = cli.invoke(app, ["init-checkpoint", str(tmp_path / "x.safetensors"), "--window", "0"])
    assert res.exit_code != 0 and "window" in res.output.lower()
    res = cli.invoke(app, ["init-checkpoint", str(tmp_path / "x.safetensors"), "--preset", "valence"])
    assert res.exit_code != 0 and "valence" in res.output
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_checkpoint_and_bad_precision(tmp_path):
    res = cli.invoke(app, ["export", str(tmp_path / "nope.safetensors")])
    assert res.exit_code != 0 and "does not exist" in res.output
    ck = tmp_path / "m.safetensors"
    cli.invoke(app, ["init-checkpoint", str(ck)])
    res = cli.invoke(app, ["export", str(ck), "-p", "int4"])
    assert res.exit_code != 0 and "int4" in res.output
    res = cli.invoke(app, ["export", str(ck), "--out-dir", str(tmp_path / "new" / "graphs")])  # created, like infer
    assert res.exit_code == 0 and (tmp_path / "new" / "graphs" / "m.fp32.onnx").is_file()
    res = cli.invoke(app, ["export", str(tmp_path / "new" / "graphs" / "m.fp32.onnx")])
    assert res.exit_code == 2 and "is an ONNX graph; 'abaw-rt export' takes a checkpoint" in res.stderr
