"""Pipeline layer, stage 1: streaming decode with PyAV: frames with their timestamps, audio as mono 16 kHz.

Frames are handed out one at a time and converted to RGB only when asked, each target size through
its own ``VideoReformatter`` (one reformatter serving two sizes rebuilds its scaler every frame).
``stream.reader.FrameReader`` runs the decoder in a thread a few frames ahead (PyAV releases the GIL while
decoding and converting), so that decoding overlaps with detection and feature extraction.
Audio is decoded in the same demux pass, resampled to mono 16 kHz float with ``av.AudioResampler``
(flushed at the end) and kept with the timestamp of its first sample, so that it can be aligned to
the frames by time rather than by counting: variable frame rate, audio that starts late or ends
early and wrong container frame counts all come out right.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import missing_reason
from abaw_rt.pipeline.audio_track import _GAP_S, AUDIO_RATE, AudioTrack, _assemble, _Resampler  # noqa: F401
from abaw_rt.pipeline.orientation import UPRIGHT, Orientation, orientation_of
from abaw_rt.pipeline.report import release_freed_memory
from abaw_rt.pipeline.timeline import Clock, Timeline

TRUNCATED_BELOW = 0.9  # decoded frames covering less than this share of the declared duration: a broken file


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about a video (frame counts and rates may be wrong; timestamps rule)."""

    path: Path
    width: int
    height: int
    fps: float | None  # average frame rate the container declares
    duration: float | None  # seconds, as declared
    frames_declared: int | None  # the container's frame count (0 or None when it does not know)
    has_audio: bool
    codec: str


def _open(path: Path):
    av = require_module("av", "video")
    path = Path(path)
    if not path.exists():
        raise AbawRtError(f"video '{path}': {missing_reason(path, 'file')}")
    if path.is_dir():
        raise AbawRtError(f"video '{path}': is a folder, expected a video file")
    try:
        return av.open(str(path), metadata_errors="replace")  # tags in a damaged file need not be valid UTF-8
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AbawRtError(f"video '{path}': not a readable video ({_ffmpeg_reason(exc)})") from None


def _video_stream(container, path: Path):
    """The best video stream (FFmpeg's choice: not a cover picture), with its codec parameters."""
    if not container.streams.video:
        raise AbawRtError(f"video '{path}': has no video stream (streams: {[s.type for s in container.streams]})")
    v = container.streams.best("video") or container.streams.video[0]
    if v.codec_context is None:
        raise AbawRtError(f"video '{path}': its video stream has no codec parameters (damaged or truncated file)")
    return v


def _audio_stream(container, video):
    """The audio track FFmpeg would pick (``av_find_best_stream``: the default track first), or None."""
    if not container.streams.audio:
        return None
    return container.streams.best("audio", related=video) or container.streams.audio[0]


def audio_track_facts(container, astream) -> dict | None:
    """Which audio track was taken, for the report."""
    if astream is None:
        return None
    cc = astream.codec_context
    return {
        "track": list(container.streams.audio).index(astream),  # 0-based among the audio tracks
        "of": len(container.streams.audio),
        "stream": astream.index,  # the container's stream index
        "language": (astream.metadata or {}).get("language") or astream.language,
        "channels": getattr(cc, "channels", None),
        "default": bool(int(astream.disposition) & 1),
    }


def _ffmpeg_reason(exc) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0]


def probe(path: Path) -> VideoInfo:
    """Open a video and read what its container declares, without decoding.

    Raises:
        AbawRtError: missing file, not a media file (e.g. a text file named .mp4, a truncated MP4 whose
            index is gone), or no video stream.
    """
    path = Path(path)
    with _open(path) as container:
        v = _video_stream(container, path)
        fps = float(v.average_rate) if v.average_rate else None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = None
        return VideoInfo(
            path=path,
            width=v.codec_context.width,
            height=v.codec_context.height,
            fps=fps,
            duration=duration,
            frames_declared=int(v.frames) or None,
            has_audio=bool(container.streams.audio),
            codec=v.codec_context.name,
        )


