"""Pipeline layer, stages 1-3 for a video file: decode, detect and align faces, extract visual and audio features."""

from __future__ import annotations

import time
from array import array

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.facts import audio_facts, decode_facts, face_facts
from abaw_rt.pipeline.features import FeatureChunks, Progress, VideoFeatures, measured_fps
from abaw_rt.pipeline.inputs import Source
from abaw_rt.pipeline.report import StageTimes


class FaceStage:
    """Frames in order -> one face each (detected every N-th frame, interpolated between) -> aligned crops ->
    batched visual features. At most ``detect_every`` frames are held; ``found`` grows as frames settle."""

    def __init__(self, visual, detector, config, times: StageTimes, tracker=None, store=None):
        from abaw_rt.pipeline.extractors import CropBatcher
        from abaw_rt.pipeline.faces import FaceTracker

        self.visual = visual
        self.times = times
        self.chunks = FeatureChunks(visual)
        store = store or self.chunks.store  # live: a callback taking each frame's features as they come
        self.batcher = CropBatcher(visual, store=store, timer=lambda name, s: times.add(f"extract:{name}", s))
        self.found = array("B")  # 1 byte a frame (a list holds an 8-byte pointer per frame)
        self.tracker = tracker or FaceTracker(
            detector.detect, config.detect_every, config.face, on_detect=lambda s: times.add("detect", s)
        )

    def push(self, frame) -> None:
        self._settle(self.tracker.push(frame))

    def finish(self) -> None:
        """Settle the frames still held and run the last, partial batches."""
        self._settle(self.tracker.finish())
        self.batcher.flush()

    def _settle(self, done) -> None:
        for frame, face in done:
            face = None if frame.lost else face  # a frame that failed to decode: flagged like a missing face
            self.found.append(face is not None)
            if face is not None:
                self._crop(frame, face)
            frame.release()

    def _crop(self, frame, face) -> None:
        from abaw_rt.pipeline.faces import crop_transform, warp

        times = self.times
        with times.time("rgb"):
            rgb = frame.rgb()  # already converted by the decoder thread when prefetching
        with times.time("align"):
            made: dict[tuple, np.ndarray] = {}
            for e in self.visual:
                key = (e.spec.crop, e.image.size, e.spec.margin)
                if key not in made:
                    made[key] = warp(rgb, crop_transform(face, e.spec.crop, e.image.size, e.spec.margin), e.image.size)
        for e in self.visual:  # a full batch runs its extractor here (timed as extract:<name>)
            self.batcher.add(e.name, frame.index, made[(e.spec.crop, e.image.size, e.spec.margin)])


def _frame_source(decoder, config, convert: bool, times: StageTimes):
    """The decoder's frames, from a prefetch thread when ``config.prefetch`` > 0; and the stage their wait counts as."""
    from abaw_rt.pipeline.decode import prefetch

    if config.prefetch > 0:  # decoder thread: "decode" is its time per frame, "decode_wait" ours
        frames = prefetch(decoder.frames(), config.prefetch, convert=convert, on_frame=lambda s: times.add("decode", s))
        return frames, "decode_wait"
    return decoder.frames(), "decode"


def _read_frames(decoder, config, stream, faces, times, report, feed=None) -> array:
    """Run every frame through the audio pump and the face stage; returns the frames' timestamps.

    ``report``: callback(frames done) every 10 frames, or None. ``feed``: a ``WindowFeed`` offered every frame.
    """
    frames, wait_stage = _frame_source(decoder, config, faces is not None, times)
    frame_times = array("d")  # 8 bytes a frame, not a 32-byte Python float in a list
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
            if faces is not None:
                faces.push(frame)
            else:
                frame.release()
            if feed is not None:
                feed.step(frame_times, faces.found if faces is not None else ())
            if report and (frame.index % 10 == 0):
                report(frame.index + 1)
    finally:
        frames.close()
    return frame_times


def _audio_features(audio, stream, stats, ft: np.ndarray, source: Source, strict: bool, feed=None):
    """({name: (n, dim)} audio features, names skipped): a video without audio raises when ``strict``
    (a fusion model needs them), else keeps only its visual features. With ``feed`` the last windows run
    and the ``WindowFeed`` takes their features (none are returned)."""
    audio_feats = {}
    if stream is not None and stats.audio_stream:
        if feed is not None:
            stream.finish_windows(ft)
        else:
            audio_feats = stream.finish(ft)
    feats, skipped = {}, []
    for e in audio:
        if not stats.audio_stream:
            if strict:
                raise AbawRtError(f"video '{source.path}': has no audio track, but the model needs audio feature '{e.name}'")
            skipped.append(e.name)  # extract: a video without audio keeps only its visual features
            continue
        if feed is None:
            feats[e.name] = audio_feats[e.name]
    return feats, skipped


def video_features(
    pipe, source: Source, progress: Progress | None, expected: int | None, windows: bool = False
) -> VideoFeatures:
    """Stages 1-3 of one video with the loaded models of ``pipe`` (a ``Pipeline`` inside its context).

    Audio features are made while decoding (``AudioStream``: constant memory for long videos). ``windows``
    (infer): fusion windows run while decoding (``WindowFeed``); the result's ``features`` stay empty.
    """
    from abaw_rt.pipeline.window_feed import WindowFeed
    from abaw_rt.pipeline.audio_stream import AudioStream
    from abaw_rt.pipeline.decode import VideoDecoder

    times = StageTimes()
    wall0 = time.perf_counter()
    config = pipe.config
    visual = [e for e in pipe.extractors if e.spec.modality == "visual"]
    audio = [e for e in pipe.extractors if e.spec.modality == "audio"]
    stream = AudioStream(audio, timer=lambda name, s: times.add(f"extract:{name}", s)) if audio else None
    decoder = VideoDecoder(
        source.path,
        threads=config.decode_threads,
        audio=bool(audio),
        max_side=config.max_side,
        audio_sink=stream.put if stream is not None else None,
    )
    feed = WindowFeed(pipe, times, stream) if windows else None
    faces = None
    if visual:
        if pipe.detector is None:
            pipe.no_detector()
        faces = FaceStage(visual, pipe.detector, config, times, store=feed.store if feed else None)
    report = (lambda done: progress(source.name, done, expected)) if progress else None
    frame_times = _read_frames(decoder, config, stream, faces, times, report, feed)
    if faces is not None:
        faces.finish()
    n = len(frame_times)
    if progress:
        progress(source.name, n, n)
    feats = faces.chunks.arrays(n) if faces is not None and feed is None else {}
    ft = np.asarray(frame_times, dtype=np.float64)
    audio_feats, skipped = _audio_features(
        audio, stream, decoder.stats, ft, source, strict=pipe.fusion is not None, feed=feed
    )
    feats.update(audio_feats)
    fps = measured_fps(ft) or decoder.stats.declared_fps
    face_found = np.asarray(faces.found, dtype=bool) if faces is not None else np.ones(n, dtype=bool)
    info = {
        "decode": decode_facts(decoder.stats, config),
        "faces": face_facts(bool(visual), face_found, faces.tracker.detections if faces else 0, config),
        "audio": audio_facts(bool(audio), stream, decoder.stats, ft, skipped),
    }
    return VideoFeatures(
        source, feats, face_found, ft, fps, times, info, wall=time.perf_counter() - wall0, windows=feed
    )
