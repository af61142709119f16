"""Defaults layer: a small sample video with a real face and a voice-like audio track, made on the spot (PyAV).

The face is ``sample_face.jpg`` (shipped): a crop of NASA's portrait of astronaut Eileen Collins, public domain,
the same picture as scikit-image's ``data.astronaut()``. It drifts and zooms across a textured background,
leaves the frame for about a second (frames without a face), and comes back; the audio is the demo data's
voice synthesiser with arousal rising from calm to excited halfway through. Used by the README's first
command (``abaw-rt make-sample-video``) and the tests; 16 s at 640 x 360 is about 0.5 MB.
"""

from __future__ import annotations

import fractions
import os
import tempfile
from pathlib import Path

import numpy as np

from abaw_rt.defaults import DEFAULTS_DIR, SAMPLE_FACE_FILE
from abaw_rt.errors import AbawRtError, require_module

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
    cv2 = require_module("cv2", "video")
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
    rng = np.random.default_rng(seed)
    face = face_image().astype(np.float32)
    fh, fw = face.shape[:2]
    coarse = rng.uniform(70, 150, (height // 40 + 2, width // 40 + 2)).astype(np.float32)  # a soft grey wall
    wall = cv2.resize(coarse, (width + 32, height + 32), interpolation=cv2.INTER_CUBIC)
    backdrop = wall[..., None] * np.array([1.0, 0.96, 0.9], np.float32)
    arousal = np.interp(np.arange(frames), [0, frames * 0.45, frames * 0.55, frames], [-0.6, -0.6, 0.7, 0.7])
    wave = voice_waveform(np.random.default_rng([seed, 1]), arousal, float(fps))

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".mp4", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the user's usual mode
    try:
        with av.open(tmp, "w") as c:
            v = c.add_stream("libx264", rate=fps)
            v.width, v.height, v.pix_fmt = width, height, "yuv420p"
            v.options = {"crf": "26", "preset": "veryfast"}
            a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            for i in range(frames):
                x0 = int(8 + 8 * np.sin(i / fps))
                img = backdrop[x0 % 16 : x0 % 16 + height, x0 : x0 + width].copy()
                track = face_track(i, frames, width, height)
                if track is not None:
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
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = i
                frame.time_base = fractions.Fraction(1, fps)
                for p in v.encode(frame):
                    c.mux(p)
            for p in v.encode():
                c.mux(p)
            n = int(frames / fps * SAMPLE_RATE)
            for s in range(0, n, 1024):
                chunk = wave[s : min(s + 1024, n)][None, :]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
                af.sample_rate = SAMPLE_RATE
                af.pts = s
                af.time_base = fractions.Fraction(1, SAMPLE_RATE)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
