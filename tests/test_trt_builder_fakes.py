"""build_engine's steps on the build-side fakes (tests/fakes_trt_build.py), per TensorRT major version.

Which flags, which layers got which precision, what the sidecar records, for export graphs (fp32,
fp16) and ``abaw-rt quantize`` graphs (int8 QDQ, searched fp16 with nodes kept FP32); the plan a fake
build makes runs on the fake runtime. The last tests plant faults in the steps and show the fakes catch them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abaw_rt.engines import builder as B
from abaw_rt.engines.builder import BuildConfig, build_engine, plan_build
from abaw_rt.errors import AbawRtError
from abaw_rt.graphs.metadata import PREFIX
from abaw_rt.trt.compat import TrtVersion
from abaw_rt.trt.sidecar import read_sidecar
from tests.fakes_trt import ContractError
from tests.fakes_trt_build import install_builder

TRT10, TRT11 = "10.13.3.9", "11.4.0.106"
FP32_LAYERS = {"ln", "softmax"}  # LayerNorm and softmax: constrained to FP32 in weakly typed builds


def make_graph(folder: Path, kind: str, kept: tuple[str, ...] = ("head",)) -> Path:
    """visual -> [Cast | Q/DQ] -> MatMul 'proj' -> LayerNorm 'ln' -> Softmax -> MatMul 'head' -> va, with metadata.

    ``kind``: fp32, fp16 (export), fp16-mixed (quantize -p fp16, ``kept`` high), int8 (QDQ, ``kept`` high).
    """
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    from tests.test_trt_sidecar import make_onnx

    precision = {"fp16-mixed": "fp16"}.get(kind, kind)
    meta = {p.key: p.value for p in onnx.load(str(make_onnx(folder / "meta.onnx", precision))).metadata_props}
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2304, 8)).astype(np.float16 if precision == "fp16" else np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(8, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(8, np.float32), "bias"),
             numpy_helper.from_array(rng.standard_normal((8, 2)).astype(np.float32), "wh")]  # fmt: skip
    nodes, x, wname = [], "visual", "w"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["visual"], ["x16"], name="cast_in", to=T.FLOAT16))
        x = "x16"
    if precision == "int8":
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
                  numpy_helper.from_array((w * 20).astype(np.int8), "w8")]  # fmt: skip
        nodes += [helper.make_node("QuantizeLinear", ["visual", "s", "z"], ["xq"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
                  helper.make_node("DequantizeLinear", ["w8", "s", "z"], ["wd"], name="dq_w")]  # fmt: skip
        x, wname = "xd", "wd"
    nodes.append(helper.make_node("MatMul", [x, wname], ["h"], name="proj"))
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["h"], ["h32"], name="cast_up", to=T.FLOAT))
    nodes += [helper.make_node("LayerNormalization", ["h32" if precision == "fp16" else "h", "scale", "bias"], ["n"],
                               name="ln", axis=-1),
              helper.make_node("Softmax", ["n"], ["p"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["p", "wh"], ["va"], name="head")]  # fmt: skip
    io = lambda name, t, d: helper.make_tensor_value_info(name, t, ["batch", "time", d][: 3 if d else 1])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [io("visual", T.FLOAT, 2304), io("audio", T.FLOAT, 512), io("lengths", T.INT64, 0)],
                              [io("va", T.FLOAT, 2)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if kind in ("int8", "fp16-mixed"):
        meta[PREFIX + "quant"] = json.dumps({"mode": precision, "kept_high": list(kept)})
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    path = folder / f"demo.{kind}.onnx"
    onnx.save(model, str(path))
    return path


def build(tmp_path, monkeypatch, kind, version=TRT10, **cfg):
    cuda, trt = install_builder(monkeypatch, version)
    graph = make_graph(tmp_path, kind, **({"kept": cfg.pop("kept")} if "kept" in cfg else {}))
    cfg = BuildConfig(out=tmp_path / "demo.plan", timing_cache=tmp_path / "timing.cache", **cfg)
    plan = build_engine(graph, cfg)
    return plan, trt.builders[-1].built[-1], read_sidecar(plan), cuda


def constrained(built: dict) -> set[str]:
    return {n for n, layer in built["layers"].items() if layer["precision"] == "float32"}


# -- export graphs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [TRT10, TRT11])
def test_an_fp16_graph_builds_strongly_typed_and_runs(tmp_path, monkeypatch, version):
    from abaw_rt.runners.trt_runner import TrtRunner

    plan, built, sidecar, cuda = build(tmp_path, monkeypatch, "fp16", version)
    assert built["strongly_typed"] and built["flags"] == [] and constrained(built) == set()  # TF32 cleared
    assert sidecar.precision == "fp16" and sidecar.strongly_typed and sidecar.tensorrt_version == version
    assert sidecar.build_flags["fp16_flag"] is False and sidecar.build_flags["kept_high"] == []
    assert (tmp_path / "timing.cache").read_bytes() == b"fake-timing-cache:NVIDIA H100 80GB HBM3"
    with TrtRunner(plan, cuda=cuda) as r:  # the fake plan runs on the fake runtime
        assert r.infer(r.example_feeds(2, 40, rng=np.random.default_rng(0)))["va"].shape == (2, 40, 2)


def test_trt10_builds_an_fp32_graph_as_fp16_with_fragile_layers_in_fp32(tmp_path, monkeypatch):
    _, built, sidecar, _ = build(tmp_path, monkeypatch, "fp32", precision="fp16")
    assert not built["strongly_typed"] and built["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert constrained(built) == FP32_LAYERS
    assert built["layers"]["ln"]["output_types"] == {0: "float32"}
    assert sidecar.precision == "fp16" and sidecar.build_flags["fp32_constrained_layers"] == 2


def test_trt11_refuses_an_fp32_graph_for_fp16_and_writes_nothing(tmp_path, monkeypatch):
    with pytest.raises(AbawRtError, match="strongly typed networks only"):
        build(tmp_path, monkeypatch, "fp32", TRT11, precision="fp16")
    assert not (tmp_path / "demo.plan").exists() and not (tmp_path / "timing.cache").exists()


# -- abaw-rt quantize graphs --------------------------------------------------------------------------------
def test_trt10_int8_graph_explicit_quantisation_with_kept_nodes_in_fp32(tmp_path, monkeypatch):
    _, built, sidecar, _ = build(tmp_path, monkeypatch, "int8")
    assert not built["strongly_typed"] and built["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert constrained(built) == FP32_LAYERS | {"head"}  # 'head' was kept FP32 by the search
    assert sidecar.precision == "int8" and not sidecar.strongly_typed
    flags = sidecar.build_flags
    assert flags["int8_flag"] and flags["kept_high"] == ["head"] and flags["quant_mode"] == "int8"
    assert flags["kept_high_unmatched"] == [] and "--precision int8" in sidecar.rebuild_command()


def test_trt11_int8_graph_is_strongly_typed_and_records_the_kept_nodes(tmp_path, monkeypatch):
    _, built, sidecar, _ = build(tmp_path, monkeypatch, "int8", TRT11)
    assert built["strongly_typed"] and built["flags"] == [] and constrained(built) == set()
    assert sidecar.precision == "int8" and sidecar.strongly_typed and sidecar.build_flags["kept_high"] == ["head"]


def test_a_searched_fp16_graph_on_trt10_constrains_its_kept_nodes_by_layer_name(tmp_path, monkeypatch):
    _, built, sidecar, _ = build(tmp_path, monkeypatch, "fp16-mixed", kept=("head", "gone"))
    assert not built["strongly_typed"] and built["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert constrained(built) == FP32_LAYERS | {"head"}
    assert sidecar.build_flags["kept_high"] == ["head", "gone"] and sidecar.build_flags["kept_high_unmatched"] == ["gone"]


def test_kept_nodes_are_found_in_the_layers_the_parser_names_after_them():
    kept = ("head", "proj")
    assert [B.kept_node_of(n, kept) for n in ("head", "head_2", "proj_10", "head_x", "head2", "ln", "_1")] == [
        "head", "head", "proj", None, None, None, None]  # fmt: skip


def test_a_searched_fp16_graph_on_trt11_takes_the_graphs_types(tmp_path, monkeypatch):
    _, built, sidecar, _ = build(tmp_path, monkeypatch, "fp16-mixed", TRT11)
    assert built["strongly_typed"] and built["flags"] == [] and constrained(built) == set()
    assert sidecar.precision == "fp16" and sidecar.build_flags["quant_mode"] == "fp16"


def test_int8_plans_and_refusals():
    v10, v11 = TrtVersion.parse(TRT10), TrtVersion.parse(TRT11)
    p = plan_build("int8", "int8", v10, {"mode": "int8", "kept_high": ["a"]})
    assert (p.int8_flag, p.fp16_flag, p.strongly_typed, p.kept_fp32) == (True, True, False, ("a",))
    assert plan_build("int8", "int8", v11).strongly_typed and not plan_build("int8", "int8", v11).int8_flag
    with pytest.raises(AbawRtError, match="an int8 engine needs an int8 QDQ graph.*abaw-rt quantize"):
        plan_build("fp32", "int8", v10)
    with pytest.raises(AbawRtError, match="an int8 QDQ graph builds an int8 engine.*not fp16"):
        plan_build("int8", "fp16", v11)


def test_a_timing_cache_of_another_gpu_is_replaced(tmp_path, monkeypatch):
    (tmp_path / "timing.cache").write_bytes(b"fake-timing-cache:NVIDIA T4")
    build(tmp_path, monkeypatch, "fp16")
    assert (tmp_path / "timing.cache").read_bytes() == b"fake-timing-cache:NVIDIA H100 80GB HBM3"


# -- planted faults: each broken step is caught by the fakes ------------------------------------------------
def steps(tmp_path, monkeypatch, kind="fp16", version=TRT10):
    """Run the steps up to the config by hand; returns what the later steps take."""
    from abaw_rt.trt.compat import import_tensorrt, make_logger

    install_builder(monkeypatch, version)
    graph = make_graph(tmp_path, kind)
    info, profiles, quant = B.read_graph(graph, BuildConfig())
    trt, v, gpu = import_tensorrt(0)
    plan = plan_build(info.precision, info.precision, v, quant)
    trt_logger = make_logger(trt)
    trt_builder = trt.Builder(trt_logger)
    trt_network, trt_parser = B.parse_network(trt, trt_builder, trt_logger, graph, info, v, plan)
    return trt, trt_builder, trt_network, B.builder_config(trt, trt_builder, BuildConfig()), plan, v, info, profiles


def test_profiles_added_after_the_build_are_caught(tmp_path, monkeypatch):
    trt, trt_builder, trt_network, trt_config, plan, v, info, profiles = steps(tmp_path, monkeypatch)
    with pytest.raises(ContractError, match="without an optimisation profile"):
        B.serialise(trt_builder, trt_network, trt_config, "TensorRT", tmp_path, "gpu")
    B.add_profiles(trt_builder, trt_config, profiles, info.inputs[:2])  # a step that forgets 'lengths'
    with pytest.raises(ContractError, match=r"profile 0 has no shape for input\(s\) \['lengths'\]"):
        B.serialise(trt_builder, trt_network, trt_config, "TensorRT", tmp_path, "gpu")


def test_precision_steps_illegal_for_the_version_are_caught(tmp_path, monkeypatch):
    trt, _, trt_network, trt_config, *_ = steps(tmp_path, monkeypatch, "fp16", TRT11)
    with pytest.raises(AttributeError, match="FP16"):  # TensorRT 11 has no FP16 flag: a _trt10 step run on 11
        B._constrain_precision_trt10(trt, trt_network, trt_config, False, ())


def test_constraints_without_obey_and_int8_without_its_flag_are_caught(tmp_path, monkeypatch):
    trt, trt_builder, trt_network, trt_config, plan, v, info, profiles = steps(tmp_path, monkeypatch, "fp32")
    B.add_profiles(trt_builder, trt_config, profiles, info.inputs)
    trt_config.set_flag(trt.BuilderFlag.FP16)
    trt_network.get_layer(1).precision = trt.float32  # a constraint without OBEY_PRECISION_CONSTRAINTS
    with pytest.raises(ContractError, match="without OBEY/PREFER_PRECISION_CONSTRAINTS"):
        B.serialise(trt_builder, trt_network, trt_config, "TensorRT", tmp_path, "gpu")
    (tmp_path / "q").mkdir()
    trt, trt_builder, trt_network, trt_config, plan, v, info, profiles = steps(tmp_path / "q", monkeypatch, "int8")
    B.add_profiles(trt_builder, trt_config, profiles, info.inputs)
    B.set_precision(trt, trt_network, trt_config, plan.__class__(**{**plan.__dict__, "int8_flag": False}), v)
    with pytest.raises(ContractError, match="Q/DQ layers in a weakly typed network without the INT8 flag"):
        B.serialise(trt_builder, trt_network, trt_config, "TensorRT", tmp_path, "gpu")
