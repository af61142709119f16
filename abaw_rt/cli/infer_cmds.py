"""CLI layer: pipeline verbs: infer (whole videos -> per-frame predictions) and extract (features -> feature store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors, warn_lost_frames
from abaw_rt.cli.options import (
    BackendOpt,
    CheckpointOpt,
    DecodeThreadsOpt,
    DetectEveryOpt,
    DetectorOpt,
    DeviceOpt,
    EngineOpt,
    ExtractorBackendOpt,
    ExtractorsOpt,
    FaceOpt,
    Inputs,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    ThreadsOpt,
    pin_threads,
)
from abaw_rt.cuda.gpu import resolve_device
from abaw_rt.vocab import Device, FaceChoice, Merge, Task
from abaw_rt.errors import AbawRtError


RayOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ray", metavar="ADDRESS",
        help="Spread the inputs over a Ray cluster: local (one started for this run), auto, or ray://host:port.",
    ),
]
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", help="With --ray: workers, each loading the models once (default 2).")
]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", min=0, help="With --ray: GPUs each worker reserves.")]
RetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="With --ray: tries again for an input whose worker died.")
]


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bar (and no stray newline) when stderr is a file or a pipe
    )


def _expected(info) -> int | None:
    if info is None:
        return None
    if info.frames_declared:
        return info.frames_declared
    if info.duration and info.fps:
        return int(round(info.duration * info.fps))
    return None


def _run_all(pipeline, sources, infos, work, as_json: bool) -> list[dict]:
    """Run ``work(source, progress_cb, expected)`` per source under one progress bar; returns the reports."""
    reports = []
    with _progress() as bar:
        for s in sources:
            expected = _expected(infos.get(s.name))
            task = bar.add_task(s.name, total=expected)

            def cb(name, done, total, task=task):
                bar.update(task, completed=done, total=total)

            reports.append(work(s, cb, expected))
            bar.remove_task(task)
            warn_lost_frames(reports[-1])
    return reports


@app.command()
@user_errors
def infer(
    videos: Inputs,
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = Device.cpu,
    window: Annotated[
        Optional[int], typer.Option("--window", min=1, help="Segment length w (default: the model's).")
    ] = None,
    stride: Annotated[
        Optional[int], typer.Option("--stride", min=1, help="Segment stride s (default: the model's).")
    ] = None,
    merge: Annotated[
        Merge, typer.Option("--merge", help="Combine overlapping windows: centre-weighted, uniform, or none.")
    ] = Merge.centre,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Segments per fusion call.")] = 8,
    out_dir: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Output folder (one subfolder per video).")
    ] = Path("abaw_rt_out"),
    extractors: ExtractorsOpt = None,
    extractor_backend: ExtractorBackendOpt = None,
    detector: DetectorOpt = None,
    detect_every: DetectEveryOpt = 5,
    face: FaceOpt = FaceChoice.largest,
    decode_threads: DecodeThreadsOpt = 1,
    threads: ThreadsOpt = None,
    plot: Annotated[bool, typer.Option(help="Write plot.png (valence/arousal and expressions over time).")] = True,
    tasks: Annotated[
        Optional[list[Task]],
        typer.Option("--task", help="Only these tasks (repeatable; default: every head of the model)."),
    ] = None,
    as_json: JsonOpt = False,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    max_retries: RetriesOpt = 2,
) -> None:
    """Predict valence/arousal, expressions and action units for every frame of whole videos.

    With no --checkpoint/--model/--engine, --extractors or --detector it uses the built-in offline defaults:
    RetinaFace, the FER mini-Xception, log-mel audio features and the demo model (VA and EXPR; README, "Defaults").

    Writes <out>/<video>/: <video>.VA.txt / .EXPR.txt / .AU.txt (ABAW format), predictions.csv,
    report.json (per-stage latency) and plot.png.
    """
    from abaw_rt.pipeline.jobs import FusionChoice, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig

    scale = _scale_config(ray, workers, gpus_per_worker, max_retries)
    threads = pin_threads(threads)
    fusion = FusionChoice(
        checkpoint, model, engine, backend.value if backend else None, precision.value if precision else None,
        resolve_device(device.value), threads,
    )
    config = PipelineConfig(
        window=window, stride=stride, merge=merge, segment_batch=batch, detect_every=detect_every, face=face,
        decode_threads=decode_threads, infer_threads=threads, device=resolve_device(device.value), plot=plot,
    )  # fmt: skip
    job = VideoJob(out_dir, config, fusion, extractors, detector, tuple(t.value for t in tasks) if tasks else None,
                   tuple(extractor_backend or ()))  # fmt: skip
    reports, load_s, ray_run = _run_job(job, videos, scale, as_json)
    if as_json:
        out.print_json(data={"model_load_s": load_s, "videos": reports, **({"ray": ray_run} if ray_run else {})})
    else:
        _summary(reports, load_s, "abaw-rt infer")
    _exit_on_failures(ray_run)


@app.command()
@user_errors
def extract(
    inputs: Inputs,
    out_dir: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Feature store folder (created or added to).")
    ] = Path("features"),
    extractors: ExtractorsOpt = None,
    extractor_backend: ExtractorBackendOpt = None,
    detector: DetectorOpt = None,
    detect_every: DetectEveryOpt = 5,
    face: FaceOpt = FaceChoice.largest,
    decode_threads: DecodeThreadsOpt = 1,
    threads: ThreadsOpt = None,
    device: DeviceOpt = Device.cpu,
    as_json: JsonOpt = False,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    max_retries: RetriesOpt = 2,
) -> None:
    """Run decode, faces and feature extraction only, and write the feature store that training reads.

    Image folders (Aff-Wild2 cropped_aligned/<video>/00001.jpg) skip detection: their images are the
    aligned faces, and missing frame numbers are frames without a face.
    """
    from abaw_rt.pipeline.jobs import VideoJob
    from abaw_rt.pipeline.run import PipelineConfig

    scale = _scale_config(ray, workers, gpus_per_worker, max_retries)
    threads = pin_threads(threads)
    config = PipelineConfig(
        detect_every=detect_every,
        face=face,
        decode_threads=decode_threads,
        infer_threads=threads,
        device=resolve_device(device.value),
    )
    job = VideoJob(out_dir, config, None, extractors, detector, extractor_backends=tuple(extractor_backend or ()))
    reports, load_s, ray_run = _run_job(job, inputs, scale, as_json)
    if as_json:
        out.print_json(data={"store": str(out_dir), "model_load_s": load_s, "videos": reports,
                             **({"ray": ray_run} if ray_run else {})})
    else:
        _summary(reports, load_s, f"abaw-rt extract -> {out_dir}")
    _exit_on_failures(ray_run)


def _exit_on_failures(ray_run: dict | None) -> None:
    """With --ray, inputs that failed for good are listed on stderr and the exit status is 1."""
    if ray_run and ray_run["failures"]:
        from abaw_rt.cli.scale_cmds import print_failures

        print_failures(ray_run)
        raise typer.Exit(1)


def _scale_config(address, workers, gpus, retries):
    """The --ray options as a ScaleConfig, or None without --ray (the cluster options then must not be given)."""
    if address is None:
        if workers is not None:
            raise AbawRtError(f"--workers {workers}: needs --ray (local, auto or ray://host:port)")
        return None
    from abaw_rt.scale.config import ScaleConfig, check_reachable

    cfg = ScaleConfig(address=address, workers=2 if workers is None else workers, gpus_per_worker=gpus,
                      max_retries=retries)
    check_reachable(cfg)  # before any output folder is made
    return cfg


def _run_job(job, paths, scale, as_json: bool) -> tuple[list[dict], float | None, dict | None]:
    """Run a job here (models loaded once) or over Ray; returns the reports, the model load time and, with
    Ray, the run's record (cluster timings, retries, failures)."""
    from abaw_rt.pipeline.jobs import JobRunner
    from abaw_rt.pipeline.run import collect_sources

    runner = JobRunner(job)
    sources = collect_sources(paths, job.config.face)
    if scale is not None:
        from abaw_rt.cli.scale_cmds import run_scaled

        return run_scaled(runner, sources, scale)
    infos = runner.check(sources)
    with err.status("loading models"):
        runner.__enter__()
    try:
        reports = _run_all(runner, sources, infos, lambda s, cb, expected: runner.run(s, cb, expected), as_json)
    finally:
        runner.__exit__()
    return reports, runner.load_seconds, None


