"""Pipeline layer, stage 1 (audio): the resampled track of a video, mono 16 kHz float, placed by timestamps.

``_Resampler`` converts whatever the container holds; ``_assemble`` joins the chunks (contiguous where
they follow on, placed by timestamp across real gaps) into an ``AudioTrack``; ``audio_stream`` does the
same chunk by chunk for long videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUDIO_RATE = 16000  # Hz, mono (Zhou et al. 2023, "Pre-processing")
_GAP_S = 0.02  # audio chunks further than this from where the previous one ended are placed by timestamp


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


class _Resampler:
    """``av.AudioResampler`` to mono 16 kHz float that survives a track changing its format, layout or rate
    mid-stream (a damaged or spliced file): the old resampler is flushed and a new one takes over."""

    def __init__(self, av, stats):
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