class DecodedFrame:
    """One decoded frame: its index, presentation time and (on demand) RGB pixels at any size, upright.

    ``lost``: the frame's packet could not be decoded; it stands in for it (the previous frame's pixels)
    so that frame i stays frame i, and the pipeline treats it like a frame without a face.
    """

    __slots__ = ("index", "time", "lost", "_frame", "_decoder", "_rgb")

    def __init__(self, index: int, time: float, frame, decoder: "VideoDecoder", lost: bool = False):
        self.index = index  # 0-based position in presentation order
        self.time = time  # seconds
        self.lost = lost
        self._frame = frame
        self._decoder = decoder
        self._rgb = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame as displayed (after its display rotation)."""
        return self._decoder.orientation.stored_size(self._frame.width, self._frame.height)

    def rgb(self) -> np.ndarray:
        """Full-size RGB, (H, W, 3) uint8, C-contiguous, upright (cached)."""
        if self._rgb is None:
            self._rgb = self._decoder._convert(self._frame, *self.size)
        return self._rgb

    def rgb_at(self, width: int, height: int) -> np.ndarray:
        """Upright RGB scaled to (width, height), (height, width, 3) uint8, through one reformatter per size."""
        if (width, height) == self.size:
            return self.rgb()
        return self._decoder._convert(self._frame, width, height)

    def release(self) -> None:
        """Drop the pixels (the pipeline holds at most a detection interval of frames)."""
        self._frame = None
        self._rgb = None


LOST_LISTED = 100  # lost frames listed by number in the report (all are counted)


@dataclass
class DecodeStats:
    """What decoding found, for the report (and the truncation check)."""

    frames: int = 0  # frames handed out, lost ones (filled) included
    decode_errors: int = 0  # packets the decoder rejected (corrupt data); the frames after them still count
    video_errors: int = 0  # of which video packets
    lost: list[int] = field(default_factory=list)  # 0-based indices of frames filled in for undecodable ones
    first_time: float | None = None
    last_time: float | None = None
    audio_seconds: float = 0.0
    audio_stream: bool = False  # the container has an audio track
    audio_track: dict | None = None  # which track was decoded (index, of, language, channels, default)
    declared_fps: float | None = None  # the container's average frame rate
    declared_duration: float | None = None  # seconds the video stream declares (None when it does not say)
    non_increasing: int = 0  # frames whose timestamp did not increase (nudged forward by 1 us)
    source_size: tuple[int, int] | None = None  # (width, height) of the decoded frames, as stored
    scaled_to: tuple[int, int] | None = None  # (width, height) they were scaled down to (longer side > max_side)
    orientation: Orientation = UPRIGHT  # the display matrix, applied to every frame

    @property
    def covered_seconds(self) -> float:
        """First to last timestamp plus one frame period."""
        if self.first_time is None:
            return 0.0
        step = 1.0 / self.declared_fps if self.declared_fps else 0.04
        return self.last_time - self.first_time + step

    def facts(self) -> dict:
        """The display rotation and the lost frames, for the report's ``decode`` section."""
        return {
            "rotation": self.orientation.rotation,
            "orientation": self.orientation.op,
            "lost_frames": len(self.lost),
            "lost_frame_numbers": [i + 1 for i in self.lost[:LOST_LISTED]],  # 1-based, as in predictions.csv
        }


