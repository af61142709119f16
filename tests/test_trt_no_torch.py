"""TrtRunner and everything it imports load no torch: a Jetson or a slim server image runs engines without it.

In a fresh interpreter, a meta-path finder makes ``import torch`` (and any ``torch.*``) raise; the fakes
of tests/fakes_trt.py stand in for the GPU and TensorRT; the TensorRT runner module is imported and an
engine is run through the fakes (plain and with CUDA graphs). Any module-level ``import torch`` on the
way, in the runner or in anything it pulls in, fails the import; a lazy one fails the call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fakes_trt import make_fake_engine

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"blocked: 'import {name}' on the torch-free TensorRT path")
            return None

    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    import abaw_rt.cuda.gpu as gpu
    from tests.fakes_trt import H100, FakeCuda, fake_tensorrt

    cuda = FakeCuda()
    sys.modules["tensorrt"] = fake_tensorrt(cuda)
    gpu.cuda_devices = lambda: [H100]
    from abaw_rt.runners import runner_class

    TrtRunner = runner_class("trt")
    shapes = []
    for graphs in (False, True):
        with TrtRunner(sys.argv[1], cuda=cuda, cuda_graphs=graphs) as r:
            out = r.infer(r.example_feeds(1, 40, rng=np.random.default_rng(0)))
            shapes.append(list(out["va"].shape))
    print(json.dumps({"shapes": shapes, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
    """
)


def run_child(plan: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    path = [str(p) for p in (extra_path, ROOT) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(plan)], capture_output=True, text=True, env=env,
                          cwd=plan.parent, timeout=120)  # fmt: skip


def test_trt_runner_runs_through_the_fakes_without_torch(tmp_path):
    plan = make_fake_engine(tmp_path)
    proc = run_child(plan)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"shapes": [[1, 40, 2], [1, 40, 2]], "torch": []}


def test_a_module_level_torch_import_on_the_path_fails_it(tmp_path):
    # The check itself must be able to fail: shadow abaw_rt.runners.buckets (imported by the runner)
    # with a copy that imports torch at module level, as a careless edit would.
    (tmp_path / "plan").mkdir()
    plan = make_fake_engine(tmp_path / "plan")
    shadow = tmp_path / "shadow" / "abaw_rt"
    (shadow / "runners").mkdir(parents=True)
    for rel in ("__init__.py", "runners/__init__.py"):
        (shadow / rel).write_text((ROOT / "abaw_rt" / rel).read_text())
    src = (ROOT / "abaw_rt/runners/buckets.py").read_text()
    future = "from __future__ import annotations\n"
    (shadow / "runners/buckets.py").write_text(src.replace(future, future + "import torch  # planted\n", 1))
    # The shadow packages must still find the rest of abaw_rt in the worktree (their path extended first).
    for rel in ("", "runners"):
        init = shadow / rel / "__init__.py"
        body = init.read_text().replace("from __future__ import annotations\n", "")
        init.write_text(f"__path__.append({str(ROOT / 'abaw_rt' / rel)!r})\n" + body)
    proc = run_child(plan, extra_path=tmp_path / "shadow")
    assert proc.returncode != 0
    assert "blocked: 'import torch' on the torch-free TensorRT path" in proc.stderr
