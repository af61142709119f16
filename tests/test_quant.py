"""abaw-rt quantize: calibration data, the budget search (a planted sensitive MatMul), reports and int8 graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import TINY, FeatureGroup, ModelConfig
from tests.reliability import assert_clean_failure

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

cli = CliRunner()
D = 8  # feature width of the planted graph
W, S = 40, 25


def _header(dim: int = D):
    from abaw_rt.checkpoint import CheckpointHeader

    cfg = ModelConfig(features=(FeatureGroup("vis0", dim, "visual"),), heads=("va",), **TINY)
    return CheckpointHeader(config=cfg, normalization=None, window=W, stride=S)


def planted_graph(path: Path) -> Path:
    """visual -> MatMul 'planted' -> MatMul 'mix' -> MatMul 'head' -> Tanh -> va.

    Feature 0 is a constant 1000 that 'planted' ignores (its weight row is 0) while features 1..7 carry the
    signal at unit scale: quantising planted's input per tensor rounds the signal away and breaks CCC.
    The other two MatMuls see well-scaled activations and quantise harmlessly.
    """
    from onnx import TensorProto, helper, numpy_helper

    from abaw_rt.graphs.metadata import metadata_props

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((D, 6)).astype(np.float32)
    w1[0] = 0.0
    w2 = (rng.standard_normal((6, 6)) / 2.5).astype(np.float32)
    w3 = (rng.standard_normal((6, 2)) / 2.5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["visual", "w1"], ["h1"], name="planted"),
        helper.make_node("MatMul", ["h1", "w2"], ["h2"], name="mix"),
        helper.make_node("MatMul", ["h2", "w3"], ["h3"], name="head"),
        helper.make_node("Tanh", ["h3"], ["va"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [
            helper.make_tensor_value_info("visual", TensorProto.FLOAT, ["batch", "time", D]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("va", TensorProto.FLOAT, ["batch", "time", 2])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in metadata_props(_header(), "fp32", "0" * 64, "test").items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def planted_store(root: Path, videos: int = 4, frames: int = 120, dim: int = D) -> Path:
    from abaw_rt.store import FeatureStore

    store = FeatureStore(root)
    rng = np.random.default_rng(1)
    for v in range(videos):
        x = rng.standard_normal((frames, dim)).astype(np.float32)
        x[:, 0] = 1000.0
        store.write(f"v{v}", {"vis0": x}, np.ones(frames, bool), {"vis0": (dim, "visual")})
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    return planted_graph(d / "planted.fp32.onnx"), planted_store(d / "store")


def test_planted_sensitive_matmul_is_found_and_kept_high(planted, tmp_path):
    graph, store = planted
    out = tmp_path / "planted.int8.onnx"
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(store), "--out", str(out), "--no-speed", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget_met"] and report["kept_high"] == ["planted"]
    assert report["ranking"][0]["node"] == "planted"
    all_int8 = report["trials"][0]
    assert all_int8["kept"] == 0 and all_int8["drift"]["ccc_valence"] > 0.05  # quantising it breaks CCC
    assert report["drift"]["ccc_valence"] <= 0.01 and report["drift"]["ccc_arousal"] <= 0.01
    assert json.loads((tmp_path / "planted.int8.quant.json").read_text())["kept_high"] == ["planted"]
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    quantized_inputs = {i for n in model.graph.node if n.op_type == "MatMul" for i in n.input}
    planted_node = next(n for n in model.graph.node if n.name == "planted")
    assert planted_node.input[0] == "visual"  # left in FP32: reads the raw input, no DequantizeLinear
    assert any("DequantizeLinear" in i or "_dequant" in i.lower() for i in quantized_inputs)
    from abaw_rt.graphs.metadata import read_onnx_info

    assert read_onnx_info(out).precision == "int8"


def test_impossible_budget_reports_best_reachable_drift(planted, tmp_path):
    graph, store = planted
    out = tmp_path / "x.int8.onnx"
    args = ["quantize", str(graph), "--calib", str(store), "--out", str(out), "--no-speed", "--max-kept", "0"]
    res = cli.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "budget not met" in res.stdout and "best reachable drift" in res.stdout and "ccc_valence" in res.stdout
    report = json.loads((tmp_path / "x.int8.quant.json").read_text())
    assert not report["budget_met"] and report["violations"]
    # a budget tighter than any lowering reaches: the best trial (all kept) is reported, not met
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(store), "--out", str(out), "--no-speed",
                           "--max-kept", "1", "--budget", "ccc=0"])
    report = json.loads((tmp_path / "x.int8.quant.json").read_text())
    assert res.exit_code == (0 if report["budget_met"] else 1)
    assert report["drift"]["ccc_valence"] == min(t["drift"]["ccc_valence"] for t in report["trials"])


def test_wrong_dimension_and_empty_store_are_refused_in_one_line(planted, tmp_path):
    graph, _ = planted
    wrong = planted_store(tmp_path / "wrong", videos=2, frames=60, dim=D - 2)
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(wrong)])
    assert_clean_failure(res, "vis0", f"dim {D - 2}", f"expects {D}")
    (tmp_path / "empty").mkdir()
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(tmp_path / "empty")])
    assert_clean_failure(res, "no videos", "empty")
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(tmp_path / "empty"), "--budget", "cc=0.1"])
    assert_clean_failure(res, "--budget", "ccc")
    from abaw_rt.store import FeatureStore

    FeatureStore(tmp_path / "other").write("v0", {"eff": np.zeros((60, D), np.float32)}, np.ones(60, bool), {"eff": (D, "visual")})
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(tmp_path / "other")])
    assert_clean_failure(res, "no extractor 'vis0'", "vis0:8")
    np.save(tmp_path / "x.npy", np.zeros((4, 10, D), np.float32))  # a fusion graph calibrates on a store only
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(tmp_path / "x.npy")])
    assert_clean_failure(res, "x.npy", "feature-store folder")
    assert not list(tmp_path.glob("**/*.int8*"))


def test_budget_syntax():
    from abaw_rt.quant.drift import Budget, excess, parse_budget, violations

    b = parse_budget(["ccc=0.005,expr_f1=0.02", "cosine=0.999"])
    assert (b.ccc, b.expr_f1, b.cosine, b.au_flips) == (0.005, 0.02, 0.999, Budget().au_flips)
    for bad in ("ccc", "ccc=x", "ccc=2", "foo=0.1"):
        with pytest.raises(AbawRtError, match="--budget"):
            parse_budget([bad])
    drift = {"ccc_valence": 0.02, "ccc_arousal": 0.001, "cosine": 0.98}
    assert violations(drift, b) == ["ccc_valence 0.02 > 0.005", "cosine 0.98 < 0.999"]
    assert excess(drift, b) == pytest.approx(20.0)


def test_bisection_finds_the_fewest_nodes_and_reports_failure():
    from abaw_rt.quant.search import Trial, bisect_kept

    def trial_fn(needed):
        calls = []

        def trial(k):
            calls.append(k)
            bad = k < needed
            return Trial(k, {"ccc_valence": 0.1 / (k + 1)}, ["x"] if bad else [], 2.0 - k / 100 if bad else 0.5)

        return trial, calls

    trial, calls = trial_fn(13)
    chosen, met, _ = bisect_kept(40, trial)
    assert met and chosen.kept == 13 and len(calls) <= 2 + 6
    trial, _ = trial_fn(13)
    chosen, met, trials = bisect_kept(40, trial, max_kept=5)
    assert not met and chosen.kept == 5 and [t.kept for t in trials] == [0, 5]


def test_extractor_graph_with_array_calibration_and_cosine(tmp_path):
    """Any graph (no abaw-rt metadata) calibrates on a .npy of its input; drift is feature cosine."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["img", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["feat"], name="flat")],
        "ext", [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["n", 192])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "ext.onnx"))
    np.save(tmp_path / "faces.npy", rng.standard_normal((40, 1, 8, 8)).astype(np.float32))
    res = cli.invoke(app, ["quantize", str(tmp_path / "ext.onnx"), "--calib", str(tmp_path / "faces.npy"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["drift"]["cosine"] > 0.99 and report["speed"]["speedup"] > 0
    assert (tmp_path / "ext.int8.onnx").is_file()
    np.save(tmp_path / "bad.npy", np.zeros((10, 1, 7, 8), np.float32))
    res = cli.invoke(app, ["quantize", str(tmp_path / "ext.onnx"), "--calib", str(tmp_path / "bad.npy")])
    assert_clean_failure(res, "bad.npy", "(10, 1, 7, 8)", "img")
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 8, 8), np.float32))  # an empty array: nothing to calibrate on
    res = cli.invoke(app, ["quantize", str(tmp_path / "ext.onnx"), "--calib", str(tmp_path / "none.npy")])
    assert_clean_failure(res, "none.npy", "0 sample(s)")


