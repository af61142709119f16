"""CLI layer: ``abaw-rt live``: per-frame predictions from a camera, a network stream, stdin or a paced file."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, user_errors
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
    ModelOpt,
    PrecisionOpt,
    ThreadsOpt,
    pin_threads,
)
from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.stream import DEFAULT_HOP, DEFAULT_LOOKAHEAD
from abaw_rt.vocab import Device, FaceChoice


def _check_out_parent(out_dir: Path) -> None:
    """--out must be creatable and writable; checked before the run, created only at the end."""
    p = Path(os.path.abspath(out_dir))
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise AbawRtError(f"output folder '{out_dir}': not writable ('{p}' is {'not a folder' if not p.is_dir() else 'read-only'})")


def _summary_table(summary: dict) -> None:
    lat = summary["latency"]
    table = Table(title=f"abaw-rt live: {summary['source']} ({summary['ended_by']})")
    for col in ("frames", "fps", "lookahead", "hop", "windows", "shed", "windows shed",
                "p50 ms", "p90 ms", "p99 ms", "bound ms"):
        table.add_column(col)
    table.add_row(
        str(summary["frames"]), f"{summary['fps'] or 0:.2f}", str(summary["live"]["lookahead"]),
        str(summary["live"]["hop"]), str(summary["windows_run"]), str(summary["shed_frames"]),
        str(summary["windows_shed"]),
        *(f"{lat[k]:.1f}" if lat[k] is not None else "-" for k in ("p50_ms", "p90_ms", "p99_ms")),
        f"{summary['latency_bound_ms']}",
    )
    err.print(table)
    future, lookahead = summary["model_future_frames"], summary["live"]["lookahead"]
    if future is not None and lookahead < future:
        err.print(f"note: the model's outputs depend on up to {future} later frames; at --lookahead {lookahead} "
                  f"live sees fewer of them than offline does (--lookahead {future}: all of them)", highlight=False)
    if summary["reconnects"]:
        err.print(f"reconnects {summary['reconnects']}, {summary['lost_s']:.2f} s lost", highlight=False)


class _LiveView:
    """A sink: the Rich live view on stderr (valence/arousal, expression, latency, shed frames), 4 updates/s."""

    def __init__(self):
        from rich.live import Live

        self.live = Live(console=err, transient=True, refresh_per_second=4)
        self.shown = 0.0

    def put(self, rows, emit_wall: float, emit_mono: float) -> None:
        if emit_wall - self.shown < 0.25:
            return
        self.shown = emit_wall
        from abaw_rt.model.config import HEAD_LABELS

        d, row = {h: v[-1] for h, v in rows.decisions.items()}, rows.frames[-1]  # the newest frame
        va = f"valence {d['va'][0]:+.2f}  arousal {d['va'][1]:+.2f}  " if "va" in d else ""
        expr = f"{HEAD_LABELS['expr'][int(d['expr'])]:<10} " if "expr" in d else ""
        self.live.update(f"frame {row.index}  {va}{expr}face {'yes' if row.face else 'no '}  "
                         f"latency {(emit_mono - row.mono) * 1000:.0f} ms{'  (shed)' if row.shed else ''}")


@app.command()
@user_errors
def live(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A camera (/dev/video0), a URL (rtsp://, rtmp://, udp://, srt://, http(s)://), "
        "'-' for MPEG-TS or Matroska on stdin, or a media file (with --realtime: at its own pace).")],
    lookahead: Annotated[int, typer.Option(
        "--lookahead", min=0, help="Frames that must arrive after a frame before it is emitted (0: causal).")
    ] = DEFAULT_LOOKAHEAD,
    hop: Annotated[int, typer.Option("--hop", min=1, help="Run a window ending at the newest frame every N frames.")
                   ] = DEFAULT_HOP,
    realtime: Annotated[bool, typer.Option("--realtime", help="Play a file at its own pace, as if live.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for the source to open, and for each frame before it counts as ended.")
    ] = 10.0,
    shed_backlog: Annotated[int, typer.Option(
        "--shed-backlog", min=0, help="Shed frames (repeat the last features) while this many wait (0: never).")
    ] = 8,
    shed_hop: Annotated[int, typer.Option(
        "--shed-hop", min=1, metavar="K", help="While shedding, skip fusion windows too, but run one at least every "
        "K frames (the frames wait for it).")
    ] = 25,
    reconnect: Annotated[int, typer.Option(
        "--reconnect", min=0, metavar="N", help="Network URLs: when the source closes or stalls, reopen it up to N "
        "times per break (0: never); frame indices and times continue, NDJSON 'session' counts the reconnects.")
    ] = 0,
    reconnect_wait: Annotated[float, typer.Option(
        "--reconnect-wait", min=0.0, metavar="S", help="With --reconnect: seconds between two attempts.")] = 1.0,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", file_okay=False, help="Also write ABAW files, predictions.csv and report.json at the end.")] = None,
    plot: Annotated[bool, typer.Option(help="With --out: write plot.png.")] = False,
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = Device.cpu,
    extractors: ExtractorsOpt = None,
    extractor_backend: ExtractorBackendOpt = None,
    detector: DetectorOpt = None,
    detect_every: DetectEveryOpt = 5,
    face: FaceOpt = FaceChoice.largest,
    decode_threads: DecodeThreadsOpt = 1,
    threads: ThreadsOpt = None,
) -> None:
    """Predict every frame of a live stream; one NDJSON object per frame on stdout, in frame order.

    A frame is emitted once --lookahead later frames have arrived; windows end at the newest frame and
    only windows already run count. The source ending, stalling (--timeout) or Ctrl-C flushes every frame
    received (exit 0, or 130 for Ctrl-C); --reconnect N reopens a network URL first. README, "abaw-rt live".
    """
    from abaw_rt.cuda.gpu import resolve_device
    from abaw_rt.pipeline.jobs import FusionChoice, JobRunner, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig
    from abaw_rt.pipeline.stream.live import LiveConfig, LiveRun
    from abaw_rt.pipeline.names import output_name
    from abaw_rt.pipeline.outputs import OutputFolder
    from abaw_rt.pipeline.stream.sinks import NdjsonSink
    from abaw_rt.pipeline.stream.source import parse_source

    live_cfg = LiveConfig(lookahead=lookahead, hop=hop, realtime=realtime, timeout=timeout, stall=timeout,
                          shed_backlog=shed_backlog, shed_hop=shed_hop, reconnect=reconnect,
                          reconnect_wait=reconnect_wait)
    live_cfg.check()
    src = parse_source(source)
    live_cfg.check_source(src)
    if out_dir is not None:
        _check_out_parent(out_dir)
    threads = pin_threads(threads)
    dev = resolve_device(device.value)
    fusion = FusionChoice(checkpoint, model, engine, backend.value if backend else None,
                          precision.value if precision else None, dev, threads)
    config = PipelineConfig(detect_every=detect_every, face=face, decode_threads=decode_threads, infer_threads=threads,
                            device=dev, plot=plot)
    runner = JobRunner(VideoJob(out_dir or Path("."), config, fusion, extractors, detector,
                                  extractor_backends=tuple(extractor_backend or ())))
    view = _LiveView() if err.is_terminal else None
    with runner, (view.live if view else contextlib.nullcontext()):
        folder = None  # --out: written as frames are final, moved into place at the end (made at the first frame)
        if out_dir is not None:
            folder = OutputFolder(out_dir, output_name(src.name), Path(src.text), runner.pipeline.model_cfg.heads, plot)
        try:
            sinks = [NdjsonSink(sys.stdout)] + ([folder] if folder else []) + ([view] if view else [])
            summary = LiveRun(runner.pipeline, src, live_cfg, sinks).run()
            if folder is not None and summary["frames"]:
                summary["outputs"] = {"folder": str(folder.close(dict(summary)))}
        finally:
            if folder is not None:
                folder.abort()
    _summary_table(summary)
    if summary["interrupted"]:
        err.print("interrupted", highlight=False)
        raise typer.Exit(128 + int(summary.get("signal", 2)))
