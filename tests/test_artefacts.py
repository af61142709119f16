"""The artefact layer: what a file is, the one (kind, backend) registry, the one provenance check."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from abaw_rt.artefacts import (  # noqa: E402
    RUNNER_FACTORIES,
    Kind,
    RunOptions,
    check_provenance,
    onnx_path_for,
    open_artefact,
    open_graph,
    open_runner,
)
from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.runners.onnx_generic import OnnxModelRunner  # noqa: E402
from abaw_rt.runners.ort_runner import OrtRunner  # noqa: E402
from abaw_rt.runners.torch_runner import TorchRunner  # noqa: E402


def test_kinds_come_from_the_files_own_header(tiny_ckpt_path, tiny_ckpt, exported):
    ck = open_artefact(tiny_ckpt_path)
    assert ck.kind is Kind.checkpoint and ck.sha256 == tiny_ckpt.sha256 == ck.source_sha256
    assert ck.header.config == tiny_ckpt.header.config
    for precision, res in exported.items():
        g = open_artefact(res.path)
        assert g.kind is Kind.fusion_graph and g.precision == precision
        assert g.source_sha256 == tiny_ckpt.sha256 and g.header.config == tiny_ckpt.header.config
        check_provenance(g, ck)  # its own checkpoint: passes


def test_a_third_party_graph_is_a_plain_onnx_graph():
    from abaw_rt import defaults

    fer = open_artefact(defaults.DEFAULTS_DIR / "fer_minixception.onnx")
    assert fer.kind is Kind.onnx and fer.header is None and fer.precision is None
    with open_graph(fer.path, threads=1, what="extractor 'fer'") as r:
        assert isinstance(r, OnnxModelRunner) and r.artefact.path == fer.path
        assert [s.name for s in r.input_specs] and r.metadata.producer  # typed metadata, not None
        out = r.infer(r.example_feeds(2, 1))
    assert set(out) == {s.name for s in r.output_specs}


def test_registry_picks_the_runner_of_each_kind_and_backend(tiny_ckpt_path, exported):
    opts = RunOptions(threads=1)
    assert isinstance(open_runner(tiny_ckpt_path, "torch", opts), TorchRunner)
    beside = open_runner(tiny_ckpt_path, "ort", opts)  # a checkpoint on ort runs its own exported graph
    assert isinstance(beside, OrtRunner) and beside.path == onnx_path_for(tiny_ckpt_path, "fp32")
    fp16 = open_runner(exported["fp16"].path, options=opts)  # default backend of a graph: ort
    assert isinstance(fp16, OrtRunner) and fp16.precision == "fp16" and fp16.artefact.kind is Kind.fusion_graph
    assert fp16.describe()["backend"] == "ort" and fp16.describe()["artefact"] == str(exported["fp16"].path)
    assert set(RUNNER_FACTORIES) == {
        (Kind.checkpoint, "torch"), (Kind.checkpoint, "ort"), (Kind.fusion_graph, "ort"), (Kind.onnx, "ort"),
        (Kind.engine, "trt"), (Kind.extractor_engine, "trt"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "which, backend, match",
    [
        ("graph", "torch", "runs with --backend ort"),
        ("graph", "trt", "build an engine from it first"),
        ("ckpt", "trt", "build an engine first"),
        ("graph", "tensorflow", "'tensorflow' is not a valid Backend"),
    ],
)
def test_a_backend_that_cannot_run_a_kind_says_what_to_do(tiny_ckpt_path, exported, which, backend, match):
    path = exported["fp32"].path if which == "graph" else tiny_ckpt_path
    with pytest.raises((AbawRtError, ValueError), match=match):
        open_runner(path, backend)


def test_precision_asked_must_be_the_artefacts(exported):
    with pytest.raises(AbawRtError, match="runs in fp16, but precision fp32 was asked"):
        open_runner(exported["fp16"].path, "ort", RunOptions(precision="fp32"))


def test_a_graph_of_another_checkpoint_is_refused(tmp_path, tiny_cfg, exported):
    from abaw_rt.checkpoint import init_checkpoint

    other = init_checkpoint(tmp_path / "other.safetensors", tiny_cfg, seed=7)
    with pytest.raises(AbawRtError, match="was exported from another checkpoint"):
        check_provenance(open_artefact(exported["fp32"].path), open_artefact(other))
    # ... and a checkpoint on ort refuses a stale graph beside it rather than running it.
    shutil.copy(exported["fp32"].path, onnx_path_for(other, "fp32"))
    with pytest.raises(AbawRtError, match="was exported from another checkpoint"):
        open_runner(other, "ort")
    with pytest.raises(AbawRtError, match="has no exported fp16 graph"):
        open_runner(other, "ort", RunOptions(precision="fp16"))


def test_a_file_of_another_kind_than_asked_is_refused(tiny_ckpt_path, tmp_path):
    with pytest.raises(AbawRtError, match="is a checkpoint, expected an engine plan"):
        open_artefact(tiny_ckpt_path, Kind.engine)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AbawRtError, match=r"expected a checkpoint \(.safetensors\), an ONNX graph"):
        open_artefact(text)
    with pytest.raises(AbawRtError, match="no such file"):
        open_artefact(tmp_path / "missing.onnx")


def test_runners_receive_the_resolved_axes(exported):
    seen = {}

    class Probe(OrtRunner):
        def _infer(self, feeds, axes):
            seen.update(axes)
            return super()._infer(feeds, axes)

    with Probe(exported["fp32"].path, threads=1) as r:
        r.infer(r.example_feeds(3, 17, rng=np.random.default_rng(0), padded=True))
    assert seen == {"batch": 3, "time": 17} == r.last_axes
