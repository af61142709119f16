"""A verb whose optional extra is missing ends in one line naming the extra and the install command.

torch is hidden in a subprocess (``sys.modules['torch'] = None`` makes every ``import torch`` fail, as on a
machine without it), and each verb that needs it is run through the real CLI entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from abaw_rt import defaults
from abaw_rt.errors import install_command, missing_module_message

ROOT = Path(__file__).resolve().parents[1]
HIDE = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "from abaw_rt.cli import run\n"
    "sys.argv = ['abaw-rt'] + sys.argv[2:]\n"
    "run()\n"
)


def run_without(modules: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-c", HIDE, modules, *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )


def assert_one_line_hint(proc: subprocess.CompletedProcess, module: str, extra: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr  # no traceback
    assert lines[0].startswith("error: ") and f"'{module}'" in lines[0]
    assert install_command(extra) in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_install_command_puts_the_cpu_torch_wheel_first():
    assert install_command("torch") == "pip install torch==2.13.0 && pip install 'abaw-rt[torch]'"
    assert install_command("video") == "pip install 'abaw-rt[video]'"
    msg = missing_module_message("cv2")
    assert "[video]" in msg and "pip install 'abaw-rt[video]'" in msg


@pytest.mark.parametrize(
    "verb",
    [
        ["init-checkpoint", "{tmp}/x.safetensors"],
        ["train", "-r", "{root}/training/recipes/va.toml", "--data", "{tmp}/none", "--out", "{tmp}/run"],
        ["crossval", "-r", "{root}/training/recipes/expr.toml", "--data", "{tmp}/none", "--out", "{tmp}/cv"],
        ["export", "{demo}", "--out-dir", "{tmp}/graphs"],
        ["verify", "{demo}"],
        ["bench", "{demo}", "--out", "{tmp}/bench"],
    ],
    ids=lambda v: v[0],
)
def test_verbs_without_torch_say_how_to_install_it(tmp_path, verb):
    fill = {"tmp": tmp_path, "root": ROOT, "demo": defaults.checkpoint_path()}
    proc = run_without("torch", *(a.format(**fill) for a in verb), cwd=tmp_path)
    assert_one_line_hint(proc, "torch", "torch")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "graphs").exists()


def test_infer_without_pyav_says_how_to_install_it(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 64)
    proc = run_without("av", "infer", video, "--out", tmp_path / "out", cwd=tmp_path)
    assert_one_line_hint(proc, "av", "video")
