"""Benchmark: `abaw-rt live` against offline `abaw-rt infer` on one clip: accuracy and latency per lookahead.

The built-in models (RetinaFace, FER mini-Xception, log-mel, the demo fusion model) on a generated clip, 640x360
at 25 fps: ``--clip sample`` (`abaw-rt make-sample-video`: one smiling face that moves and leaves the frame, a voice
from calm to excited; valence is nearly constant there, so its CCC is ill-conditioned) or ``--clip expressive``
(`defaults.sample.make_expressive_video`: the same scene with smiling and serious faces taking turns every 2.5-5 s
and a voice whose arousal changes in episodes; needs scikit-image). Offline runs once; live runs the same file with
--realtime (frames released at their own pace, as a camera would) at each lookahead, hop 1, each in a fresh
process with one thread.

Per lookahead: CCC of live against offline predictions (offline as the reference, so ΔCCC = CCC - 1: 0 means
live equals offline) for valence and arousal, EXPR agreement (share of frames with the same class), mean
|Δ| of valence/arousal, latency p50/p90/p99 (capture to emission), shed frames, and whether the targets hold:
p99 <= lookahead/fps + 150 ms with no shed frames; |ΔCCC| <= 0.02 at lookahead 50.

    python benchmarks/bench_live.py                  # 40 s sample clip, lookahead 0 12 25 50 100 (~5 min)
    python benchmarks/bench_live.py --clip expressive --seconds 20 --lookahead 0 50

Saves benchmarks/results/live_cpu_<date>.json (``live_expressive_cpu_<date>.json`` for the expressive clip):
machine, versions, date, load average, the offline predictions' spread, every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's abaw_rt, also when another one is pip-installed
RESULTS = ROOT / "benchmarks" / "results"
CLI = [sys.executable, "-c", "import sys; sys.argv[0] = 'abaw-rt'; from abaw_rt.cli import run; run()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def ccc(a: np.ndarray, b: np.ndarray) -> float:
    """Concordance correlation coefficient (Lin 1989), as the ABAW VA metric."""
    ma, mb = a.mean(), b.mean()
    cov = ((a - ma) * (b - mb)).mean()
    return float(2 * cov / (a.var() + b.var() + (ma - mb) ** 2))


def predictions(path: Path) -> tuple[np.ndarray, list[str]]:
    rows = list(csv.DictReader(open(path)))
    return np.array([[float(r["valence"]), float(r["arousal"])] for r in rows]), [r["expr"] for r in rows]


CLIPS = {
    "sample": "abaw-rt make-sample-video (one smiling face, leaves the frame once; voice calm then excited)",
    "expressive": "defaults.sample.make_expressive_video (smiling and serious faces every 2.5-5 s, cross-faded; "
                  "leaves the frame once; voice arousal in episodes of 2-6 s)",
}


def make_clip(kind: str, path: Path, seconds: float) -> Path:
    from abaw_rt.defaults.sample import make_expressive_video, make_sample_video

    if kind == "expressive":
        return make_expressive_video(path, seconds=seconds)[0]
    return make_sample_video(path, seconds=seconds)


def spread(path: Path) -> dict:
    """How much the offline predictions vary: CCC against them is only meaningful when they do."""
    va, expr = predictions(path)
    return {"std_valence": round(float(va[:, 0].std()), 4), "std_arousal": round(float(va[:, 1].std()), 4),
            "mean_valence": round(float(va[:, 0].mean()), 4), "mean_arousal": round(float(va[:, 1].mean()), 4),
            "expr_classes": {c: expr.count(c) for c in sorted(set(expr))}}


def run_offline(clip: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run(CLI + ["infer", str(clip), "--out", str(out), "--no-plot", "--threads", "1", "--json"],
                         capture_output=True, text=True, env=ENV)
    if res.returncode:
        raise SystemExit(f"offline infer failed: {res.stderr}")
    report = json.loads(res.stdout)["videos"][0]
    return {"wall_s": round(time.perf_counter() - t0, 2), "frames": report["frames"],
            "frames_per_s": report["frames_per_s"], "peak_rss_mb": report["peak_rss_mb"]}


def run_live(clip: Path, out: Path, lookahead: int, hop: int) -> dict:
    ndjson = out.with_suffix(".ndjson")
    with open(ndjson, "w") as f:
        res = subprocess.run(CLI + ["live", str(clip), "--realtime", "--lookahead", str(lookahead), "--hop", str(hop),
                                    "--out", str(out), "--threads", "1"], stdout=f, stderr=subprocess.PIPE, text=True,
                             env=ENV)
    if res.returncode:
        raise SystemExit(f"live --lookahead {lookahead} failed: {res.stderr}")
    report = json.loads(next(out.glob("*/report.json")).read_text())
    lines = sum(1 for _ in open(ndjson))
    return {"report": report, "ndjson_lines": lines, "predictions": next(out.glob("*/predictions.csv"))}


def compare(offline: Path, live: dict, lookahead: int, fps: float) -> dict:
    va0, e0 = predictions(offline)
    va1, e1 = predictions(live["predictions"])
    r = live["report"]
    lat = r["latency"]
    bound = 1000.0 * lookahead / fps + 150.0
    row = {
        "lookahead": lookahead,
        "lookahead_s": round(lookahead / fps, 3),
        "frames": r["frames"],
        "ndjson_lines": live["ndjson_lines"],
        "ccc_valence": round(ccc(va0[:, 0], va1[:, 0]), 4),
        "ccc_arousal": round(ccc(va0[:, 1], va1[:, 1]), 4),
        "mean_abs_diff_valence": round(float(np.abs(va0[:, 0] - va1[:, 0]).mean()), 4),
        "mean_abs_diff_arousal": round(float(np.abs(va0[:, 1] - va1[:, 1]).mean()), 4),
        "expr_agreement": round(float(np.mean([a == b for a, b in zip(e0, e1)])), 4),
        "latency_p50_ms": lat["p50_ms"], "latency_p90_ms": lat["p90_ms"], "latency_p99_ms": lat["p99_ms"],
        "latency_max_ms": lat["max_ms"],
        "latency_bound_ms": round(bound, 1),
        "shed_frames": r["shed_frames"],
        "windows_run": r["windows_run"],
        "fusion_p50_ms": r["stages"].get("fusion", {}).get("p50_ms"),
    }
    row["delta_ccc_valence"] = round(row["ccc_valence"] - 1.0, 4)
    row["delta_ccc_arousal"] = round(row["ccc_arousal"] - 1.0, 4)
    row["latency_target_met"] = bool(lat["p99_ms"] <= bound and r["shed_frames"] == 0)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", choices=sorted(CLIPS), default="sample")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--lookahead", type=int, nargs="+", default=[0, 12, 25, 50, 100])
    ap.add_argument("--hop", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default results/live_cpu_<date>.json)")
    args = ap.parse_args()
    from abaw_rt.machine import machine_info
    from abaw_rt.bench.report import save_report

    work = args.workdir or Path(tempfile.mkdtemp(prefix="abaw-rt-live-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.clip, work / "clip.mp4", args.seconds)
    load_before = os.getloadavg()
    offline = run_offline(clip, work / "offline")
    offline["spread"] = spread(work / "offline" / "clip" / "predictions.csv")
    print(f"offline: {offline}", flush=True)
    fps = 25.0
    rows = []
    for lookahead in args.lookahead:
        row = compare(work / "offline" / "clip" / "predictions.csv", run_live(clip, work / f"live_{lookahead}",
                      lookahead, args.hop), lookahead, fps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    at50 = next((r for r in rows if r["lookahead"] == 50), None)
    result = {
        "benchmark": "live",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "config": {"clip": args.clip, "clip_is": CLIPS[args.clip] + ", 640x360, 25 fps", "seconds": args.seconds,
                   "hop": args.hop,
                   "threads": 1, "models": "built-in defaults (RetinaFace, FER, log-mel, demo fusion)",
                   "live_source": "the clip with --realtime (frames released at their timestamps)",
                   "delta_ccc": "CCC(live, offline) - 1: offline predictions are the reference"},
        "offline": offline,
        "rows": rows,
        "targets": {
            "latency_p99_le_lookahead_plus_150ms_no_shed": {str(r["lookahead"]): r["latency_target_met"] for r in rows},
            "abs_delta_ccc_le_0.02_at_lookahead_50": None if at50 is None else bool(
                abs(at50["delta_ccc_valence"]) <= 0.02 and abs(at50["delta_ccc_arousal"]) <= 0.02),
        },
    }
    kind = "" if args.clip == "sample" else f"_{args.clip}"
    out = args.out or RESULTS / f"live{kind}_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    save_report(result, out)  # atomically: a stopped run leaves no partial file
    print(f"saved {out}")


if __name__ == "__main__":
    main()
