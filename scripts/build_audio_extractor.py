"""Build script: the default audio extractor graph, abaw_rt/defaults/logmel.onnx (64 log-mel bands + log energy).

The graph is generated from code (``abaw_rt.defaults.audio.build_logmel_onnx``), has no learnt weights, and is
checked here against the numpy reference ``abaw_rt.defaults.audio.log_mel`` on noise, tones and silence.

    python scripts/build_audio_extractor.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abaw_rt.checkpoint import atomic_write_bytes  # noqa: E402
from abaw_rt.defaults import DEFAULTS_DIR, LOGMEL_FILE  # noqa: E402
from abaw_rt.defaults.audio import SAMPLE_RATE, WINDOW, build_logmel_onnx, log_mel  # noqa: E402

ATOL = 1e-3  # on log values: float32 graph vs float64 numpy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULTS_DIR / LOGMEL_FILE)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    t = np.arange(WINDOW) / SAMPLE_RATE
    windows = np.concatenate(
        [
            rng.normal(0, 0.1, (16, WINDOW)),
            np.zeros((1, WINDOW)),
            np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (110, 440, 3000, 7000)]),
        ]
    ).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        staged = build_logmel_onnx(Path(tmp) / LOGMEL_FILE)
        sess = ort.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        got = sess.run(["features"], {"audio": windows})[0]
        err = float(np.abs(got - log_mel(windows)).max())
        if err > ATOL:
            raise SystemExit(f"logmel graph differs from the numpy reference by {err:.2e} (limit {ATOL})")
        atomic_write_bytes(args.out, staged.read_bytes())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes; max |graph - numpy| {err:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
