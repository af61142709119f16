"""The demo fusion model: its synthetic training set, its training loop, and the shipped model on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt import defaults
from abaw_rt.defaults import demo_data as D


@pytest.fixture(scope="module")
def videos():
    return D.make_dataset(D.DemoDataConfig(videos=6, min_seconds=8, max_seconds=16, seed=3))


def test_synthetic_set_is_seeded_and_well_formed(videos):
    again = D.make_dataset(D.DemoDataConfig(videos=6, min_seconds=8, max_seconds=16, seed=3))
    for a, b in zip(videos, again):
        np.testing.assert_array_equal(a.fer, b.fer)
        np.testing.assert_array_equal(a.logmel, b.logmel)
    other = D.make_dataset(D.DemoDataConfig(videos=1, min_seconds=8, max_seconds=16, seed=4))[0]
    assert not np.array_equal(other.va[:50], videos[0].va[:50])
    for v in videos:
        n = v.frames
        assert v.fer.shape == (n, 7) and v.logmel.shape == (n, 65) and v.va.shape == (n, 2)
        np.testing.assert_allclose(v.fer.sum(1), 1, atol=1e-5)
        assert np.abs(v.va).max() <= 1 and set(np.unique(v.expr)) <= set(range(7))  # "Other" (7) never used
        assert np.isfinite(v.logmel).all()


def test_targets_follow_the_documented_mappings(videos):
    w = np.concatenate([v.mixture for v in videos])
    expr = np.concatenate([v.expr for v in videos])
    va = np.concatenate([v.va for v in videos])
    np.testing.assert_array_equal(expr, np.asarray(D.FER_TO_ABAW)[w.argmax(1)])
    act = np.concatenate([v.activation for v in videos])
    circ = w @ D.CIRCUMPLEX_ARRAY
    # valence is the circumplex mixture up to the small wobble (sd 0.05); arousal adds the voice-only activation
    assert np.abs(va[:, 0] - np.clip(circ[:, 0], -1, 1)).mean() < 0.06
    assert np.abs(va[:, 1] - np.clip(circ[:, 1] + act, -1, 1)).mean() < 0.06
    assert 0.1 < act.std() < 0.3
    happy = expr == 4  # ABAW Happiness
    sad = expr == 5
    assert va[happy, 0].mean() > 0.3 > -0.3 > va[sad, 0].mean()


def test_features_carry_the_signal(videos):
    fer = np.concatenate([v.fer for v in videos])
    expr = np.concatenate([v.expr for v in videos])
    va = np.concatenate([v.va for v in videos])
    energy = np.concatenate([v.logmel[:, -1] for v in videos])
    agree = np.mean(np.asarray(D.FER_TO_ABAW)[fer.argmax(1)] == expr)
    assert 0.5 < agree < 0.95  # informative but noisy, like a real FER model on video frames
    assert np.corrcoef(energy, va[:, 1])[0, 1] > 0.1  # louder when aroused
    assert abs(np.corrcoef(energy, va[:, 0])[0, 1]) < np.corrcoef(energy, va[:, 1])[0, 1]


def test_face_dropouts_take_the_nearest_face():
    rng = np.random.default_rng(0)
    found = D.face_mask(rng, 3000, 25.0)
    assert 0.5 < found.mean() < 1.0
    v = D.make_video(np.random.default_rng(7), "x", 120.0, 25.0)
    missing = np.flatnonzero(~v.face_found)
    assert len(missing)
    i = missing[0]
    valid = np.flatnonzero(v.face_found)
    nearest = valid[np.argmin(np.abs(valid - i))]
    np.testing.assert_array_equal(v.fer[i], v.fer[nearest])


def test_training_loop_learns_and_saves_a_loadable_checkpoint(videos, tmp_path):
    torch = pytest.importorskip("torch")
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.model.fusion import build_model
    from abaw_rt.train.demo import demo_data, demo_recipe
    from abaw_rt.train.evaluate import evaluate
    from abaw_rt.train.loop import train

    torch.set_num_threads(1)
    cfg = demo_recipe(epochs=2, batch_size=8, lr=3e-3, window=120, stride=80, threads=1)
    data = demo_data(videos[:4], videos[4:])
    result = train(cfg, tmp_path / "a", data=data)  # one run, heads VA + EXPR, the two losses summed
    assert [r.epoch for r in result.history] == [1, 2]
    assert result.history[-1].train_loss < result.history[0].train_loss
    ckpt = load_checkpoint(result.best_path)
    assert ckpt.header.config.heads == ("va", "expr") and ckpt.header.config.d_model == 64
    model = build_model(ckpt, "fp32")
    _, again = evaluate(model, data.val, cfg, "cpu")
    m = result.best_metrics
    assert again["score"] == pytest.approx(m["score"], abs=1e-6)  # the saved weights are the best epoch's
    assert m["score"] == pytest.approx(m["va_score"] + m["expr_score"], abs=1e-12)
    rerun = train(cfg, tmp_path / "b", data=data)  # seeded: same config, data and threads -> same weights
    state = load_checkpoint(rerun.best_path).tensors
    assert all(np.array_equal(state[k], ckpt.tensors[k]) for k in ckpt.tensors)


def test_demo_script_trains_through_the_training_api(tmp_path):
    pytest.importorskip("torch")
    import importlib.util

    from abaw_rt.checkpoint import load_checkpoint

    path = defaults.DEFAULTS_DIR.parents[1] / "scripts" / "train_demo_model.py"
    spec = importlib.util.spec_from_file_location("train_demo_model", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "demo.safetensors"
    args = ["--out", str(out), "--videos", "5", "--min-seconds", "8", "--max-seconds", "12", "--epochs", "1", "--threads", "1"]
    assert script.main([*args, "--no-export"]) == 0
    h = load_checkpoint(out).header
    assert h.config.heads == ("va", "expr") and h.provenance["demo"] is True and h.provenance["best_epoch"] == 1
    assert set(h.provenance["metrics"]) >= {"ccc_mean", "expr_f1", "expr_f1_7", "score"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.safetensors"]  # nothing else left behind


# -- the shipped demo model ---------------------------------------------------------------------------------------
def _demo_runner():
    from abaw_rt.runners.ort_runner import OrtRunner

    return OrtRunner(defaults.DEFAULTS_DIR / defaults.MODEL_FILE, threads=1)


def _fer_probabilities(rgb: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from abaw_rt.pipeline.extractor_spec import load_spec

    spec = load_spec(defaults.spec_path()).get("fer")
    sess = ort.InferenceSession(str(spec.onnx), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": spec.image.prepare(rgb)})[0]


def _still(fer: np.ndarray, audio: np.ndarray) -> dict:
    """One still face held for the whole window (T frames), with a per-frame audio feature track."""
    t = len(audio)
    return {"visual": np.repeat(fer[None, None], t, 1).astype(np.float32), "audio": audio[None].astype(np.float32),
            "lengths": np.array([t], np.int64)}


def _room_tone(seconds: float = 8.0, fps: float = 25.0, voice_db: float | None = None) -> np.ndarray:
    from abaw_rt.defaults.audio import SAMPLE_RATE, frame_times_features

    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    wave = rng.normal(0, 10 ** (-50 / 20), n)
    if voice_db is not None:
        t = np.arange(n) / SAMPLE_RATE
        wave += 10 ** (voice_db / 20) * sum(np.sin(2 * np.pi * k * 160 * t) / k for k in range(1, 12))
    return frame_times_features(wave.astype(np.float32), np.arange(int(seconds * fps)) / fps)


def test_demo_valence_higher_for_smiling_faces_than_serious_ones():
    pytest.importorskip("skimage")
    from abaw_rt.defaults.reference_faces import LFW_NOT_SMILING, LFW_SMILING, fer_reference_inputs

    names, rgb, _ = fer_reference_inputs()
    fer = _fer_probabilities(rgb)
    audio = _room_tone()
    valence = {}
    with _demo_runner() as runner:
        for name, p in zip(names, fer):
            valence[name] = float(runner.infer(_still(p, audio))["va"][0, :, 0].mean())
    smile = [valence[f"lfw{i:02d}"] for i in LFW_SMILING]
    serious = [valence[f"lfw{i:02d}"] for i in LFW_NOT_SMILING]
    assert np.mean(smile) > np.mean(serious) + 0.2, (smile, serious)
    assert valence["astronaut"] > max(np.median(serious), 0.2)


def test_demo_arousal_rises_with_a_loud_voice():
    fer = np.full(7, 1 / 7, np.float32)
    fer[6] = 0.6  # mostly neutral
    fer /= fer.sum()
    with _demo_runner() as runner:
        quiet = runner.infer(_still(fer, _room_tone()))["va"][0, 50:, 1].mean()
        loud = runner.infer(_still(fer, _room_tone(voice_db=-12.0)))["va"][0, 50:, 1].mean()
    assert loud > quiet + 0.1


def test_demo_model_heads_are_va_and_expr():
    with _demo_runner() as runner:
        assert runner.header.config.heads == ("va", "expr")
        assert [f.name for f in runner.header.config.features] == ["fer", "logmel"]
