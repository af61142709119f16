"""Benchmark: sizes and per-frame CPU timings of each built-in default model, and `abaw-rt infer` end to end with them.

Per model (Runner API, onnxruntime CPU, each at 1 thread and at all cores; latency of the backend call):

* detector: RetinaFace MobileNet-0.25 on the canvas the default spec gives a 16:9 frame (320 x 192), with the
  numpy decoding (priors, NMS) included; per video frame it costs 1/detect_every of that (detection every 5th frame);
* visual extractor: FER mini-Xception, 64 x 64 crops, batch 1 and the spec's batch (16), ms per crop;
* audio extractor: log-mel + energy, the spec's batch of 512 windows of 25 ms; 100 windows per second,
  so 4 per frame at 25 fps;
* demo fusion model: ``demo.fp32.onnx`` on full windows (T = 300) at batch 1 and 8, ms per frame.

End to end: ``abaw-rt infer``'s pipeline on a 30 s, 640 x 360, 25 fps sample video (``abaw-rt make-sample-video``)
in a fresh process: real-time factor and per-stage times, model loading apart. Issue 5's goal for the
default models: at least 10x real time on this 2-core CPU.

    python benchmarks/bench_defaults.py [--seconds 30] [--out benchmarks/results/defaults_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GOAL_REALTIME = 10.0


def onnx_parameters(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def timing(runner, feeds, per: float, min_seconds: float) -> dict:
    from abaw_rt.bench.measure import Timing, runner_call, time_calls

    t = Timing.of(time_calls(runner_call(runner, feeds), warmup=3, min_iters=20, min_seconds=min_seconds))
    d = {k: round(v, 4) if isinstance(v, float) else v for k, v in t.to_dict().items()}
    d["per_item_ms"] = round(t.p50_ms / per, 4)
    return d


def model_timings(threads: int, min_seconds: float) -> dict:
    from abaw_rt import defaults
    from abaw_rt.pipeline.retinaface import RetinaFaceRunner
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.runners.onnx_generic import OnnxModelRunner
    from abaw_rt.runners.ort_runner import OrtRunner

    spec = load_spec(defaults.spec_path())
    rng = np.random.default_rng(0)
    out = {}
    det = spec.detector
    import cv2

    from abaw_rt.defaults.reference_faces import astronaut
    from abaw_rt.pipeline.faces import FaceDetector

    with RetinaFaceRunner(det.onnx, threads=threads, score_threshold=det.score_threshold) as r:
        detector = FaceDetector(det, r)
        detector.prepare()
        sw, sh, _ = detector.letterbox_size((1280, 720))  # a 16:9 frame, on the canvas the pipeline gives it
        h, w = detector.canvas_size(sw, sh)
        canvas = np.zeros((1, h, w, 3), np.uint8)
        canvas[0, :sh, :sw] = cv2.resize(np.pad(astronaut(), ((0, 0), (228, 228), (0, 0))), (sw, sh))
        out["detector"] = {"input": [1, 3, h, w], **timing(r, {"input": det.image.prepare(canvas)}, 1, min_seconds)}
    fer = spec.get("fer")
    with OnnxModelRunner(fer.onnx, threads=threads) as r:
        for b in (1, fer.batch):
            crops = rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8)
            out[f"fer_batch{b}"] = timing(r, {"image": fer.image.prepare(crops)}, b, min_seconds)
    mel = spec.get("logmel")
    with OnnxModelRunner(mel.onnx, threads=threads) as r:
        x = rng.normal(0, 0.1, (mel.batch, mel.window)).astype(np.float32)
        out[f"logmel_batch{mel.batch}"] = timing(r, {"audio": x}, mel.batch, min_seconds)
    with OrtRunner(defaults.DEFAULTS_DIR / defaults.MODEL_FILE, threads=threads) as r:
        for b in (1, 8):
            feeds = r.example_feeds(batch=b, time=300, rng=rng)
            out[f"demo_T300_batch{b}"] = timing(r, feeds, b * 300, min_seconds)
    return out


def end_to_end(video: Path, threads: int | None) -> dict:
    """Child process: the CLI's pipeline with all defaults on one video."""
    from abaw_rt import defaults
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources, load_fusion

    fusion = load_fusion(defaults.checkpoint_path(), threads=threads)
    spec = load_spec(defaults.spec_path())
    pipeline = Pipeline(spec, PipelineConfig(infer_threads=threads), fusion)
    (source,) = collect_sources([video])
    pipeline.check_sources([source])
    with pipeline, tempfile.TemporaryDirectory(prefix="abaw-rt-bench-") as scratch:  # outputs written, as infer does
        r = pipeline.infer_folder(source, Path(scratch), plot=False)
    keep = ("frames", "duration_s", "wall_s", "realtime_factor", "frames_per_s", "model_load_s", "stages", "faces",
            "threads", "peak_rss_mb")
    return {k: r[k] for k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the end-to-end sample video")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="minimum timing per model and setting")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        video, threads = args.child
        print(json.dumps(end_to_end(Path(video), int(threads) or None)))
        return

    from abaw_rt import defaults
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.defaults.sample import make_sample_video
    from abaw_rt.machine import machine_info
    from abaw_rt.model.config import parameter_count
    from abaw_rt.pipeline.extractor_spec import load_spec

    files = {f.name: f.path.stat().st_size for f in defaults.FILES}
    ckpt = load_checkpoint(defaults.checkpoint_path())
    sizes = {
        "bytes": files,
        "total_bytes": sum(files.values()),
        "parameters": {
            defaults.DETECTOR_FILE: onnx_parameters(defaults.DEFAULTS_DIR / defaults.DETECTOR_FILE),
            defaults.FER_FILE: onnx_parameters(defaults.DEFAULTS_DIR / defaults.FER_FILE),
            defaults.LOGMEL_FILE: onnx_parameters(defaults.DEFAULTS_DIR / defaults.LOGMEL_FILE),
            defaults.CHECKPOINT_FILE: parameter_count(ckpt.header.config),
        },
    }
    print(f"sizes: {json.dumps(sizes)}")
    cores = os.cpu_count() or 1
    per_model = {}
    for threads in sorted({1, cores}):
        per_model[f"threads{threads}"] = t = model_timings(threads, args.min_seconds)
        for name, d in t.items():
            print(f"[threads {threads}] {name:<18} p50 {d['p50_ms']:8.3f} ms  p90 {d['p90_ms']:8.3f} ms  "
                  f"per item {d['per_item_ms']:.4f} ms")
    best = {k: min(per_model[t][k]["per_item_ms"] for t in per_model) for k in per_model["threads1"]}
    fps = 25
    per_frame = {
        "detector_every_5th_frame": round(best["detector"] / 5, 4),
        "fer_crop_batched": best[f"fer_batch{load_spec(defaults.spec_path()).get('fer').batch}"],  # the spec's batch
        "logmel_4_windows": round(4 * best["logmel_batch512"], 4),
        "demo_fusion_T300": best["demo_T300_batch8"],
    }
    per_frame["total_models_ms"] = round(sum(per_frame.values()), 4)
    per_frame["models_only_realtime_factor_at_25fps"] = round(1000 / fps / per_frame["total_models_ms"], 1)
    print(f"per video frame at 25 fps (best thread setting, ms): {json.dumps(per_frame)}")

    with tempfile.TemporaryDirectory(prefix="bench_defaults.") as tmp:
        video = make_sample_video(Path(tmp) / "sample.mp4", seconds=args.seconds, fps=fps)
        e2e = {}
        for threads in (0, 1):
            res = subprocess.run([sys.executable, __file__, "--child", str(video), str(threads)],
                                 capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"end-to-end case failed:\n{res.stderr[-4000:]}")
            key = "threads_default" if threads == 0 else "threads1"
            e2e[key] = r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"[infer, {key}] {r['frames']} frames in {r['wall_s']:.2f} s = {r['realtime_factor']:.1f}x real time "
                  f"(models loaded apart in {r['model_load_s']:.2f} s), faces {r['faces']['found']}/{r['frames']}, "
                  f"peak RSS {r['peak_rss_mb']} MiB")
            for name, st in r["stages"].items():
                share = 100 * (st["share"] or 0)
                print(f"    {name:<16} {st['total_s']:8.3f} s {share:5.1f} %  calls {st['calls']:<5} "
                      f"p50 {st['p50_ms']:8.3f} ms")
    best_rt = max(c["realtime_factor"] for c in e2e.values())
    goal = {"realtime_goal": GOAL_REALTIME, "best_realtime_factor": best_rt, "met": best_rt >= GOAL_REALTIME}
    print(f"goal (issue 5, default models): {json.dumps(goal)}")
    report = {
        "benchmark": "defaults",
        "machine": machine_info(),
        "sizes": sizes,
        "per_model": per_model,
        "per_frame_at_25fps": per_frame,
        "end_to_end": {"video": f"abaw-rt make-sample-video, {args.seconds:g} s, 640x360, {fps} fps", **e2e},
        "goal": goal,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"defaults_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
