"""Pairing label files with the feature store: length tolerance, NaNs, _left/_right, missing faces, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import FeatureGroup, ModelConfig
from abaw_rt.store import FeatureStore
from abaw_rt.train.annotations import write_annotation
from abaw_rt.train.dataset import align_labels, data_fingerprint, load_samples, normalization_stats, resolve_source

EXTRACTORS = {"eff": (3, "visual"), "rafdb": (2, "visual"), "wav2vec2": (2, "audio")}
CFG = ModelConfig(
    features=(
        FeatureGroup("rafdb", 2, "visual"),
        FeatureGroup("wav2vec2", 2, "audio"),
        FeatureGroup("eff", 3, "visual"),
    ),
    heads=("va",),
)


def _store(tmp_path, videos: dict[str, int], seed=0):
    rng = np.random.default_rng(seed)
    store = FeatureStore(tmp_path / "features")
    for name, n in videos.items():
        feats = {k: rng.standard_normal((n, d)).astype(np.float32) for k, (d, _) in EXTRACTORS.items()}
        store.write(name, feats, np.ones(n, bool), EXTRACTORS, fps=30.0)
    return store


def _labels(folder, name, n, task="va", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y = rng.uniform(-1, 1, (n, 2)).round(4).astype(np.float32)
    return write_annotation(folder / f"{name}.txt", task, y), y


def test_inputs_concatenate_groups_per_modality_in_config_order(tmp_path):
    store = _store(tmp_path, {"v1": 40})
    path, y = _labels(tmp_path / "ann", "v1", 40)
    [s] = load_samples(store, [path], "va", CFG, tolerance=0)
    raw = store.read("v1", ["eff", "rafdb", "wav2vec2"]).features
    np.testing.assert_array_equal(s.inputs["visual"], np.concatenate([raw["rafdb"], raw["eff"]], axis=1))
    np.testing.assert_array_equal(s.inputs["audio"], raw["wav2vec2"])
    np.testing.assert_allclose(s.target, y, atol=1e-6)
    assert s.frames == 40 and s.fps == 30.0


def test_left_and_right_share_one_videos_features(tmp_path):
    store = _store(tmp_path, {"duo": 30, "solo_left": 30})
    left, _ = _labels(tmp_path / "ann", "duo_left", 30, seed=1)
    right, _ = _labels(tmp_path / "ann", "duo_right", 30, seed=2)
    own, _ = _labels(tmp_path / "ann", "solo_left", 30)
    a, b, c = load_samples(store, [left, right, own], "va", CFG, tolerance=0)
    assert a.source == b.source == "duo" and a.inputs is b.inputs  # one copy in memory
    assert not np.array_equal(a.target, b.target)
    assert c.source == "solo_left"  # a store entry of its own wins
    with pytest.raises(AbawRtError, match="no video 'ghost_left' or 'ghost'"):
        resolve_source("ghost_left", {"duo"})


def test_length_mismatch_within_tolerance_is_aligned(tmp_path):
    y = np.arange(20, dtype=np.float32).reshape(10, 2) / 100
    longer = align_labels(y, 8, "va", 2, "l.txt", "f.npy")
    np.testing.assert_array_equal(longer, y[:8])  # extra label lines dropped
    shorter = align_labels(y, 12, "va", 2, "l.txt", "f.npy")
    np.testing.assert_array_equal(shorter[:10], y)
    assert (shorter[10:] == -5).all()  # frames past the labels are invalid


def test_length_mismatch_beyond_tolerance_names_both_files(tmp_path):
    store = _store(tmp_path, {"v1": 40})
    path, _ = _labels(tmp_path / "ann", "v1", 47)
    with pytest.raises(AbawRtError, match=r"v1\.txt': 47 frames .*line 42.*features '.*v1\.npy' have 40 .*at most 5"):
        load_samples(store, [path], "va", CFG, tolerance=5)
    assert load_samples(store, [path], "va", CFG, tolerance=7)[0].frames == 40


def test_nan_in_features_names_file_and_frame(tmp_path):
    store = _store(tmp_path, {"v1": 20})
    bad = np.load(store.root / "eff" / "v1.npy")
    bad[7, 1] = np.nan
    np.save(store.root / "eff" / "v1.npy", bad)
    path, _ = _labels(tmp_path / "ann", "v1", 20)
    with pytest.raises(AbawRtError, match=r"eff/v1\.npy': NaN or inf at frame 8"):
        load_samples(store, [path], "va", CFG, tolerance=0)


def test_missing_face_rows_are_filled_from_the_nearest_face(tmp_path):
    store = FeatureStore(tmp_path / "features")
    n = 10
    vis = np.arange(n, dtype=np.float32)[:, None].repeat(3, 1)
    faces = np.ones(n, bool)
    faces[[3, 4, 5]] = False
    vis[~faces] = 0.0  # what an extractor stores without a face
    feats = {"eff": vis, "rafdb": vis[:, :2].copy(), "wav2vec2": np.ones((n, 2), np.float32)}
    store.write("v", feats, faces, EXTRACTORS)
    path, _ = _labels(tmp_path / "ann", "v", n)
    [s] = load_samples(store, [path], "va", CFG, tolerance=0)
    assert s.inputs["visual"][:, 2].tolist() == [0, 1, 2, 2, 2, 6, 6, 7, 8, 9]  # nearest, ties to the earlier


def test_normalization_stats_count_each_video_once(tmp_path):
    store = _store(tmp_path, {"a": 30, "b": 50})
    paths = [_labels(tmp_path / "ann", n, k)[0] for n, k in (("a_left", 30), ("a_right", 30), ("b", 50))]
    samples = load_samples(store, paths, "va", CFG, tolerance=0)
    stats = normalization_stats(samples, CFG.modalities)
    pooled = np.concatenate([samples[0].inputs["visual"], samples[2].inputs["visual"]]).astype(np.float64)
    np.testing.assert_allclose(stats["visual"]["mean"], pooled.mean(0), atol=1e-9)
    np.testing.assert_allclose(stats["visual"]["std"], pooled.std(0), atol=1e-9)
    # only the training samples given: a different subset gives different statistics
    other = normalization_stats(samples[2:], CFG.modalities)
    assert not np.allclose(other["visual"]["mean"], stats["visual"]["mean"])


def test_constant_feature_gets_unit_std(tmp_path):
    store = FeatureStore(tmp_path / "features")
    feats = {
        "eff": np.ones((5, 3), np.float32),
        "rafdb": np.zeros((5, 2), np.float32),
        "wav2vec2": np.arange(10, dtype=np.float32).reshape(5, 2),
    }
    store.write("c", feats, np.ones(5, bool), EXTRACTORS)
    path, _ = _labels(tmp_path / "ann", "c", 5)
    stats = normalization_stats(load_samples(store, [path], "va", CFG, 0), CFG.modalities)
    assert stats["visual"]["std"] == (1.0,) * 5


def test_fingerprint_changes_with_labels(tmp_path):
    store = _store(tmp_path, {"v1": 20})
    path, y = _labels(tmp_path / "ann", "v1", 20)
    before = data_fingerprint(load_samples(store, [path], "va", CFG, 0))
    assert before == data_fingerprint(load_samples(store, [path], "va", CFG, 0))
    y[3, 0] = 0.125
    write_annotation(path, "va", y)
    assert data_fingerprint(load_samples(store, [path], "va", CFG, 0)) != before
