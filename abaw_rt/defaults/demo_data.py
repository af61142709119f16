"""Defaults layer: the synthetic training set of the demo model, in the default extractors' feature space (numpy).

No Aff-Wild2-trained weights can be had offline, so the demo fusion model learns from sequences made here:

1. **Latent emotion**: episodes of 1.5-8 s, each a FER2013 class with an intensity (weaker episodes blend
   towards neutral), cross-faded over about half a second; the mixture ``w_t`` (7 values summing to 1) is
   the latent state of every frame.
2. **Targets**: EXPR = the dominant class of ``w_t`` mapped onto ABAW's 8 labels (``FER_TO_ABAW``; "Other"
   is never used); VA = the circumplex mapping ``sum_k w_t[k] * CIRCUMPLEX[k]`` plus a slow wobble of
   sd 0.05, clipped to [-1, 1]. Arousal also carries an *activation* term (sd 0.2, a few seconds long):
   how worked up the person is within one expression, which the face does not show but the voice does.
3. **Visual feature ``fer``** (what the FER extractor would output): evidence = ``w_t`` through a confusion
   matrix (fear-surprise, anger-disgust, sadness-neutral are confused as FER2013 models confuse them),
   logits = gain * log(evidence) + a per-video class bias (people look different at rest) + slow AR(1) and
   white noise, softmaxed. Face dropouts (0.2-3 s spans, about one per 15 s; some videos start without a
   face) take the nearest face's features, as inference does (``abaw_rt.store.fill_from_nearest``).
4. **Audio feature ``logmel``**: a waveform is synthesised (16 kHz): a noise floor at a per-video level, and
   a voice-like harmonic source in talk spurts whose loudness (20 dB per unit of arousal), pitch and
   talk probability rise with arousal; the real numpy log-mel extractor (``abaw_rt.defaults.audio``) turns
   it into features at each frame's time. So audio energy carries arousal, and nothing carries valence.

Everything is seeded; the same seed gives the same set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abaw_rt.defaults.audio import SAMPLE_RATE, frame_times_features
from abaw_rt.store import fill_from_nearest

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NEUTRAL = FER_CLASSES.index("neutral")
# FER2013 class -> ABAW EXPR label (0 Neutral, 1 Anger, 2 Disgust, 3 Fear, 4 Happiness, 5 Sadness, 6 Surprise, 7 Other).
FER_TO_ABAW = (1, 2, 3, 4, 5, 6, 0)
# (valence, arousal) of each class's prototype on Russell's circumplex: our placement of each emotion in its
# usual quadrant (pleasant/unpleasant x activated/deactivated), neutral at the origin. Not measured values.
CIRCUMPLEX = {
    "angry": (-0.60, 0.60),
    "disgust": (-0.60, 0.30),
    "fear": (-0.55, 0.65),
    "happy": (0.75, 0.45),
    "sad": (-0.65, -0.35),
    "surprise": (0.25, 0.70),
    "neutral": (0.00, 0.00),
}
CIRCUMPLEX_ARRAY = np.array([CIRCUMPLEX[c] for c in FER_CLASSES], dtype=np.float64)  # (7, 2)
EPISODE_PRIOR = np.array([0.11, 0.07, 0.07, 0.22, 0.13, 0.08, 0.32])  # angry .. neutral
# Row k: how evidence of true class k spreads over the 7 outputs.
_CONFUSE = {("fear", "surprise"): 0.15, ("surprise", "fear"): 0.12, ("angry", "disgust"): 0.12,
            ("disgust", "angry"): 0.2, ("sad", "neutral"): 0.15, ("neutral", "sad"): 0.1, ("fear", "sad"): 0.08}


def confusion_matrix() -> np.ndarray:
    c = np.eye(7) * 0.8 + 0.02
    for (a, b), v in _CONFUSE.items():
        c[FER_CLASSES.index(a), FER_CLASSES.index(b)] += v
    return c / c.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class DemoDataConfig:
    """The synthetic set's size and shape."""

    videos: int = 200  # sequences in all (the script splits them into train and validation)
    min_seconds: float = 12.0  # shortest sequence
    max_seconds: float = 60.0  # longest sequence
    fps_choices: tuple[float, ...] = (25.0, 30.0)  # frame rates drawn per video
    seed: int = 0


