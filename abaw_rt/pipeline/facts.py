"""Reporting layer, inside the pipeline: the facts a run learnt about one source, as the report's dicts."""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.features import VideoFeatures, duration
from abaw_rt.pipeline.report import environment, peak_rss_mb


def decode_facts(stats, config) -> dict:
    """The report's "decode" table from the decoder's ``DecodeStats`` and the run's ``PipelineConfig``."""
    return {
        "errors": stats.decode_errors,
        "non_increasing_timestamps": stats.non_increasing,
        "threads": config.decode_threads,
        "prefetch": config.prefetch,
        "declared_fps": stats.declared_fps,
        "size": list(stats.source_size or ()),
        "scaled_to": list(stats.scaled_to) if stats.scaled_to else None,
        **stats.facts(),  # display rotation, lost (filled) frames
    }


def face_facts(used: bool, face_found: np.ndarray, detections: int, config) -> dict:
    """The report's "faces" table: frames with and without a face, detector calls, which face."""
    return {
        "used": used,
        "found": int(face_found.sum()) if used else None,
        "missing": int((~face_found).sum()) if used else None,
        "detections": detections,
        "detect_every": config.detect_every,
        "choice": config.face.value,
    }


def audio_facts(used: bool, stream, stats, frame_times: np.ndarray, skipped: list[str]) -> dict:
    """The report's "audio" table: whether a track was decoded, where it starts, how much of the frames it covers."""
    from abaw_rt.pipeline.extractors import audio_coverage

    track = stream if stream is not None and stream.start is not None else None  # start/end, as AudioTrack
    return {
        "used": used,
        "track": track is not None,
        "stream": stats.audio_track,  # which of several tracks (FFmpeg's default choice)
        "seconds": round(stream.seconds if stream is not None else stats.audio_seconds, 3),
        "start_s": round(track.start, 4) if track is not None else None,
        "frame_coverage": round(audio_coverage(track, frame_times), 4) if used else None,
        "skipped_extractors": skipped,
    }


def model_facts(fusion, model_cfg, device: str) -> dict:
    """The report's "model" table: backend, precision, heads, features and the artefact's path."""
    return {
        "backend": fusion.name,
        "precision": fusion.precision,
        "device": device,
        "heads": list(model_cfg.heads),
        "features": [f"{f.name}:{f.modality}:{f.dim}" for f in model_cfg.features],
        "artefact": str(
            getattr(fusion, "path", None)
            or getattr(fusion, "plan", None)
            or getattr(getattr(fusion, "checkpoint", None), "path", "")
        ),
    }


def source_report(pipe, vf: VideoFeatures, wall: float, plan_count: int | None = None) -> dict:
    """One source's report.json: sizes, speed, per-stage times, the stages' facts, models and environment.

    Args:
        pipe: the ``Pipeline`` that processed it (its config, fusion runner, specs and load time).
        vf: the source's stages 1-3.
        wall: seconds for the whole source.
        plan_count: windows run through the fusion model (None for feature extraction).
    """
    seconds = duration(vf.frame_times, vf.fps)
    config = pipe.config
    report = {
        "source": str(vf.source.path),
        "name": vf.source.name,
        "kind": vf.source.kind,
        "frames": vf.frames,
        "duration_s": round(seconds, 4),
        "fps": round(vf.fps, 4) if vf.fps else None,
        "wall_s": round(wall, 4),
        "realtime_factor": round(seconds / wall, 3) if wall > 0 else None,
        "frames_per_s": round(vf.frames / wall, 2) if wall > 0 else None,
        "model_load_s": round(pipe.load_seconds, 4) if pipe.load_seconds is not None else None,
        "stages": vf.times.summary(wall),
        **vf.info,
        "threads": {"decode": config.decode_threads, "inference": config.infer_threads or "default"},
        "peak_rss_mb": peak_rss_mb(),
        "environment": environment(),
    }
    if pipe.fusion is not None:
        report["model"] = model_facts(pipe.fusion, pipe.model_cfg, config.device)
        report["segments"] = {
            "window": pipe.window,
            "stride": pipe.stride,
            "count": plan_count,
            "merge": config.merge.value,
            "batch": config.segment_batch,
        }
    report["extractors"] = {e.name: str(e.onnx) for e in pipe.extractor_specs}
    if pipe.detector_spec is not None and pipe.visual:
        report["detector"] = str(pipe.detector_spec.onnx)
    return report
