"""Every ```bash block of README.md and training/README.md runs as written, from a fresh copy of the repository.

Each block is split into commands (backslash continuations joined, comments dropped); ``pip install`` steps
are left out (this environment has the extras already), long commands run in the reduced form listed in
REDUCED, and blocks that cannot run here are listed in SKIPPED with the reason. A block added to a README is
run by this test until it is listed: a README example that breaks fails CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = ("README.md", "training/README.md")

# First line of a block -> why it does not run here.
SKIPPED = {
    "pip install torch==2.13.0 && pip install -e '.[torch,dev]' && python -m pytest -q": "the test suite itself",
    "# 1. a CUDA build of torch first": "needs an NVIDIA GPU and TensorRT",
    "# on a Jetson: JetPack's TensorRT": "needs a Jetson with JetPack (TensorRT, CUDA) and an exported graph",
    "pip install torch==2.13.0 && pip install -e '.[torch,build-defaults]'": "downloads upstream wheels; 10-20 min",
    "abaw-rt train -r training/recipes/va.toml   --data data/affwild2": "needs the licensed Aff-Wild2 features",
    "python benchmarks/bench_system.py": "a benchmark: builds the paper-size zoo, about 4 minutes",
    "pip install torch==2.13.0 && pip install -e '.[torch,video,zoo]'": "builds the paper-size zoo (about 1 GB) and "
    "needs your video; tests/test_zoo*.py build and run the tiny zoo",
    "abaw-rt live /dev/video0": "needs a camera, a network stream and ffmpeg; tests/test_live.py runs live from "
    "MPEG-TS on stdin, a loopback tcp:// listener and a --realtime file",
    "abaw-rt zoo fp16 zoo/eff.paper.onnx": "needs the paper-size zoo built above; tests/test_zoo*.py run the same "
    "verbs on the tiny zoo",
}
# (pattern, replacement) applied to every command: the same command, smaller.
REDUCED = (
    (r"--size paper", "--size tiny"),
    (r"-t 1 -t 75 -t 300 -t 1200 -b 1 -b 8", "-t 7 -b 1"),
    (r"-t 75 -t 300 -b 1 -b 8", "-t 75 -b 1"),
    (r"--min-seconds 1\b", "--min-seconds 0"),
    (r"--epochs [0-9]+", "--epochs 1"),
    (r"make-synthetic (\S+)", r"make-synthetic \1 --videos 8 --val-videos 2"),
    (r"make-sample-video (\S+)$", r"make-sample-video \1 --seconds 4"),
    (r"--fail-above-ratio [0-9.]+", "--fail-above-ratio 1000"),  # the gate runs; its verdict is timing, not tested
)


def bash_blocks() -> list[tuple[str, int, str]]:
    found = []
    for name in READMES:
        text = (ROOT / name).read_text()
        for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
            found.append((name, text[: m.start()].count("\n") + 1, m.group(1)))
    return found


def commands(block: str) -> list[str]:
    joined = re.sub(r"\s*\\\n\s*", " ", block)
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        for part in (p.strip() for p in line.split("&&")):
            if part.startswith(("pip install", "pip uninstall")):
                continue
            for pattern, repl in REDUCED:
                part = re.sub(pattern, repl, part)
            cmds.append(part)
    return cmds


def fresh_copy(dst: Path) -> Path:
    """The repository's tracked (and new, not ignored) files, as a fresh clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def test_every_block_is_known_and_parses():
    blocks = bash_blocks()
    assert len(blocks) >= 8
    firsts = {b.splitlines()[0].strip() for _, _, b in blocks}
    for first in SKIPPED:
        assert any(f.startswith(first) for f in firsts), f"SKIPPED lists a block that is gone: {first!r}"
    assert commands("a \\\n  b  # c\npip install x && abaw-rt y --epochs 5") == ["a b", "abaw-rt y --epochs 1"]


@pytest.mark.slow
@pytest.mark.parametrize("where, line, block", bash_blocks(), ids=lambda x: str(x) if isinstance(x, int) else None)
def test_readme_block_runs_as_written(tmp_path_factory, where, line, block):
    first = block.splitlines()[0].strip()
    reason = next((why for key, why in SKIPPED.items() if first.startswith(key)), None)
    if reason:
        pytest.skip(f"{where}:{line}: {reason}")
    if any(c.startswith(("abaw-rt train", "abaw-rt crossval", "abaw-rt export")) for c in commands(block)):
        pytest.importorskip("torch")
    pytest.importorskip("av")
    repo = fresh_copy(tmp_path_factory.mktemp("clone"))
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    bindir = repo / ".bin"
    bindir.mkdir()
    (bindir / "abaw-rt").write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.argv[0] = \"abaw-rt\"; "
                                    "from abaw_rt.cli import run; run()' \"$@\"\n")
    (bindir / "abaw-rt").chmod(0o755)
    (bindir / "python").symlink_to(sys.executable)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    for cmd in commands(block):
        proc = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{where}:{line}: `{cmd}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{where}:{line}: `{cmd}`:\n{proc.stderr[-3000:]}"
