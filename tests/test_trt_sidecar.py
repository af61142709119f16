"""Engine sidecars: writing, reading, and refusing an engine that does not fit this machine or its graph.

The plans here are placeholder bytes (no TensorRT runs); what is tested is everything abaw-rt decides
around a plan: the sidecar's content, the refusal logic and the rebuild command it prints.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from abaw_rt.checkpoint import CheckpointHeader
from abaw_rt.errors import AbawRtError
from abaw_rt.graphs.metadata import metadata_props
from abaw_rt.model.config import TINY, preset
from abaw_rt.trt.profiles import ProfileSpec, default_profiles
from abaw_rt.trt.sidecar import (
    EngineSidecar,
    RuntimeInfo,
    check_sidecar,
    read_sidecar,
    sidecar_path_for,
    write_sidecar,
)

H100 = RuntimeInfo("10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0")


def make_onnx(path: Path, precision: str = "fp16", window: int = 300) -> Path:
    """A tiny graph carrying abaw-rt metadata (the model itself is an Identity: nothing here runs it)."""
    import onnx
    from onnx import TensorProto, helper

    header = CheckpointHeader(config=preset("va", **TINY), normalization=None, window=window, stride=200)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["lengths"], ["va"])],
        "g",
        [helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("va", TensorProto.INT64, ["batch"])],
    )
    model = helper.make_model(graph)
    for k, v in metadata_props(header, precision, "c" * 64, "0.1.0").items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def make_engine(folder: Path, runtime: RuntimeInfo = H100, onnx: bool = True, **changes) -> tuple[Path, EngineSidecar]:
    """A placeholder plan plus a sidecar that matches it (and, with ``onnx``, a graph beside it)."""
    import onnx as onnx_lib

    graph = make_onnx(folder / "demo.fp16.onnx") if onnx else folder / "gone.fp16.onnx"
    props = (
        {p.key: p.value for p in onnx_lib.load(str(graph)).metadata_props}
        if onnx
        else metadata_props(CheckpointHeader(preset("va", **TINY), None), "fp16", "c" * 64, "0.1.0")
    )
    plan = folder / "demo.fp16.test-gpu.plan"
    plan.write_bytes(b"placeholder plan bytes " + folder.name.encode())
    sidecar = EngineSidecar(
        tensorrt_version=runtime.tensorrt_version,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        precision="fp16",
        strongly_typed=True,
        profiles=default_profiles(300),
        onnx_path=str(graph.resolve()),
        onnx_sha256=hashlib.sha256(graph.read_bytes()).hexdigest() if onnx else "0" * 64,
        checkpoint_sha256="c" * 64,
        plan_sha256=hashlib.sha256(plan.read_bytes()).hexdigest(),
        package_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        onnx_metadata=props,
        build_flags={"recipe": None, "workspace_mib": 256, "optimization_level": 3, "fp16_flag": False},
    )
    sidecar = replace(sidecar, **changes)
    write_sidecar(plan, sidecar)
    return plan, sidecar


def test_sidecar_round_trip_and_content(tmp_path):
    plan, sidecar = make_engine(tmp_path)
    path = sidecar_path_for(plan)
    assert path == tmp_path / "demo.fp16.test-gpu.json" and path.is_file()
    assert read_sidecar(plan) == sidecar
    data = json.loads(path.read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "profiles", "onnx_sha256",
                "checkpoint_sha256", "package_version", "build_flags", "created"):  # fmt: skip
        assert key in data, key
    # The profile shapes are written out per input, derived from the graph's own specs.
    visual = sidecar.onnx_info().inputs[0]
    shapes = data["profile_shapes"]["window"][visual.name]
    assert shapes == {
        "min": [1, 1, visual.shape[2]],
        "opt": [8, 300, visual.shape[2]],
        "max": [16, 300, visual.shape[2]],
    }
    assert data["profile_shapes"]["long"]["lengths"]["max"] == [4]
    # The runner's model interface comes from the sidecar alone.
    info = sidecar.onnx_info()
    assert [s.name for s in info.inputs] == ["visual", "audio", "lengths"] and info.header.window == 300


def test_matching_engine_passes_and_reports_whether_the_graph_was_checked(tmp_path):
    plan, sidecar = make_engine(tmp_path)
    assert check_sidecar(sidecar, plan, H100) is True
    Path(sidecar.onnx_path).unlink()  # graph not shipped with the engine: nothing to compare
    assert check_sidecar(sidecar, plan, H100) is False


@pytest.mark.parametrize(
    "runtime, match",
    [
        (
            replace(H100, tensorrt_version="10.13.3.10"),
            r"built with TensorRT 10\.13\.3\.9, this machine runs TensorRT 10\.13\.3\.10",
        ),
        (replace(H100, tensorrt_version="11.4.0.106"), "this machine runs TensorRT 11.4.0.106"),
        (
            replace(H100, gpu_name="NVIDIA A10", compute_capability="8.6"),
            r"built for NVIDIA H100 80GB HBM3 \(compute capability 9\.0\), this GPU is NVIDIA A10 \(8\.6\)",
        ),
        (replace(H100, gpu_name="NVIDIA H100 PCIe"), "this GPU is NVIDIA H100 PCIe"),
    ],
)
def test_refuses_another_tensorrt_or_gpu_with_the_rebuild_command(tmp_path, runtime, match):
    plan, sidecar = make_engine(tmp_path)
    with pytest.raises(AbawRtError, match=match) as exc:
        check_sidecar(sidecar, plan, runtime)
    assert f"rebuild it: abaw-rt build {sidecar.onnx_path} --precision fp16" in str(exc.value)
    assert f"--out {plan}" in str(exc.value)


def test_refuses_a_changed_graph_or_plan(tmp_path):
    plan, sidecar = make_engine(tmp_path)
    graph = Path(sidecar.onnx_path)
    make_onnx(graph, precision="fp32")  # re-exported since the build
    with pytest.raises(
        AbawRtError, match=r"built from ONNX sha256 .* but '.*demo\.fp16\.onnx' is now .*rebuild it: abaw-rt build"
    ):
        check_sidecar(sidecar, plan, H100)
    other = make_onnx(tmp_path / "other.onnx", precision="fp16", window=301)
    with pytest.raises(AbawRtError, match="other.onnx' is now"):
        check_sidecar(sidecar, plan, H100, onnx=other)
    with pytest.raises(AbawRtError, match="no such file"):
        check_sidecar(sidecar, plan, H100, onnx=tmp_path / "missing.onnx")
    (tmp_path / "b").mkdir()
    plan2, sidecar2 = make_engine(tmp_path / "b")
    plan2.write_bytes(plan2.read_bytes() + b"x")
    with pytest.raises(AbawRtError, match="plan's sha256 differs from its sidecar's"):
        check_sidecar(sidecar2, plan2, H100)


def test_rebuild_command_recreates_the_same_profiles(tmp_path):
    from abaw_rt.cli.engine_cmds import build_config

    profiles = (ProfileSpec.parse("live:1,1,4:1,75,300"), ProfileSpec.parse("long:1,2,8:300,600,1200"))
    plan, sidecar = make_engine(tmp_path, profiles=profiles)
    args = shlex.split(sidecar.rebuild_command(plan))
    assert args[:3] == ["abaw-rt", "build", sidecar.onnx_path]
    given = [args[i + 1] for i, a in enumerate(args) if a == "--profile"]
    cfg = build_config(profile=given, workspace_mib=int(args[args.index("--workspace-mib") + 1]))
    assert cfg.profiles == profiles and cfg.workspace_mib == 256
    _, with_recipe = make_engine(tmp_path, build_flags={"recipe": "h100"})
    cmd = with_recipe.rebuild_command()
    assert "--recipe h100" in cmd and "--profile" not in cmd


def test_unreadable_sidecars(tmp_path):
    plan, sidecar = make_engine(tmp_path)
    path = sidecar_path_for(plan)
    with pytest.raises(AbawRtError, match="no such file"):
        read_sidecar(tmp_path / "nothing.plan")
    for text, match in [
        ("{oops", "not readable JSON"),
        (json.dumps({"format": "something"}), "format 'something', expected 'abaw-rt-engine'"),
        (json.dumps({**sidecar.to_dict(), "format_version": 99}), "format version 99"),
        (json.dumps({k: v for k, v in sidecar.to_dict().items() if k != "gpu_name"}), "lacks 'gpu_name'"),
    ]:
        path.write_text(text)
        with pytest.raises(AbawRtError, match=match):
            read_sidecar(plan)
    path.unlink()
    with pytest.raises(AbawRtError, match=r"its sidecar '.*demo\.fp16\.test-gpu\.json' is missing"):
        read_sidecar(plan)


def test_info_prints_an_engine_sidecar(tmp_path):
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    plan, sidecar = make_engine(tmp_path)
    result = CliRunner().invoke(app, ["info", str(plan), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["gpu_name"] == sidecar.gpu_name and data["tensorrt_version"] == "10.13.3.9"
