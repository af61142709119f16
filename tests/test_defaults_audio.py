"""The default audio extractor: log-mel + energy in numpy, the shipped graph against it, and through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt import defaults
from abaw_rt.defaults import audio as A

ort = pytest.importorskip("onnxruntime")
T = np.arange(A.WINDOW) / A.SAMPLE_RATE


def _graph(windows: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(defaults.DEFAULTS_DIR / defaults.LOGMEL_FILE), providers=["CPUExecutionProvider"])
    return sess.run(["features"], {"audio": np.asarray(windows, np.float32)})[0]


def test_graph_matches_numpy_reference():
    rng = np.random.default_rng(1)
    windows = np.concatenate([rng.normal(0, s, (4, A.WINDOW)) for s in (1e-4, 0.01, 0.3)] + [np.zeros((1, A.WINDOW))])
    got, ref = _graph(windows), A.log_mel(windows)
    assert got.shape == ref.shape == (13, A.DIM)
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_energy_is_log_mean_square():
    tone = np.sin(2 * np.pi * 1000 * T)
    quiet, loud = A.log_mel(np.stack([0.01 * tone, 0.1 * tone]))[:, -1]
    assert loud - quiet == pytest.approx(2 * np.log(10), abs=1e-3)  # 10x amplitude = 100x energy
    assert A.log_mel(np.zeros((1, A.WINDOW)))[0, -1] == pytest.approx(np.log(A.ENERGY_FLOOR))


def test_a_tone_lights_the_band_around_its_frequency():
    centres = 700 * np.expm1(np.linspace(A.hz_to_mel(A.FMIN), A.hz_to_mel(A.FMAX), A.N_MELS + 2)[1:-1] / 1127)
    for f in (300.0, 1000.0, 4000.0):
        mel = A.log_mel(0.5 * np.sin(2 * np.pi * f * T)[None])[0, : A.N_MELS]
        peak = int(np.argmax(mel))
        assert abs(centres[peak] - f) / f < 0.1, (f, centres[peak])


def test_silence_sits_at_the_floor_and_every_band_has_weight():
    assert np.allclose(A.log_mel(np.zeros((2, A.WINDOW)))[:, : A.N_MELS], np.log(A.LOG_OFFSET))
    w = A.mel_matrix()
    assert w.shape == (A.N_FFT // 2 + 1, A.N_MELS)
    assert (w.sum(axis=0) > 0).all() and (w[0] == 0).all()


def test_frame_times_features_centres_windows_and_pads_with_silence():
    wave = np.zeros(A.SAMPLE_RATE, np.float32)
    wave[8000:8400] = 0.5  # a 25 ms burst centred at 0.5125 s
    f = A.frame_times_features(wave, np.array([0.0, 0.5125, 0.99]))
    assert f.shape == (3, A.DIM)
    assert f[1, -1] > f[0, -1] + 10 and f[1, -1] > f[2, -1] + 10


def test_audio_through_the_pipeline_extractor_follows_loudness(tmp_path):
    """The spec's logmel extractor in the pipeline: windows on the video clock, nearest per frame."""
    pytest.importorskip("av")
    from abaw_rt.pipeline.decode import AudioTrack
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.extractors import FeatureExtractor

    spec = load_spec(defaults.spec_path()).get("logmel")
    t = np.arange(2 * A.SAMPLE_RATE) / A.SAMPLE_RATE
    wave = (np.where(t < 1.0, 0.01, 0.2) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    track = AudioTrack(wave, start=0.0)
    frame_times = np.arange(50) / 25.0
    with FeatureExtractor(spec, threads=1) as ext:
        feats = ext.audio_features(track, frame_times)
    assert feats.shape == (50, A.DIM)
    energy = feats[:, -1]
    assert energy[30:].min() > energy[:20].max() + 4  # 20x louder after 1 s: about +6 in log energy
    np.testing.assert_allclose(feats[10], A.frame_times_features(wave, frame_times[10:11])[0], atol=2e-3)
