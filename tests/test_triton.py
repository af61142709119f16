"""Triton model repositories: config.pbtxt from the artefact's own specs, checked by Triton's own schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from abaw_rt.artefacts import open_artefact
from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import TritonKind
from tests.test_trt_sidecar import make_engine, make_onnx

pytest.importorskip("tritonclient")
from abaw_rt.export.triton import TritonConfig, model_config_pb2, parse_config, write_triton_model  # noqa: E402

cli = CliRunner()


def _dims(tensor) -> list[int]:
    return list(tensor.dims)


def test_graph_repository_round_trips_through_tritons_schema(tmp_path):
    from google.protobuf import text_format

    graph = open_artefact(make_onnx(tmp_path / "demo.fp16.onnx"))
    folder = write_triton_model(graph, tmp_path / "repo", TritonConfig(max_batch_size=4, instances=2))
    assert folder == tmp_path / "repo" / "demo_fp16"
    assert (folder / "1" / "model.onnx").read_bytes() == graph.path.read_bytes()
    cfg = parse_config((folder / "config.pbtxt").read_text())
    again = text_format.Parse(text_format.MessageToString(cfg), model_config_pb2().ModelConfig())
    assert again == cfg
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4
    info = graph.detail
    assert [t.name for t in cfg.input] == [s.name for s in info.inputs]
    assert [t.name for t in cfg.output] == [s.name for s in info.outputs]
    visual = cfg.input[0]
    assert _dims(visual) == [-1, info.inputs[0].shape[2]]  # batch dropped, time -1
    lengths = cfg.input[-1]
    assert _dims(lengths) == [1] and list(lengths.reshape.shape) == []  # one value per sequence
    assert cfg.HasField("dynamic_batching")
    assert cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == model_config_pb2().ModelInstanceGroup.KIND_GPU
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]  # no staging left


def test_cpu_instances_have_no_tensorrt_accelerator_and_a_rewrite_replaces_the_folder(tmp_path):
    graph = open_artefact(make_onnx(tmp_path / "demo.fp32.onnx", precision="fp32"))
    folder = write_triton_model(graph, tmp_path / "repo")
    (folder / "1" / "stale.txt").write_text("old")
    folder = write_triton_model(graph, tmp_path / "repo", TritonConfig(kind=TritonKind.cpu, name="va_cpu"))
    cfg = parse_config((folder / "config.pbtxt").read_text())
    assert cfg.name == "va_cpu" and not cfg.HasField("optimization")
    write_triton_model(graph, tmp_path / "repo", TritonConfig(kind=TritonKind.cpu, name="demo_fp32"))
    assert not (tmp_path / "repo" / "demo_fp32" / "1" / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["demo_fp32", "va_cpu"]


def test_external_weights_travel_with_the_graph(tmp_path):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    (tmp_path / "src").mkdir()
    graph = make_onnx(tmp_path / "src" / "big.fp32.onnx", precision="fp32")
    model = onnx.load(str(graph))
    model.graph.initializer.append(numpy_helper.from_array(np.arange(4096, dtype=np.float32), "w"))
    model.graph.node.append(helper.make_node("Identity", ["w"], ["w_out"]))
    model.graph.output.append(helper.make_tensor_value_info("w_out", onnx.TensorProto.FLOAT, [4096]))
    onnx.save(model, str(graph), save_as_external_data=True, location="big.fp32.onnx.data", size_threshold=0)
    folder = write_triton_model(open_artefact(graph), tmp_path / "repo")
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["big.fp32.onnx.data", "model.onnx"]
    loaded = onnx.load(str(folder / "1" / "model.onnx"))  # reads the weights from beside it
    assert numpy_helper.to_array(loaded.graph.initializer[0])[-1] == 4095


def test_engine_plan_repository(tmp_path):
    plan, sidecar = make_engine(tmp_path)
    folder = write_triton_model(open_artefact(plan), tmp_path / "repo", TritonConfig(max_batch_size=64))
    cfg = parse_config((folder / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and (folder / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert cfg.max_batch_size == max(p.batch.max for p in sidecar.profiles)  # capped by the profiles
    assert not cfg.HasField("optimization")
    with pytest.raises(AbawRtError, match="GPU only"):
        write_triton_model(open_artefact(plan), tmp_path / "repo", TritonConfig(kind=TritonKind.cpu))


def test_schema_rejects_a_wrong_field():
    with pytest.raises(AbawRtError, match="not a valid Triton model configuration"):
        parse_config('name: "x"\nmax_batch: 3\n')


def test_cli_repo_that_is_a_file_is_one_line_exit_2(tmp_path, tiny_ckpt_path):
    target = tmp_path / "repo"
    target.write_text("")
    r = cli.invoke(app, ["export", str(tiny_ckpt_path), "--out-dir", str(tmp_path / "g"), "--triton", str(target)])
    assert r.exit_code == 2
    assert "is a file, expected a folder" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()  # refused before exporting


def test_cli_export_writes_a_model_per_precision(tmp_path, tiny_ckpt_path):
    pytest.importorskip("torch")
    r = cli.invoke(
        app, ["export", str(tiny_ckpt_path), "--out-dir", str(tmp_path), "-p", "fp32", "--triton", str(tmp_path / "r"),
              "--triton-kind", "cpu", "--triton-instances", "3", "--threads", "1"],
    )
    assert r.exit_code == 0, r.output
    cfg = parse_config((tmp_path / "r" / "tiny_fp32" / "config.pbtxt").read_text())
    assert cfg.instance_group[0].count == 3
    assert [t.name for t in cfg.output] == ["va", "expr", "au"]
    assert Path(tmp_path / "r" / "tiny_fp32" / "1" / "model.onnx").read_bytes() == (tmp_path / "tiny.fp32.onnx").read_bytes()
