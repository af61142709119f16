"""Defaults layer: a small sample video with a real face and a voice-like audio track, made on the spot (PyAV).

The face is ``sample_face.jpg`` (shipped): a crop of NASA's portrait of astronaut Eileen Collins, public domain,
the same picture as scikit-image's ``data.astronaut()``. It drifts and zooms across a textured background,
leaves the frame for about a second (frames without a face), and comes back; the audio is the demo data's
voice synthesiser with arousal rising from calm to excited halfway through. Used by the README's first
command (``abaw-rt make-sample-video``) and the tests; 16 s at 640 x 360 is about 0.5 MB.

``make_expressive_video`` is the same scene with expressions that change over time, for measurements that
need valence and arousal to vary (a near-constant track makes CCC meaningless): every 2.5-5 s the face becomes
another one, alternating smiling and serious faces of scikit-image's LFW subset (hand-labelled in
``reference_faces``; 25 x 25 gray, upscaled) and the astronaut, cross-faded over 0.4 s; the voice's arousal
changes in episodes of its own. It needs scikit-image (``pip install 'abaw-rt[samples]'``, also in ``[dev]``).
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
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


def _check_video_args(path: Path, seconds: float, fps: int, size: tuple[int, int]) -> int:
    """The frame count, or AbawRtError naming what is off."""
    if not path.parent.is_dir():
        raise AbawRtError(f"output '{path}': folder '{path.parent}' does not exist")
    if seconds <= 0 or seconds > 600 or fps < 1 or fps > 120:
        raise AbawRtError(f"sample video: {seconds} s at {fps} fps; expected 0 < seconds <= 600 and 1 <= fps <= 120")
    width, height = size
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise AbawRtError(f"sample video size {width}x{height}: expected even sides of at least 64 pixels")
    return max(1, int(round(seconds * fps)))


def _write_video(path: Path, images, arousal: np.ndarray, fps: int, size: tuple[int, int], seed: int) -> Path:
    """H.264 pictures and the demo voice for ``arousal`` (one value per frame) as AAC, written atomically."""
    av = require_module("av", "video")
    from abaw_rt.defaults.audio import SAMPLE_RATE
    from abaw_rt.defaults.demo_data import voice_waveform

    wave = voice_waveform(np.random.default_rng([seed, 1]), arousal, float(fps))
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp, av.open(str(tmp), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        v.options = {"crf": "26", "preset": "veryfast"}
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        _write_frames(av, c, v, images, fps)
        _write_audio(av, c, a, wave[: int(len(arousal) / fps * SAMPLE_RATE)], SAMPLE_RATE)
    return path


def make_sample_video(
    path: Path, seconds: float = 16.0, fps: int = 25, size: tuple[int, int] = (640, 360), seed: int = 0
) -> Path:
    """Write the sample video (H.264 + AAC) atomically; returns its path.

    Args:
        path: output file; its suffix picks the container (.mp4, .mkv, .mov).
        seconds, fps, size: length, frame rate and (width, height).
        seed: for the background texture and the voice.
    """
    path = Path(path)
    frames = _check_video_args(path, seconds, fps, size)
    arousal = np.interp(np.arange(frames), [0, frames * 0.45, frames * 0.55, frames], [-0.6, -0.6, 0.7, 0.7])
    face = face_image().astype(np.float32)
    return _write_video(path, _frames(frames, fps, size, np.random.default_rng(seed), lambda i: face), arousal, fps,
                        size, seed)


EXPRESSIVE_FACE_SIDE = 256  # every face is resized to this square before pasting (LFW's 25 x 25 upscaled)
EXPRESSIVE_FADE_S = 0.4  # cross-fade between two faces, seconds


@dataclass(frozen=True)
class ExpressivePlan:
    """What ``make_expressive_video`` shows: faces in episodes and the voice's arousal, per frame.

    ``face_a``/``face_b`` index ``names``; frame i shows ``(1 - blend[i]) * face_a[i] + blend[i] * face_b[i]``
    (``blend`` is 0 outside cross-fades), unless ``face_track`` puts the face out of frame.
    """

    names: tuple[str, ...]  # "astronaut" or "lfwNN" (index into skimage's lfw_subset)
    smiling: tuple[bool, ...]  # per name: hand label (reference_faces.LFW_SMILING; the astronaut smiles)
    face_a: np.ndarray  # (frames,) int
    face_b: np.ndarray  # (frames,) int
    blend: np.ndarray  # (frames,) float in [0, 1]
    arousal: np.ndarray  # (frames,) the voice's arousal, -1..1

    def smiling_share(self) -> np.ndarray:
        """(frames,) how much of the face shown is a smiling one (0..1)."""
        s = np.asarray(self.smiling, dtype=np.float64)
        return (1 - self.blend) * s[self.face_a] + self.blend * s[self.face_b]


def expressive_plan(frames: int, fps: float, seed: int = 0) -> ExpressivePlan:
    """Episodes of 2.5-5 s, smiling and serious faces alternating (each group shuffled, then cycled), and voice
    arousal in episodes of 2-6 s at levels in [-0.7, 0.8] with 0.5 s ramps, independent of the faces."""
    from abaw_rt.defaults.demo_data import _moving_average
    from abaw_rt.defaults.reference_faces import LFW_NOT_SMILING, LFW_SMILING

    rng = np.random.default_rng([seed, 2])
    smile = ["astronaut"] + [f"lfw{i:02d}" for i in rng.permutation(LFW_SMILING)]
    serious = [f"lfw{i:02d}" for i in rng.permutation(LFW_NOT_SMILING)]
    names = tuple(smile + serious)
    starts, order = [0], []
    while starts[-1] < frames:
        group = serious if len(order) % 2 else smile  # episodes 0, 2, 4, ... smile
        order.append(names.index(group[(len(order) // 2) % len(group)]))
        starts.append(starts[-1] + int(rng.uniform(2.5, 5.0) * fps))
    episode = np.searchsorted(starts, np.arange(frames), side="right") - 1
    face_a, face_b = np.asarray(order)[episode], np.asarray(order)[episode].copy()
    blend = np.zeros(frames)
    half = EXPRESSIVE_FADE_S * fps / 2
    for k, s in enumerate(starts[1:-1], start=1):  # fade from episode k-1 into k around its start
        for i in range(max(0, int(s - half)), min(frames, int(np.ceil(s + half)))):
            face_a[i], face_b[i], blend[i] = order[k - 1], order[k], (i - (s - half)) / (2 * half)
    level, t = np.zeros(frames), 0
    while t < frames:
        n = int(rng.uniform(2.0, 6.0) * fps)
        level[t : t + n] = rng.uniform(-0.7, 0.8)
        t += n
    arousal = _moving_average(level, int(0.5 * fps))
    return ExpressivePlan(names, tuple(n in smile for n in names), face_a, face_b, np.clip(blend, 0, 1), arousal)


def expressive_faces(names) -> dict[str, np.ndarray]:
    """{name: (S, S, 3) float32 RGB} at ``EXPRESSIVE_FACE_SIDE``: LFW faces upscaled bicubically (gray to RGB),
    the astronaut's annotated face box cut square as tightly as LFW's crops."""
    cv2 = require_module("cv2", "video")
    from abaw_rt.defaults.reference_faces import ASTRONAUT_FACE_BOX, astronaut, lfw_faces, square_crop

    side = EXPRESSIVE_FACE_SIDE
    out = {}
    for name in names:
        if name == "astronaut":
            img = square_crop(astronaut(), ASTRONAUT_FACE_BOX, 0.0, side)
        else:
            g = cv2.resize(lfw_faces([int(name[3:])])[0], (side, side), interpolation=cv2.INTER_CUBIC)
            img = np.repeat(g[:, :, None], 3, axis=2)
        out[name] = img.astype(np.float32)
    return out


def make_expressive_video(
    path: Path, seconds: float = 40.0, fps: int = 25, size: tuple[int, int] = (640, 360), seed: int = 0
) -> tuple[Path, ExpressivePlan]:
    """Write the expressive sample (H.264 + AAC) atomically: the sample's scene and face path, faces that change
    every few seconds (``expressive_plan``) and a voice whose arousal changes in its own episodes.

    Returns:
        the path and the plan (which face when, the voice's arousal), for measurements against what was shown.
    """
    path = Path(path)
    frames = _check_video_args(path, seconds, fps, size)
    plan = expressive_plan(frames, fps, seed)
    faces = expressive_faces(plan.names)
    stack = np.stack([faces[n] for n in plan.names])

    def face_at(i: int) -> np.ndarray:
        b = plan.blend[i]
        return stack[plan.face_a[i]] if b == 0 else (1 - b) * stack[plan.face_a[i]] + b * stack[plan.face_b[i]]

    images = _frames(frames, fps, size, np.random.default_rng(seed), face_at)
    return _write_video(path, images, plan.arousal, fps, size, seed), plan


def _frames(frames: int, fps: int, size: tuple[int, int], rng: np.random.Generator, face_at):
    """The sample's pictures, (H, W, 3) uint8: the face (``face_at(i)``, float32 RGB) drifting over a soft grey wall
    that pans a little."""
    cv2 = require_module("cv2", "video")
    width, height = size
    coarse = rng.uniform(70, 150, (height // 40 + 2, width // 40 + 2)).astype(np.float32)  # a soft grey wall
    wall = cv2.resize(coarse, (width + 32, height + 32), interpolation=cv2.INTER_CUBIC)
    backdrop = wall[..., None] * np.array([1.0, 0.96, 0.9], np.float32)
    for i in range(frames):
        x0 = int(8 + 8 * np.sin(i / fps))
        img = backdrop[x0 % 16 : x0 % 16 + height, x0 : x0 + width].copy()
        track = face_track(i, frames, width, height)
        if track is not None:
            _paste_face(cv2, img, face_at(i), track)
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
