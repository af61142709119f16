"""A newcomer's first hour: graph metadata without ``onnx``, recipes from any folder, readable output at 80
columns, bench defaults and the regression gate's noise rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abaw_rt import defaults
from abaw_rt.errors import AbawRtError

ROOT = Path(__file__).resolve().parents[1]


# --- graph metadata and external data straight from the protobuf wire format ---------------------------------


def _graph_with_external_data(folder: Path, location: str) -> Path:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((8, 8), np.float32), "cv"))
    add = helper.make_node("Add", ["x", "w"], ["y0"])
    add2 = helper.make_node("Add", ["y0", "c"], ["y"])
    graph = helper.make_graph(
        [const, add, add2], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
        [numpy_helper.from_array(np.ones((8, 8), np.float32), "w")],
    )
    model = helper.make_model(graph)
    model.metadata_props.add(key="abaw_rt.k", value="v é")
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=0, convert_attribute=True
    )
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_wire_reader_agrees_with_onnx_on_the_shipped_graphs():
    onnx = pytest.importorskip("onnx")
    from abaw_rt.graphs.protolite import read_model_summary

    for path in sorted(Path(defaults.__file__).parent.glob("*.onnx")):
        summary = read_model_summary(path)
        model = onnx.load(str(path), load_external_data=False)
        assert summary.metadata == {p.key: p.value for p in model.metadata_props}, path.name
        assert summary.external == ()


def test_wire_reader_finds_external_data_in_initializers_and_attributes(tmp_path):
    from abaw_rt.graphs.protolite import read_model_summary
    from abaw_rt.graphs.safety import check_external_data

    path = _graph_with_external_data(tmp_path, "../evil.bin")
    summary = read_model_summary(path)
    assert summary.metadata == {"abaw_rt.k": "v é"}
    assert sorted(r.tensor for r in summary.external) == ["cv", "w"]
    with pytest.raises(AbawRtError, match="outside the model's folder"):
        check_external_data(path)


@pytest.mark.parametrize("content", [b"", b"\xff" * 100, b'{"__metadata__": {}}' + b"\0" * 64])
def test_wire_reader_refuses_what_is_not_onnx(tmp_path, content):
    from abaw_rt.graphs.metadata import read_onnx_info

    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(AbawRtError, match="not a readable ONNX model"):
        read_onnx_info(path)


def test_reading_a_graph_for_inference_does_not_import_onnx():
    code = (
        "import sys\n"
        "from abaw_rt.runners.ort_runner import OrtRunner\n"
        "from abaw_rt import defaults\n"
        "with OrtRunner(defaults.checkpoint_path().with_suffix('.fp32.onnx')) as r:\n"
        "    r.infer(r.example_feeds(batch=1, time=5))\n"
        "print('onnx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- engine recipes from an installed package -------------------------------------------------------------------


def test_recipes_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from abaw_rt.engines.recipes import available_recipes, load_engine_recipe as load_train_recipe

    monkeypatch.chdir(tmp_path)  # no engines/ here and no source tree relative to it
    assert {"jetson-orin", "t4-a10", "h100"} <= set(available_recipes())
    assert load_train_recipe("jetson-orin").name == "jetson-orin"
    own = tmp_path / "engines" / "recipes"
    own.mkdir(parents=True)
    data = json.loads((Path(__file__).parents[1] / "abaw_rt/engines/recipe_files/h100.json").read_text())
    (own / "h100.json").write_text(json.dumps({**data, "description": "mine"}))
    assert load_train_recipe("h100").description == "mine"  # the working folder's own recipe comes first


def test_recipes_are_package_data():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "recipe_files/*.json" in pyproject["tool"]["setuptools"]["package-data"]["abaw_rt.engines"]


def test_timing_cache_does_not_depend_on_the_working_folder(monkeypatch, tmp_path):
    from abaw_rt.engines.recipes import default_timing_cache

    monkeypatch.setenv("ABAW_RT_CACHE", str(tmp_path / "c"))
    assert default_timing_cache() == tmp_path / "c" / "timing.cache"
    monkeypatch.delenv("ABAW_RT_CACHE")
    assert default_timing_cache().is_absolute()


def test_declared_python_versions_are_the_tested_ones():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert declared.split("#")[0].strip() == ">=3.11"  # CI runs 3.11; 3.10 (no tomllib) is not claimed
    assert sys.version_info >= (3, 11)


# --- bench: comparisons of one model, a gate that accounts for noise ------------------------------------------


def _bench_file(tmp_path, name, p50, p90, source=None, cpu="cpu A"):
    from abaw_rt.bench.measure import Timing
    from abaw_rt.bench.report import make_report, save_report
    from abaw_rt.bench.sweep import Cell
    from abaw_rt.machine import machine_info

    cells = [Cell("ort", "fp32", 1, t, False, "ok", timing=Timing(p50 * t, p90 * t, p90 * t * 1.01, p50 * t, 0.0, 9))
             for t in (10, 75)]
    machine = {**machine_info(), "cpu": cpu}
    return save_report(make_report("model", machine, source or {"path": "m.safetensors", "sha256": "a" * 64},
                                   {}, cells), tmp_path / f"{name}.json")


def test_gate_passes_a_noisy_rerun_and_fails_a_real_slowdown(tmp_path):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    base = _bench_file(tmp_path, "base", 1.0, 1.6)  # a busy machine: the tail 60 % above p50
    rerun = _bench_file(tmp_path, "rerun", 1.3, 1.9)  # 1.3x, inside the runs' own spread
    slow = _bench_file(tmp_path, "slow", 2.0, 2.2)
    cli = CliRunner()
    res = cli.invoke(app, ["bench", "--compare", str(base), str(rerun), "--fail-above-ratio", "1.2"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["bench", "--compare", str(base), str(slow), "--fail-above-ratio", "1.2"])
    assert res.exit_code == 1 and "regression: 2 cell(s)" in res.stderr


def test_compare_refuses_different_models_and_warns_on_different_machines(tmp_path):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    base = _bench_file(tmp_path, "base", 1.0, 1.1)
    other = _bench_file(tmp_path, "other", 1.0, 1.1, source={"path": "n.safetensors", "sha256": "b" * 64})
    elsewhere = _bench_file(tmp_path, "elsewhere", 1.0, 1.1, cpu="cpu B")
    cli = CliRunner()
    res = cli.invoke(app, ["bench", "--compare", str(base), str(other)])
    assert res.exit_code == 2 and "different models" in res.stderr
    res = cli.invoke(app, ["bench", "--compare", str(base), str(elsewhere)])
    assert res.exit_code == 0 and "different machines" in res.stderr and "cpu B" in res.stderr


def test_bench_writes_to_its_scratch_folder_by_default(monkeypatch, tmp_path):
    import inspect

    from abaw_rt.cli import bench_cmds

    default = inspect.signature(bench_cmds.bench).parameters["out_dir"].default
    assert default == Path("abaw_rt_bench")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/abaw_rt_bench/", "/abaw_rt_out/", "/sample.mp4"} <= set(ignored)


# --- readable at 80 columns and in a pipe ------------------------------------------------------------------------


def _piped(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    code = "import sys\nfrom abaw_rt.cli import run\nsys.argv = ['abaw-rt'] + sys.argv[1:]\nrun()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80 or " " not in line.strip(), f"wider than 80 columns: {line!r}"
    assert "…" not in text


@pytest.mark.parametrize("verb", ["infer", "extract", "export", "verify", "bench", "train", "crossval", "build"])
def test_help_at_80_columns_cuts_no_option_name(verb):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    res = CliRunner().invoke(app, [verb, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert res.exit_code == 0
    _fits(res.stdout)
    assert "--threads" in res.stdout or verb == "build"


def test_defaults_lists_full_names_and_sha256_at_80_columns():
    from abaw_rt.io import file_sha256

    res = _piped("defaults")
    assert res.returncode == 0, res.stderr
    _fits(res.stdout)
    for f in defaults.FILES:
        assert f.name in res.stdout.split() or f"{f.name}" in res.stdout  # whole, never broken mid-word
    assert file_sha256(defaults.checkpoint_path()) in res.stdout


def test_bench_table_keeps_numbers_whole_in_a_pipe(tmp_path):
    pytest.importorskip("torch")
    graph = defaults.checkpoint_path().with_suffix(".fp32.onnx")
    res = _piped("bench", str(graph), "--backend", "ort", "-p", "fp32", "-t", "7", "-t", "300", "-b", "1",
                 "--min-iters", "2", "--min-seconds", "0", "--warmup", "0", "--out", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _fits(res.stdout)
    rows = [line for line in res.stdout.splitlines() if line.startswith("│ ort")]
    assert len(rows) == 2  # one line per cell: no number split across lines
    assert "bench 1/" in res.stderr  # progress in a pipe, one plain line per cell
    saved = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert all("p90_ms" in c["timing"] for c in saved["cells"] if c["status"] == "ok")  # full values in the file


def test_epoch_lines_keep_each_metric_with_its_value(monkeypatch):
    from io import StringIO

    from rich.console import Console

    from abaw_rt.cli import train_cmds

    class Record:
        epoch, train_loss, val_loss, seconds, best = 3, 0.41234, 0.45678, 1.25, True
        metrics = {"ccc_valence": 0.5, "ccc_arousal": 0.6, "ccc_mean": 0.55, "f1_AU1": 0.1, "frames": 10}

    buf = StringIO()
    monkeypatch.setattr(train_cmds, "err", Console(file=buf, width=80))  # the reporter's stderr console
    reporter = train_cmds.RichReporter(prefix="fold 2/5 ")
    reporter.epoch_end(Record)
    text = buf.getvalue()
    _fits(text)
    for token in ("train_loss=0.4123", "val_loss=0.4568", "ccc_valence=0.5000", "ccc_mean=0.5500"):
        assert token in text.split(), text


# --- export: the fast default exporter and the dynamo one give graphs that pass the same check ------------------


@pytest.mark.slow  # the dynamo exporter takes about a minute for the tiny model here
def test_dynamo_exporter_still_exports_a_checked_graph(tiny_ckpt, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.graphs.metadata import read_onnx_info

    steps: list[str] = []
    res = export_onnx(tiny_ckpt, tmp_path / "d.fp16.onnx", precision="fp16", exporter="dynamo", progress=steps.append)
    assert res.max_abs_error < 5e-2 and 2 * tiny_ckpt.header.window in res.checked_lengths
    assert read_onnx_info(res.path).precision == "fp16"
    assert [s.split()[0] for s in steps] == ["exporting", "checking"]
    assert "dynamo" in steps[0]


def test_export_reports_progress_and_refuses_an_unknown_exporter(tiny_ckpt, tmp_path):
    pytest.importorskip("torch")
    from abaw_rt.export.onnx_export import export_onnx

    with pytest.raises(AbawRtError, match="exporter 'jit'"):
        export_onnx(tiny_ckpt, tmp_path / "x.onnx", exporter="jit")
    steps: list[str] = []
    export_onnx(tiny_ckpt, tmp_path / "t.fp32.onnx", progress=steps.append)
    assert "torchscript" in steps[0] and "lengths 1, 7" in steps[1]


# --- plot and threads --------------------------------------------------------------------------------------------


def test_plot_needs_no_matplotlib_and_keeps_expression_colours_apart(tmp_path):
    from abaw_rt.pipeline import plot

    assert plot.VALENCE not in plot.EXPR_COLOURS and plot.AROUSAL not in plot.EXPR_COLOURS
    assert len(set(plot.EXPR_COLOURS)) == 8
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import numpy as np\nfrom pathlib import Path\n"
        "from abaw_rt.pipeline.outputs import VideoPrediction, plot_png\n"
        "n = 300; rng = np.random.default_rng(0); e = rng.dirichlet(np.ones(8), n)\n"
        "found = np.ones(n, bool); found[50:80] = False\n"
        "p = VideoPrediction('v', Path('v.mp4'), np.arange(n) / 25, found,\n"
        "    {'va': rng.uniform(-1, 1, (n, 2)), 'expr': e, 'au': rng.random((n, 12))},\n"
        "    {'va': rng.uniform(-1, 1, (n, 2)), 'expr': e.argmax(1), 'au': rng.random((n, 12)) > 0.5})\n"
        f"open({str(tmp_path / 'p.png')!r}, 'wb').write(plot_png(p))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert img.shape[1] == plot.WIDTH
    bottom = img[-30:]  # the expression legend sits below the time axis label, on its own row
    assert any((bottom == c).all(axis=-1).any() for c in plot.EXPR_COLOURS)


def test_threads_default_to_one_on_small_machines(monkeypatch):
    from abaw_rt import machine
    from abaw_rt.cli.options import pin_threads

    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    assert machine.default_threads() == 1 and machine.default_threads(3) == 3
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 16)
    assert machine.default_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    try:
        assert pin_threads(1) == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # an explicit --threads wins
    finally:
        if torch:
            torch.set_num_threads(before)
