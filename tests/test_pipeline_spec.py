"""Extractor spec files: parsing, refusal of typos, and the checkpoint/extractor match checked before decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import TINY, FeatureGroup, ModelConfig
from abaw_rt.pipeline import synthetic as syn
from abaw_rt.pipeline.extractor_spec import (
    Canvas,
    ColourOrder,
    CropMode,
    ImageInput,
    Layout,
    Stretch,
    load_detector,
    load_spec,
)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("graphs")
    syn.linear_extractor(d / "eff.onnx", "visual", 16, size=(32, 32))
    syn.linear_extractor(d / "w2v.onnx", "audio", 4, window=800)
    syn.blob_detector(d / "det.onnx", size=(48, 64))
    return d


def _write(folder: Path, text: str) -> Path:
    p = folder / "spec.toml"
    p.write_text(text)
    return p


FULL = """
[detector]
onnx = "det.onnx"
input_size = [48, 64]
colour = "bgr"
scale = 1.0
mean = [104, 117, 123]
std = 1
score_threshold = 0.7

[[extractor]]
name = "eff"
modality = "visual"
onnx = "eff.onnx"
output = "features"
dim = 16
input_size = [32, 32]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
crop = "box"
margin = 0.25
batch = 8

[[extractor]]
name = "wav2vec2"
modality = "audio"
onnx = "w2v.onnx"
dim = 4
window = 800
hop = 320
stretch = "linear"
"""


def test_full_spec_parses(graphs):
    spec = load_spec(_write(graphs, FULL))
    eff, w2v = spec.extractors
    assert eff.onnx == (graphs / "eff.onnx").resolve() and eff.dim == 16 and eff.batch == 8
    assert eff.image.size == (32, 32) and eff.crop is CropMode.box and eff.margin == 0.25
    assert eff.image.mean == (0.485, 0.456, 0.406) and eff.image.layout is Layout.nchw
    assert w2v.window == 800 and w2v.hop == 320 and w2v.stretch is Stretch.linear
    det = spec.detector
    assert det.image.colour is ColourOrder.bgr and det.image.std == (1.0, 1.0, 1.0) and det.score_threshold == 0.7
    assert det.canvas is Canvas.fixed  # the default: a graph with a fixed input shape keeps working
    assert load_detector(graphs / "spec.toml") == det
    fit = load_spec(_write(graphs, FULL.replace("score_threshold = 0.7", 'score_threshold = 0.7\ncanvas = "fit"')))
    assert fit.detector.canvas is Canvas.fit


@pytest.mark.parametrize(
    "edit, match",
    [
        (('crop = "box"', 'crop = "boxx"'), "'crop' = 'boxx'"),
        (("batch = 8", "batchsize = 8"), r"unknown key\(s\) \['batchsize'\]"),
        (("dim = 16", 'dim = "16"'), "'dim' = '16', expected int"),
        (('onnx = "eff.onnx"', 'onnx = "nope.onnx"'), "onnx 'nope.onnx' not found"),
        (('name = "wav2vec2"', 'name = "eff"'), r"duplicate extractor name\(s\) \['eff'\]"),
        (("window = 800", "window = 0"), "'window' and 'hop' must be >= 1"),
        (("std = [0.229, 0.224, 0.225]", "std = [0.229, 0, 0.225]"), "every value must be > 0"),
        (("input_size = [32, 32]", "input_size = [32]"), "expected \\[height, width\\]"),
        (("[detector]", "[detektor]"), r"unknown table\(s\) \['detektor'\]"),
        (('modality = "visual"', 'modality = "video"'), "modality 'video'"),
        (("score_threshold = 0.7", 'canvas = "fitted"'), r"'canvas' = 'fitted', expected one of \['fixed', 'fit'\]"),
    ],
)
def test_spec_errors_name_the_problem(graphs, edit, match):
    text = FULL.replace(*edit, 1)
    assert text != FULL
    with pytest.raises(AbawRtError, match=match) as exc:
        load_spec(_write(graphs, text))
    assert "spec.toml" in str(exc.value)


def test_unreadable_and_missing_specs(graphs, tmp_path):
    with pytest.raises(AbawRtError, match="no such file"):
        load_spec(tmp_path / "none.toml")
    with pytest.raises(AbawRtError, match="not valid TOML"):
        load_spec(_write(tmp_path, "[[extractor]\nname="))
    with pytest.raises(AbawRtError, match="no such file"):
        load_detector(tmp_path / "none.onnx")
    with pytest.raises(AbawRtError, match=r"no \[detector\] table"):
        load_detector(_write(graphs, FULL[FULL.index("[[extractor]]") :]))


def test_detector_from_onnx_uses_the_default_contract(graphs):
    det = load_detector(graphs / "det.onnx")
    assert det.onnx == (graphs / "det.onnx").resolve()
    assert det.image.size is None  # read from the graph's fixed input shape
    assert det.boxes_output == "boxes" and det.landmarks_output == "landmarks"


def _cfg(*groups):
    return ModelConfig(features=tuple(FeatureGroup(*g) for g in groups), heads=("va",), **TINY)


def test_model_features_must_match_the_extractors(graphs):
    spec = load_spec(_write(graphs, FULL))
    ok = spec.for_model(_cfg(("eff", 16, "visual"), ("wav2vec2", 4, "audio")))
    assert [e.name for e in ok] == ["eff", "wav2vec2"]
    with pytest.raises(AbawRtError, match="needs feature 'rafdb' \\(visual, dim 512\\).*has no extractor"):
        spec.for_model(_cfg(("eff", 16, "visual"), ("rafdb", 512, "visual")))
    with pytest.raises(AbawRtError, match="extractor 'eff' .*visual, dim 16; the model needs visual, dim 1280"):
        spec.for_model(_cfg(("eff", 1280, "visual")))
    with pytest.raises(AbawRtError, match="audio, dim 4; the model needs visual, dim 4"):
        spec.for_model(_cfg(("wav2vec2", 4, "visual")))


def test_image_preparation_orders_scales_and_lays_out():
    img = np.zeros((1, 2, 3, 3), np.uint8)
    img[..., 0], img[..., 2] = 255, 51  # red full, blue 0.2
    rgb = ImageInput((2, 3), mean=(0.5, 0.0, 0.0), std=(0.5, 1.0, 1.0)).prepare(img)
    assert rgb.shape == (1, 3, 2, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, :, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    bgr = ImageInput((2, 3), colour=ColourOrder.bgr, layout=Layout.nhwc, scale=1.0).prepare(img)
    assert bgr.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(bgr[0, 0, 0], [51.0, 0.0, 255.0])


def test_pipeline_modules_import_no_heavy_framework():
    import subprocess
    import sys

    mods = ["run", "decode", "faces", "extractors", "extractor_spec", "segments", "stitch", "outputs", "report"]
    code = (
        "import sys\n"
        + "".join(f"import abaw_rt.pipeline.{m}\n" for m in mods)
        + "import abaw_rt.cli.infer_cmds\n"
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        + "('torch', 'onnxruntime', 'onnx', 'av', 'cv2', 'matplotlib', 'PIL')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def test_extractor_provider_in_the_spec_wins_over_the_pipelines(graphs):
    """An extractor's own ``provider`` (e.g. the one heavy graph on the GPU) overrides --device's for that graph only."""
    from abaw_rt.pipeline.extractors import FeatureExtractor

    spec = load_spec(_write(graphs, """
[[extractor]]
name = "eff"
modality = "visual"
onnx = "eff.onnx"
dim = 16
provider = "tensorrt"

[[extractor]]
name = "w2v"
modality = "audio"
onnx = "w2v.onnx"
dim = 4
window = 800
"""))
    eff, w2v = spec.extractors
    assert (eff.provider, w2v.provider) == ("tensorrt", None)
    assert FeatureExtractor(eff, "cpu").runner.provider == "tensorrt"  # not activated: no GPU needed to see it
    assert FeatureExtractor(w2v, "cpu").runner.provider == "cpu"
    assert FeatureExtractor(w2v, "cuda").runner.provider == "cuda"


def test_unknown_extractor_provider_is_refused(graphs):
    spec = _write(graphs, """
[[extractor]]
name = "eff"
modality = "visual"
onnx = "eff.onnx"
dim = 16
provider = "gpu"
""")
    with pytest.raises(AbawRtError, match=r"extractor 'eff': provider 'gpu', expected one of \['cpu', 'cuda', 'tensorrt'\]"):
        load_spec(spec)
