"""Segments and stitching: coverage, lengths, constants, and equality with one full run for frame-wise models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import HEAD_LABELS
from abaw_rt.pipeline.segments import plan_segments, run_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, centre_weights, decide, to_probabilities
from abaw_rt.specs import TensorSpec

W, S = 12, 8  # small w and s so that 1..3w covers short, exact and several-window videos quickly


def _windows():
    return st.integers(1, 40).flatmap(lambda w: st.tuples(st.just(w), st.integers(1, w)))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 130), ws=_windows())
def test_plan_covers_every_frame_with_full_windows(n, ws):
    w, s = ws
    plan = plan_segments(n, w, s)
    covered = np.zeros(n, dtype=int)
    for seg in plan:
        assert 0 <= seg.start < seg.end <= n
        covered[seg.start : seg.end] += 1
    assert covered.min() >= 1
    if n <= w:
        assert [(p.start, p.end) for p in plan] == [(0, n)]
    else:
        assert all(p.length == w for p in plan)  # never padded: the last window is end-aligned
        assert plan[-1].end == n
        starts = [p.start for p in plan]
        assert starts == sorted(set(starts))
        assert all(b - a <= s for a, b in zip(starts, starts[1:]))


def test_plan_matches_paper_count_for_defaults():
    # Zhou et al. 2023: floor(n / s) + 1 windows for w=300, s=200 (when the end-aligned window is not redundant)
    for n in (301, 450, 1000, 1234):
        assert len(plan_segments(n, 300, 200)) == len(range(0, n - 300, 200)) + 1
    assert [(p.start, p.end) for p in plan_segments(650, 300, 200)] == [(0, 300), (200, 500), (350, 650)]


@pytest.mark.parametrize("bad", [(0, 10, 5), (10, 0, 1), (10, 5, 6), (10, 5, 0)])
def test_plan_rejects_bad_arguments(bad):
    with pytest.raises(AbawRtError, match="segments"):
        plan_segments(*bad)


class FramewiseRunner:
    """A fusion runner whose outputs at each frame depend on that frame only (and ignore padding)."""

    name = "framewise"

    def __init__(self, dim: int, heads=("va", "expr", "au")):
        rng = np.random.default_rng(3)
        self.weights = {h: rng.standard_normal((dim, len(HEAD_LABELS[h]))).astype(np.float32) for h in heads}
        self.output_specs = tuple(TensorSpec(h, "float32", ("batch", "time", len(HEAD_LABELS[h]))) for h in heads)
        self.last_inference_time = 0.0
        self.calls = []

    def infer(self, feeds):
        x = feeds["visual"]
        self.calls.append(x.shape)
        out = {h: np.einsum("btd,dk->btk", x, w) for h, w in self.weights.items()}
        out["va"] = np.tanh(out["va"])
        return out


def _stitched(n, merge, x, runner, batch=3, w=W, s=S):
    stitcher = Stitcher(n, {h: len(HEAD_LABELS[h]) for h in runner.weights}, merge)
    for seg, out in run_segments(runner, {"visual": x}, plan_segments(n, w, s), batch):
        stitcher.add(seg.start, {h: to_probabilities(h, v) for h, v in out.items()})
    return stitcher.result()


@pytest.mark.parametrize("merge", list(Merge))
@pytest.mark.parametrize("n", list(range(1, 3 * W + 1)))
def test_framewise_model_stitches_to_a_single_full_run(n, merge):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    runner = FramewiseRunner(5)
    merged = _stitched(n, merge, x, runner)
    full = runner.infer({"visual": x[None]})
    for h, v in merged.items():
        assert v.shape == (n, len(HEAD_LABELS[h]))  # output length equals the frame count
        np.testing.assert_allclose(v, to_probabilities(h, full[h][0]), rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3 * W), value=st.floats(-3, 3, allow_nan=False), merge=st.sampled_from(list(Merge)))
def test_constant_in_constant_out(n, value, merge):
    stitcher = Stitcher(n, {"va": 2}, merge)
    for seg in plan_segments(n, W, S):
        stitcher.add(seg.start, {"va": np.full((seg.length, 2), value)})
    np.testing.assert_allclose(stitcher.result()["va"], value, rtol=1e-6, atol=1e-6)


def test_centre_weighting_prefers_the_window_where_a_frame_is_central():
    # Two windows overlap on frames 8..11: window A = [0, 12), window B = [8, 20). Frame 8 is near A's edge
    # (weight 4) and at B's edge (weight 1); the merged value leans towards A's.
    stitcher = Stitcher(20, {"va": 1}, Merge.centre)
    stitcher.add(0, {"va": np.zeros((12, 1))})
    stitcher.add(8, {"va": np.ones((12, 1))})
    v = stitcher.result()["va"][:, 0]
    assert v[7] == 0 and v[12] == 1
    np.testing.assert_allclose(v[8], 1 / (4 + 1))
    assert list(v[8:12]) == sorted(v[8:12])  # moves monotonically from A to B
    uni = Stitcher(20, {"va": 1}, Merge.uniform)
    uni.add(0, {"va": np.zeros((12, 1))})
    uni.add(8, {"va": np.ones((12, 1))})
    np.testing.assert_allclose(uni.result()["va"][8:12, 0], 0.5)
    hard = Stitcher(20, {"va": 1}, Merge.none)
    hard.add(0, {"va": np.zeros((12, 1))})
    hard.add(8, {"va": np.ones((12, 1))})
    assert set(np.unique(hard.result()["va"])) == {0.0, 1.0}


def test_centre_weights_are_positive_and_peak_in_the_middle():
    for n in (1, 2, 7, 300):
        w = centre_weights(n)
        assert w.min() > 0 and w[0] == w[-1] == 1
        assert w.argmax() in ((n - 1) // 2, n // 2)


def test_uncovered_frame_is_an_error():
    stitcher = Stitcher(10, {"va": 2})
    stitcher.add(0, {"va": np.zeros((5, 2))})
    with pytest.raises(AbawRtError, match="frame 6"):
        stitcher.result()


def test_decisions():
    assert decide("va", np.array([[1.5, -2.0], [0.2, 0.3]])).tolist() == [[1.0, -1.0], [0.2, 0.3]]
    probs = to_probabilities("expr", np.array([[0.0, 5.0, 0, 0, 0, 0, 0, 0]]))
    np.testing.assert_allclose(probs.sum(), 1.0)
    assert decide("expr", probs).tolist() == [1]
    au = to_probabilities("au", np.array([[0.0, -1.0, 1.0] + [0.0] * 9]))
    assert decide("au", au)[0, :3].tolist() == [1, 0, 1]  # sigmoid(0) = 0.5 counts as active (>= 0.5)


def test_segments_are_batched_with_lengths():
    runner = FramewiseRunner(3)
    x = np.ones((50, 3), np.float32)
    list(run_segments(runner, {"visual": x}, plan_segments(50, W, S), batch=4))
    assert [c[0] for c in runner.calls] == [4, 2] and all(c[1] == W for c in runner.calls)
