"""Benchmark: `abaw-rt infer` from two (or more) checkouts on one clip, in turns, with the clip's pure-decode speed.

Each round runs, every time in a fresh process: PyAV decode only (no audio, one thread: the throughput the
pipeline is measured against), then `abaw-rt infer CLIP --no-plot --threads 1` from each checkout (its
``PYTHONPATH``), so that a before/after comparison sees the same machine load. Reports each checkout's median
frames/s (from its report.json) and its share of the median pure-decode frames/s, and saves JSON with the
machine, versions, date and load averages.

    git worktree add /tmp/before <rev>
    python benchmarks/bench_ab.py clip.mp4 /tmp/before . --rounds 3
    python benchmarks/bench_ab.py clip.mp4 . .@other_spec.toml    # one checkout, another extractor spec

A checkout given as ``PATH@SPEC`` runs with ``--extractors SPEC --detector SPEC``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLI = "import sys; sys.argv[0] = 'abaw-rt'; from abaw_rt.cli import run; run()"
DECODE = (
    "import sys, time\nfrom abaw_rt.pipeline.decode import VideoDecoder\nt, n = time.perf_counter(), 0\n"
    "for f in VideoDecoder(sys.argv[1], threads=1, audio=False).frames():\n    n += 1\n    f.release()\n"
    "print(n / (time.perf_counter() - t))"
)


def _env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}


def decode_fps(clip: Path, tree: Path, work: Path) -> float:
    out = subprocess.run([sys.executable, "-c", DECODE, str(clip)], capture_output=True, text=True, env=_env(tree),
                         cwd=work)  # not this checkout's folder: `python -c` puts the working folder first on sys.path
    return float(out.stdout)


def infer_fps(clip: Path, tree: Path, work: Path, spec: Path | None = None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    extra = ["--extractors", str(spec), "--detector", str(spec)] if spec else []
    out = subprocess.run([sys.executable, "-c", CLI, "infer", str(clip), "--out", str(work), "--no-plot", "--threads",
                          "1", "--json", *extra], capture_output=True, text=True, env=_env(tree), cwd=work)
    if out.returncode:
        raise SystemExit(f"infer from {tree} failed: {out.stderr.strip()}")
    report = json.loads(out.stdout)["videos"][0]
    return {"frames_per_s": report["frames_per_s"], "faces_found": report["faces"]["found"],
            "frames": report["frames"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clip", type=Path)
    ap.add_argument("trees", nargs="+", help="checkouts to compare (their abaw_rt is imported); PATH@SPEC: with that spec")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="JSON (default results/ab_cpu_<date>.json)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from abaw_rt.machine import machine_info
    from abaw_rt.bench.report import save_report

    cases = {t: (Path(t.split("@")[0]).resolve(), Path(t.split("@")[1]).resolve() if "@" in t else None)
             for t in args.trees}
    runs: dict[str, list] = {t: [] for t in cases}
    decode, loads = [], [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="abaw-rt-ab-") as work:
        for r in range(args.rounds):
            decode.append(decode_fps(args.clip.resolve(), next(iter(cases.values()))[0], Path(work)))
            for k, (t, spec) in enumerate(cases.values()):
                runs[list(cases)[k]].append(infer_fps(args.clip.resolve(), t, Path(work) / str(k), spec))
            loads.append(os.getloadavg())
            print(f"round {r}: decode {decode[-1]:.0f} frames/s; " + ", ".join(
                f"{t} {runs[t][-1]['frames_per_s']:.0f}" for t in cases), flush=True)
    d = statistics.median(decode)
    summary = {t: {"frames_per_s_median": statistics.median(x["frames_per_s"] for x in runs[t]),
                   "share_of_pure_decode": round(statistics.median(x["frames_per_s"] for x in runs[t]) / d, 3),
                   "faces_found": runs[t][0]["faces_found"], "frames": runs[t][0]["frames"]}
               for t in cases}
    for t in cases:
        s = summary[t]
        print(f"{t}: {s['frames_per_s_median']:.0f} frames/s, share of pure decode {s['share_of_pure_decode']}, "
              f"faces found on {s['faces_found']} of {s['frames']} frames")
    result = {"benchmark": "ab", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "clip": str(args.clip), "rounds": args.rounds,
              "load_average_1_5_15": [[round(x, 2) for x in lv] for lv in loads],
              "pure_decode_frames_per_s": decode, "pure_decode_median": d, "runs": runs, "summary": summary}
    out = args.out or RESULTS / f"ab_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    save_report(result, out)  # atomically: a stopped run leaves no partial file
    print(f"saved {out}")


if __name__ == "__main__":
    main()