def _summary(reports: list[dict], load_s: float | None, title: str) -> None:
    table = Table(title=title)
    for col in ("input", "frames", "duration s", "wall s", "x real time", "faces", "audio", "output"):
        table.add_column(col, overflow="fold")
    for r in reports:
        faces = r.get("faces", {})
        found = f"{faces['found']}/{r['frames']}" if faces.get("found") is not None else "-"
        audio = r.get("audio", {})
        aud = f"{audio['frame_coverage']:.0%}" if audio.get("frame_coverage") is not None else "-"
        table.add_row(
            r["name"],
            str(r["frames"]),
            f"{r['duration_s']:.2f}",
            f"{r['wall_s']:.2f}",
            f"{r['realtime_factor']:.1f}" if r.get("realtime_factor") else "-",
            found,
            aud,
            r.get("outputs", {}).get("folder", "(feature store)"),
        )
    out.print(table)
    if not reports:
        return
    stages = Table(title=f"per-stage time (last input: {reports[-1]['name']}; models loaded in {load_s or 0:.2f} s)")
    for col in ("stage", "calls", "total s", "share", "p50 ms", "p90 ms", "p99 ms"):
        stages.add_column(col)
    for name, s in reports[-1]["stages"].items():
        share = f"{s['share']:.0%}" if s.get("share") is not None else "-"
        stages.add_row(
            name,
            str(s["calls"]),
            f"{s['total_s']:.3f}",
            share,
            f"{s['p50_ms']:.2f}",
            f"{s['p90_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
        )
    out.print(stages)
