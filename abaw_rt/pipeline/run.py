"""Pipeline layer: orchestration of decode -> faces -> features -> segments -> stitch, for several videos.

``Pipeline`` loads the detector, extractors and fusion runner once (entering its context) and then
processes any number of videos or Aff-Wild2 image folders, timing every stage. Everything a run can
refuse (missing extractor, wrong dim, no audio track for an audio model, unreadable video, unwritable
output folder) is checked before the first frame is decoded. The stages live in their own modules
(inputs, models, checks, video, images, predict, facts); this facade composes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.checks import check_sources, no_detector
from abaw_rt.pipeline.extractor_spec import DetectorSpec, ExtractorSpec, PipelineSpec
from abaw_rt.pipeline.faces import FaceChoice
from abaw_rt.pipeline.features import Progress, VideoFeatures
from abaw_rt.pipeline.fusion import load_fusion
from abaw_rt.pipeline.inputs import FRAME_IMAGE, IMAGE_FOLDER_FPS, VIDEO_SUFFIXES, Source, collect_sources
from abaw_rt.pipeline.stitch import Merge
from abaw_rt.store import fill_from_nearest

__all__ = [
    "FRAME_IMAGE", "IMAGE_FOLDER_FPS", "VIDEO_SUFFIXES", "Pipeline", "PipelineConfig", "Progress", "Source",
    "VideoFeatures", "collect_sources", "load_fusion",
]


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline runs; the CLI fills it in from its options."""

    window: int | None = None  # segment length w; None: the model's own (checkpoint header, 300)
    stride: int | None = None  # segment stride s; None: the model's own (200)
    merge: Merge = Merge.centre  # how overlapping windows combine (Zhou et al. 2023, "Segments")
    segment_batch: int = 8  # windows per fusion call
    detect_every: int = 5  # detector on every N-th frame and the last; boxes interpolated between
    face: FaceChoice = FaceChoice.largest  # which face when several (left/right for two-person videos)
    decode_threads: int = 1  # FFmpeg decoder threads: on few cores they compete with inference threads
    prefetch: int = 8  # frames decoded ahead in a background thread (0: decode in the calling thread)
    infer_threads: int | None = None  # onnxruntime intra-op threads of detector and extractors (None: all cores)
    device: str = "cpu"  # "cpu" or "cuda" for the detector and extractor graphs
    plot: bool = True  # write plot.png beside the predictions
    max_side: int | None = 1920  # frames with a longer side are scaled down when decoded (8K would hold GBs)


