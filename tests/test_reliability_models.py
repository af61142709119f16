"""Reliability of export / verify / bench / info / train / infer on bad and hostile model files, through the CLI.

Corrupt, truncated and pickled checkpoints, a checkpoint whose weights belong to another architecture,
ONNX graphs missing an input or with other dimensions or with external data outside their folder, engine
plans built for another GPU or TensorRT version or changed since, and options out of range: each is one
line on stderr naming the file or option and what was expected, exit code 2, no traceback, nothing written.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

import abaw_rt.cuda.gpu as gpu  # noqa: E402
from abaw_rt.checkpoint import CheckpointHeader, default_normalization, load_checkpoint, save_checkpoint  # noqa: E402
from abaw_rt.cli import app  # noqa: E402
from abaw_rt.cuda.gpu import GpuInfo  # noqa: E402
from tests.reliability import assert_clean_failure, files_under, snapshot  # noqa: E402
from tests.test_trt_sidecar import make_engine  # noqa: E402

cli = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"


class _Unpickled:
    """Unpickling this creates a marker file: proof that a loader ran pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, tiny_ckpt_path) -> dict[str, Path]:
    """{case: checkpoint file}, each alone in its own folder (so that 'nothing written beside it' is checkable)."""
    root = tmp_path_factory.mktemp("bad_ckpts")
    good = tiny_ckpt_path.read_bytes()
    made = {}

    def put(case: str, data: bytes) -> None:
        (root / case).mkdir()
        made[case] = root / case / f"{case}.safetensors"
        made[case].write_bytes(data)

    put("garbage", b"this is not a checkpoint\n" * 10)
    put("empty", b"")
    put("truncated", good[: len(good) // 2])
    put("pickle", pickle.dumps({"weights": _Unpickled(root / "UNPICKLED")}))
    ckpt = load_checkpoint(tiny_ckpt_path)
    wider = ckpt.header.config.replace(d_model=64)  # the header says one architecture, the weights are another's
    (root / "architecture").mkdir()
    made["architecture"] = save_checkpoint(
        root / "architecture" / "architecture.safetensors",
        CheckpointHeader(config=wider, normalization=default_normalization(wider), window=40, stride=25),
        ckpt.tensors,
    )
    made["_marker"] = root / "UNPICKLED"
    return made


CKPT_CASES = {
    "garbage": "not a readable safetensors file",
    "empty": "not a readable safetensors file",
    "truncated": "not a readable safetensors file",
    "pickle": "not a readable safetensors file",
    "architecture": "weights do not match its model config",
}


@pytest.mark.parametrize(
    "verb, case",
    [
        (verb, case)
        for verb in ("export", "verify", "bench", "info")
        for case in sorted(CKPT_CASES)
        if not (verb == "info" and case == "architecture")  # info shows the header; it builds no model
    ],
)
def test_bad_checkpoint(bad_checkpoints, tmp_path, verb, case):
    path = bad_checkpoints[case]
    before = snapshot(path.parent)
    args = {
        "export": ["export", str(path), "-p", "fp32"],
        "verify": ["verify", str(path), "-b", "1", "-t", "3"],
        "bench": ["bench", str(path), "--backend", "torch", "-p", "fp32", "-t", "4", "-b", "1",
                  "--out-dir", str(tmp_path / "bench")],
        "info": ["info", str(path)],
    }[verb]
    res = cli.invoke(app, args)
    expected = CKPT_CASES[case]
    if verb == "verify" and case == "architecture":
        expected = "no ONNX graph to verify"  # nothing was exported from it; with --onnx: see the next test
    assert_clean_failure(res, path.name, expected)
    assert snapshot(path.parent) == before and files_under(tmp_path / "bench") == []
    assert not bad_checkpoints["_marker"].exists(), "a checkpoint was unpickled"


def test_verify_a_checkpoint_of_another_architecture_against_a_graph(bad_checkpoints, exported):
    res = cli.invoke(app, ["verify", str(bad_checkpoints["architecture"]), "--onnx", str(exported["fp32"].path)])
    assert_clean_failure(res, exported["fp32"].path.name, "exported from another checkpoint")


# -- ONNX graphs --------------------------------------------------------------------------------------------
def _rename_input(model, old: str, new: str) -> None:
    for i in model.graph.input:
        if i.name == old:
            i.name = new
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new


@pytest.fixture(scope="module")
def bad_graphs(tmp_path_factory, exported) -> dict[str, Path]:
    """Copies of the tiny fp32 graph, each broken one way, each alone in its own folder."""
    import onnx
    from onnx.external_data_helper import set_external_data

    root = tmp_path_factory.mktemp("bad_graphs")
    src = exported["fp32"].path
    made = {}

    def save(case: str, model) -> None:
        (root / case / "models").mkdir(parents=True)
        made[case] = root / case / "models" / f"{case}.fp32.onnx"
        onnx.save(model, str(made[case]))

    m = onnx.load(str(src))
    _rename_input(m, "audio", "audio_features")  # a valid graph that lacks the declared input 'audio'
    save("missing_input", m)
    m = onnx.load(str(src))
    next(i for i in m.graph.input if i.name == "visual").type.tensor_type.shape.dim[2].dim_value = 99
    save("graph_dims", m)
    m = onnx.load(str(src))
    props = {p.key: p for p in m.metadata_props}
    inputs = json.loads(props["abaw_rt.inputs"].value)
    inputs[0]["shape"][-1] += 1  # the metadata promises another width than the graph takes
    props["abaw_rt.inputs"].value = json.dumps(inputs)
    save("metadata_dims", m)
    m = onnx.load(str(src))
    init = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    set_external_data(init, location="../../secret.bin")  # weights from outside the model's folder
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    save("external_escape", m)
    (root / "secret.bin").write_bytes(np.zeros(1 << 16, np.uint8).tobytes())
    (root / "text" / "models").mkdir(parents=True)
    made["text"] = root / "text" / "models" / "text.fp32.onnx"
    made["text"].write_text("not a graph")
    return made


GRAPH_CASES = {
    "missing_input": "declares input 'audio' but the graph has",
    "graph_dims": "onnxruntime cannot load it",
    "metadata_dims": "input 'visual' has shape",
    "external_escape": "outside the model's folder",
    "text": "not a readable ONNX model",
}


@pytest.mark.parametrize("case", sorted(GRAPH_CASES))
@pytest.mark.parametrize("verb", ["verify", "bench"])
def test_bad_graph(bad_graphs, tiny_ckpt_path, tmp_path, verb, case):
    graph = bad_graphs[case]
    before = snapshot(graph.parent.parent)
    if verb == "verify":
        res = cli.invoke(app, ["verify", str(tiny_ckpt_path), "--onnx", str(graph), "-b", "1", "-t", "3"])
    else:
        res = cli.invoke(app, ["bench", str(graph), "--backend", "ort", "-p", "fp32", "-t", "4", "-b", "1",
                               "--out-dir", str(tmp_path / "bench")])
    assert_clean_failure(res, graph.name, GRAPH_CASES[case])
    assert snapshot(graph.parent.parent) == before and files_under(tmp_path / "bench") == []


def test_hostile_external_data_in_a_pipeline_graph_is_refused(tmp_path):
    """The detector and extractors are third-party graphs: their external data must stay in their folder too."""
    pytest.importorskip("av")
    import onnx
    from onnx.external_data_helper import set_external_data

    from abaw_rt.model.config import TINY, ModelConfig
    from abaw_rt.pipeline import synthetic as syn

    kit = syn.tiny_kit(tmp_path / "kit", audio_dim=None)
    m = onnx.load(str(tmp_path / "kit" / "vis0.onnx"))
    init = next(t for t in m.graph.initializer if t.name == "w")
    set_external_data(init, location="../../../etc/hostname")
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(m, str(tmp_path / "kit" / "vis0.onnx"))
    from abaw_rt.checkpoint import init_checkpoint

    ckpt = init_checkpoint(tmp_path / "v.safetensors", ModelConfig(features=kit["features"], heads=("expr",), **TINY))
    video = syn.write_video(tmp_path / "clip.mp4", frames=5, audio=False)
    res = cli.invoke(app, ["infer", str(video), "--checkpoint", str(ckpt), "--backend", "torch", "--extractors",
                           str(kit["spec"]), "--detector", str(kit["detector"]), "--out", str(tmp_path / "out")])
    assert_clean_failure(res, "vis0.onnx", "outside the model's folder")
    assert files_under(tmp_path / "out") == []


# -- engines (TensorRT is a stand-in package: refusals happen before any plan is deserialised) ----------------
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture
def fake_tensorrt(tmp_path, monkeypatch):
    """A stand-in ``tensorrt`` with a version and no API: deserialising a plan would raise AttributeError."""
    pkg = tmp_path / "fake_site" / "tensorrt"
    pkg.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)

    def set_version(version: str) -> None:
        (pkg / "__init__.py").write_text(f"__version__ = {version!r}\n")
        sys.modules.pop("tensorrt", None)

    set_version("10.13.3.9")
    yield set_version
    sys.modules.pop("tensorrt", None)


ENGINE_CASES = {
    "other_tensorrt": "built with TensorRT 10.13.3.9, this machine runs TensorRT 10.12.0.36",
    "other_gpu": "built for NVIDIA H100 80GB HBM3 (compute capability 9.0), this GPU is NVIDIA A10 (8.6)",
    "changed_plan": "the plan's sha256 differs from its sidecar's",
    "no_sidecar": "its sidecar",
}


@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
@pytest.mark.parametrize("verb", ["verify", "bench"])
def test_engine_that_does_not_fit_is_refused(tmp_path, fake_tensorrt, monkeypatch, tiny_ckpt_path, verb, case):
    plan, sidecar = make_engine(tmp_path)
    gpus = [GpuInfo(0, "NVIDIA A10", (8, 6))] if case == "other_gpu" else [H100]
    monkeypatch.setattr(gpu, "cuda_devices", lambda: gpus)
    if case == "other_tensorrt":
        fake_tensorrt("10.12.0.36")
    if case == "changed_plan":
        plan.write_bytes(plan.read_bytes().replace(b"placeholder", b"PLACEHOLDER"))  # same size, other bytes
    if case == "no_sidecar":
        plan.with_suffix(".json").unlink()
    before = snapshot(tmp_path)
    if verb == "verify":
        res = cli.invoke(app, ["verify", str(tiny_ckpt_path), "--engine", str(plan)])
    else:
        res = cli.invoke(app, ["bench", str(plan), "--backend", "trt", "--device", "cuda", "-t", "4", "-b", "1",
                               "--out-dir", str(tmp_path / "bench")])
    line = assert_clean_failure(res, plan.name, ENGINE_CASES[case])
    if case != "no_sidecar":
        assert "abaw-rt build" in line  # says how to rebuild it
    assert snapshot(tmp_path) == before


# -- options out of range -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needles",
    [
        (["init-checkpoint", "{tmp}/x.safetensors", "--window", "0"], ["'--window'", "greater than or equal to 1"]),
        (["init-checkpoint", "{tmp}/x.safetensors", "--window", "100", "--stride", "101"], ["--stride 101"]),
        (["verify", "{ckpt}", "-b", "0"], ["'--batch'", "greater than or equal to 1"]),
        (["verify", "{ckpt}", "-t", "0"], ["'--length'", "greater than or equal to 1"]),
        (["bench", "{ckpt}", "-b", "0"], ["'--batch'", "greater than or equal to 1"]),
        (["bench", "{ckpt}", "-t", "0"], ["'--time'", "greater than or equal to 1"]),
        (["bench", "{ckpt}", "--max-seconds", "0"], ["'--max-seconds'"]),
        (["export", "{ckpt}", "-p", "int4"], ["'--precision'", "'int4' is not one of"]),
        (["train", "-r", "{recipe}", "--epochs", "0"], ["'--epochs'", "greater than or equal to 1"]),
        (["train", "-r", "{recipe}", "--set", "windows.window=0"], ["[windows]", "window 0"]),
        (["train", "-r", "{recipe}", "--set", "windows.stride=400"], ["[windows]", "stride 400"]),
        (["train", "-r", "{recipe}", "--set", "optim.batch_size=0"], ["[optim]", "batch_size 0"]),
        (["train", "-r", "{recipe}", "--set", "optim.lr=fast"], ["[optim] lr", "got 'fast', expected a number"]),
        (["crossval", "-r", "{recipe}", "--folds", "1"], ["'--folds'", "greater than or equal to 2"]),
    ],
)
def test_options_out_of_range(tmp_path, tiny_ckpt_path, args, needles):
    fill = {"tmp": str(tmp_path / "w"), "ckpt": str(tiny_ckpt_path), "recipe": str(RECIPES / "va.toml")}
    (tmp_path / "w").mkdir()
    before = snapshot(tiny_ckpt_path.parent)
    res = cli.invoke(app, [a.format(**fill) for a in args] + (["--out", str(tmp_path / "w" / "run")]
                                                               if args[0] in ("train", "crossval") else []))
    assert_clean_failure(res, *needles)
    assert files_under(tmp_path / "w") == [] and snapshot(tiny_ckpt_path.parent) == before


# -- training: a corrupt run state --------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["garbage", "pickle", "truncated"])
def test_resume_from_a_corrupt_run_state(tmp_path, tiny_ckpt_path, content):
    from abaw_rt.train.synthetic import SyntheticSpec, make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, SyntheticSpec(videos=3, val_videos=1, two_person=0, min_frames=40, max_frames=60))
    run = tmp_path / "run"
    run.mkdir()
    state = run / "last.safetensors"
    marker = tmp_path / "UNPICKLED"
    state.write_bytes({"garbage": b"\x00\x01 not a state" * 50,
                       "pickle": pickle.dumps(_Unpickled(marker)),
                       "truncated": tiny_ckpt_path.read_bytes()[:5000]}[content])
    before = snapshot(run)
    res = cli.invoke(app, ["train", "-r", str(RECIPES / "va.toml"), "--data", str(data), "--size", "tiny",
                           "--epochs", "1", "--out", str(run), "--resume"])
    assert_clean_failure(res, "last.safetensors", "run state")
    assert snapshot(run) == before and not marker.exists()