class VideoDecoder:
    """Streams a video's frames, upright; after the frames are exhausted, ``audio`` holds the resampled track.

    Args:
        path: the video file.
        threads: decoder threads (0: FFmpeg's choice). On few cores, decoder threads compete with
            inference threads; the pipeline sets both deliberately and reports them.
        audio: also decode the audio track (skipped when nothing needs it).
        max_side: frames whose longer side exceeds this are scaled down (aspect kept) as they are decoded,
            so that the pipeline never holds full-size 8K frames (100 MB each as RGB); None: never.
        audio_sink: callback(time, samples) receiving each resampled chunk as it is decoded (from the
            decoding thread), instead of keeping the whole track in ``audio`` (long videos: constant memory;
            ``abaw_rt.pipeline.audio_stream``).

    The display matrix (phone video: rotation, mirroring) is applied to every frame as FFmpeg's command
    line does. Frames are placed by their timestamps: once the video stream has had a decoding error,
    a frame whose packet was sent but never came out is filled in (``DecodedFrame.lost``, the previous
    frame's pixels), so that frame i stays frame i; ``stats.lost`` lists them.
    """

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        audio: bool = True,
        max_side: int | None = None,
        audio_sink: Callable[[float | None, np.ndarray], None] | None = None,
    ):
        self.path = Path(path)
        self.threads = threads
        self.want_audio = audio
        if max_side is not None and max_side < 16:
            raise AbawRtError(f"max_side {max_side}: expected at least 16 pixels (or None)")
        self.max_side = max_side
        self._downscaler = None
        self.audio_sink = audio_sink
        self.audio: AudioTrack | None = None
        self.stats = DecodeStats()
        self.orientation = UPRIGHT
        # one per target size and thread: the faces thread (detector input) and the features thread (crops)
        # convert frames at once, and a scaler context must not be shared between threads
        self._reformatters: dict[tuple[int, int, int], object] = {}

    def _convert(self, frame, width: int, height: int) -> np.ndarray:
        """Upright RGB of (width, height) from a stored frame (scaled at its stored orientation, then turned)."""
        if frame is None:
            raise AbawRtError(f"video '{self.path}': frame pixels were released before use (pipeline bug)")
        w, h = self.orientation.stored_size(width, height)
        key = (w, h, threading.get_ident())
        ref = self._reformatters.get(key)
        if ref is None:
            from av.video.reformatter import VideoReformatter

            ref = self._reformatters[key] = VideoReformatter()
        rgb = np.ascontiguousarray(ref.reformat(frame, width=w, height=h, format="rgb24").to_ndarray())
        return self.orientation.apply(rgb)

    def _fit(self, frame):
        """The frame itself, or a copy scaled down (same pixel format) when its longer side exceeds max_side."""
        if self.stats.source_size is None:
            self.stats.source_size = (frame.width, frame.height)
            self.orientation = self.stats.orientation = orientation_of(frame)
        if self.max_side is None or max(frame.width, frame.height) <= self.max_side:
            return frame
        scale = self.max_side / max(frame.width, frame.height)
        width = max(2, int(frame.width * scale) // 2 * 2)  # even sizes for 4:2:0 chroma
        height = max(2, int(frame.height * scale) // 2 * 2)
        if self._downscaler is None:
            from av.video.reformatter import VideoReformatter

            self._downscaler = VideoReformatter()
        self.stats.scaled_to = (width, height)
        return self._downscaler.reformat(frame, width=width, height=height, interpolation="AREA")

    def _open_streams(self, container):
        """The video stream (threads set), the audio stream or None, and the declared facts in ``stats``."""
        vstream = _video_stream(container, self.path)
        if self.threads != 1:
            vstream.thread_type = "AUTO"  # frame and slice threads
        vstream.codec_context.thread_count = self.threads
        astream = _audio_stream(container, vstream) if self.want_audio else None
        self.stats.declared_fps = float(vstream.average_rate) if vstream.average_rate else None
        self.stats.audio_stream = bool(container.streams.audio)
        self.stats.audio_track = audio_track_facts(container, astream)
        if vstream.duration is not None and vstream.time_base is not None:
            self.stats.declared_duration = float(vstream.duration * vstream.time_base)
        return vstream, astream

    def frames(self) -> Iterator[DecodedFrame]:
        """Yield frames in presentation order; raise AbawRtError when none at all can be decoded."""
        av = require_module("av", "video")
        container = self._open_container()
        try:
            vstream, astream = self._open_streams(container)
            chunks: list[tuple[float | None, np.ndarray]] = []
            keep = self.audio_sink or (lambda t, x: chunks.append((t, x)))
            resampler = _Resampler(av, self.stats) if astream is not None else None
            yield from self._video_frames(av, container, vstream, astream, resampler, keep)
            if resampler is not None:
                for out in resampler.flush():
                    keep(out.time, out.to_ndarray().reshape(-1))
                if self.audio_sink is None:
                    self.audio = _assemble(chunks)
                    self.stats.audio_seconds = 0.0 if self.audio is None else len(self.audio.samples) / AUDIO_RATE
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise AbawRtError(f"video '{self.path}': decoding failed ({_ffmpeg_reason(exc)})") from None
        finally:
            container.close()
            release_freed_memory()  # the container's sample index and what the run freed meanwhile
        self._check_coverage()

    def _open_container(self):
        """The input container (a file here; ``stream.reader.LiveDecoder`` opens cameras, URLs and stdin)."""
        return _open(self.path)

    def _video_frames(self, av, container, vstream, astream, resampler, keep) -> Iterator[DecodedFrame]:
        timeline = Timeline()
        clock = Clock(self.stats, vstream.time_base, self.stats.declared_fps or 25.0)
        previous = None  # the last frame handed out (its pixels stand in for lost frames)
        for packet in container.demux(*([vstream] + ([astream] if astream is not None else []))):
            if packet.stream is vstream:
                timeline.sent(packet)
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                self.stats.decode_errors += 1
                self.stats.video_errors += packet.stream is vstream
                continue
            if packet.stream is not vstream:
                for af in decoded:
                    for out in resampler.resample(af):
                        keep(out.time, out.to_ndarray().reshape(-1))
                continue
            for vf in decoded:
                for pts in timeline.passed(vf.pts, clock.last_pts) if self.stats.video_errors and vf.pts is not None else ():
                    yield self._lost(clock, pts, previous)
                previous = self._fit(vf)
                index = clock.place(vf.pts, vf.time)
                timeline.forget(clock.last_pts)  # else one Python int per packet until the end (about 40 bytes a frame)
                yield DecodedFrame(index, clock.last, previous, self)
        for pts in timeline.passed(None, clock.last_pts) if self.stats.video_errors and previous is not None else ():
            yield self._lost(clock, pts, previous)

    def _lost(self, clock: Clock, pts: int, previous) -> DecodedFrame:
        index = clock.place(pts, float(pts * clock.time_base) if clock.time_base else None)
        self.stats.lost.append(index)
        return DecodedFrame(index, clock.last, previous, self, lost=True)

    def _check_coverage(self) -> None:
        if self.stats.frames == 0:
            errs = f" ({self.stats.decode_errors} packets rejected)" if self.stats.decode_errors else ""
            raise AbawRtError(f"video '{self.path}': no decodable video frames{errs}")
        covered = self.stats.covered_seconds
        declared = self.stats.declared_duration
        if declared and covered < TRUNCATED_BELOW * declared:
            raise AbawRtError(
                f"video '{self.path}': decoded {self.stats.frames} frames covering {covered:.2f} s of the "
                f"{declared:.2f} s its container declares (truncated or corrupt file)"
            )
