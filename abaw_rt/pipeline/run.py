"""Pipeline layer: orchestration of decode -> faces -> features -> windows -> stitch -> sinks, for several videos.

``Pipeline`` loads the detector, extractors and fusion runner once (entering its context) and then
processes any number of videos or Aff-Wild2 image folders, timing every stage. Everything a run can
refuse (missing extractor, wrong dim, no audio track for an audio model, unreadable video, unwritable
output folder) is checked before the first frame is decoded. A video goes through the streaming stages
(``stream.offline.VideoRun``: the same stages ``abaw-rt live`` runs), its final rows handed to a sink as they
come; an image folder through ``images.image_run``. The stages live in their own modules; this facade
composes them.
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

    def _read(self, source: Source, consumer, progress, expected, fill: bool, hold: bool = False) -> VideoFeatures:
        """Stages 1-3 of one source into ``consumer(rows, times)``'s stage (see ``stream.offline``)."""
        from abaw_rt.pipeline.images import image_run
        from abaw_rt.pipeline.stream.offline import VideoRun

        if source.is_video:
            return VideoRun(self, source, progress, expected, fill=fill, hold=hold).run(consumer)
        return image_run(self.extractors, source, progress, consumer, fill)

    def _replanned(self, run, undo):
        """``run(hold)`` streaming; once more holding every frame when the streamed rows cannot be proven
        equal to the whole video's (``rows.Replan``: frame times that go back in time), after ``undo()``."""
        from abaw_rt.pipeline.stream.rows import Replan

        try:
            return run(False)
        except Replan:
            undo()
            return run(True)

    def features(self, source: Source, progress: Progress | None = None, expected: int | None = None,
                 fill: bool = True) -> VideoFeatures:
        """Every frame's features of one source, in memory (tests and short inputs; ``extract`` streams them).

        ``fill``: missing-face rows take the nearest face's features (``store.fill_from_nearest``); off: rows
        as found (zeros), as the feature store keeps them.
        """
        from abaw_rt.pipeline.stream.offline import ArrayRecord, StoreFeed

        records: list[ArrayRecord] = []

        def feed(rows, times):
            records.append(ArrayRecord())
            return StoreFeed(rows, records[-1])

        vf = self._replanned(lambda hold: self._read(source, feed, progress, expected, False, hold), lambda: None)
        vf.features = records[-1].arrays()
        for e in self.visual if fill else ():
            if e.name in vf.features:
                vf.features[e.name] = fill_from_nearest(vf.features[e.name], vf.face_found)
        return vf

    def extract(self, source: Source, store, progress: Progress | None = None, expected: int | None = None) -> dict:
        """Stages 1-3 into the feature store (``abaw_rt.store.FeatureStore``), streamed; returns the source's report."""
        from abaw_rt.pipeline.facts import source_report
        from abaw_rt.pipeline.stream.offline import StoreFeed

        writers = []
        specs = {e.name: (e.dim, e.modality) for e in self.extractor_specs}

        def feed(rows, times):
            names = [*rows.vis, *(rows.audio.rows if rows.audio is not None else ())]
            writers.append(store.writer(source.name, {n: specs[n] for n in names}))
            return StoreFeed(rows, writers[-1])

        def discard():
            for w in writers:
                w.abort()

        try:
            vf = self._replanned(lambda hold: self._read(source, feed, progress, expected, False, hold), discard)
            t = time.perf_counter()
            writers[-1].fps = vf.fps
            writers[-1].close()
            vf.times.add("write", time.perf_counter() - t)
        finally:
            discard()
        return source_report(self, vf, vf.wall + (time.perf_counter() - t))

    def infer(self, source: Source, sink, progress: Progress | None = None, expected: int | None = None) -> dict:
        """Whole-source inference: features, the fusion windows of the stride plan, stitching and decisions, each
        frame's row handed to ``sink.put`` (an ``outputs.OutputFolder``) once final; returns the source's report
        (the caller closes the sink with it)."""
        from abaw_rt.pipeline.facts import source_report
        from abaw_rt.pipeline.stream.plan import PlanWindows

        if self.fusion is None:
            raise AbawRtError("this pipeline has no fusion model (it was built for feature extraction)")
        plans = []

        def windows(rows, times):
            plans.append(PlanWindows(self, rows, times, [sink]))
            return plans[-1]

        wall0 = time.perf_counter()
        vf = self._replanned(lambda hold: self._read(source, windows, progress, expected, True, hold), sink.reset)
        return source_report(self, vf, time.perf_counter() - wall0, plan_count=plans[-1].count)

    def infer_folder(self, source: Source, out_dir, heads: Sequence[str] | None = None, plot: bool | None = None,
                     progress: Progress | None = None, expected: int | None = None) -> dict:
        """``infer`` into ``<out_dir>/<source name>/`` (an ``OutputFolder``: staged, moved into place whole at the
        end); ``heads``: those to write (None: every head of the model); returns the report."""
        from abaw_rt.pipeline.outputs import OutputFolder

        heads = [h for h in self.model_cfg.heads if heads is None or h in heads]
        plot = self.config.plot if plot is None else plot
        folder = OutputFolder(out_dir, source.name, source.path, heads, plot=plot)
        try:
            report = self.infer(source, folder, progress, expected)
            folder.close(report)
        finally:
            folder.abort()
        return report
