"""Benchmark: a newcomer's first commands: `abaw-rt infer` start-up and whole-command speed, tiny-model export.

Measured, each in a fresh process, `--repeat` times (medians reported, min and max kept):

- `abaw-rt --help` wall time;
- `abaw-rt infer` on a 20 s sample video (`abaw-rt make-sample-video`), all defaults: the time from process
  start (just before the parent spawns it) to the first decoded frame (the child records it through a
  wrapper around `VideoDecoder.frames`, nothing else changed), and the whole command's wall time as a
  real-time factor (video seconds / wall seconds). Goals: first frame <= 1.0 s, whole command >= 8x;
- `abaw-rt export` of the tiny test checkpoint (fp32, with its multi-length check against torch; needs
  torch): wall time (goal <= 15 s) and whether progress reached stderr.

Saves benchmarks/results/startup_cpu_<date>.json with machine, versions and load average (the CPU is
shared: read the figures with the load average beside them).

    python benchmarks/bench_startup.py               # 3 repeats (~1 minute)
    python benchmarks/bench_startup.py --repeat 5 --no-export
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's abaw_rt, also when another one is pip-installed
RESULTS = ROOT / "benchmarks" / "results"

# The child: note the wall clock when the first frame leaves the decoder, then run the CLI unchanged.
WRAPPER = """
import os, sys, time
from abaw_rt.pipeline import decode
_frames = decode.VideoDecoder.frames
def frames(self):
    first = True
    for f in _frames(self):
        if first:
            first = False
            with open(os.environ["ABAW_RT_FIRST_FRAME_FILE"], "a") as out:
                out.write(repr(time.time()) + "\\n")
        yield f
decode.VideoDecoder.frames = frames
from abaw_rt.cli import run
sys.argv = ["abaw-rt"] + sys.argv[1:]
run()
"""
PLAIN = "import sys\nfrom abaw_rt.cli import run\nsys.argv = ['abaw-rt'] + sys.argv[1:]\nrun()\n"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class _Result:
    def __init__(self, t0: float, wall: float, proc: subprocess.CompletedProcess):
        self.t0, self.wall, self.proc = t0, wall, proc


def _run(args: list[str], wrapper: bool = False, env: dict | None = None) -> _Result:
    code = WRAPPER if wrapper else PLAIN
    cmd = [sys.executable, "-c", code, *args]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or _env())
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return _Result(t0, wall, proc)


def _stats(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3),
            "runs": [round(x, 3) for x in xs]}


def bench_infer(work: Path, repeat: int, seconds: float) -> dict:
    video = work / "sample.mp4"
    _run(["make-sample-video", str(video), "--seconds", str(seconds)])
    first, walls = [], []
    for i in range(repeat):
        marker = work / f"first_frame_{i}.txt"
        env = {**_env(), "ABAW_RT_FIRST_FRAME_FILE": str(marker)}
        r = _run(["infer", str(video), "--out", str(work / "out"), "--json"], wrapper=True, env=env)
        first.append(float(marker.read_text().split()[0]) - r.t0)
        walls.append(r.wall)
    report = json.loads(r.proc.stdout)["videos"][0]
    rtf = [seconds / w for w in walls]
    return {
        "video_seconds": seconds,
        "first_frame_s": _stats(first),
        "wall_s": _stats(walls),
        "realtime_factor": _stats(rtf),
        "pipeline_wall_s_last_run": report.get("wall_s"),
        "outputs": report.get("outputs", {}).get("files"),
        "goal_first_frame_s": 1.0,
        "goal_realtime_factor": 8.0,
        "met": statistics.median(first) <= 1.0 and statistics.median(rtf) >= 8.0,
    }


def bench_export(work: Path, repeat: int) -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"skipped": "torch is not installed"}
    ckpt = work / "tiny.safetensors"
    _run(["init-checkpoint", str(ckpt), "--size", "tiny"])
    walls, progress = [], []
    for _ in range(repeat):
        r = _run(["export", str(ckpt), "-p", "fp32", "--json", "--progress"])
        walls.append(r.wall)
        progress.append([line for line in r.proc.stderr.splitlines() if line.strip()])
    return {
        "wall_s": _stats(walls),
        "stderr_progress_lines": progress[-1],
        "goal_s": 15.0,
        "met": statistics.median(walls) <= 15.0 and bool(progress[-1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the sample video")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/startup_cpu_<date>.json)")
    args = ap.parse_args()
    from abaw_rt.machine import machine_info

    before = machine_info()
    with tempfile.TemporaryDirectory(prefix="abaw-rt-startup-") as tmp:
        work = Path(tmp)
        helps = [_run(["--help"]).wall for _ in range(args.repeat)]
        infer = bench_infer(work, args.repeat, args.seconds)
        export = {"skipped": "--no-export"} if args.no_export else bench_export(work, args.repeat)
    result = {
        "benchmark": "startup",
        "machine": before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "help_wall_s": _stats(helps),
        "infer": infer,
        "export_tiny": export,
    }
    out = args.out or RESULTS / f"startup_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    i = infer
    print(f"--help: {result['help_wall_s']['median']:.2f} s")
    print(f"infer {args.seconds:g} s clip: first frame {i['first_frame_s']['median']:.2f} s (goal <= 1.0), "
          f"whole command {i['wall_s']['median']:.2f} s = {i['realtime_factor']['median']:.1f}x real time (goal >= 8)")
    if "wall_s" in export:
        print(f"export tiny fp32: {export['wall_s']['median']:.1f} s (goal <= 15), progress lines on stderr: "
              f"{len(export['stderr_progress_lines'])}")
    print(f"load average before {before['load_average_1_5_15']}, after {result['load_average_after']}; saved {out}")


if __name__ == "__main__":
    main()
