"""Benchmark: memory on long inputs: `abaw-rt infer` on generated 1-, 3- and 30-minute low-resolution videos.

Each video runs `abaw-rt infer` (ORT fusion, generated tiny detector and extractors, plot on: the default
path) in a fresh process; the process's resident memory is sampled every 0.25 s from /proc, and its peak
is the kernel's high-water mark of that process (VmHWM, read as it exits). The child also notes [VmRSS, VmHWM]
as the report's dict, the output files and plot.png begin and end, so that a peak after decoding is placed.
"Flat memory" means the 30-minute run peaks within a small margin of the 1-minute one: decoded frames never
accumulate, and what does grow with length (per-frame predictions, timestamps) is small next to the process.

The 3-minute run separates a step from a slope: a 1-minute video (1500 frames) runs its only, 7-window batch of
fusion windows at the end, every video past 1700 frames runs batches of 8 (onnxruntime's arena then holds more,
once); the growth from 3 to 30 minutes is what grows with length.

The videos are written in a streaming way (frame by frame, audio chunk by chunk), so the generator's own
memory stays small too. Saves benchmarks/results/long_video_<date>.json (machine, versions, date, the runs
with their RSS series and marks, the ratio, the step and the slope) and prints a summary.

    python benchmarks/bench_long_video.py                       # 1, 3 and 30 minutes, 160x120 at 25 fps (~2 min)
    python benchmarks/bench_long_video.py --long-minutes 10     # quicker
    python benchmarks/bench_long_video.py --workdir /tmp/lv --reuse-videos   # again, on the same videos
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's abaw_rt, also when another one is pip-installed
RESULTS = ROOT / "benchmarks" / "results"
FLAT_MARGIN_MB = 64  # the long run may peak this much above the short one and still count as flat


def write_long_video(path: Path, minutes: float, size=(160, 120), fps: int = 25, audio_rate: int = 16000) -> dict:
    """A low-resolution H.264 + AAC video of ``minutes`` with a moving drawn face, written in a streaming way."""
    import av

    from abaw_rt.pipeline import synthetic as syn

    frames = int(round(minutes * 60 * fps))
    width, height = size
    faces = syn.moving_face(width, height, max(frames, 2 * 60 * fps))  # one sweep every 2 minutes
    backdrop = (20 + 20 * np.linspace(0, 1, height)[:, None, None]).astype(np.uint8)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "28", "preset": "ultrafast"}
        a = c.add_stream("aac", rate=audio_rate, layout="mono")
        chunk = 1024
        samples_per_frame = audio_rate / fps
        sent = 0
        for i in range(frames):
            img = np.broadcast_to(backdrop, (height, width, 3)).copy()
            for box in faces(i):
                syn.draw_face(img, box, tone=int(200 + 50 * np.sin(i / 7.0)))
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
            while sent + chunk <= (i + 1) * samples_per_frame:  # audio follows the video chunk by chunk
                t = (sent + np.arange(chunk)) / audio_rate
                wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)))
                af = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = audio_rate, sent, fractions.Fraction(1, audio_rate)
                for p in a.encode(af):
                    c.mux(p)
                sent += chunk
        for stream in (v, a):
            for p in stream.encode():
                c.mux(p)
    return {"path": str(path), "minutes": minutes, "frames": frames, "fps": fps, "size": list(size),
            "bytes": path.stat().st_size}


def make_models(folder: Path) -> dict:
    """Generated tiny detector and extractors, a matching tiny checkpoint and its fp32 graph (the default ort path)."""
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.model.config import TINY, ModelConfig
    from abaw_rt.pipeline import synthetic as syn

    kit = syn.tiny_kit(folder, visual_dims=(64,), audio_dim=32, crop=112, detector_size=(96, 128))
    cfg = ModelConfig(features=kit["features"], heads=("va", "expr", "au"), **TINY)
    ckpt = init_checkpoint(folder / "tiny.safetensors", cfg)
    export_onnx(load_checkpoint(ckpt), onnx_path_for(ckpt, "fp32"))
    return {"detector": kit["detector"], "spec": kit["spec"], "checkpoint": ckpt}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _status_mb() -> list[float]:
    """[VmRSS, VmHWM] of this process, MiB."""
    with open("/proc/self/status") as f:
        found = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS:", "VmHWM:"))}
    return [round(found["VmRSS"] / 1024, 1), round(found["VmHWM"] / 1024, 1)]


# Where a run's memory goes after decoding: [VmRSS, VmHWM] as each of these steps begins (the report's dict, closing
# the output folder: report.json and plot.png, the plot itself), and at exit. A step missing from this version of
# the package is skipped (before the streaming sinks, the output files were written whole by ``write_outputs``).
MARKED = (("report", "abaw_rt.pipeline.facts", "source_report"), ("outputs", "abaw_rt.pipeline.outputs", "OutputFolder.close"),
          ("outputs", "abaw_rt.pipeline.outputs", "write_outputs"), ("plot", "abaw_rt.pipeline.plot", "plot_png"))  # fmt: skip


def child() -> None:
    """In the child process: `abaw-rt infer` (argv) with [VmRSS, VmHWM] marks, written as JSON at exit.

    The child records its own high-water mark (VmHWM): wait4's ru_maxrss would also count the memory of this
    parent process at fork time (Linux carries the pre-exec high-water mark over)."""
    import atexit
    import importlib

    marks: dict[str, list[float]] = {}

    def marked(label, f):
        def call(*a, **k):
            marks[label] = _status_mb()
            try:
                return f(*a, **k)
            finally:
                marks[f"after_{label}"] = _status_mb()
        return call

    for label, module, name in MARKED:
        owner = importlib.import_module(module)
        *path, attr = name.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, attr):
            setattr(owner, attr, marked(label, getattr(owner, attr)))
    from abaw_rt.cli import run

    def save() -> None:
        Path(os.environ["ABAW_RT_BENCH_MARKS"]).write_text(json.dumps({**marks, "exit": _status_mb()}))

    atexit.register(save)  # after the CLI's own exit hook (which ends with os._exit), so it runs before it
    sys.argv[0] = "abaw-rt"
    run()


_CHILD = "import sys; sys.path.insert(0, 'benchmarks'); import bench_long_video; bench_long_video.child()"


def run_infer(video: Path, models: dict, out: Path, threads: int | None) -> dict:
    """`abaw-rt infer` in a fresh process: its report, wall time, sampled RSS and its own peak RSS (VmHWM)."""
    cmd = [sys.executable, "-c", _CHILD, "infer", str(video), "--out", str(out),
           "--checkpoint", str(models["checkpoint"]), "--extractors", str(models["spec"]),
           "--detector", str(models["detector"]), "--json"]
    if threads:
        cmd += ["--threads", str(threads)]
    series: list[tuple[float, float]] = []
    start = time.perf_counter()
    marks_file = Path(tempfile.mkstemp(prefix="abaw-rt-marks-")[1])
    env = {**os.environ, "ABAW_RT_BENCH_MARKS": str(marks_file)}
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=ROOT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    series.append((round(time.perf_counter() - start, 2), round(rss, 1)))
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        stop.set()
        sampler.join()
        wall = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"abaw-rt infer failed on {video} ({proc.returncode}): {stderr.read()[-2000:]}")
        report = json.loads(stdout.read())["videos"][0]
    marks = json.loads(marks_file.read_text())
    marks_file.unlink()
    step = max(1, len(series) // 120)
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": marks["exit"][1],  # the process's own high-water mark over the whole run (VmHWM at exit)
        "rss_hwm_mb_at": marks,  # [VmRSS, VmHWM] as the report, the outputs and the plot began, after them, at exit
        "rss_series_s_mb": series[::step],
        "frames": report["frames"],
        "duration_s": report["duration_s"],
        "frames_per_s": report["frames_per_s"],
        "realtime_factor": report["realtime_factor"],
        "model_load_s": report["model_load_s"],
        "peak_rss_mb_at_report": report["peak_rss_mb"],  # before the output files (and plot) were written
        "audio_coverage": report["audio"]["frame_coverage"],
        "stages_total_s": {k: v["total_s"] for k, v in report["stages"].items()},
    }


def _video(path: Path, minutes: float, size, fps: int, reuse: bool) -> dict:
    """The generated video at ``path``: written now, or (``reuse``) the one there if it has the frames expected."""
    from abaw_rt.pipeline.decode import probe

    frames = int(round(minutes * 60 * fps))
    if reuse and path.exists() and probe(path).frames_declared == frames:
        return {"path": str(path), "minutes": minutes, "frames": frames, "fps": fps, "size": list(size),
                "bytes": path.stat().st_size, "write_s": None}
    t0 = time.perf_counter()
    video = write_long_video(path, minutes, size=size, fps=fps)
    return {**video, "write_s": round(time.perf_counter() - t0, 1)}


def _step_and_slope(runs: dict) -> dict:
    """With a mid run: the step from short to mid (the first full batch of fusion windows, one-off) and the slope
    from mid to long in bytes per frame (what grows with length); both at the peak and at the report."""
    if "mid" not in runs:
        return {}
    s, m, lg = runs["short"], runs["mid"], runs["long"]
    frames = lg["frames"] - m["frames"]
    out = {}
    for key, name in (("peak_rss_mb", "peak"), ("peak_rss_mb_at_report", "report")):
        out[f"{name}_step_short_to_mid_mb"] = round(m[key] - s[key], 1)
        out[f"{name}_slope_mid_to_long_bytes_per_frame"] = round((lg[key] - m[key]) * 2**20 / frames)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short-minutes", type=float, default=1.0)
    ap.add_argument("--mid-minutes", type=float, default=3.0,
                    help="a third length (0: none): past the first full batch of fusion windows (1700 frames), so that "
                         "the long run's growth splits into a step (mid - short) and a slope per frame (long - mid)")
    ap.add_argument("--long-minutes", type=float, default=30.0)
    ap.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of the generated videos")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=None, help="--threads for abaw-rt infer")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the videos and outputs here")
    ap.add_argument("--reuse-videos", action="store_true",
                    help="take <workdir>/<label>.mp4 as it is when it has the expected frame count (writing 30 min takes minutes)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default results/long_video_<date>.json)")
    args = ap.parse_args()
    from abaw_rt.machine import machine_info

    size = tuple(int(x) for x in args.size.lower().split("x"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="abaw-rt-long-"))
    work.mkdir(parents=True, exist_ok=True)
    models = make_models(work / "models")
    runs = {}
    lengths = (("short", args.short_minutes), ("mid", args.mid_minutes), ("long", args.long_minutes))
    for label, minutes in [(label, m) for label, m in lengths if m > 0]:
        video = _video(work / f"{label}.mp4", minutes, size, args.fps, args.reuse_videos)
        print(f"{label}: {minutes:g} min ({video['frames']} frames), written in {video['write_s']} s", flush=True)
        result = run_infer(work / f"{label}.mp4", models, work / f"out_{label}", args.threads)
        runs[label] = {"video": video, **result}
        print(f"{label}: {result['frames']} frames in {result['wall_s']} s ({result['frames_per_s']} frames/s), "
              f"peak RSS {result['peak_rss_mb']} MB", flush=True)
    short, long = runs["short"]["peak_rss_mb"], runs["long"]["peak_rss_mb"]
    summary = {
        "peak_rss_short_mb": short,
        "peak_rss_long_mb": long,
        "peak_rss_ratio": round(long / short, 3),
        "peak_rss_growth_mb": round(long - short, 1),
        "length_ratio": round(runs["long"]["frames"] / runs["short"]["frames"], 1),
        "growth_bytes_per_frame": round((long - short) * 2**20 / (runs["long"]["frames"] - runs["short"]["frames"])),
        **_step_and_slope(runs),
        "flat": long - short <= FLAT_MARGIN_MB,
        "flat_margin_mb": FLAT_MARGIN_MB,
        "what_grows": "decoded frames, the audio track, the features and the predictions are held in constant "
        "memory (audio features and fusion windows run while decoding, stream/plan.py; final rows are appended to "
        "the staged output files); what still grows with length: timestamps and face mask (9 bytes a frame), "
        "plot.png's compact per-frame record, and the MP4 demuxer's sample index (about 90 bytes a frame, freed when "
        "decoding ends); one-off: the first full batch of fusion windows (onnxruntime's arena)",
    }
    result = {
        "benchmark": "long_video",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"size": list(size), "fps": args.fps, "threads": args.threads, "backend": "ort",
                   "models": "generated tiny detector (128x96) and linear extractors (64 visual, 32 audio dims), "
                             "tiny fusion model, plot on"},
        "runs": runs,
        "summary": summary,
    }
    out = args.out or RESULTS / f"long_video_{datetime.now():%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"peak RSS {short} MB ({args.short_minutes:g} min) vs {long} MB ({args.long_minutes:g} min): "
          f"x{summary['peak_rss_ratio']}, {'+' if long >= short else ''}{summary['peak_rss_growth_mb']} MB, "
          f"{summary['growth_bytes_per_frame']} bytes per extra frame "
          f"({'flat' if summary['flat'] else 'NOT flat'}, margin {FLAT_MARGIN_MB} MB); saved {out}")
    if "mid" in runs:
        print(f"of which: a step of {summary['peak_step_short_to_mid_mb']} MB from {args.short_minutes:g} to "
              f"{args.mid_minutes:g} min, then {summary['peak_slope_mid_to_long_bytes_per_frame']} bytes per frame")


if __name__ == "__main__":
    main()