def test_fp16_search_keeps_fragile_ops_fp32_and_records_the_result(planted, tmp_path):
    graph, store = planted
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(store), "-p", "fp16", "--no-speed", "--json"])
    assert res.exit_code == 0, res.output
    out = graph.with_name("planted.fp16-mixed.onnx")
    from abaw_rt.graphs.metadata import read_onnx_info
    from abaw_rt.graphs.precision import precision_placement
    from abaw_rt.quant.report import read_quant_record

    assert read_onnx_info(out).precision == "fp16"
    record = read_quant_record(out)
    assert record["mode"] == "fp16" and record["budget_met"] and "kept_high" in record
    placement = precision_placement(onnx.load(str(out)))
    assert placement.fp16_math + placement.fp32_math == 3 and placement.fp32_math == len(record["kept_high"])


@pytest.mark.slow
def test_int8_graph_goes_through_verify_and_infer(tmp_path):
    """Export a tiny checkpoint, quantise it on a store of its features, verify it and infer a video with it."""
    pytest.importorskip("torch")
    pytest.importorskip("av")
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.pipeline import synthetic as syn
    from abaw_rt.store import FeatureStore
    from tests.reliability import infer_kit

    kit = infer_kit(tmp_path, 16, 10)
    ckpt = load_checkpoint(kit["av"])
    fp32 = export_onnx(ckpt, onnx_path_for(kit["av"], "fp32"), check=False).path
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for v in range(3):
        feats = {f.name: rng.standard_normal((50, f.dim)).astype(np.float32) for f in ckpt.header.config.features}
        store.write(f"v{v}", feats, np.ones(50, bool), {f.name: (f.dim, f.modality) for f in ckpt.header.config.features})
    res = cli.invoke(app, ["quantize", str(fp32), "--calib", str(store.root), "--budget", "ccc=0.005", "--no-speed"])
    assert res.exit_code == 0, res.output
    int8 = onnx_path_for(kit["av"], "int8")
    assert int8.is_file()
    res = cli.invoke(app, ["verify", str(kit["av"]), "--onnx", str(int8), "--json"])
    assert res.exit_code == 0, res.output
    cand = json.loads(res.stdout)["candidates"][0]
    assert cand["precision"] == "int8" and cand["passed"]
    res = cli.invoke(app, ["bench", str(kit["av"]), "--backend", "ort", "--graphs", "off", "-p", "fp32", "-p", "int8",
                           "-t", "20", "-b", "1", "--warmup", "0", "--min-iters", "1", "--min-seconds", "0",
                           "--out", str(tmp_path / "b"), "--name", "s"])
    assert res.exit_code == 0, res.output  # the checkpoint's int8 graph beside it (made by quantize) is found
    bench = json.loads((tmp_path / "b" / "s.json").read_text())
    assert [c["status"] for c in bench["cells"]] == ["ok", "ok"] and bench["speedups"][0]["precision"] == "int8"
    video = tmp_path / "main.mp4"
    syn.write_video(video, frames=30)
    res = cli.invoke(app, ["infer", str(video), "--model", str(int8), "--extractors", str(kit["spec"]),
                           "--detector", str(kit["detector"]), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["videos"][0]["model"]["precision"] == "int8"


def test_bench_measures_an_int8_graph_beside_its_fp32_sibling(planted, tmp_path):
    """``abaw-rt bench x.int8.onnx``: the int8 graph and the fp32 graph beside it in one sweep, with ratios."""
    import shutil

    graph, store = planted
    fp32 = Path(shutil.copy(graph, tmp_path / "planted.fp32.onnx"))
    res = cli.invoke(app, ["quantize", str(fp32), "--calib", str(store), "--no-speed"])
    assert res.exit_code == 0, res.output
    int8 = tmp_path / "planted.int8.onnx"
    res = cli.invoke(app, ["bench", str(int8), "--backend", "ort", "--graphs", "off", "-t", "30", "-b", "2", "--warmup", "0",
                           "--min-iters", "2", "--min-seconds", "0", "--threads", "1", "--out", str(tmp_path / "b"),
                           "--name", "s"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b" / "s.json").read_text())
    status = {c["precision"]: c["status"] for c in rep["cells"]}
    assert status == {"fp32": "ok", "fp16": "skipped", "int8": "ok"}  # no -p: fp32, fp16 and the graph's own
    (row,) = rep["speedups"]
    fp32_cell, int8_cell = (next(c for c in rep["cells"] if c["precision"] == p) for p in ("fp32", "int8"))
    assert row["precision"] == "int8" and row["speedup"] == pytest.approx(fp32_cell["timing"]["p50_ms"] / int8_cell["timing"]["p50_ms"])
    assert "speed-up over fp32" in res.stdout
    # a graph of another checkpoint beside it is not taken as its sibling
    other = onnx.load(str(fp32))
    next(p for p in other.metadata_props if p.key.endswith("checkpoint_sha256")).value = "1" * 64
    onnx.save(other, str(fp32))
    res = cli.invoke(app, ["bench", str(int8), "--backend", "ort", "--graphs", "off", "-p", "fp32", "-p", "int8", "-t", "30", "-b", "1",
                           "--warmup", "0", "--min-iters", "1", "--min-seconds", "0", "--out", str(tmp_path / "b"), "--name", "t"])
    assert res.exit_code == 0, res.output
    cells = json.loads((tmp_path / "b" / "t.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["skipped", "ok"] and "planted.fp32.onnx" in cells[0]["reason"]


def test_int8_from_a_checkpoint_points_to_quantize(tiny_ckpt_path, tmp_path):
    """export -p int8 and bench -p int8 without a quantised graph say to run abaw-rt quantize (it needs data)."""
    res = cli.invoke(app, ["export", str(tiny_ckpt_path), "-p", "int8", "--out-dir", str(tmp_path / "g")])
    assert_clean_failure(res, "-p int8", "calibration data", "abaw-rt quantize tiny.fp32.onnx --calib")
    assert not (tmp_path / "g").exists()
    pytest.importorskip("torch")
    res = cli.invoke(app, ["bench", str(tiny_ckpt_path), "--backend", "ort", "--graphs", "off", "-p", "int8", "-t", "10", "-b", "1",
                           "--out", str(tmp_path / "b"), "--name", "s"])
    assert res.exit_code == 0, res.output
    (cell,) = json.loads((tmp_path / "b" / "s.json").read_text())["cells"]
    assert cell["status"] == "skipped" and "abaw-rt quantize tiny.fp32.onnx --calib" in cell["reason"]


def test_quantized_graphs_build_on_the_trt_fakes_with_their_kept_nodes(planted, tmp_path, monkeypatch):
    """The names ``abaw-rt quantize`` records are node names the TensorRT 10 build constrains (fakes: layer = node)."""
    from abaw_rt.engines.builder import BuildConfig, build_engine
    from abaw_rt.trt.sidecar import read_sidecar
    from tests.fakes_trt_build import install_builder

    graph, store = planted
    out = tmp_path / "planted.int8.onnx"
    res = cli.invoke(app, ["quantize", str(graph), "--calib", str(store), "--out", str(out), "--no-speed"])
    assert res.exit_code == 0, res.output
    _, trt = install_builder(monkeypatch, "10.13.3.9")
    plan = build_engine(out, BuildConfig(out=tmp_path / "q.plan", timing_cache=None))
    built, flags = trt.builders[-1].built[-1], read_sidecar(plan).build_flags
    assert built["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert built["layers"]["planted"]["precision"] == "float32" and built["layers"]["mix"]["precision"] is None
    assert flags["kept_high"] == ["planted"] and flags["kept_high_unmatched"] == []
    assert read_sidecar(plan).precision == "int8"
