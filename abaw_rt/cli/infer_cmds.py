"""CLI layer: pipeline verbs: infer (whole videos -> per-frame predictions) and extract (features -> feature store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors, warn_lost_frames
from abaw_rt.cli.options import (
    DecodeThreadsOpt,
    DetectEveryOpt,
    DetectorOpt,
    DeviceOpt,
    ExtractorsOpt,
    FaceOpt,
    Inputs,
    JsonOpt,
    ThreadsOpt,
    pin_threads,
)
from abaw_rt.cuda.gpu import resolve_device
from abaw_rt.vocab import Backend, Device, FaceChoice, Merge, Precision, Task
from abaw_rt.errors import AbawRtError


CheckpointOpt = Annotated[
    Optional[Path], typer.Option("--checkpoint", dir_okay=False, help="Fusion checkpoint (.safetensors).")
]
ModelOpt = Annotated[
    Optional[Path], typer.Option("--model", dir_okay=False, help="Exported fusion graph (.onnx) instead of a checkpoint.")
]
EngineOpt = Annotated[
    Optional[Path], typer.Option("--engine", dir_okay=False, help="TensorRT engine plan (from 'abaw-rt build').")
]
BackendOpt = Annotated[
    Optional[Backend], typer.Option("--backend", help="Fusion backend (default: ort; trt with --engine).")
]
PrecisionOpt = Annotated[
    Optional[Precision], typer.Option("--precision", help="Fusion precision (default: the artefact's / fp32).")
]


def spec_or_default(extractors: Path | None):
    from abaw_rt.pipeline.extractor_spec import load_spec

    if extractors is None:  # the built-in offline defaults (abaw_rt/defaults; README, "Defaults")
        from abaw_rt import defaults

        extractors = defaults.spec_path()
    return load_spec(extractors)


def detector_or_default(detector: Path | None, spec=None):
    from abaw_rt.pipeline.extractor_spec import default_detector_spec, load_detector

    if detector is not None:
        return load_detector(detector)
    if spec is not None and spec.detector is None:  # a spec without [detector]: the built-in RetinaFace
        return default_detector_spec()
    return None


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
) -> None:
    """Predict valence/arousal, expressions and action units for every frame of whole videos.

    With no --checkpoint/--model/--engine, --extractors or --detector it uses the built-in offline defaults:
    RetinaFace, the FER mini-Xception, log-mel audio features and the demo model (VA and EXPR; README, "Defaults").

    Writes <out>/<video>/: <video>.VA.txt / .EXPR.txt / .AU.txt (ABAW format), predictions.csv,
    report.json (per-stage latency) and plot.png.
    """
    from abaw_rt.pipeline.outputs import check_out_dir, write_outputs
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources

    threads = pin_threads(threads)
    spec = spec_or_default(extractors)
    det = detector_or_default(detector, spec)
    fusion, demo = _open_fusion(checkpoint, model, engine, backend, precision, device, threads)
    config = PipelineConfig(
        window=window, stride=stride, merge=merge, segment_batch=batch, detect_every=detect_every, face=face,
        decode_threads=decode_threads, infer_threads=threads, device=resolve_device(device.value), plot=plot,
    )  # fmt: skip
    wanted = _wanted_heads(fusion, tasks, demo)
    pipeline = Pipeline(spec, config, fusion, det)
    sources = collect_sources(videos, config.face)
    infos = pipeline.check_sources(sources)
    check_out_dir(out_dir)

    def work(source, cb, expected):
        pred = pipeline.infer(source, cb, expected)
        pred.merged = {h: v for h, v in pred.merged.items() if h in wanted}
        pred.decisions = {h: v for h, v in pred.decisions.items() if h in wanted}
        write_outputs(out_dir, pred, plot=config.plot)
        return pred.report

    reports = _with_models(pipeline, lambda: _run_all(pipeline, sources, infos, work, as_json))
    if as_json:
        out.print_json(data={"model_load_s": pipeline.load_seconds, "videos": reports})
        return
    _summary(reports, pipeline.load_seconds, "abaw-rt infer")


def _open_fusion(checkpoint, model, engine, backend, precision, device, threads):
    """The fusion runner for --checkpoint / --model / --engine (none: the built-in demo model), and whether it is the demo."""
    from abaw_rt.pipeline.run import load_fusion

    demo = checkpoint is None and model is None and engine is None
    if demo:  # the built-in demo model (README, "Model card")
        from abaw_rt import defaults

        checkpoint = defaults.checkpoint_path()
    fusion = load_fusion(
        checkpoint,
        model,
        backend.value if backend else None,
        precision.value if precision else None,
        resolve_device(device.value),
        threads,
        engine=engine,
    )
    return fusion, demo


def _wanted_heads(fusion, tasks, demo: bool) -> list[str]:
    """The heads --task asks for (default: all the model has); a head the model lacks is refused."""
    heads = fusion.header.config.heads
    wanted = [t.value for t in tasks] if tasks else list(heads)
    if demo:
        from abaw_rt import defaults

        defaults.check_heads(wanted)
    if [t for t in wanted if t not in heads]:
        raise AbawRtError(f"--task {' '.join(wanted)}: the model predicts {list(heads)} only")
    return wanted


def _with_models(pipeline, run):
    """``run()`` with the pipeline's models loaded (a status line while they load), unloaded after."""
    with err.status("loading models"):
        pipeline.__enter__()
    try:
        return run()
    finally:
        pipeline.__exit__()


@app.command()
@user_errors
def extract(
    inputs: Inputs,
    out_dir: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Feature store folder (created or added to).")
    ] = Path("features"),
    extractors: ExtractorsOpt = None,
    detector: DetectorOpt = None,
    detect_every: DetectEveryOpt = 5,
    face: FaceOpt = FaceChoice.largest,
    decode_threads: DecodeThreadsOpt = 1,
    threads: ThreadsOpt = None,
    device: DeviceOpt = Device.cpu,
    as_json: JsonOpt = False,
) -> None:
    """Run decode, faces and feature extraction only, and write the feature store that training reads.

    Image folders (Aff-Wild2 cropped_aligned/<video>/00001.jpg) skip detection: their images are the
    aligned faces, and missing frame numbers are frames without a face.
    """
    from abaw_rt.pipeline.outputs import check_out_dir
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources
    from abaw_rt.store import FeatureStore

    threads = pin_threads(threads)
    spec = spec_or_default(extractors)
    det = detector_or_default(detector, spec)
    config = PipelineConfig(
        detect_every=detect_every,
        face=face,
        decode_threads=decode_threads,
        infer_threads=threads,
        device=resolve_device(device.value),
    )
    sources = collect_sources(inputs, config.face)
    pipeline = Pipeline(spec, config, None, det)
    infos = pipeline.check_sources(sources, skip_missing_audio=True)
    store = FeatureStore(check_out_dir(out_dir))
    store.index()  # an existing folder must be a feature store (or empty)

    def work(source, cb, expected):
        return pipeline.extract(source, store, cb, expected)

    reports = _with_models(pipeline, lambda: _run_all(pipeline, sources, infos, work, as_json))
    if as_json:
        out.print_json(data={"store": str(out_dir), "model_load_s": pipeline.load_seconds, "videos": reports})
        return
    _summary(reports, pipeline.load_seconds, f"abaw-rt extract -> {out_dir}")


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
