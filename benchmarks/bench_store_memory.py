"""Benchmark: training on a feature store larger than memory would like, memory-mapped vs loaded, and evaluate.

A synthetic ABAW-format set (`abaw_rt.train.synthetic`) at the paper's feature widths (eff 1280, AffectNet-8
512, RAF-DB 512, ArcFace 512, wav2vec2 512: 13 KB per frame) of about `--gb` GB, then, each in a fresh process:

- training the VA recipe (tiny model width, the paper's feature set, `--epochs` epochs, 1 thread) with
  `data.memory_map = true` (windows read from the mapped files per batch): peak RSS (ru_maxrss, which counts
  mapped file pages while they are resident); target <= 1.5 GB whatever the store's size;
- the same with `data.memory_map = false` (every array loaded): peak RSS, and the validation figures, which
  must equal the memory-mapped run's exactly;
- `abaw-rt evaluate best.safetensors --data ROOT --json`: the pooled figures must equal what `train`
  reported for that checkpoint to 1e-6.

Saves benchmarks/results/store_memory_cpu_<date>.json with machine, versions and load average.

    python benchmarks/bench_store_memory.py              # 4 GB store (~3 minutes, 4 GB of disk in a temp folder)
    python benchmarks/bench_store_memory.py --gb 0.5 --no-in-memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FRAMES_PER_VIDEO = (900, 1100)

CHILD = """
import json, resource, sys, time
from pathlib import Path
from abaw_rt.train.config import load_train_recipe
from abaw_rt.train.loop import train
recipe, out, *sets = sys.argv[1:]
t = time.perf_counter()
res = train(load_train_recipe(Path(recipe), sets), Path(out))
print(json.dumps({"best_path": str(res.best_path), "best_metrics": res.best_metrics, "wall_s": time.perf_counter() - t,
                  "history": [r.metrics for r in res.history],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def make_store(root: Path, gb: float, val_videos: int) -> dict:
    from abaw_rt.train.synthetic import PAPER_DIMS, SyntheticSpec, make_synthetic

    per_frame = sum(PAPER_DIMS.values()) * 4
    videos = max(val_videos + 2, int(round(gb * 1e9 / per_frame / (sum(FRAMES_PER_VIDEO) / 2))))
    t = time.perf_counter()
    make_synthetic(root, SyntheticSpec(videos=videos, val_videos=val_videos, min_frames=FRAMES_PER_VIDEO[0],
                                       max_frames=FRAMES_PER_VIDEO[1], dims=PAPER_DIMS, seed=0))
    size = sum(p.stat().st_size for p in (root / "features").rglob("*.npy"))
    return {"videos": videos, "val_videos": val_videos, "bytes": size, "gb": round(size / 1e9, 3),
            "bytes_per_frame": per_frame, "make_s": round(time.perf_counter() - t, 1)}


def train_child(root: Path, out: Path, memory_map: bool, epochs: int, batch: int = 32) -> dict:
    sets = ["model.size='tiny'", f"optim.batch_size={batch}", f"run.eval_batch_size={batch}", "run.threads=1", "run.device='cpu'", f"optim.epochs={epochs}",
            "optim.lr=1e-3", f"data.root='{root}'", f"data.memory_map={'true' if memory_map else 'false'}"]
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "training" / "recipes" / "va.toml"), str(out), *sets],
                          env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def evaluate_child(best: str, root: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from abaw_rt.cli import run; run()", "evaluate", best, "--data",
                           str(root), "--json", "--threads", "1"], env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout), "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=4.0, help="Store size in GB (paper widths).")
    ap.add_argument("--val-videos", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32, help="Training and validation batch (windows); the paper's is 32.")
    ap.add_argument("--no-in-memory", action="store_true", help="Skip the loaded-arrays run (it needs the RAM).")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from abaw_rt.machine import machine_info

    before = machine_info()
    with tempfile.TemporaryDirectory(prefix="abaw-rt-store-") as tmp:
        root = Path(tmp) / "synth"
        store = make_store(root, args.gb, args.val_videos)
        print(f"store: {store['gb']} GB, {store['videos']} videos ({store['make_s']} s)", flush=True)
        mapped = train_child(root, Path(tmp) / "mapped", True, args.epochs, args.batch)
        print(f"memory-mapped: peak RSS {mapped['peak_rss_mb']:.0f} MB, {mapped['wall_s']:.0f} s", flush=True)
        loaded = None if args.no_in_memory else train_child(root, Path(tmp) / "loaded", False, args.epochs, args.batch)
        if loaded:
            print(f"in memory: peak RSS {loaded['peak_rss_mb']:.0f} MB, {loaded['wall_s']:.0f} s", flush=True)
        ev = evaluate_child(mapped["best_path"], root)
    reported = mapped["best_metrics"]
    diffs = {k: abs(ev["pooled"]["loss" if k == "val_loss" else k] - v) for k, v in reported.items()}
    result = {
        "benchmark": "store_memory", "store": store, "epochs": args.epochs, "batch": args.batch,
        "memory_mapped": {k: mapped[k] for k in ("peak_rss_mb", "wall_s", "best_metrics", "history")},
        "in_memory": {k: loaded[k] for k in ("peak_rss_mb", "wall_s", "best_metrics", "history")} if loaded else None,
        "peak_rss_target_mb": 1536, "peak_rss_met": mapped["peak_rss_mb"] <= 1536,
        "same_validation_figures": (loaded["history"] == mapped["history"]) if loaded else None,
        "evaluate": {"pooled": ev["pooled"], "wall_s": round(ev["wall_s"], 2), "max_abs_diff_vs_train": max(diffs.values()),
                     "within_1e-6": max(diffs.values()) <= 1e-6},
        "machine": before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = args.out or RESULTS / f"store_memory_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"peak RSS memory-mapped {mapped['peak_rss_mb']:.0f} MB (target <= 1536)"
          + (f", in memory {loaded['peak_rss_mb']:.0f} MB; same validation figures: {result['same_validation_figures']}"
             if loaded else ""))
    print(f"evaluate vs train: max |diff| {result['evaluate']['max_abs_diff_vs_train']:.2e} (target <= 1e-6)")
    print(f"load average before {before['load_average_1_5_15']}, after {result['load_average_after']}; saved {out}")


if __name__ == "__main__":
    main()
