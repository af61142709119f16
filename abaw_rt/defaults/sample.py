"""Defaults layer: a small sample video with a real face and a voice-like audio track, made on the spot (PyAV).

The face is ``sample_face.jpg`` (shipped): a crop of NASA's portrait of astronaut Eileen Collins, public domain,
the same picture as scikit-image's ``data.astronaut()``. It drifts and zooms across a textured background,
leaves the frame for about a second (frames without a face), and comes back; the audio is the demo data's
voice synthesiser with arousal rising from calm to excited halfway through. Used by the README's first
command (``abaw-rt make-sample-video``) and the tests; 16 s at 640 x 360 is about 0.5 MB.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

from abaw_rt.defaults import DEFAULTS_DIR, SAMPLE_FACE_FILE
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_path

SAMPLE_FACE = DEFAULTS_DIR / SAMPLE_FACE_FILE


def face_image() -> np.ndarray:
    """The shipped face crop, (H, W, 3) uint8 RGB."""
    cv2 = require_module("cv2", "video")
    if not SAMPLE_FACE.is_file():
        raise AbawRtError(f"sample face '{SAMPLE_FACE}': missing from the installed package")
    bgr = cv2.imread(str(SAMPLE_FACE), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AbawRtError(f"sample face '{SAMPLE_FACE}': not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _feathered_ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2)
    return np.clip((1.0 - r) / 0.12, 0.0, 1.0)[..., None]


def face_track(i: int, frames: int, width: int, height: int) -> tuple[float, float, float] | None:
    """(centre x, centre y, face height) in pixels at frame ``i``, or None while the face is out of frame."""
    u = i / max(frames - 1, 1)
    if 0.56 <= u < 0.63:  # about a second without a face
        return None
    side = height * (0.55 + 0.1 * np.sin(2 * np.pi * u))
    cx = width * (0.32 + 0.36 * (0.5 - 0.5 * np.cos(2 * np.pi * 1.5 * u)))
    cy = height * (0.5 + 0.04 * np.sin(2 * np.pi * 3 * u))
    return float(cx), float(cy), float(side)


def make_sample_video(
    path: Path, seconds: float = 16.0, fps: int = 25, size: tuple[int, int] = (640, 360), seed: int = 0
) -> Path:
    """Write the sample video (H.264 + AAC) atomically; returns its path.

    Args:
        path: output file; its suffix picks the container (.mp4, .mkv, .mov).
        seconds, fps, size: length, frame rate and (width, height).
        seed: for the background texture and the voice.
    """
    av = require_module("av", "video")
    from abaw_rt.defaults.audio import SAMPLE_RATE
    from abaw_rt.defaults.demo_data import voice_waveform

    path = Path(path)
    if not path.parent.is_dir():
        raise AbawRtError(f"output '{path}': folder '{path.parent}' does not exist")
    if seconds <= 0 or seconds > 600 or fps < 1 or fps > 120:
        raise AbawRtError(f"sample video: {seconds} s at {fps} fps; expected 0 < seconds <= 600 and 1 <= fps <= 120")
    width, height = size
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise AbawRtError(f"sample video size {width}x{height}: expected even sides of at least 64 pixels")
    frames = max(1, int(round(seconds * fps)))
    arousal = np.interp(np.arange(frames), [0, frames * 0.45, frames * 0.55, frames], [-0.6, -0.6, 0.7, 0.7])
    wave = voice_waveform(np.random.default_rng([seed, 1]), arousal, float(fps))
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp, av.open(str(tmp), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "26", "preset": "veryfast"}
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        _write_frames(av, c, v, _frames(frames, fps, size, np.random.default_rng(seed)), fps)
        _write_audio(av, c, a, wave[: int(frames / fps * SAMPLE_RATE)], SAMPLE_RATE)
    return path


def _frames(frames: int, fps: int, size: tuple[int, int], rng: np.random.Generator):
    """The sample's pictures, (H, W, 3) uint8: the face drifting over a soft grey wall that pans a little."""
    cv2 = require_module("cv2", "video")
    width, height = size
    face = face_image().astype(np.float32)
    coarse = rng.uniform(70, 150, (height // 40 + 2, width // 40 + 2)).astype(np.float32)  # a soft grey wall
    wall = cv2.resize(coarse, (width + 32, height + 32), interpolation=cv2.INTER_CUBIC)
    backdrop = wall[..., None] * np.array([1.0, 0.96, 0.9], np.float32)
    for i in range(frames):
        x0 = int(8 + 8 * np.sin(i / fps))
        img = backdrop[x0 % 16 : x0 % 16 + height, x0 : x0 + width].copy()
        track = face_track(i, frames, width, height)
        if track is not None:
            _paste_face(cv2, img, face, track)
        yield np.clip(img, 0, 255).astype(np.uint8)


def _paste_face(cv2, img: np.ndarray, face: np.ndarray, track: tuple[float, float, float]) -> None:
    """Blend the face, scaled to the track's height, into ``img`` around the track's centre (clipped)."""
    height, width = img.shape[:2]
    fh, fw = face.shape[:2]
    cx, cy, side = track
    scale = side / fh
    w_, h_ = max(2, int(fw * scale)), max(2, int(fh * scale))
    patch = cv2.resize(face, (w_, h_), interpolation=cv2.INTER_AREA)
    x1, y1 = int(cx - w_ / 2), int(cy - h_ / 2)
    sx1, sy1 = max(0, -x1), max(0, -y1)
    dx1, dy1 = max(0, x1), max(0, y1)
    dx2, dy2 = min(width, x1 + w_), min(height, y1 + h_)
    if dx2 > dx1 and dy2 > dy1:
        alpha = _feathered_ellipse(h_, w_)[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1]
        src = patch[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1]
        img[dy1:dy2, dx1:dx2] = alpha * src + (1 - alpha) * img[dy1:dy2, dx1:dx2]


def _write_frames(av, container, stream, images, fps: int) -> None:
    for i, img in enumerate(images):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def _write_audio(av, container, stream, wave: np.ndarray, rate: int) -> None:
    for s in range(0, len(wave), 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[s : s + 1024][None, :]), format="flt", layout="mono")
        af.sample_rate = rate
        af.pts = s
        af.time_base = fractions.Fraction(1, rate)
        for p in stream.encode(af):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
