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
    from abaw_rt.engines.recipes import available_recipes, load_engine_recipe as load_recipe

    monkeypatch.chdir(tmp_path)  # no engines/ here and no source tree relative to it
    assert {"jetson-orin", "t4-a10", "h100"} <= set(available_recipes())
    assert load_recipe("jetson-orin").name == "jetson-orin"
    own = tmp_path / "engines" / "recipes"
    own.mkdir(parents=True)
    data = json.loads((Path(__file__).parents[1] / "abaw_rt/engines/recipe_files/h100.json").read_text())
    (own / "h100.json").write_text(json.dumps({**data, "description": "mine"}))
    assert load_recipe("h100").description == "mine"  # the working folder's own recipe comes first


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
