"""Hostile model files: huge or sparse checkpoints, deeply nested or bloated JSON headers, NaN weights,
external data hidden in ONNX subgraphs, symlink loops. Each is refused in one line, fast, without a
traceback and without reading the file into memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.checkpoint import load_checkpoint, save_checkpoint
from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from tests.reliability import assert_clean_failure

cli = CliRunner()
GiB = 1 << 30


def safetensors_bytes(index: dict, data: bytes = b"") -> bytes:
    head = json.dumps(index, separators=(",", ":")).encode()
    return len(head).to_bytes(8, "little") + head + data


def real_metadata(path: Path) -> dict:
    """The __metadata__ table of a real checkpoint (a valid abaw-rt header)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def load_in_child(path: Path) -> dict:
    """load_checkpoint in a fresh process: {'error': message or None, 'rss_mb': its peak RSS (VmHWM)}."""
    code = (
        "import json, sys\n"
        "from abaw_rt.checkpoint import load_checkpoint\n"
        "from abaw_rt.errors import AbawRtError\n"
        "err = None\n"
        "try:\n    load_checkpoint(sys.argv[1])\n"
        "except AbawRtError as exc:\n    err = str(exc)\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
        "print(json.dumps({'error': err, 'rss_mb': int(hwm) / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def test_a_1_gb_checkpoint_is_refused_from_its_header_without_reading_it(tiny_ckpt_path, tmp_path):
    # a valid abaw-rt header, and one float tensor filling 1 GiB (sparse: no disk used)
    index = {"__metadata__": real_metadata(tiny_ckpt_path), "w": {"dtype": "F32", "shape": [GiB // 4],
                                                                    "data_offsets": [0, GiB]}}
    head = safetensors_bytes(index)
    path = sparse_file(tmp_path / "big.safetensors", head, len(head) + GiB)
    got = load_in_child(path)
    assert got["error"] and "weights" in got["error"] and "parameters" in got["error"], got
    assert got["rss_mb"] < 200, f"peak RSS {got['rss_mb']:.0f} MB: the file was read into memory"


def test_a_40_gb_sparse_file_is_refused_without_a_memory_error(tmp_path):
    path = sparse_file(tmp_path / "huge.safetensors", (39 * GiB).to_bytes(8, "little"), 40 * GiB)
    got = load_in_child(path)
    assert got["error"] and "not a readable safetensors file" in got["error"] and "header claims" in got["error"]
    assert got["rss_mb"] < 200
    res = cli.invoke(app, ["info", str(path)])
    assert_clean_failure(res, "huge.safetensors", "header claims")


def test_tensor_data_past_the_end_of_the_file_is_refused(tiny_ckpt_path, tmp_path):
    index = {"__metadata__": real_metadata(tiny_ckpt_path), "w": {"dtype": "F32", "shape": [4],
                                                                    "data_offsets": [0, 16]}}
    path = tmp_path / "short.safetensors"
    path.write_bytes(safetensors_bytes(index, b"\0" * 8))
    with pytest.raises(AbawRtError, match="short.safetensors.*header describes"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", ["abaw_rt header", "safetensors header"])
def test_a_deeply_nested_checkpoint_header_is_one_line(tiny_ckpt_path, tmp_path, where):
    deep = "[" * 200_000 + "]" * 200_000
    if where == "abaw_rt header":
        head = json.dumps({"__metadata__": {"abaw_rt": deep}}).encode()
    else:
        meta = json.dumps(real_metadata(tiny_ckpt_path))
        head = ('{"__metadata__": ' + meta + ', "w": ' + deep + "}").encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(head).to_bytes(8, "little") + head)
    res = cli.invoke(app, ["info", str(path)])
    assert_clean_failure(res, "deep.safetensors", "nested")


def test_a_header_of_many_dummy_tensors_is_refused_quickly(tmp_path):
    for count, needle in ((12_000, "tensors in its header"), (600_000, "header claims")):
        index = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
        path = tmp_path / f"many{count}.safetensors"
        path.write_bytes(safetensors_bytes(index))
        got = load_in_child(path)
        assert got["error"] and needle in got["error"], got
        assert got["rss_mb"] < 200, got


def test_nan_weights_are_refused_at_load(tiny_ckpt, tmp_path):
    tensors = {k: np.array(v) for k, v in tiny_ckpt.tensors.items()}
    name = sorted(k for k, v in tensors.items() if v.dtype == np.float32 and v.size > 3)[0]
    tensors[name].reshape(-1)[:3] = [np.nan, np.inf, -np.inf]
    path = save_checkpoint(tmp_path / "nan.safetensors", tiny_ckpt.header, tensors)
    with pytest.raises(AbawRtError, match=rf"nan.safetensors.*tensor '{name}' holds 3 non-finite"):
        load_checkpoint(path)
    res = cli.invoke(app, ["export", str(path), "-p", "fp32"])
    assert_clean_failure(res, "nan.safetensors", "non-finite")


def test_loaded_tensors_are_memory_maps_equal_to_the_saved_weights(tiny_ckpt_path, tiny_ckpt):
    import safetensors.numpy

    ref = safetensors.numpy.load(tiny_ckpt_path.read_bytes())
    assert set(ref) == set(tiny_ckpt.tensors)
    for k, v in ref.items():
        got = tiny_ckpt.tensors[k]
        assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v)
        assert got.flags.writeable  # copy-on-write: a runner may write into it, the file never changes
        base = got
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        assert base is not None, f"tensor {k} is a copy, not a view of the memory-mapped file"


def _onnx_with_props(path: Path, props: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_deeply_nested_onnx_metadata_is_one_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    props = {f"abaw_rt.{k}": deep for k in ("header", "inputs", "outputs")}
    props.update({"abaw_rt.precision": "fp32", "abaw_rt.checkpoint_sha256": "0" * 64, "abaw_rt.version": "0"})
    path = _onnx_with_props(tmp_path / "deep.onnx", props)
    res = cli.invoke(app, ["info", str(path)])
    assert_clean_failure(res, "deep.onnx", "nested")


def test_deeply_nested_engine_sidecar_is_one_line(tmp_path):
    from abaw_rt.trt.sidecar import read_sidecar, sidecar_path_for

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\0" * 16)
    sidecar_path_for(plan).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AbawRtError, match="model.json.*nested"):
        read_sidecar(plan)


@pytest.mark.parametrize("op", ["If", "Loop"])
def test_external_data_inside_a_subgraph_is_checked(tmp_path, op):
    import onnx
    from onnx import TensorProto, helper

    from abaw_rt.graphs.safety import check_external_data

    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    w.data_location = TensorProto.EXTERNAL
    del w.float_data[:]
    w.external_data.add(key="location", value="../../../etc/passwd")
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])
    body = helper.make_graph([helper.make_node("Identity", ["w"], ["b"])], "body", [], [out], initializer=[w])
    if op == "If":
        node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    else:  # a Loop body nested inside an If branch: two levels down
        inner = helper.make_node("If", ["c"], ["b"], then_branch=body, else_branch=body)
        cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        loop_body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"]), inner], "loop",
                                      [helper.make_tensor_value_info("i", TensorProto.INT64, []), cond],
                                      [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), out])
        node = helper.make_node("Loop", ["", "c"], ["cf", "y"], body=loop_body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(AbawRtError, match="outside the model's folder"):
        check_external_data(path)


def test_a_symlink_loop_is_named_as_such(tmp_path, tiny_ckpt_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    os.symlink(b, a)
    os.symlink(a, b)
    from abaw_rt.pipeline.run import collect_sources

    with pytest.raises(AbawRtError, match="a.mp4.*symlink loop"):
        collect_sources([a])
    c = tmp_path / "c.safetensors"
    os.symlink(c, c)
    with pytest.raises(AbawRtError, match="c.safetensors.*symlink loop"):
        load_checkpoint(c)
    d = tmp_path / "d.safetensors"
    os.symlink(tmp_path / "nowhere.safetensors", d)
    with pytest.raises(AbawRtError, match="d.safetensors.*symlink to .*nowhere.safetensors.*does not exist"):
        load_checkpoint(d)
