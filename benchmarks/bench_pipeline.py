"""Benchmark: the whole-video pipeline (abaw-rt infer) on a generated 640x360 clip with a face, per stage.

Generates a 640x360 clip of --seconds with an audio track: ``--clip drawn`` (default), 30 fps, a drawn cartoon
face on a textured panning background; ``--clip sample``, 25 fps, ``abaw-rt make-sample-video``'s clip (a real
face that moves, zooms and leaves the frame for a second, a voice). Then, each case in a fresh process (so that
peak RSS is the case's own):

* pure decode throughput of the same clip: PyAV decode only, and decode + full-size RGB conversion;
* the pipeline (decode -> detect every N frames on the letterboxed frame -> align -> extract ->
  segments through the fusion runner -> stitch), model loading timed apart from the per-video work:
  wall time, real-time factor, frames/s, the share of pure-decode throughput, per-stage p50/p90/p99,
  thread counts and peak RSS;
* the same for a --long-seconds clip (default 5 min), to check that cost grows linearly with length
  and memory stays flat.

Models: whatever --detector / --extractors / --checkpoint name; by default the generated tiny ones of
``abaw_rt.pipeline.synthetic`` (a bright-blob detector at 320x180 and linear extractors), which measure
the pipeline's own overhead, not the cost of real extractors. The issue's goal (at least 10x real
time end to end on this 2-core CPU, and at least a quarter of pure-decode throughput) is meant for the
built-in default models: pass them explicitly (README, "Speed") for the figures that count.

    python benchmarks/bench_pipeline.py                  # 30 s and 5 min clips (a few minutes)
    python benchmarks/bench_pipeline.py --long-seconds 0 # 30 s clip only
    python benchmarks/bench_pipeline.py --detector det.onnx --extractors spec.toml --checkpoint va.safetensors
    python benchmarks/bench_pipeline.py --clip sample --detector abaw_rt/defaults/extractors.toml \
        --extractors abaw_rt/defaults/extractors.toml --checkpoint abaw_rt/defaults/demo.safetensors --long-seconds 0

The share of pure-decode throughput is the streaming pipeline issue's measure: at least 0.47 (what the
pipeline reached before decoding, faces and features ran in threads of their own), goal 0.75.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_REALTIME = 10.0  # x real time end to end (issue 5, for the default models)
GOAL_DECODE_SHARE = 0.25  # pipeline frames/s over pure-decode frames/s
STREAMING_SHARE = {"at_least": 0.47, "goal": 0.75}  # the streaming pipeline issue's, built-in models
CLIPS = {
    "drawn": "libx264 veryfast crf 23 (about 1 Mbit/s), 30 fps, a drawn face on a textured panning background with noise",
    "sample": "abaw-rt make-sample-video: libx264, 25 fps, a real face (astronaut photo) that drifts, zooms and leaves "
              "the frame for about a second, a voice-like track",
}


def make_clip(path: Path, seconds: float, kind: str = "drawn", size=(640, 360), fps: int = 30) -> Path:
    if kind == "sample":
        from abaw_rt.defaults.sample import make_sample_video

        return make_sample_video(path, seconds=seconds, fps=25, size=size)
    from abaw_rt.pipeline import synthetic as syn

    frames = int(round(seconds * fps))
    w, h = size
    syn.write_video(
        path,
        frames=frames,
        fps=fps,
        size=size,
        faces=syn.moving_face(w, h, frames, size=0.5),
        texture=True,
        preset="veryfast",
    )
    return path


def make_models(folder: Path, backend: str) -> dict:
    """Generated tiny detector (320x180 input), extractors and a matching tiny checkpoint (+ its ONNX for ort)."""
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.model.config import TINY, ModelConfig
    from abaw_rt.pipeline import synthetic as syn

    kit = syn.tiny_kit(folder, visual_dims=(64,), audio_dim=32, crop=112, detector_size=(180, 320))
    cfg = ModelConfig(features=kit["features"], heads=("va", "expr", "au"), **TINY)
    ckpt = init_checkpoint(folder / "tiny.safetensors", cfg)
    if backend == "ort":
        from abaw_rt.artefacts import onnx_path_for
        from abaw_rt.export.onnx_export import export_onnx

        export_onnx(load_checkpoint(ckpt), onnx_path_for(ckpt, "fp32"))
    return {"detector": kit["detector"], "spec": kit["spec"], "checkpoint": ckpt}


# -- child: one measurement per process ----------------------------------------------------------------
def decode_throughput(path: Path, threads: int) -> dict:
    from abaw_rt.pipeline.decode import VideoDecoder

    out = {}
    for mode in ("decode", "decode+rgb"):
        start = time.perf_counter()
        n = 0
        for f in VideoDecoder(path, threads=threads, audio=False).frames():
            if mode == "decode+rgb":
                f.rgb()
            f.release()
            n += 1
        wall = time.perf_counter() - start
        out[mode] = {"frames": n, "wall_s": round(wall, 4), "frames_per_s": round(n / wall, 1)}
    return out


def child(case: dict) -> dict:
    from abaw_rt.pipeline.extractor_spec import load_detector, load_spec
    from abaw_rt.pipeline.faces import FaceChoice
    from abaw_rt.pipeline.report import peak_rss_mb
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources, load_fusion

    video = Path(case["video"])
    result = {"video": video.name}
    if case["decode"]:
        result["pure_decode"] = decode_throughput(video, case["decode_threads"])
    start = time.perf_counter()
    fusion = load_fusion(Path(case["checkpoint"]), backend=case["backend"], threads=case["threads"])
    config = PipelineConfig(
        detect_every=case["detect_every"],
        face=FaceChoice.largest,
        decode_threads=case["decode_threads"],
        infer_threads=case["threads"],
        prefetch=case["prefetch"],
    )
    pipeline = Pipeline(load_spec(Path(case["spec"])), config, fusion, load_detector(Path(case["detector"])))
    (source,) = collect_sources([video])
    pipeline.check_sources([source])
    with pipeline, tempfile.TemporaryDirectory(prefix="abaw-rt-bench-") as scratch:  # outputs written, as infer does
        load_s = time.perf_counter() - start
        r = pipeline.infer_folder(source, Path(scratch), plot=False)
    result.update(
        frames=r["frames"],
        duration_s=r["duration_s"],
        wall_s=r["wall_s"],
        realtime_factor=r["realtime_factor"],
        frames_per_s=r["frames_per_s"],
        model_load_s=round(load_s, 4),
        stages=r["stages"],
        faces=r["faces"],
        segments=r["segments"],
        threads=r["threads"],
        prefetch=case["prefetch"],
        peak_rss_mb=peak_rss_mb(),
    )
    if case["decode"]:
        result["share_of_pure_decode"] = round(r["frames_per_s"] / result["pure_decode"]["decode"]["frames_per_s"], 3)
    return result


def run_child(case: dict) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"benchmark case failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the main clip")
    ap.add_argument("--long-seconds", type=float, default=300.0, help="length of the linearity/memory clip (0: skip)")
    ap.add_argument("--detector", type=Path, help="detector ONNX or spec (default: generated blob detector 320x180)")
    ap.add_argument("--extractors", type=Path, help="extractor spec (default: generated tiny extractors)")
    ap.add_argument("--checkpoint", type=Path, help="fusion checkpoint matching the extractors (default: tiny)")
    ap.add_argument("--backend", default="ort", choices=("ort", "torch"))
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--decode-threads", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="inference threads per model (default: all cores)")
    ap.add_argument("--prefetch", default="0,8", help="decoder-thread prefetch depths to compare on the main clip")
    ap.add_argument("--clip", default="drawn", choices=tuple(CLIPS), help="which generated clip (see above)")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON path (default: benchmarks/results/pipeline_cpu_<date>.json)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if (args.extractors is None) != (args.checkpoint is None) or (args.extractors and args.detector is None):
        raise SystemExit(
            "give --detector, --extractors and --checkpoint together (or none, for the generated tiny models)"
        )

    from abaw_rt.machine import machine_info

    with tempfile.TemporaryDirectory(prefix="bench_pipeline.") as tmp:
        tmp = Path(tmp)
        if args.extractors is None:
            t = time.perf_counter()
            models = make_models(tmp / "models", args.backend)
            print(f"generated tiny models in {time.perf_counter() - t:.1f} s")
            default_models = True
        else:
            models = {"detector": args.detector, "spec": args.extractors, "checkpoint": args.checkpoint}
            default_models = False
        depths = [int(x) for x in args.prefetch.split(",")]
        cases = {}
        for label, seconds in [("main", args.seconds)] + (
            [("long", args.long_seconds)] if args.long_seconds > 0 else []
        ):
            t = time.perf_counter()
            clip = make_clip(tmp / f"{label}_{int(seconds)}s.mp4", seconds, args.clip)
            print(f"generated {clip.name} ({seconds:.0f} s, 640x360, {args.clip} clip) in {time.perf_counter() - t:.1f} s")
            if label == "long":  # the long clip runs with the main clip's fastest setting
                depths = [max((c for c in cases.values()), key=lambda c: c["frames_per_s"])["prefetch"]]
            for depth in depths:
                case = {
                    "video": str(clip),
                    "decode": True,
                    "backend": args.backend,
                    "detect_every": args.detect_every,
                    "decode_threads": args.decode_threads,
                    "threads": args.threads,
                    "prefetch": depth,
                    **{k: str(v) for k, v in models.items()},
                }
                key = f"{label}_prefetch{depth}"
                cases[key] = r = run_child(case)
                d = r["pure_decode"]
                print(
                    f"[{key}] {r['frames']} frames: pipeline {r['frames_per_s']:.0f} frames/s = "
                    f"{r['realtime_factor']:.1f}x real time ({r['wall_s']:.2f} s, models loaded apart in "
                    f"{r['model_load_s']:.2f} s); pure decode {d['decode']['frames_per_s']:.0f} frames/s, decode+rgb "
                    f"{d['decode+rgb']['frames_per_s']:.0f} frames/s; "
                    f"share of pure decode {r['share_of_pure_decode']:.2f}; "
                    f"peak RSS {r['peak_rss_mb']} MiB"
                )
                for name, st in r["stages"].items():
                    print(
                        f"    {name:<16} {st['total_s']:8.3f} s {100 * (st['share'] or 0):5.1f} %  "
                        f"calls {st['calls']:<6} "
                        f"p50 {st['p50_ms']:8.3f}  p90 {st['p90_ms']:8.3f}  p99 {st['p99_ms']:8.3f} ms"
                    )
    main_case = max((c for k, c in cases.items() if k.startswith("main")), key=lambda c: c["frames_per_s"])
    scaling = None
    longs = [c for k, c in cases.items() if k.startswith("long")]
    if longs:
        long = longs[0]
        same = cases[f"main_prefetch{long['prefetch']}"]
        scaling = {
            "prefetch": long["prefetch"],
            "length_ratio": round(long["frames"] / same["frames"], 3),
            "time_ratio": round(long["wall_s"] / same["wall_s"], 3),
            "time_per_frame_ratio": round((long["wall_s"] / long["frames"]) / (same["wall_s"] / same["frames"]), 3),
            "peak_rss_mb": {"main": same["peak_rss_mb"], "long": long["peak_rss_mb"]},
            "rss_growth_mb": round(long["peak_rss_mb"] - same["peak_rss_mb"], 1),
        }
        print(f"scaling main -> long: {json.dumps(scaling)}")
    goals = {
        "best_main_case": f"main_prefetch{main_case['prefetch']}",
        "realtime_factor": main_case["realtime_factor"],
        "realtime_goal": GOAL_REALTIME,
        "share_of_pure_decode": main_case["share_of_pure_decode"],
        "share_goal": GOAL_DECODE_SHARE,
        "streaming_share": {**STREAMING_SHARE, "met_at_least": main_case["share_of_pure_decode"] >= STREAMING_SHARE["at_least"],
                            "met_goal": main_case["share_of_pure_decode"] >= STREAMING_SHARE["goal"]},
        "met": main_case["realtime_factor"] >= GOAL_REALTIME and main_case["share_of_pure_decode"] >= GOAL_DECODE_SHARE,
        "note": (
            "generated tiny detector/extractors: this measures the pipeline's own overhead; the goal is for the "
            "default models (not yet shipped)"
            if default_models
            else "user-supplied models"
        ),
    }
    print(f"goals: {json.dumps(goals)}")
    report = {
        "benchmark": "pipeline",
        "machine": machine_info(),
        "clip": {
            "kind": args.clip,
            "size": [640, 360],
            "fps": 25 if args.clip == "sample" else 30,
            "codec": CLIPS[args.clip],
            "audio": "aac",
        },
        "models": "generated tiny (abaw_rt.pipeline.synthetic)"
        if default_models
        else {k: str(v) for k, v in models.items()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"},
        "cases": cases,
        "scaling": scaling,
        "goals": goals,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"pipeline_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
