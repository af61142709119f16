"""The layer contract (pyproject.toml, import-linter) holds for the package and catches an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("importlinter")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    lint = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]
    return subprocess.run([*lint, str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _copy_package(dst: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    shutil.copytree(ROOT / "abaw_rt", dst / "abaw_rt", ignore=shutil.ignore_patterns("*.onnx", "*.safetensors", "*.jpg",
                                                                                   "__pycache__"))  # fmt: skip
    return dst


def test_the_package_keeps_its_layers(tmp_path):
    res = _lint(_copy_package(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "KEPT" in res.stdout


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    tree = _copy_package(tmp_path)
    io = tree / "abaw_rt" / "io.py"
    io.write_text(io.read_text() + "\n\ndef _planted():\n    from abaw_rt.cli import app  # an upward import\n")
    res = _lint(tree)
    assert res.returncode != 0
    assert "abaw_rt.io is not allowed to import abaw_rt.cli" in res.stdout, res.stdout
