"""The extractor zoo: tiny reference graphs, recipes' contracts, import, fp16 verify, bench, and infer with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import PRESET_FEATURES, TINY, ModelConfig
from abaw_rt.zoo.recipes import RECIPES, check_recipes_match_presets, preset_features

cli = CliRunner()
pytest.importorskip("torch")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The whole zoo at tiny widths, built once per session (about 15 s of CPU)."""
    pytest.importorskip("transformers")
    from abaw_rt.zoo.build import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"), size="tiny")


def test_recipes_match_the_presets_and_publish_no_invented_hash():
    check_recipes_match_presets()
    assert all(r.sha256 == "not published" for r in RECIPES.values())
    assert RECIPES["eff"].native_dim == 1408 and RECIPES["wav2vec2"].native_dim == 1024  # differ from the paper


@pytest.mark.slow
def test_zoo_specs_cover_the_presets(zoo):
    from abaw_rt.pipeline.extractor_spec import check_model_features, load_spec

    assert set(zoo.specs) == set(PRESET_FEATURES)
    for preset, path in zoo.specs.items():
        spec = load_spec(path)
        assert [e.name for e in spec.extractors] == list(PRESET_FEATURES[preset][0])
        check_model_features(ModelConfig(features=preset_features(preset, "tiny"), **TINY), spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_contract_holds_on_its_zoo_graph(zoo, name):
    from abaw_rt.zoo.contract import check_contract

    r = RECIPES[name]
    c = check_contract(r, zoo.graphs[name], dim=r.dim("tiny"))
    assert (c.output, c.dim) == (r.paper_output, r.dim("tiny"))
    other = "arcface" if name != "arcface" else "eff"  # an image of another size, or audio for an image
    with pytest.raises(AbawRtError, match="recipe expects"):
        check_contract(r, zoo.graphs[other] if r.modality == "visual" else zoo.graphs["eff"])


def test_graph_flops_of_a_conv_and_a_matmul(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from abaw_rt.graphs.flops import graph_flops

    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((16 * 8 * 8, 10), np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["y"], ["f"]), helper.make_node("MatMul", ["f", "m"], ["z"])]  # fmt: skip
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 10])], [w, m])  # fmt: skip
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "g.onnx")
    flops = graph_flops(tmp_path / "g.onnx")
    assert flops["Conv"] == 2 * (16 * 8 * 8) * (3 * 3 * 3)
    assert flops["MatMul"] == 2 * 10 * (16 * 8 * 8)


