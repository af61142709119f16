"""Pipeline layer: orchestration of decode -> faces -> features -> segments -> stitch, for several videos.

``Pipeline`` loads the detector, extractors and fusion runner once (entering its context) and then
processes any number of videos or Aff-Wild2 image folders, timing every stage. Everything a run can
refuse (missing extractor, wrong dim, no audio track for an audio model, unreadable video, unwritable
output folder) is checked before the first frame is decoded.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import missing_reason
from abaw_rt.pipeline.extractor_spec import DetectorSpec, ExtractorSpec, PipelineSpec
from abaw_rt.pipeline.faces import FaceChoice
from abaw_rt.pipeline.names import output_name
from abaw_rt.pipeline.report import StageTimes, environment, peak_rss_mb
from abaw_rt.pipeline.stitch import Merge
from abaw_rt.store import fill_from_nearest

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
FRAME_IMAGE = re.compile(r"^(\d{5})\.(jpg|jpeg|png)$", re.IGNORECASE)  # Aff-Wild2 cropped_aligned: 00001.jpg
IMAGE_FOLDER_FPS = 30.0  # image folders carry no timestamps; frame times assume Aff-Wild2's usual 30 fps

Progress = Callable[[str, int, int | None], None]  # (name, frames done, frames expected or None)


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


@dataclass(frozen=True)
class Source:
    """One input: a video file, or an image folder of aligned face crops (00001.jpg, ...)."""

    path: Path
    kind: str  # "video" or "images"
    name: str  # output name

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


@dataclass
class VideoFeatures:
    """Stages 1-3 of one source: per-frame features by extractor name, with the face mask and timestamps."""

    source: Source
    features: dict[str, np.ndarray]  # name -> (n, dim) float32, missing-face rows already filled
    face_found: np.ndarray  # (n,) bool
    frame_times: np.ndarray  # (n,) seconds
    fps: float | None  # measured from the timestamps (declared rate for one-frame videos)
    times: StageTimes
    info: dict = field(default_factory=dict)  # decode / faces / audio facts for the report
    wall: float = 0.0  # seconds for stages 1-3

    @property
    def frames(self) -> int:
        return len(self.frame_times)


# -- inputs ------------------------------------------------------------------------------------------
def _frame_images(folder: Path) -> dict[int, Path]:
    found = {}
    for p in folder.iterdir():
        m = FRAME_IMAGE.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return found


def collect_sources(paths: Sequence[Path], face: FaceChoice = FaceChoice.largest) -> list[Source]:
    """Expand the command line's inputs: video files, folders of videos, image folders, folders of image folders.

    Raises:
        AbawRtError: a path that does not exist, a folder with nothing to process, or two inputs with one name.
    """
    suffix = f"_{face.value}" if face in (FaceChoice.left, FaceChoice.right) else ""
    out: list[Source] = []
    for p in map(Path, paths):
        if not p.exists():
            raise AbawRtError(f"input '{p}': {missing_reason(p)}")
        if p.is_file():
            out.append(Source(p, "video", output_name(p.stem) + suffix))
            continue
        if _frame_images(p):
            out.append(Source(p, "images", output_name(Path(os.path.abspath(p)).name) + suffix))
            continue
        entries = sorted(p.iterdir())
        videos = [e for e in entries if e.is_file() and e.suffix.lower() in VIDEO_SUFFIXES]
        folders = [e for e in entries if e.is_dir() and _frame_images(e)]
        if not videos and not folders:
            raise AbawRtError(
                f"input folder '{p}': holds no videos ({', '.join(VIDEO_SUFFIXES[:4])}, ...) and no image folders "
                "of numbered frames (00001.jpg, ...)"
            )
        out += [Source(v, "video", output_name(v.stem) + suffix) for v in videos]
        out += [Source(f, "images", output_name(f.name) + suffix) for f in folders]
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AbawRtError(
            f"inputs: several inputs would write the same output name(s) {dupes}; pass them in separate runs"
        )
    if not out:
        raise AbawRtError("no input: give one or more videos or folders")
    return out


# -- the fusion model --------------------------------------------------------------------------------
def load_fusion(
    checkpoint: Path | None = None,
    model: Path | None = None,
    backend: str | None = None,
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    engine: Path | None = None,
):
    """The fusion Runner for ``--checkpoint`` (torch, or its exported graph with ort), ``--model`` (an ONNX
    graph, ort) or ``--engine`` (a TensorRT plan, trt), through ``abaw_rt.artefacts.open_runner``.
    ``backend`` None: ort, or trt for an engine.

    Raises:
        AbawRtError: nothing or several given, a file of another kind than its option says, a backend that
            cannot run the artefact, a missing export.
    """
    from abaw_rt.artefacts import Kind, RunOptions, open_artefact, open_runner

    given = [(n, v) for n, v in (("--checkpoint", checkpoint), ("--model", model), ("--engine", engine)) if v]
    if not given:
        raise AbawRtError(
            "no fusion model: pass --checkpoint CHECKPOINT.safetensors, --model GRAPH.onnx or --engine PLAN "
            "('abaw-rt infer' uses the built-in demo model, abaw_rt.defaults.checkpoint_path(), when none is given)"
        )
    if len(given) > 1:
        raise AbawRtError(f"pass one of --checkpoint, --model, --engine (got {' and '.join(n for n, _ in given)})")
    option, path = given[0]
    want = {"--checkpoint": Kind.checkpoint, "--model": Kind.fusion_graph, "--engine": Kind.engine}[option]
    try:
        artefact = open_artefact(path, want)
    except AbawRtError as exc:
        raise AbawRtError(f"{option}: {exc}") from None
    return open_runner(artefact, backend, RunOptions(precision=precision, device=device, threads=threads))


# -- the pipeline ------------------------------------------------------------------------------------
class Pipeline:
    """Loaded models plus the per-video work. Use as a context manager; process any number of sources.

    Args:
        spec: the extractor spec (and maybe the detector).
        config: how to run.
        fusion: the fusion Runner (for ``infer``); None for feature extraction only.
        detector: the detector spec; None: the spec file's [detector], if any.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        config: PipelineConfig = PipelineConfig(),
        fusion=None,
        detector: DetectorSpec | None = None,
    ):
        self.spec = spec
        self.config = config
        self.fusion = fusion
        if fusion is not None:
            self.model_cfg = fusion.header.config
            self.extractor_specs: tuple[ExtractorSpec, ...] = spec.for_model(self.model_cfg)
            self.window = config.window or fusion.header.window
            self.stride = config.stride or min(fusion.header.stride, self.window)
            if not 1 <= self.stride <= self.window:
                raise AbawRtError(f"--stride {self.stride}: expected 1..window ({self.window})")
        else:
            self.model_cfg = None
            self.extractor_specs = spec.extractors
        self.detector_spec = detector or spec.detector
        self.visual = [e for e in self.extractor_specs if e.modality == "visual"]
        self.audio = [e for e in self.extractor_specs if e.modality == "audio"]
        if config.detect_every < 1:
            raise AbawRtError(f"--detect-every {config.detect_every}: expected >= 1")
        if config.segment_batch < 1:
            raise AbawRtError(f"segment batch {config.segment_batch}: expected >= 1")
        self.extractors = []
        self.detector = None
        self.load_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> "Pipeline":
        from abaw_rt.pipeline.extractors import FeatureExtractor
        from abaw_rt.pipeline.faces import FaceDetector
        from abaw_rt.artefacts import open_graph

        start = time.perf_counter()
        provider = "cuda" if self.config.device == "cuda" else "cpu"
        threads = self.config.infer_threads
        try:
            if self.visual and self.detector_spec is not None:
                if self.detector_spec.decoder.value == "retinaface":  # raw heads, decoded in numpy
                    from abaw_rt.pipeline.retinaface import RetinaFaceRunner

                    runner = RetinaFaceRunner(
                        self.detector_spec.onnx, provider, threads, score_threshold=self.detector_spec.score_threshold,
                        nms_iou=self.detector_spec.nms_iou,
                    ).activate()
                else:
                    runner = open_graph(self.detector_spec.onnx, provider, threads, what="detector").activate()
                self.detector = FaceDetector(self.detector_spec, runner)
                self.detector.prepare()
            for s in self.extractor_specs:
                self.extractors.append(FeatureExtractor(s, provider, threads).__enter__())
            if self.fusion is not None:
                self.fusion.activate()
        except BaseException:
            self.__exit__()
            raise
        self.load_seconds = time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        for e in self.extractors:
            e.__exit__()
        self.extractors = []
        if self.detector is not None:
            self.detector.runner.deactivate()
            self.detector = None
        if self.fusion is not None:
            self.fusion.deactivate()

    # -- checks before decoding ------------------------------------------------------------------------
    def check_sources(self, sources: Sequence[Source], skip_missing_audio: bool = False) -> dict[str, object]:
        """Probe every input before any work: readable, has video, has audio when audio features are needed."""
        from abaw_rt.pipeline.decode import probe

        infos = {}
        if self.visual and self.detector_spec is None and any(s.is_video for s in sources):
            self._no_detector()
        for s in sources:
            if s.is_video:
                info = probe(s.path)
                if self.audio and not info.has_audio and not skip_missing_audio:
                    raise AbawRtError(
                        f"video '{s.path}': has no audio track, but the model needs audio feature(s) "
                        f"{[e.name for e in self.audio]}; use a visual-only model (e.g. preset expr or au)"
                    )
                infos[s.name] = info
            else:
                if self.audio and not skip_missing_audio:
                    raise AbawRtError(
                        f"image folder '{s.path}': has no audio, but the model needs audio feature(s) "
                        f"{[e.name for e in self.audio]}"
                    )
                infos[s.name] = None
        return infos

    def _no_detector(self):
        raise AbawRtError(
            f"no face detector: the visual extractor(s) {[e.name for e in self.visual]} need face crops from videos; "
            "pass --detector DETECTOR.onnx (or a spec with a [detector] table; the CLI falls back to the built-in one)"
        )

    # -- stages 1-3 ------------------------------------------------------------------------------------
    def features(
        self, source: Source, progress: Progress | None = None, expected: int | None = None, fill: bool = True
    ) -> VideoFeatures:
        """Decode, detect, align and extract one source.

        ``fill``: missing-face rows take the nearest face's features (``store.fill_from_nearest``); off for
        the feature store, which keeps rows as found and fills at read time.
        """
        if source.is_video:
            vf = self._video_features(source, progress, expected)
        else:
            vf = self._image_features(source, progress)
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

    def _video_features(self, source: Source, progress: Progress | None, expected: int | None) -> VideoFeatures:
        from abaw_rt.pipeline.audio_stream import AudioStream
        from abaw_rt.pipeline.decode import VideoDecoder, prefetch
        from abaw_rt.pipeline.extractors import CropBatcher, audio_coverage
        from abaw_rt.pipeline.faces import FaceTracker

        times = StageTimes()
        wall0 = time.perf_counter()
        visual = [e for e in self.extractors if e.spec.modality == "visual"]
        audio = [e for e in self.extractors if e.spec.modality == "audio"]
        # audio features are made while decoding (constant memory for long videos)
        stream = AudioStream(audio, timer=lambda name, s: times.add(f"extract:{name}", s)) if audio else None
        decoder = VideoDecoder(
            source.path,
            threads=self.config.decode_threads,
            audio=bool(audio),
            max_side=self.config.max_side,
            audio_sink=stream.put if stream is not None else None,
        )
        chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {e.name: [] for e in visual}
        batcher = CropBatcher(
            visual,
            store=lambda name, idx, feats: chunks[name].append((idx, feats)),
            timer=lambda name, s: times.add(f"extract:{name}", s),
        )
        found: list[bool] = []
        frame_times: list[float] = []
        tracker = None
        if visual:
            if self.detector is None:
                self._no_detector()
            tracker = FaceTracker(
                self.detector.detect,
                self.config.detect_every,
                self.config.face,
                on_detect=lambda s: times.add("detect", s),
            )

        def settle(done):
            for frame, face in done:
                face = None if frame.lost else face  # a frame that failed to decode: flagged like a missing face
                found.append(face is not None)
                if face is not None:
                    self._crop_frame(frame, face, visual, batcher, times)
                frame.release()

        if self.config.prefetch > 0:  # decoder thread: "decode" is its time per frame, "decode_wait" ours
            frames = prefetch(
                decoder.frames(), self.config.prefetch, convert=bool(visual), on_frame=lambda s: times.add("decode", s)
            )
            wait_stage = "decode_wait"
        else:
            frames = decoder.frames()
            wait_stage = "decode"
        try:
            while True:
                t = time.perf_counter()
                frame = next(frames, None)
                times.add(wait_stage, time.perf_counter() - t)
                if frame is None:
                    break
                frame_times.append(frame.time)
                if stream is not None:
                    stream.pump(frame.time)
                if tracker is not None:
                    settle(tracker.push(frame))
                else:
                    frame.release()
                if progress and (frame.index % 10 == 0):
                    progress(source.name, frame.index + 1, expected)
        finally:
            frames.close()
        if tracker is not None:
            settle(tracker.finish())
        batcher.flush()
        n = len(frame_times)
        if progress:
            progress(source.name, n, n)
        feats: dict[str, np.ndarray] = {}
        for e in visual:
            arr = np.zeros((n, e.spec.dim), dtype=np.float32)
            for idx, f in chunks[e.name]:
                arr[idx] = f
            feats[e.name] = arr
        ft = np.asarray(frame_times, dtype=np.float64)
        track = stream if stream is not None and stream.start is not None else None  # start/end, as AudioTrack
        audio_feats = stream.finish(ft) if stream is not None and decoder.stats.audio_stream else {}
        skipped = []
        for e in audio:
            if not decoder.stats.audio_stream:
                if self.fusion is not None:
                    raise AbawRtError(
                        f"video '{source.path}': has no audio track, but the model needs audio feature '{e.name}'"
                    )
                skipped.append(e.name)  # extract: a video without audio keeps only its visual features
                continue
            feats[e.name] = audio_feats[e.name]
        fps = _measured_fps(ft) or decoder.stats.declared_fps
        face_found = np.asarray(found, dtype=bool) if visual else np.ones(n, dtype=bool)
        info = {
            "decode": {
                "errors": decoder.stats.decode_errors,
                "non_increasing_timestamps": decoder.stats.non_increasing,
                "threads": self.config.decode_threads,
                "prefetch": self.config.prefetch,
                "declared_fps": decoder.stats.declared_fps,
                "size": list(decoder.stats.source_size or ()),
                "scaled_to": list(decoder.stats.scaled_to) if decoder.stats.scaled_to else None,
                **decoder.stats.facts(),  # display rotation, lost (filled) frames
            },
            "faces": {
                "used": bool(visual),
                "found": int(face_found.sum()) if visual else None,
                "missing": int((~face_found).sum()) if visual else None,
                "detections": tracker.detections if tracker else 0,
                "detect_every": self.config.detect_every,
                "choice": self.config.face.value,
            },
            "audio": {
                "used": bool(audio),
                "track": track is not None,
                "stream": decoder.stats.audio_track,  # which of several tracks (FFmpeg's default choice)
                "seconds": round(stream.seconds if stream is not None else decoder.stats.audio_seconds, 3),
                "start_s": round(track.start, 4) if track is not None else None,
                "frame_coverage": round(audio_coverage(track, ft), 4) if audio else None,
                "skipped_extractors": skipped,
            },
        }
        return VideoFeatures(source, feats, face_found, ft, fps, times, info, wall=time.perf_counter() - wall0)

    def _crop_frame(self, frame, face, visual, batcher, times: StageTimes) -> None:
        from abaw_rt.pipeline.faces import crop_transform, warp

        with times.time("rgb"):
            rgb = frame.rgb()  # already converted by the decoder thread when prefetching
        with times.time("align"):
            made: dict[tuple, np.ndarray] = {}
            for e in visual:
                key = (e.spec.crop, e.image.size, e.spec.margin)
                if key not in made:
                    made[key] = warp(rgb, crop_transform(face, e.spec.crop, e.image.size, e.spec.margin), e.image.size)
        for e in visual:  # a full batch runs its extractor here (timed as extract:<name>)
            batcher.add(e.name, frame.index, made[(e.spec.crop, e.image.size, e.spec.margin)])

    def _image_features(self, source: Source, progress: Progress | None) -> VideoFeatures:
        from abaw_rt.errors import require_module
        from abaw_rt.pipeline.extractors import CropBatcher

        cv2 = require_module("cv2", "video")
        times = StageTimes()
        wall0 = time.perf_counter()
        visual = [e for e in self.extractors if e.spec.modality == "visual"]
        images = _frame_images(source.path)
        n = max(images)
        chunks: dict[str, list] = {e.name: [] for e in visual}
        batcher = CropBatcher(
            visual,
            store=lambda name, idx, feats: chunks[name].append((idx, feats)),
            timer=lambda name, s: times.add(f"extract:{name}", s),
        )
        found = np.zeros(n, dtype=bool)
        for number in sorted(images):
            with times.time("decode"):
                bgr = cv2.imread(str(images[number]), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise AbawRtError(f"image '{images[number]}': not a readable image")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            found[number - 1] = True
            with times.time("align"):  # the crops are already aligned: only resized to each extractor's input
                crops = {e.name: cv2.resize(rgb, e.image.size[::-1], interpolation=cv2.INTER_LINEAR) for e in visual}
            for e in visual:
                batcher.add(e.name, number - 1, crops[e.name])
            if progress and number % 10 == 0:
                progress(source.name, number, n)
        batcher.flush()
        feats = {}
        for e in visual:
            arr = np.zeros((n, e.spec.dim), dtype=np.float32)
            for idx, f in chunks[e.name]:
                arr[idx] = f
            feats[e.name] = arr
        ft = np.arange(n, dtype=np.float64) / IMAGE_FOLDER_FPS
        info = {
            "decode": {"images": len(images), "frames_from_numbers": n, "fps_assumed": IMAGE_FOLDER_FPS},
            "faces": {
                "used": True,
                "found": int(found.sum()),
                "missing": int((~found).sum()),
                "detections": 0,
                "note": "aligned crops: missing frame numbers are frames without a face",
            },
            "audio": {"used": False, "track": False},
        }
        return VideoFeatures(source, feats, found, ft, None, times, info, wall=time.perf_counter() - wall0)

    def extract(self, source: Source, store, progress: Progress | None = None, expected: int | None = None) -> dict:
        """Stages 1-3 into the feature store (``abaw_rt.store.FeatureStore``); returns the source's report."""
        vf = self.features(source, progress, expected, fill=False)
        specs = {e.name: (e.dim, e.modality) for e in self.extractor_specs if e.name in vf.features}
        t = time.perf_counter()
        store.write(source.name, vf.features, vf.face_found, specs, fps=vf.fps)
        vf.times.add("write", time.perf_counter() - t)
        return self._report(vf, vf.wall + (time.perf_counter() - t))

    # -- stages 4-5 ------------------------------------------------------------------------------------
    def infer(self, source: Source, progress: Progress | None = None, expected: int | None = None):
        """Whole-source inference: features, windows through the fusion runner, stitching and decisions."""
        from abaw_rt.pipeline.outputs import VideoPrediction
        from abaw_rt.pipeline.segments import plan_segments, run_segments
        from abaw_rt.pipeline.stitch import Stitcher, decide, to_probabilities

        if self.fusion is None:
            raise AbawRtError("this pipeline has no fusion model (it was built for feature extraction)")
        wall0 = time.perf_counter()
        vf = self.features(source, progress, expected)
        times = vf.times
        cfg = self.model_cfg
        inputs = {
            m: np.concatenate([vf.features[f.name] for f in cfg.features if f.modality == m], axis=1)
            for m in cfg.modalities
        }
        vf.features.clear()  # now copied into inputs: n x dims floats, hundreds of MB for a long video
        plan = plan_segments(vf.frames, self.window, self.stride)
        widths = {s.name: s.shape[-1] for s in self.fusion.output_specs}
        stitcher = Stitcher(vf.frames, widths, self.config.merge)
        for seg, out in run_segments(
            self.fusion, inputs, plan, self.config.segment_batch, on_batch=lambda s, k: times.add("fusion", s, k)
        ):
            with times.time("stitch"):
                stitcher.add(seg.start, {h: to_probabilities(h, v) for h, v in out.items()})
        with times.time("stitch"):
            merged = stitcher.result()
            decisions = {h: decide(h, v) for h, v in merged.items()}
        wall = time.perf_counter() - wall0
        report = self._report(vf, wall, plan_count=len(plan))
        return VideoPrediction(
            name=source.name,
            source=source.path,
            frame_times=vf.frame_times,
            face_found=vf.face_found,
            merged=merged,
            decisions=decisions,
            report=report,
        )

    def _report(self, vf: VideoFeatures, wall: float, plan_count: int | None = None) -> dict:
        duration = _duration(vf.frame_times, vf.fps)
        fusion = self.fusion
        report = {
            "source": str(vf.source.path),
            "name": vf.source.name,
            "kind": vf.source.kind,
            "frames": vf.frames,
            "duration_s": round(duration, 4),
            "fps": round(vf.fps, 4) if vf.fps else None,
            "wall_s": round(wall, 4),
            "realtime_factor": round(duration / wall, 3) if wall > 0 else None,
            "frames_per_s": round(vf.frames / wall, 2) if wall > 0 else None,
            "model_load_s": round(self.load_seconds, 4) if self.load_seconds is not None else None,
            "stages": vf.times.summary(wall),
            **vf.info,
            "threads": {"decode": self.config.decode_threads, "inference": self.config.infer_threads or "default"},
            "peak_rss_mb": peak_rss_mb(),
            "environment": environment(),
        }
        if fusion is not None:
            report["model"] = {
                "backend": fusion.name,
                "precision": fusion.precision,
                "device": self.config.device,
                "heads": list(self.model_cfg.heads),
                "features": [f"{f.name}:{f.modality}:{f.dim}" for f in self.model_cfg.features],
                "artefact": str(
                    getattr(fusion, "path", None)
                    or getattr(fusion, "plan", None)
                    or getattr(getattr(fusion, "checkpoint", None), "path", "")
                ),
            }
            report["segments"] = {
                "window": self.window,
                "stride": self.stride,
                "count": plan_count,
                "merge": self.config.merge.value,
                "batch": self.config.segment_batch,
            }
        report["extractors"] = {e.name: str(e.onnx) for e in self.extractor_specs}
        if self.detector_spec is not None and self.visual:
            report["detector"] = str(self.detector_spec.onnx)
        return report


def _measured_fps(times: np.ndarray) -> float | None:
    if len(times) < 2:
        return None
    span = float(times[-1] - times[0])
    return (len(times) - 1) / span if span > 0 else None


def _duration(times: np.ndarray, fps: float | None) -> float:
    """Seconds the frames cover: first to last timestamp plus one frame."""
    if len(times) == 0:
        return 0.0
    step = 1.0 / fps if fps else 1.0 / 25.0
    return float(times[-1] - times[0]) + step