@dataclass
class DemoVideo:
    """One synthetic sequence: model inputs and targets per frame."""

    name: str
    fps: float
    fer: np.ndarray  # (n, 7) float32 FER-like probabilities, missing-face rows filled from the nearest face
    logmel: np.ndarray  # (n, 65) float32 log-mel + log energy at each frame's time
    face_found: np.ndarray  # (n,) bool
    va: np.ndarray  # (n, 2) float32 valence, arousal targets
    expr: np.ndarray  # (n,) int64 ABAW EXPR targets (0..6; 7 "Other" never occurs)
    mixture: np.ndarray  # (n, 7) float32 the latent class mixture w_t
    activation: np.ndarray  # (n,) float32 the arousal offset only the voice shows

    @property
    def frames(self) -> int:
        return len(self.expr)


def _smooth(x: np.ndarray, width: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with sd ``width`` samples (edges reflect)."""
    if width <= 0:
        return x
    r = int(np.ceil(3 * width))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / width) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="reflect")
    out = np.empty_like(x, dtype=np.float64)
    flat = pad.reshape(len(pad), -1)
    out_flat = out.reshape(len(x), -1)
    for j in range(flat.shape[1]):
        out_flat[:, j] = np.convolve(flat[:, j], k, mode="valid")
    return out


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, width: float, sd: float) -> np.ndarray:
    """(n, dims) Gaussian-smoothed white noise scaled to marginal sd ``sd`` (by the kernel, not by the sample:
    a short sequence keeps a small offset instead of being stretched to full variance)."""
    r = int(np.ceil(3 * width))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / max(width, 1e-9)) ** 2)
    k /= k.sum()
    return _smooth(rng.normal(0.0, 1.0, (n, dims)), width) * (sd / np.sqrt(np.sum(k**2)))


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of a 1-D signal over ``width`` samples (soft on/off ramps)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    half = width // 2
    lo = np.clip(np.arange(len(x)) - half, 0, len(x))
    hi = np.clip(np.arange(len(x)) + half + 1, 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def _ar1(rng: np.random.Generator, n: int, dims: int, rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise (n, dims) with lag-one correlation ``rho`` and marginal sd ``sd``."""
    e = rng.normal(0.0, sd * np.sqrt(1 - rho**2), (n, dims))
    out = np.empty((n, dims))
    out[0] = rng.normal(0.0, sd, dims)
    for t in range(1, n):
        out[t] = rho * out[t - 1] + e[t]
    return out


def latent_mixture(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """(n, 7) smooth class mixtures: episodes of one class at some intensity, blended towards neutral."""
    onehot = np.zeros((n, 7))
    t = 0
    while t < n:
        length = max(1, int(rng.uniform(1.5, 8.0) * fps))
        c = int(rng.choice(7, p=EPISODE_PRIOR))
        u = 1.0 if c == NEUTRAL else rng.uniform(0.35, 1.0)
        onehot[t : t + length, c] += u
        onehot[t : t + length, NEUTRAL] += 1.0 - u
        t += length
    w = _smooth(onehot, 0.25 * fps)
    return np.clip(w, 0.0, None) / w.sum(axis=1, keepdims=True)


ACTIVATION_SD = 0.2  # sd of the arousal term only the voice shows


def activation(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """(n,) slow zero-mean arousal offsets (time scale about 3 s, sd ``ACTIVATION_SD``)."""
    return _smooth_noise(rng, n, 1, 3.0 * fps, ACTIVATION_SD)[:, 0]


def targets(
    rng: np.random.Generator, w: np.ndarray, fps: float, act: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """EXPR (n,) ABAW labels and VA (n, 2): the circumplex mapping of the mixture, a wobble, and ``act`` on arousal."""
    expr = np.asarray(FER_TO_ABAW)[w.argmax(axis=1)]
    wobble = _smooth_noise(rng, len(w), 2, fps, 0.05)
    va = w @ CIRCUMPLEX_ARRAY + wobble
    if act is not None:
        va[:, 1] += act
    return expr.astype(np.int64), np.clip(va, -1.0, 1.0).astype(np.float32)


def fer_observations(rng: np.random.Generator, w: np.ndarray, fps: float) -> np.ndarray:
    """(n, 7) noisy FER-like probabilities for the mixture."""
    n = len(w)
    evidence = w @ confusion_matrix()
    gain = rng.uniform(1.5, 3.0)
    bias = rng.normal(0.0, 0.4, 7)
    bias[FER_CLASSES.index("disgust")] -= 1.5  # FER2013 models rarely say disgust (few training images)
    slow = _ar1(rng, n, 7, rho=float(np.exp(-1.0 / (0.8 * fps))), sd=0.8)
    logits = gain * np.log(evidence + 0.03) + bias + slow + rng.normal(0.0, 0.6, (n, 7))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def face_mask(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """(n,) bool: False in dropout spans (about one per 15 s, 0.2-3 s long; 10 % of videos start faceless)."""
    found = np.ones(n, dtype=bool)
    for _ in range(rng.poisson(n / (15.0 * fps))):
        start = int(rng.integers(0, n))
        found[start : start + int(rng.uniform(0.2, 3.0) * fps)] = False
    if rng.random() < 0.1:
        found[: int(rng.uniform(0.3, 2.0) * fps)] = False
    if not found.any():
        found[n // 2] = True
    return found


def voice_waveform(rng: np.random.Generator, arousal: np.ndarray, fps: float) -> np.ndarray:
    """A 16 kHz mono waveform for the video: noise floor plus voice-like talk spurts driven by ``arousal``."""
    n_samples = int(np.ceil(len(arousal) / fps * SAMPLE_RATE)) + SAMPLE_RATE // 10
    t_frames = np.arange(len(arousal)) / fps
    t = np.arange(n_samples) / SAMPLE_RATE
    a = np.interp(t, t_frames, arousal)  # arousal per sample, -1..1
    # talk spurts: on/off runs; the chance of talking rises with arousal
    talking = np.zeros(n_samples, dtype=bool)
    pos = 0
    while pos < n_samples:
        p_talk = 0.45 + 0.35 * a[pos]
        length = int(rng.uniform(0.4, 2.5 if rng.random() < p_talk else 1.2) * SAMPLE_RATE)
        talking[pos : pos + length] = rng.random() < p_talk
        pos += length
    # voice: harmonics of a wandering f0, syllable-rate envelope, loudness 20 dB per unit of arousal
    f0 = rng.uniform(95.0, 230.0) * (1.0 + 0.25 * a) * (1.0 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))  # 15 harmonics: below 5 kHz for any f0 here
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3.0, 5.5) * t + rng.uniform(0, 2 * np.pi))
    level_db = rng.uniform(-28.0, -20.0) + 20.0 * a
    envelope = _moving_average(talking.astype(np.float64), int(0.04 * SAMPLE_RATE)) * syllables * 10 ** (level_db / 20)
    wave = voice * envelope / 0.9
    wave = wave + rng.normal(0.0, 10 ** (rng.uniform(-62.0, -40.0) / 20), n_samples)  # room noise
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def make_video(rng: np.random.Generator, name: str, seconds: float, fps: float) -> DemoVideo:
    n = max(2, int(round(seconds * fps)))
    w = latent_mixture(rng, n, fps)
    act = activation(rng, n, fps)
    expr, va = targets(rng, w, fps, act)
    fer = fer_observations(rng, w, fps)
    found = face_mask(rng, n, fps)
    fer = fill_from_nearest(fer, found).astype(np.float32)
    wave = voice_waveform(rng, va[:, 1].astype(np.float64), fps)
    logmel = frame_times_features(wave, np.arange(n) / fps)
    return DemoVideo(name, fps, fer, logmel, found, va, expr, w.astype(np.float32), act.astype(np.float32))


def make_dataset(cfg: DemoDataConfig = DemoDataConfig()) -> list[DemoVideo]:
    """``cfg.videos`` sequences, each seeded from (seed, index) so any subset can be regenerated alone."""
    out = []
    for i in range(cfg.videos):
        rng = np.random.default_rng([cfg.seed, i])
        seconds = rng.uniform(cfg.min_seconds, cfg.max_seconds)
        fps = float(rng.choice(cfg.fps_choices))
        out.append(make_video(rng, f"demo{i:04d}", seconds, fps))
    return out