@pytest.mark.slow
def test_import_of_a_classifier_only_onnx_exposes_the_features(zoo, tmp_path):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(zoo.graphs["eff"]))
    feats = next(o for o in model.graph.output if o.name == "features")
    model.graph.output.remove(feats)  # what HSEmotion releases: logits only
    onnx.save(model, tmp_path / "enet_b2_8.onnx")
    res = cli.invoke(app, ["zoo", "import", str(tmp_path / "enet_b2_8.onnx"), "--as", "eff",
                           "--spec", str(tmp_path / "s.toml")])  # fmt: skip
    assert res.exit_code == 0, res.output
    x = np.random.default_rng(0).standard_normal((2, 3, 260, 260)).astype(np.float32)
    want = ort.InferenceSession(str(zoo.graphs["eff"])).run(["features"], {"input": x})[0]
    got = ort.InferenceSession(str(tmp_path / "eff.onnx")).run(["features"], {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    from abaw_rt.pipeline.extractor_spec import load_spec

    e = load_spec(tmp_path / "s.toml").get("eff")
    assert (e.dim, e.output, e.image.size) == (RECIPES["eff"].dim("tiny"), "features", (260, 260))


def test_import_of_a_dan_state_dict_and_refusal_of_pickled_code(tmp_path):
    import onnxruntime as ort
    import torch

    from abaw_rt.zoo.build import import_extractor
    from abaw_rt.zoo.nets_vision import DAN

    torch.manual_seed(0)
    dan = DAN(classes=7, widths=(8, 8, 16, 16)).eval()
    torch.save({"model_state_dict": dan.state_dict(), "epoch": 3}, tmp_path / "rafdb.pth")
    c = import_extractor(tmp_path / "rafdb.pth", "rafdb", tmp_path / "rafdb.onnx")
    assert (c.output, c.dim) == ("features", 16)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        want = dan(x)[0].numpy()
    got = ort.InferenceSession(str(tmp_path / "rafdb.onnx")).run(["features"], {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    torch.save({"model_state_dict": dan}, tmp_path / "pickled.pth")  # a whole module: code, not weights
    with pytest.raises(AbawRtError, match="weights-only"):
        import_extractor(tmp_path / "pickled.pth", "rafdb", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_verify_of_fp16_passes_and_of_a_perturbed_graph_fails(zoo, tmp_path):
    import onnx
    from onnx import numpy_helper

    ref = zoo.graphs["affectnet8"]
    half = tmp_path / "affectnet8.fp16.onnx"
    assert cli.invoke(app, ["zoo", "fp16", str(ref), "--out", str(half)]).exit_code == 0
    from abaw_rt.artefacts import Kind, open_artefact

    assert open_artefact(half).kind is Kind.onnx and open_artefact(ref).kind is Kind.onnx  # not fusion graphs
    res = cli.invoke(app, ["verify", str(ref), "--onnx", str(half), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["candidates"][0]["precision"] == "fp16"
    assert report["candidates"][0]["outputs"]["features"]["cosine_min"] > 0.999
    model = onnx.load(str(ref))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the biggest weight, +30 % noise
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w + 0.3 * w.std() * np.random.default_rng(0).standard_normal(w.shape).astype(
        w.dtype), init.name))  # fmt: skip
    onnx.save(model, tmp_path / "bad.onnx")
    res = cli.invoke(app, ["verify", str(ref), "--onnx", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output


@pytest.mark.slow
def test_bench_of_an_extractor_reports_flop_bound_time(zoo):
    res = cli.invoke(app, ["bench", str(zoo.graphs["arcface"]), "-b", "1", "-b", "2", "--min-seconds", "0", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    assert result["gflops_per_item"] > 0 and all(r["flop_bound_ms_per_item"] > 0 for r in result["rows"])


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    pytest.importorskip("av")
    from abaw_rt.defaults.sample import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("zoo_video") / "v.mp4", seconds=2.0)


@pytest.mark.slow
def test_infer_runs_on_the_tiny_zoo(zoo, video, tmp_path):
    from abaw_rt.checkpoint import init_checkpoint

    ckpt = init_checkpoint(tmp_path / "va.safetensors", ModelConfig(features=preset_features("va", "tiny"), **TINY))
    res = cli.invoke(app, ["infer", str(video), "--checkpoint", str(ckpt), "--backend", "torch",
                           "--extractors", str(zoo.specs["va"]), "--out", str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "out" / "v" / "v.VA.txt").read_text().splitlines()
    assert lines[0] == "valence,arousal" and len(lines) == 1 + 50
    stages = json.loads((tmp_path / "out" / "v" / "report.json").read_text())["stages"]
    assert {"extract:eff", "extract:affectnet8", "extract:rafdb", "extract:wav2vec2"} <= set(stages)


@pytest.mark.slow
def test_a_spec_that_does_not_fit_the_checkpoint_is_refused_before_decoding(zoo, tmp_path):
    from abaw_rt.checkpoint import init_checkpoint

    native = ModelConfig(features=preset_features("expr", "tiny", dims="native"), heads=("expr",), **TINY)
    ckpt = init_checkpoint(tmp_path / "expr.safetensors", native)  # eff at its native width: not the spec's
    not_a_video = tmp_path / "v.mp4"
    not_a_video.write_bytes(b"not a video")
    res = cli.invoke(app, ["infer", str(not_a_video), "--checkpoint", str(ckpt), "--backend", "torch",
                           "--extractors", str(zoo.specs["expr"]), "--out", str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 2
    assert "extractor 'eff'" in res.output and f"dim {RECIPES['eff'].dim('tiny', 'native')}" in res.output


@pytest.mark.slow
def test_import_of_a_local_wav2vec2_folder_and_an_arcface_onnx(zoo, tmp_path):
    transformers = pytest.importorskip("transformers")
    import shutil

    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.zoo.build import import_extractor
    from abaw_rt.zoo.nets_audio import wav2vec2_config

    a = RECIPES["wav2vec2"].arch["tiny"]
    cfg = wav2vec2_config(*(a[k] for k in ("hidden", "layers", "heads", "ffn", "conv", "pos_kernel", "pos_groups")))
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")  # a local folder, as from Hugging Face
    c = import_extractor(tmp_path / "w2v", "wav2vec2", tmp_path / "wav2vec2.onnx", tmp_path / "s.toml")
    assert (c.output, c.dim) == ("extract_features", a["conv"])  # the paper's width; "hidden" is there too
    assert "hidden" in c.outputs
    import onnx

    model = onnx.load(str(tmp_path / "wav2vec2.onnx"))  # audonnx's names: 'hidden_states' (and logits)
    model.graph.output.remove(next(o for o in model.graph.output if o.name == "extract_features"))
    for node in model.graph.node:
        node.output[:] = ["hidden_states" if o == "hidden" else o for o in node.output]
    model.graph.output[0].name = "hidden_states"
    onnx.save(model, tmp_path / "audonnx.onnx")
    c = import_extractor(tmp_path / "audonnx.onnx", "wav2vec2", tmp_path / "w2v_audonnx.onnx")
    assert (c.output, c.dim) == ("hidden_states", a["hidden"])
    shutil.copy(zoo.graphs["arcface"], tmp_path / "glint360k_r50.onnx")
    c = import_extractor(tmp_path / "glint360k_r50.onnx", "arcface", tmp_path / "arcface.onnx", tmp_path / "s.toml")
    spec = load_spec(tmp_path / "s.toml")
    assert [e.name for e in spec.extractors] == ["wav2vec2", "arcface"]
    assert spec.get("wav2vec2").output == "extract_features" and spec.get("arcface").input == "input"
    with pytest.raises(AbawRtError, match="recipe expects"):
        import_extractor(tmp_path / "glint360k_r50.onnx", "eff", tmp_path / "eff.onnx")


@pytest.mark.slow
def test_downstream_drift_of_an_fp16_extractor_is_small_and_of_itself_zero(zoo, tmp_path):
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.zoo.deploy import downstream_drift, to_fp16

    cfg = ModelConfig(features=preset_features("va", "tiny"), **TINY)
    ckpt = init_checkpoint(tmp_path / "va.safetensors", cfg)
    ref = zoo.graphs["eff"]
    same = downstream_drift(ref, ref, ckpt, "eff", frames=48, output="features")
    assert same["ccc_drift_valence"] == pytest.approx(0.0, abs=1e-9)
    half = to_fp16(ref, tmp_path / "eff.fp16.onnx")
    d = downstream_drift(ref, half, ckpt, "eff", frames=48, output="features")
    assert 0.0 <= d["ccc_drift_valence"] < 1e-3 and 0.0 <= d["ccc_drift_arousal"] < 1e-3
    with pytest.raises(AbawRtError, match="no feature 'arcface'"):
        downstream_drift(ref, half, ckpt, "arcface")
