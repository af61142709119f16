"""Benchmark: `abaw-rt infer --ray` throughput with 1 and 2 workers on this machine, and Ray's own costs.

Eight short sample videos (`abaw-rt make-sample-video`, different seeds) go through the default pipeline
(RetinaFace, FER, log-mel, demo model; `--threads 1` per model):

- single process: one `JobRunner`, models loaded once, videos one after another (the plain `abaw-rt infer`);
- Ray, 1 worker and 2 workers, on a local cluster (`ray.init(num_cpus=2)`), through `run_videos`.

Reported apart: the cluster's start-up (`ray.init`), the workers' start-up (actors created, models loaded),
and the processing time (first video handed out -> last output written). Throughput = videos / processing
time. Targets (issue 15): 2 workers >= 1.6x the throughput of 1 worker; overhead per video (Ray 1 worker vs
the single process, per video) <= 0.5 s.

Saves benchmarks/results/ray_cpu_<date>.json with machine, versions and load average.

    python benchmarks/bench_ray.py                # 8 videos of 4 s (~1 minute)
    python benchmarks/bench_ray.py --videos 8 --seconds 6 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")  # the workers' abaw_rt
RESULTS = ROOT / "benchmarks" / "results"


def _job(out: Path):
    from abaw_rt.pipeline.jobs import FusionChoice, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig

    return VideoJob(out, PipelineConfig(infer_threads=1, decode_threads=1), FusionChoice(threads=1))


def single_process(videos: list[Path], out: Path) -> dict:
    from abaw_rt.pipeline.jobs import JobRunner
    from abaw_rt.pipeline.run import collect_sources

    runner = JobRunner(_job(out))
    sources = collect_sources(videos)
    runner.check(sources)
    t0 = time.perf_counter()
    with runner:
        t1 = time.perf_counter()
        walls = [runner.run(s)["wall_s"] for s in sources]
    t2 = time.perf_counter()
    return {"load_s": round(t1 - t0, 3), "processing_s": round(t2 - t1, 3), "per_video_wall_s": walls}


def on_ray(videos: list[Path], out: Path, workers: int) -> dict:
    from abaw_rt.pipeline.jobs import JobRunner
    from abaw_rt.pipeline.run import collect_sources
    from abaw_rt.scale.config import ScaleConfig
    from abaw_rt.scale.ray_run import run_videos

    job = _job(out)
    sources = collect_sources(videos)
    JobRunner(job).check(sources)
    t0 = time.perf_counter()
    result = run_videos(job, sources, {}, ScaleConfig(workers=workers, max_retries=0))
    total = time.perf_counter() - t0
    assert not result.failures, result.failures
    processing = total - result.startup_s - result.workers_ready_s
    return {"workers": workers, "workers_ready_s": round(result.workers_ready_s, 3), "model_load_s": result.load_s,
            "processing_s": round(processing, 3), "videos_per_s": round(len(videos) / processing, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0, help="Length of each video.")
    ap.add_argument("--repeat", type=int, default=1, help="Rounds of (single, 1 worker, 2 workers); medians kept.")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/ray_cpu_<date>.json)")
    args = ap.parse_args()

    import ray

    from abaw_rt.defaults.sample import make_sample_video
    from abaw_rt.machine import machine_info

    before = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = [make_sample_video(work / f"v{i}.mp4", seconds=args.seconds, seed=i) for i in range(args.videos)]
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - t0
        rounds = []
        try:
            for r in range(args.repeat):
                rounds.append({
                    "single": single_process(videos, work / f"s{r}"),
                    "ray1": on_ray(videos, work / f"r1_{r}", 1),
                    "ray2": on_ray(videos, work / f"r2_{r}", 2),
                })
        finally:
            ray.shutdown()

    def med(key, field):
        return statistics.median(x[key][field] for x in rounds)

    single_per_video = med("single", "processing_s") / args.videos
    ray1_per_video = med("ray1", "processing_s") / args.videos
    ratio = med("ray2", "videos_per_s") / med("ray1", "videos_per_s")
    overhead = ray1_per_video - single_per_video
    result = {
        "benchmark": "ray", "videos": args.videos, "seconds_per_video": args.seconds, "repeat": args.repeat,
        "cluster_startup_s": round(startup, 3),
        "single_process_s_per_video": round(single_per_video, 3),
        "ray1_s_per_video": round(ray1_per_video, 3),
        "overhead_s_per_video": round(overhead, 3), "overhead_target_s": 0.5, "overhead_met": overhead <= 0.5,
        "throughput_ratio_2_vs_1": round(ratio, 3), "ratio_target": 1.6, "ratio_met": ratio >= 1.6,
        "rounds": rounds, "ray_version": ray.__version__,
        "machine": before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = args.out or RESULTS / f"ray_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"cluster start-up {startup:.2f} s; workers' start-up (1 / 2): {med('ray1', 'workers_ready_s'):.2f} / "
          f"{med('ray2', 'workers_ready_s'):.2f} s")
    print(f"single process {single_per_video:.3f} s/video; Ray 1 worker {ray1_per_video:.3f} s/video "
          f"(overhead {overhead:+.3f} s/video, target <= 0.5)")
    print(f"throughput 2 workers / 1 worker: {ratio:.2f}x (target >= 1.6)")
    print(f"load average before {before['load_average_1_5_15']}, after {result['load_average_after']}; saved {out}")


if __name__ == "__main__":
    main()
