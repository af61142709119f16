"""TensorRT engines for extractor graphs, on the fakes of TensorRT (tests/fakes_trt_build.py, tests/fakes_trt.py).

What the builder is given for an extractor graph (one profile over the batch axis, the other axes fixed; fp16 /
int8 flags on TensorRT 10, strongly typed networks on 11), what the sidecar records, the artefact kind read
from the files themselves, the spec's ``engine`` key and its refusals, verify and bench of an engine, and the
refusals on a machine without a GPU (TensorRT never imported). The fake engine computes the graph's own
function (onnxruntime on the graph it was built from), so verify compares real numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from abaw_rt.engines.builder import BuildConfig, build_engine, plan_build
from abaw_rt.errors import AbawRtError
from abaw_rt.graphs.metadata import PREFIX
from abaw_rt.io import file_sha256
from abaw_rt.trt.compat import TrtVersion
from abaw_rt.trt.profiles import AxisRange
from abaw_rt.trt.sidecar import read_sidecar
from tests import fakes_trt
from tests.fakes_trt_build import install_builder

TRT10, TRT11 = "10.13.3.9", "11.4.0.106"
DIM = 8


def make_extractor(folder: Path, kind: str = "fp32", name: str | None = None, batch="N", dims=(3, 16, 16)) -> Path:
    """pixel (N, C, H, W) -> ReduceMean 'pool' over H, W -> [Cast | Q/DQ] -> MatMul 'proj' -> features (N, 8).

    ``kind``: fp32, fp16 (MatMul in float16, the reduction FP32), int8 (Q/DQ, stamped by quantize), int8-noqdq
    (stamped int8, no Q/DQ nodes), audio (input_values (N, samples): a dynamic non-batch axis).
    """
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((dims[0] if kind != "audio" else 1, DIM)).astype(np.float32)
    x = "input_values" if kind == "audio" else "pixel"
    axes = [1] if kind == "audio" else [2, 3]
    nodes = [helper.make_node("ReduceMean", [x], ["m"], name="pool", axes=axes, keepdims=0 if kind != "audio" else 1)]
    inits, m, wname = [numpy_helper.from_array(w, "w")], "m", "w"
    if kind == "fp16":
        inits = [numpy_helper.from_array(w.astype(np.float16), "w")]
        nodes.append(helper.make_node("Cast", ["m"], ["m16"], name="cast_in", to=T.FLOAT16))
        m = "m16"
    if kind == "int8":
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["md"], name="dq_in")]  # fmt: skip
        m = "md"
    out = "f16" if kind == "fp16" else "features"
    nodes.append(helper.make_node("MatMul", [m, wname], [out], name="proj"))
    if kind == "fp16":
        nodes.append(helper.make_node("Cast", ["f16"], ["features"], name="cast_out", to=T.FLOAT))
    shape = [batch, "samples"] if kind == "audio" else [batch, *dims]
    graph = helper.make_graph(nodes, "extractor", [helper.make_tensor_value_info(x, T.FLOAT, shape)],
                              [helper.make_tensor_value_info("features", T.FLOAT, [batch, DIM])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if kind.startswith("int8"):  # what abaw-rt quantize stamps on an extractor graph (no header: not a fusion graph)
        model.metadata_props.add(key=PREFIX + "precision", value="int8")
        model.metadata_props.add(key=PREFIX + "quant", value=json.dumps({"mode": "int8", "kept_high": []}))
    path = folder / (name or f"eff.{kind}.onnx")
    onnx.save(model, str(path))
    return path


class GraphContext(fakes_trt.FakeContext):
    """A fake execution context whose engine computes the extractor graph it was built from (onnxruntime)."""

    graph: Path | None = None

    def get_tensor_shape(self, name: str) -> tuple:
        t = self.engine.tensors[name]
        if t["mode"] == "input":
            return self.shapes.get(name, tuple(t["shape"]))
        first = next(iter(self.shapes.values()), None)
        return (first[0], *t["shape"][1:]) if first else tuple(t["shape"])

    def _compute(self, views: dict, live: dict) -> None:
        import onnxruntime as ort

        for name, (ptr, nbytes) in live.items():
            self.cuda.resolve(ptr, nbytes, f"execute_async_v3 (when the stream ran it): tensor '{name}'")
        sess = ort.InferenceSession(str(self.graph), providers=["CPUExecutionProvider"])
        feeds = {t["name"]: np.asarray(views[t["name"]], np.float32) for t in self._inputs()}
        for t, value in zip([t for t in self.engine.spec["tensors"] if t["mode"] == "output"], sess.run(None, feeds)):
            views[t["name"]][...] = value.astype(t["dtype"])


@pytest.fixture
def gpu(monkeypatch):
    """The fake H100 and fake tensorrt (build and run side), plans run through open_runner; returns (cuda, trt)."""
    from abaw_rt.runners import trt_runner

    cuda, trt = install_builder(monkeypatch)
    monkeypatch.setattr(trt_runner, "open_cuda", lambda binding, device: cuda)
    monkeypatch.setattr(fakes_trt, "FakeContext", GraphContext)
    return cuda, trt


def build(tmp_path, graph: Path, version: str = TRT10, install: bool = True, monkeypatch=None, **cfg) -> Path:
    if install:
        install_builder(monkeypatch, version)
    cfg = BuildConfig(out=tmp_path / f"{graph.stem}.plan", timing_cache=tmp_path / "timing.cache", **cfg)
    GraphContext.graph = graph
    return build_engine(graph, cfg)


def last_build(trt) -> tuple[dict, dict]:
    """(what the fake builder built: flags, typing, layers; the profile shapes it was given)."""
    builder = trt.builders[-1]
    return builder.built[-1], builder.configs[-1].profiles[0].shapes


# -- what the builder is given ----------------------------------------------------------------------------
def test_an_extractor_graph_gets_one_batch_profile_with_the_other_axes_fixed(tmp_path, gpu):
    _, trt = gpu
    graph = make_extractor(tmp_path)
    plan = build(tmp_path, graph, install=False, batch=AxisRange(1, 16, 32))
    built, shapes = last_build(trt)
    assert shapes == {"pixel": ((1, 3, 16, 16), (16, 3, 16, 16), (32, 3, 16, 16))}
    assert built["flags"] == [] and not built["strongly_typed"]  # fp32: TF32 cleared, no precision flags
    car = read_sidecar(plan)
    assert not car.is_fusion and car.precision == "fp32" and car.checkpoint_sha256 is None
    assert car.onnx_sha256 == file_sha256(graph) and car.onnx_path == str(graph.resolve())
    assert [(s.name, s.dtype, s.shape) for s in car.inputs] == [("pixel", "float32", ("batch", 3, 16, 16))]
    assert [(s.name, s.shape) for s in car.outputs] == [("features", ("batch", DIM))]
    assert [p.batch.as_list() for p in car.profiles] == [[1, 16, 32]] and car.build_flags["extractor_batch"] == [1, 16, 32]
    assert car.profile_shapes() == {"batch": {"pixel": {"min": [1, 3, 16, 16], "opt": [16, 3, 16, 16], "max": [32, 3, 16, 16]}}}
    assert "--batch 1:16:32" in car.rebuild_command() and "--profile" not in car.rebuild_command()
    on_disk = json.loads(plan.with_suffix(".json").read_text())
    assert on_disk["inputs"][0]["shape"] == ["batch", 3, 16, 16] and on_disk["checkpoint_sha256"] is None


def test_without_batch_the_recipes_extractor_batch_then_1_16_32(tmp_path, monkeypatch):
    from abaw_rt.cli.engine_cmds import build_config
    from abaw_rt.engines.recipes import load_engine_recipe

    assert load_engine_recipe("h100").extractor_batch == AxisRange(1, 32, 64)
    graph = make_extractor(tmp_path)
    cfg = build_config("t4-a10", timing_cache=tmp_path / "t.cache", out_path=tmp_path / "r.plan")
    install_builder(monkeypatch)
    car = read_sidecar(build_engine(graph, cfg))
    assert car.profiles[0].batch.as_list() == [1, 16, 32] and car.build_flags["workspace_mib"] == 4096
    assert "--recipe t4-a10" in car.rebuild_command()
    car = read_sidecar(build(tmp_path, graph, monkeypatch=monkeypatch))
    assert car.profiles[0].batch.as_list() == [1, 16, 32]


@pytest.mark.parametrize("version", [TRT10, TRT11])
def test_precision_flags_on_10_and_strong_typing_on_11(tmp_path, monkeypatch, version):
    fp32, fp16, int8 = (make_extractor(tmp_path, k) for k in ("fp32", "fp16", "int8"))
    cuda, trt = install_builder(monkeypatch, version)
    car = read_sidecar(build(tmp_path, fp16, install=False))
    built, _ = last_build(trt)
    assert built["strongly_typed"] and built["flags"] == [] and car.precision == "fp16" and car.strongly_typed
    car = read_sidecar(build(tmp_path, int8, install=False))
    built, _ = last_build(trt)
    assert car.precision == "int8" and car.build_flags["qdq_nodes"] == 2
    if version == TRT10:
        assert not built["strongly_typed"] and built["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
        assert built["layers"]["pool"]["precision"] == "float32"  # the reduction stays FP32
        car = read_sidecar(build(tmp_path, fp32, install=False, precision="fp16"))
        built, _ = last_build(trt)
        assert built["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"] and car.build_flags["fp16_flag"]
        assert {n for n, layer in built["layers"].items() if layer["precision"]} == {"pool"}
    else:
        assert built["strongly_typed"] and built["flags"] == []
        with pytest.raises(AbawRtError, match="strongly typed networks only.*abaw-rt zoo fp16 GRAPH"):
            build(tmp_path, fp32, install=False, precision="fp16")


def test_an_int8_stamped_graph_without_qdq_nodes_is_refused_and_nothing_written(tmp_path, monkeypatch):
    graph = make_extractor(tmp_path, "int8-noqdq")
    with pytest.raises(AbawRtError, match="stamped int8 but has no QuantizeLinear/DequantizeLinear nodes"):
        build(tmp_path, graph, monkeypatch=monkeypatch)
    assert not (tmp_path / f"{graph.stem}.plan").exists()
    v = TrtVersion.parse(TRT11)
    with pytest.raises(AbawRtError, match="no QuantizeLinear"):
        plan_build("int8", "int8", v, {"mode": "int8"}, qdq_nodes=0, extractor=True)
    assert plan_build("int8", "int8", v, {"mode": "int8"}, qdq_nodes=4, extractor=True).strongly_typed


def test_dynamic_non_batch_axes_are_refused_naming_the_input_unless_given(tmp_path, gpu):
    _, trt = gpu
    audio = make_extractor(tmp_path, "audio")
    with pytest.raises(AbawRtError, match=r"input 'input_values' axis 1 \('samples'\) is dynamic.*--shape input_values:N"):
        build(tmp_path, audio, install=False)
    car = read_sidecar(build(tmp_path, audio, install=False, input_shapes=(("input_values", (16000,)),)))
    assert last_build(trt)[1] == {"input_values": ((1, 16000), (16, 16000), (32, 16000))}
    assert car.build_flags["input_shapes"] == {"input_values": [16000]}
    assert "--shape input_values:16000" in car.rebuild_command()
    with pytest.raises(AbawRtError, match="--shape nope: ONNX .* has no such input"):
        build(tmp_path, audio, install=False, input_shapes=(("nope", (3,)),))
    fixed = make_extractor(tmp_path, name="fixed.onnx", batch=1)
    with pytest.raises(AbawRtError, match=r"input 'pixel' has a fixed batch of 1 .*--batch 1:1:1"):
        build(tmp_path, fixed, install=False)


def test_options_of_the_other_kind_of_graph_are_refused(tmp_path, monkeypatch):
    from abaw_rt.trt.profiles import ProfileSpec
    from tests.test_trt_builder_fakes import make_graph

    graph = make_extractor(tmp_path)
    with pytest.raises(AbawRtError, match="is an extractor graph .* takes --batch MIN:OPT:MAX, not --profile"):
        build(tmp_path, graph, monkeypatch=monkeypatch, profiles=(ProfileSpec.parse("live:1,1,4:1,75,300"),))
    fusion = make_graph(tmp_path, "fp16")
    with pytest.raises(AbawRtError, match="is a fusion graph .*--batch and --shape are for extractor graphs"):
        build(tmp_path, fusion, monkeypatch=monkeypatch, batch=AxisRange(1, 2, 4))


# -- the artefact kind comes from the files, not their names ----------------------------------------------
def test_graph_and_engine_kinds_come_from_their_own_metadata(tmp_path, gpu):
    from abaw_rt.artefacts import Kind, open_artefact, open_runner
    from tests.test_trt_builder_fakes import make_graph

    fusion = make_graph(tmp_path, "fp16").rename(tmp_path / "eff.onnx")  # named like an extractor
    extractor = make_extractor(tmp_path, "int8", name="demo.fp16.onnx")  # named like an export; abaw_rt.* keys
    assert open_artefact(fusion).kind is Kind.fusion_graph and open_artefact(extractor).kind is Kind.onnx
    with pytest.raises(AbawRtError, match=r"metadata lacks abaw_rt\.header"):
        open_artefact(extractor, Kind.fusion_graph)
    plan, fusion_plan = build(tmp_path, extractor, install=False), build(tmp_path, fusion, install=False)
    a = open_artefact(plan)
    assert a.kind is Kind.extractor_engine and a.header is None and a.precision == "int8"
    assert a.source_sha256 == file_sha256(extractor) and open_artefact(fusion_plan).kind is Kind.engine
    with pytest.raises(AbawRtError, match="is an extractor engine plan, expected an engine plan"):
        open_artefact(plan, Kind.engine)
    with pytest.raises(AbawRtError, match="cannot run with backend ort: a TensorRT plan runs with --backend trt"):
        open_runner(a, "ort")
    GraphContext.graph = extractor
    with open_runner(a) as r:  # the sidecar's interface, not the fusion model's TensorSpecs
        assert r.header is None and [s.name for s in r.input_specs] == ["pixel"]
        x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
        got = r.infer({"pixel": x})["features"]
    assert got.shape == (5, DIM) and np.allclose(got, reference(extractor, x), atol=1e-5)


def reference(graph: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, {"pixel": x})[0]


# -- the spec's engine key ----------------------------------------------------------------------------------
def write_spec(folder: Path, extra: str, onnx: str = "eff.fp32.onnx") -> Path:
    path = folder / "spec.toml"
    path.write_text(f'[[extractor]]\nname = "eff"\nmodality = "visual"\nonnx = "{onnx}"\ndim = {DIM}\n{extra}\n')
    return path


def test_spec_engine_key_runs_the_plan_instead_of_onnxruntime(tmp_path, gpu):
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.extractors import FeatureExtractor

    graph = make_extractor(tmp_path)
    build(tmp_path, graph, install=False, batch=AxisRange(1, 8, 32))
    spec = load_spec(write_spec(tmp_path, 'engine = "eff.fp32.plan"\nbatch = 32')).get("eff")
    assert spec.engine == (tmp_path / "eff.fp32.plan").resolve() and spec.provider is None
    crops = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    with FeatureExtractor(spec) as ext:
        assert ext.runner.name == "trt" and ext.runner.onnx_checked  # checked against the spec's graph
        got = ext.run_crops(crops)
    assert np.allclose(got, reference(graph, ext.image.prepare(crops)), atol=1e-5)


def test_spec_engine_refusals(tmp_path, gpu):
    from abaw_rt.pipeline.extractor_spec import load_spec
    from tests.fakes_trt import make_fake_engine

    graph = make_extractor(tmp_path)
    build(tmp_path, graph, install=False, batch=AxisRange(1, 8, 16))
    cases = {
        'engine = "eff.fp32.plan"\nprovider = "cuda"': "'engine' = 'eff.fp32.plan' and 'provider' = 'cuda' conflict",
        'engine = "gone.plan"': "engine 'gone.plan' not found",
        'engine = "eff.fp32.plan"\nbatch = 32': "batch 32 is above engine 'eff.fp32.plan''s largest batch 16",
    }
    for extra, message in cases.items():
        with pytest.raises(AbawRtError, match=message):
            load_spec(write_spec(tmp_path, extra))
    (tmp_path / "fusion").mkdir()
    fusion_plan = make_fake_engine(tmp_path / "fusion")
    with pytest.raises(AbawRtError, match="extractor 'eff': .* is an engine plan, expected an extractor engine plan"):
        load_spec(write_spec(tmp_path, f'engine = "{fusion_plan}"'))
    (tmp_path / "eff.fp32.json").rename(tmp_path / "kept.json")
    with pytest.raises(AbawRtError, match="sidecar .* is missing"):
        load_spec(write_spec(tmp_path, 'engine = "eff.fp32.plan"'))
    (tmp_path / "kept.json").rename(tmp_path / "eff.fp32.json")
    make_extractor(tmp_path, "fp16", name="other.onnx")  # provenance: the engine was built from eff.fp32.onnx
    with pytest.raises(AbawRtError, match=r"was built from another graph \(sha256 .*rebuild it: abaw-rt build .*other"):
        load_spec(write_spec(tmp_path, 'engine = "eff.fp32.plan"', onnx="other.onnx"))


def test_cli_backend_choice_per_extractor_replaces_the_specs(tmp_path, gpu):
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.extractors import choose_backends

    graph = make_extractor(tmp_path)
    plan = build(tmp_path, graph, install=False)
    spec = load_spec(write_spec(tmp_path, 'provider = "cuda"'))
    on_trt = choose_backends(spec, [f"eff={plan}"]).get("eff")
    assert on_trt.engine == plan.resolve() and on_trt.provider is None and spec.get("eff").provider == "cuda"
    back = choose_backends(load_spec(write_spec(tmp_path, f'engine = "{plan.name}"')), ["eff=cpu"]).get("eff")
    assert back.engine is None and back.provider == "cpu"
    other = build(tmp_path, make_extractor(tmp_path, "fp16"), install=False)
    for choice, message in {"eff": "expected NAME=PROVIDER", "nope=cpu": "has no extractor 'nope'",
                            "eff=rocm": "'rocm' is neither a provider", "eff=gone.plan": "no such file",
                            f"eff={other}": "was built from another graph"}.items():  # fmt: skip
        with pytest.raises(AbawRtError, match=f"--extractor-backend .*{message}"):
            choose_backends(spec, [choice])


# -- no GPU: one line, before TensorRT is imported ----------------------------------------------------------
@pytest.fixture
def built_then_no_gpu(tmp_path, monkeypatch):
    """An extractor engine built on the fake GPU, then a machine without one (and no tensorrt imported)."""
    import abaw_rt.cuda.gpu as gpu

    graph = make_extractor(tmp_path)
    plan = build(tmp_path, graph, monkeypatch=monkeypatch)
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [])
    monkeypatch.delitem(sys.modules, "tensorrt")
    return graph, plan


def test_without_a_gpu_the_spec_loads_and_the_extractor_refuses(tmp_path, built_then_no_gpu):
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.extractors import FeatureExtractor

    spec = load_spec(write_spec(tmp_path, 'engine = "eff.fp32.plan"')).get("eff")  # the sidecar only: no GPU needed
    with pytest.raises(AbawRtError, match="extractor 'eff': engine .* needs a CUDA GPU and this machine has none; "
                                          "remove 'engine' from the spec"):  # fmt: skip
        FeatureExtractor(spec)
    assert "tensorrt" not in sys.modules


@pytest.mark.parametrize("verb", ["verify", "bench"])
def test_verify_and_bench_of_an_engine_refuse_without_a_gpu(built_then_no_gpu, verb):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    graph, plan = built_then_no_gpu
    args = ["verify", str(graph), "--engine", str(plan)] if verb == "verify" else ["bench", str(plan)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs a CUDA GPU and this machine has none" in lines[0]
    assert "tensorrt" not in sys.modules


# -- the CLI on the fake GPU --------------------------------------------------------------------------------
def test_cli_build_verify_bench_and_info_of_an_extractor_engine(tmp_path, gpu):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    graph = make_extractor(tmp_path)
    GraphContext.graph = graph
    cli, plan = CliRunner(), tmp_path / "eff.plan"
    common = ["--out", str(plan), "--timing-cache", str(tmp_path / "t.cache")]
    bad = cli.invoke(app, ["build", str(graph), "--batch", "1:16", *common])
    assert bad.exit_code == 2 and "--batch '1:16': expected MIN:OPT:MAX" in bad.output
    built = cli.invoke(app, ["build", str(graph), "--batch", "1:4:8", "-p", "fp16", "--json", *common])
    assert built.exit_code == 0, built.output
    car = read_sidecar(plan)
    assert car.precision == "fp16" and car.profiles[0].batch.as_list() == [1, 4, 8]
    verified = cli.invoke(app, ["verify", str(graph), "--engine", str(plan), "-b", "1", "-b", "8", "--json"])
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    (cand,) = report["candidates"]
    assert cand["graph"] == str(plan) and cand["precision"] == "fp16" and cand["error"] is None
    assert cand["outputs"]["features"]["items"] == 9 and cand["outputs"]["features"]["cosine_min"] > 0.999
    benched = cli.invoke(app, ["bench", str(plan), "--json", "--min-seconds", "0.01"])
    assert benched.exit_code == 0, benched.output
    result = json.loads(benched.output)
    assert [r["batch"] for r in result["rows"]] == [1, 4] and result["backend"] == "trt"  # 16, 32 > max 8
    info = cli.invoke(app, ["info", str(plan), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["inputs"][0]["name"] == "pixel"


# -- a real GPU -----------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_a_real_extractor_engine_matches_its_graph(tmp_path):
    from abaw_rt.cuda.gpu import cuda_devices

    if not cuda_devices():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("tensorrt")  # imported only after the device check
    from abaw_rt.zoo.deploy import verify_extractor

    graph = make_extractor(tmp_path)
    plan = build_engine(graph, BuildConfig(out=tmp_path / "eff.plan", batch=AxisRange(1, 4, 16), timing_cache=None))
    report = verify_extractor(graph, (), batches=(1, 4, 16), engines=(plan,))
    assert report["passed"], report
