"""Pipeline layer: the checks made on every input before the first frame is decoded."""

from __future__ import annotations

from typing import Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.inputs import Source


def no_detector(visual) -> None:
    """Raise: visual extractors need face crops and no detector was given."""
    raise AbawRtError(
        f"no face detector: the visual extractor(s) {[e.name for e in visual]} need face crops from videos; "
        "pass --detector DETECTOR.onnx (or a spec with a [detector] table; the CLI falls back to the built-in one)"
    )


def no_face(pipe, source: Source, frames: int) -> None:
    """Raise: the detector found no face in any frame of ``source`` (nothing to predict from)."""
    what = "video" if source.is_video else "image folder"
    raise AbawRtError(
        f"{what} '{source.path}': no face found in any of its {frames} frames (detector "
        f"'{pipe.detector_spec.onnx.name if pipe.detector_spec else None}', detection every "
        f"{pipe.config.detect_every} frames); nothing to predict from"
    )


def check_sources(pipe, sources: Sequence[Source], skip_missing_audio: bool = False) -> dict[str, object]:
    """Probe every input before any work: readable, has video, has audio when audio features are needed.

    Returns:
        {source name: ``VideoInfo``, or None for an image folder}.
    """
    from abaw_rt.pipeline.decode import probe

    infos = {}
    if pipe.visual and pipe.detector_spec is None and any(s.is_video for s in sources):
        no_detector(pipe.visual)
    for s in sources:
        if s.is_video:
            info = probe(s.path)
            if pipe.audio and not info.has_audio and not skip_missing_audio:
                raise AbawRtError(
                    f"video '{s.path}': has no audio track, but the model needs audio feature(s) "
                    f"{[e.name for e in pipe.audio]}; use a visual-only model (e.g. preset expr or au)"
                )
            infos[s.name] = info
        else:
            if pipe.audio and not skip_missing_audio:
                raise AbawRtError(
                    f"image folder '{s.path}': has no audio, but the model needs audio feature(s) "
                    f"{[e.name for e in pipe.audio]}"
                )
            infos[s.name] = None
    return infos
