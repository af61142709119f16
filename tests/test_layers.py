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


def test_every_top_level_module_has_a_layer():
    """A module missing from the contract is unconstrained: import-linter would pass whatever it imports."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    listed = {name.strip().removeprefix("abaw_rt.") for layer in layers for name in layer.split("|")}
    package = ROOT / "abaw_rt"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert modules - listed == set(), f"add these to [tool.importlinter] layers: {sorted(modules - listed)}"
    assert listed - modules == set(), f"the contract names modules that do not exist: {sorted(listed - modules)}"