class Pipeline:
    """Loaded models plus the per-video work. Use as a context manager; process any number of sources.

    Args:
        spec: the extractor spec (and maybe the detector).
        config: how to run.
        fusion: the fusion Runner (for ``infer``); None for feature extraction only.
        detector: the detector spec; None: the spec file's [detector], if any.
    """

    def __init__(
        self, spec: PipelineSpec, config: PipelineConfig = PipelineConfig(), fusion=None,
        detector: DetectorSpec | None = None,
    ):
        self.spec, self.config, self.fusion = spec, config, fusion
        self.model_cfg = fusion.header.config if fusion is not None else None
        self.extractor_specs: tuple[ExtractorSpec, ...] = (
            spec.for_model(self.model_cfg) if fusion is not None else spec.extractors
        )
        if fusion is not None:
            self.window = config.window or fusion.header.window
            self.stride = config.stride or min(fusion.header.stride, self.window)
            if not 1 <= self.stride <= self.window:
                raise AbawRtError(f"--stride {self.stride}: expected 1..window ({self.window})")
        self.detector_spec = detector or spec.detector
        self.visual = [e for e in self.extractor_specs if e.modality == "visual"]
        self.audio = [e for e in self.extractor_specs if e.modality == "audio"]
        if config.detect_every < 1:
            raise AbawRtError(f"--detect-every {config.detect_every}: expected >= 1")
        if config.segment_batch < 1:
            raise AbawRtError(f"segment batch {config.segment_batch}: expected >= 1")
        self.extractors, self.detector, self.load_seconds = [], None, None

    def __enter__(self) -> "Pipeline":
        from abaw_rt.pipeline.models import load_detector, load_extractors

        start = time.perf_counter()
        provider = "cuda" if self.config.device == "cuda" else "cpu"
        try:
            if self.visual and self.detector_spec is not None:
                self.detector = load_detector(self.detector_spec, provider, self.config.infer_threads)
            self.extractors = load_extractors(self.extractor_specs, provider, self.config.infer_threads)
            if self.fusion is not None:
                self.fusion.activate()
        except BaseException:
            self.__exit__()
            raise
        self.load_seconds = time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        from abaw_rt.pipeline.models import release_detector, release_extractors

        release_extractors(self.extractors)
        release_detector(self.detector)
        self.extractors, self.detector = [], None
        if self.fusion is not None:
            self.fusion.deactivate()

    def check_sources(self, sources: Sequence[Source], skip_missing_audio: bool = False) -> dict[str, object]:
        """Probe every input before any work (``checks.check_sources``)."""
        return check_sources(self, sources, skip_missing_audio)

    def no_detector(self):
        no_detector(self.visual)

    def features(
        self, source: Source, progress: Progress | None = None, expected: int | None = None, fill: bool = True,
        windows: bool = False,
    ) -> VideoFeatures:
        """Decode, detect, align and extract one source.

        ``fill``: missing-face rows take the nearest face's features (``store.fill_from_nearest``); off for
        the feature store, which keeps rows as found and fills at read time. ``windows`` (infer, a video): the
        fusion windows run while decoding (``window_feed.WindowFeed``) and ``features`` stays empty.
        """
        from abaw_rt.pipeline.images import image_features
        from abaw_rt.pipeline.video import video_features

        if source.is_video:
            vf = video_features(self, source, progress, expected, windows=windows)
        else:
            vf = image_features(self.extractors, source, progress)
        if self.visual:
            if not vf.face_found.any():
                raise AbawRtError(
                    f"{'video' if source.is_video else 'image folder'} '{source.path}': no face found in any of its "
                    f"{vf.frames} frames (detector '{self.detector_spec.onnx.name}', detection every "
                    f"{self.config.detect_every} frames); nothing to predict from"
                )
            for e in self.visual if fill else ():
                if e.name in vf.features:
                    vf.features[e.name] = fill_from_nearest(vf.features[e.name], vf.face_found)
        return vf

    def extract(self, source: Source, store, progress: Progress | None = None, expected: int | None = None) -> dict:
        """Stages 1-3 into the feature store (``abaw_rt.store.FeatureStore``); returns the source's report."""
        from abaw_rt.pipeline.facts import source_report

        vf = self.features(source, progress, expected, fill=False)
        specs = {e.name: (e.dim, e.modality) for e in self.extractor_specs if e.name in vf.features}
        t = time.perf_counter()
        store.write(source.name, vf.features, vf.face_found, specs, fps=vf.fps)
        vf.times.add("write", time.perf_counter() - t)
        return source_report(self, vf, vf.wall + (time.perf_counter() - t))

    def infer(self, source: Source, progress: Progress | None = None, expected: int | None = None):
        """Whole-source inference: features, windows through the fusion runner, stitching and decisions (a video's
        windows run while it is decoded, so only the frames later windows need are held: ``window_feed``)."""
        from abaw_rt.pipeline.facts import source_report
        from abaw_rt.pipeline.outputs import VideoPrediction
        from abaw_rt.pipeline.predict import predict_windows
        from abaw_rt.pipeline.window_feed import Replan

        if self.fusion is None:
            raise AbawRtError("this pipeline has no fusion model (it was built for feature extraction)")
        wall0 = time.perf_counter()
        try:  # a video: windows run while it is decoded (window_feed); only the last batch is left here
            vf = self.features(source, progress, expected, windows=source.is_video)
            streamed = vf.windows.finish(vf.frame_times, vf.face_found) if vf.windows is not None else None
        except Replan:  # frame times that went back in time: once more on the whole-video path
            wall0, vf, streamed = time.perf_counter(), self.features(source, progress, expected), None
        merged, decisions, count = streamed or predict_windows(
            self.fusion, self.model_cfg, vf, self.window, self.stride, self.config
        )
        report = source_report(self, vf, time.perf_counter() - wall0, plan_count=count)
        return VideoPrediction(
            name=source.name, source=source.path, frame_times=vf.frame_times, face_found=vf.face_found,
            merged=merged, decisions=decisions, report=report,
        )
