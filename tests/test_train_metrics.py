"""Metrics against numpy / scikit-learn references to 1e-6, losses against the metrics, training windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abaw_rt.errors import AbawRtError
from abaw_rt.train import metrics as M
from abaw_rt.train.windows import training_windows

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _ccc_reference(x, y):
    cov = np.cov(x, y, bias=True)  # population moments
    return 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 300))
def test_ccc_matches_numpy(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(0.3, 0.7, size=n)
    assert abs(M.ccc(x, y) - _ccc_reference(x, y)) < 1e-6
    assert abs(M.ccc(x, x) - 1.0) < 1e-12
    xc = x - x.mean()
    assert abs(M.ccc(xc, -xc) + 1.0) < 1e-12  # perfect anti-agreement (equal means)


def test_va_metrics_skip_invalid_frames():
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (200, 2))
    pred = np.clip(target + rng.normal(0, 0.3, target.shape), -1, 1)
    target[::7] = -5
    ok = np.all(target != -5, axis=1)
    m = M.va_metrics(pred, target)
    assert abs(m["ccc_valence"] - _ccc_reference(pred[ok, 0], target[ok, 0])) < 1e-6
    assert abs(m["ccc_arousal"] - _ccc_reference(pred[ok, 1], target[ok, 1])) < 1e-6
    assert abs(m["score"] - (m["ccc_valence"] + m["ccc_arousal"]) / 2) < 1e-12
    assert m["frames"] == ok.sum()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_expr_macro_f1_matches_sklearn_with_absent_classes(seed, present):
    rng = np.random.default_rng(seed)
    n = 150
    target = rng.integers(0, present, n)  # classes >= present never occur in the labels
    target[rng.random(n) < 0.1] = -1
    scores = rng.normal(size=(n, 8))
    scores[np.arange(n), np.maximum(target, 0)] += rng.uniform(0, 3)
    ok = target != -1
    ref = sklearn_metrics.f1_score(
        target[ok], scores[ok].argmax(1), labels=list(range(8)), average="macro", zero_division=0
    )
    assert abs(M.expr_metrics(scores, target)["f1"] - ref) < 1e-6


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_au_mean_f1_matches_sklearn_per_au(seed):
    rng = np.random.default_rng(seed)
    n = 120
    target = (rng.random((n, 12)) < rng.uniform(0, 0.6, 12)).astype(np.float32)
    target[rng.random((n, 12)) < 0.1] = -1
    probs = np.clip(0.6 * target + rng.uniform(0, 0.7, (n, 12)), 0, 1)
    probs[:, 3] = 0.1  # an AU never predicted
    ref = []
    for j in range(12):
        ok = target[:, j] != -1
        ref.append(sklearn_metrics.f1_score(target[ok, j], probs[ok, j] >= 0.5, zero_division=0))
    assert abs(M.au_metrics(probs, target)["f1"] - np.mean(ref)) < 1e-6


def test_threshold_is_inclusive_at_half():
    target = np.array([[1.0] * 12])
    assert M.au_metrics(np.full((1, 12), 0.5), target)["f1"] == 1.0
    assert M.au_metrics(np.full((1, 12), 0.4999), target)["f1"] == 0.0


def test_stitched_losses_match_references():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 8, 50)
    y[:5] = -1
    p = rng.dirichlet(np.ones(8), 50)
    ok = y != -1
    ref = sklearn_metrics.log_loss(y[ok], p[ok], labels=list(range(8)))
    assert abs(M.task_loss("expr", p, y) - ref) < 1e-6
    t = (rng.random((50, 12)) < 0.5).astype(np.float32)
    t[0] = -1
    q = rng.uniform(0.05, 0.95, (50, 12))
    m = t != -1
    bce = -np.mean(t[m] * np.log(q[m]) + (1 - t[m]) * np.log(1 - q[m]))
    assert abs(M.task_loss("au", q, t) - bce) < 1e-6


# -- training windows ---------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 400), st.data())
def test_training_windows_cover_every_frame_and_keep_the_tail(frames, window, data):
    stride = data.draw(st.integers(1, window))
    wins = training_windows(frames, window, stride)
    covered = np.zeros(frames, bool)
    for i, (start, length) in enumerate(wins):
        assert start == i * stride and 1 <= length <= window and start + length <= frames
        covered[start : start + length] = True
    assert covered.all()
    assert all(length == window for _, length in wins[:-1])  # only the tail may be short
    assert wins[-1][0] + wins[-1][1] == frames


def test_paper_windows_for_a_1000_frame_video():
    assert training_windows(1000, 300, 200) == [(0, 300), (200, 300), (400, 300), (600, 300), (800, 200)]
    assert training_windows(120, 300, 200) == [(0, 120)]  # shorter than w: kept (the authors dropped it)
    with pytest.raises(AbawRtError, match="stride"):
        training_windows(10, 5, 6)
