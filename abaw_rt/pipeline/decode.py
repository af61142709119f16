"""Pipeline layer, stage 1: streaming decode with PyAV: frames with their timestamps, audio as mono 16 kHz.

Frames are handed out one at a time and converted to RGB only when asked, each target size through
its own ``VideoReformatter`` (one reformatter serving two sizes rebuilds its scaler every frame).
``prefetch`` runs the decoder in a thread a few frames ahead (PyAV releases the GIL while decoding
and converting), so that decoding overlaps with detection and feature extraction.
Audio is decoded in the same demux pass, resampled to mono 16 kHz float with ``av.AudioResampler``
(flushed at the end) and kept with the timestamp of its first sample, so that it can be aligned to
the frames by time rather than by counting: variable frame rate, audio that starts late or ends
early and wrong container frame counts all come out right.
"""

from __future__ import annotations

import queue
import threading
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import missing_reason

AUDIO_RATE = 16000  # Hz, mono (PAPER.md, "Pre-processing")
TRUNCATED_BELOW = 0.9  # decoded frames covering less than this share of the declared duration: a broken file
_GAP_S = 0.02  # audio chunks further than this from where the previous one ended are placed by timestamp


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


@dataclass(frozen=True)
class AudioTrack:
    """A mono waveform and the presentation time of its first sample."""

    samples: np.ndarray  # float32 (N,) in [-1, 1]
    start: float  # seconds, on the same clock as the video frames' timestamps
    rate: int = AUDIO_RATE

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.rate

    def on_timeline(self, origin: float, length: int) -> np.ndarray:
        """``length`` samples starting at time ``origin``: the track where it has audio, silence elsewhere."""
        out = np.zeros(length, dtype=np.float32)
        offset = int(round((self.start - origin) * self.rate))
        src_lo, dst_lo = max(0, -offset), max(0, offset)
        n = min(len(self.samples) - src_lo, length - dst_lo)
        if n > 0:
            out[dst_lo : dst_lo + n] = self.samples[src_lo : src_lo + n]
        return out


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
    """The first video stream, with its codec parameters (a damaged index can leave a stream without them)."""
    if not container.streams.video:
        raise AbawRtError(f"video '{path}': has no video stream (streams: {[s.type for s in container.streams]})")
    v = container.streams.video[0]
    if v.codec_context is None:
        raise AbawRtError(f"video '{path}': its video stream has no codec parameters (damaged or truncated file)")
    return v


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
    """One decoded frame: its index, presentation time and (on demand) RGB pixels at any size."""

    __slots__ = ("index", "time", "_frame", "_decoder", "_rgb")

    def __init__(self, index: int, time: float, frame, decoder: "VideoDecoder"):
        self.index = index  # 0-based position in presentation order
        self.time = time  # seconds
        self._frame = frame
        self._decoder = decoder
        self._rgb = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the decoded frame."""
        return self._frame.width, self._frame.height

    def rgb(self) -> np.ndarray:
        """Full-size RGB, (H, W, 3) uint8, C-contiguous (cached)."""
        if self._rgb is None:
            self._rgb = self._decoder._convert(self._frame, self._frame.width, self._frame.height)
        return self._rgb

    def rgb_at(self, width: int, height: int) -> np.ndarray:
        """RGB scaled to (width, height), (height, width, 3) uint8, through the decoder's reformatter for that size."""
        if (width, height) == self.size:
            return self.rgb()
        return self._decoder._convert(self._frame, width, height)

    def release(self) -> None:
        """Drop the pixels (the pipeline holds at most a detection interval of frames)."""
        self._frame = None
        self._rgb = None


@dataclass
class DecodeStats:
    """What decoding found, for the report (and the truncation check)."""

    frames: int = 0
    decode_errors: int = 0  # packets the decoder rejected (corrupt data); the frames after them still count
    first_time: float | None = None
    last_time: float | None = None
    audio_seconds: float = 0.0
    audio_stream: bool = False  # the container has an audio track
    declared_fps: float | None = None  # the container's average frame rate
    declared_duration: float | None = None  # seconds the video stream declares (None when it does not say)
    non_increasing: int = 0  # frames whose timestamp did not increase (nudged forward by 1 us)
    source_size: tuple[int, int] | None = None  # (width, height) of the decoded frames
    scaled_to: tuple[int, int] | None = None  # (width, height) they were scaled down to (longer side > max_side)

    @property
    def covered_seconds(self) -> float:
        """First to last timestamp plus one frame period."""
        if self.first_time is None:
            return 0.0
        step = 1.0 / self.declared_fps if self.declared_fps else 0.04
        return self.last_time - self.first_time + step


class VideoDecoder:
    """Streams a video's frames; after the frames are exhausted, ``audio`` holds the resampled track.

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
        self._reformatters: dict[tuple[int, int], object] = {}  # one per target size

    def _convert(self, frame, width: int, height: int) -> np.ndarray:
        if frame is None:
            raise AbawRtError(f"video '{self.path}': frame pixels were released before use (pipeline bug)")
        ref = self._reformatters.get((width, height))
        if ref is None:
            from av.video.reformatter import VideoReformatter

            ref = self._reformatters[(width, height)] = VideoReformatter()
        return np.ascontiguousarray(ref.reformat(frame, width=width, height=height, format="rgb24").to_ndarray())

    def _fit(self, frame):
        """The frame itself, or a copy scaled down (same pixel format) when its longer side exceeds max_side."""
        if self.stats.source_size is None:
            self.stats.source_size = (frame.width, frame.height)
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

    def frames(self) -> Iterator[DecodedFrame]:
        """Yield frames in presentation order; raise AbawRtError when none at all can be decoded."""
        av = require_module("av", "video")
        container = _open(self.path)
        try:
            vstream = _video_stream(container, self.path)
            if self.threads != 1:
                vstream.thread_type = "AUTO"  # frame and slice threads
            vstream.codec_context.thread_count = self.threads
            streams = [vstream]
            astream = container.streams.audio[0] if (self.want_audio and container.streams.audio) else None
            resampler = None
            chunks: list[tuple[float | None, np.ndarray]] = []
            keep = self.audio_sink or (lambda t, x: chunks.append((t, x)))
            if astream is not None:
                streams.append(astream)
                resampler = _Resampler(av, self.stats)
            index = 0
            last_time = None
            self.stats.declared_fps = float(vstream.average_rate) if vstream.average_rate else None
            self.stats.audio_stream = bool(container.streams.audio)
            if vstream.duration is not None and vstream.time_base is not None:
                self.stats.declared_duration = float(vstream.duration * vstream.time_base)
            fallback_rate = self.stats.declared_fps or 25.0
            for packet in container.demux(*streams):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    self.stats.decode_errors += 1
                    continue
                if packet.stream is astream:
                    for af in decoded:
                        for out in resampler.resample(af):
                            keep(out.time, out.to_ndarray().reshape(-1))
                    continue
                for vf in decoded:
                    t = vf.time
                    if t is None:  # no timestamp: continue the clock at the declared rate
                        t = 0.0 if last_time is None else last_time + 1.0 / fallback_rate
                    if last_time is not None and t <= last_time:
                        self.stats.non_increasing += 1
                        t = last_time + 1e-6
                    last_time = t
                    if self.stats.first_time is None:
                        self.stats.first_time = t
                    self.stats.last_time = t
                    self.stats.frames = index + 1
                    yield DecodedFrame(index, t, self._fit(vf), self)
                    index += 1
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


class _Resampler:
    """``av.AudioResampler`` to mono 16 kHz float that survives a track changing its format, layout or rate
    mid-stream (a damaged or spliced file): the old resampler is flushed and a new one takes over."""

    def __init__(self, av, stats: DecodeStats):
        self._av = av
        self._stats = stats
        self._r = self._new()

    def _new(self):
        return self._av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)

    def resample(self, frame) -> list:
        try:
            return list(self._r.resample(frame))
        except ValueError:  # "Frame does not match AudioResampler setup"
            done = self.flush()
            self._r = self._new()
            try:
                return done + list(self._r.resample(frame))
            except (ValueError, self._av.error.FFmpegError):
                self._stats.decode_errors += 1  # an audio frame nothing can convert: dropped (silence there)
                return done

    def flush(self) -> list:
        try:
            return list(self._r.resample(None))
        except (ValueError, self._av.error.FFmpegError):
            return []


def _assemble(chunks: list[tuple[float | None, np.ndarray]]) -> AudioTrack | None:
    """Join resampled chunks: contiguous where they follow on, placed by timestamp across real gaps."""
    chunks = [(t, x) for t, x in chunks if len(x)]
    if not chunks:
        return None
    start = chunks[0][0] if chunks[0][0] is not None else 0.0
    pieces: list[tuple[int, np.ndarray]] = []
    pos = 0
    for t, x in chunks:
        if t is not None:
            at = int(round((t - start) * AUDIO_RATE))
            if abs(at - pos) > _GAP_S * AUDIO_RATE:
                pos = max(at, 0)
        pieces.append((pos, x))
        pos += len(x)
    total = max(p + len(x) for p, x in pieces)
    samples = np.zeros(total, dtype=np.float32)
    for p, x in pieces:
        samples[p : p + len(x)] = x
    return AudioTrack(samples=samples, start=float(start))


def prefetch(
    frames: Iterator[DecodedFrame],
    depth: int = 8,
    convert: bool = True,
    on_frame: Callable[[float], None] | None = None,
) -> Iterator[DecodedFrame]:
    """Decode in a background thread up to ``depth`` frames ahead; yield the frames in order.

    Args:
        frames: ``VideoDecoder.frames()``.
        depth: frames decoded ahead (memory: ``depth`` full-size frames).
        convert: also make each frame's full-size RGB in the thread.
        on_frame: callback(seconds) with the decoder thread's time for each frame (decode and convert).

    Errors raised while decoding (e.g. AbawRtError for a broken file) are raised here, in order.
    Closing the generator early stops the thread and closes the file.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            start = _time.perf_counter()
            for f in frames:
                if convert:
                    f.rgb()
                if not put((f, _time.perf_counter() - start)):
                    return
                start = _time.perf_counter()
            put((end, 0.0))
        except BaseException as exc:  # handed to the consumer, raised there
            put((exc, 0.0))
        finally:
            frames.close()

    thread = threading.Thread(target=work, name="abaw-rt-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, seconds = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            if on_frame:
                on_frame(seconds)
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
