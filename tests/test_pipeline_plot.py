"""The per-video plot: long tracks are drawn from a bounded envelope that keeps their extremes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from abaw_rt.pipeline.outputs import PLOT_BINS, VideoPrediction, _envelope, plot_png


def test_envelope_is_bounded_and_keeps_extremes():
    t = np.arange(100_000) / 25.0
    y = np.sin(t / 7.0)
    y[54_321] = 3.0  # a one-frame spike must survive
    tt, yy = _envelope(t, y)
    assert len(tt) == len(yy) == 2 * PLOT_BINS
    assert yy.max() == 3.0 and yy.min() == pytest.approx(y.min())
    assert np.all(np.diff(tt) >= 0)
    short_t, short_y = _envelope(t[:100], y[:100])
    assert short_t is t[:100] or np.array_equal(short_t, t[:100])  # short tracks are drawn as they are


def test_plot_of_a_long_video_renders(tmp_path):
    pytest.importorskip("matplotlib")
    n = 60_000  # 40 minutes at 25 fps
    rng = np.random.default_rng(0)
    found = np.ones(n, bool)
    found[1000:1003] = False  # a short gap inside one plot bin
    expr = rng.dirichlet(np.ones(8), n).astype(np.float32)
    pred = VideoPrediction(
        name="long",
        source=Path("long.mp4"),
        frame_times=np.arange(n) / 25.0,
        face_found=found,
        merged={"va": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "expr": expr},
        decisions={"va": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "expr": expr.argmax(1)},
    )
    png = plot_png(pred)
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def _prediction(n: int, seed: int = 0) -> VideoPrediction:
    rng = np.random.default_rng(seed)
    merged = {"va": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "expr": rng.dirichlet(np.ones(8), n).astype(np.float32),
              "au": rng.uniform(0, 1, (n, 12)).astype(np.float32)}
    found = rng.uniform(size=n) > 0.01
    decisions = {"va": merged["va"], "expr": merged["expr"].argmax(1), "au": (merged["au"] >= 0.5).astype(np.int64)}
    return VideoPrediction("v", Path("v.mp4"), np.arange(n) / 25.0, found, merged, decisions)


def test_plot_memory_does_not_grow_with_the_video():
    """Pixel columns are found a chunk of frames at a time and only the shown frames are converted: no copy of a
    whole track (whole-track float64 copies took about 100 bytes a frame: 14 MB more for 150 000 frames)."""
    import tracemalloc

    peaks = {}
    for n in (3_000, 150_000):
        pred = _prediction(n)
        plot_png(pred)  # fonts and imports once
        tracemalloc.start()
        plot_png(pred)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[150_000] - peaks[3_000] < 1_000_000, peaks


def test_pixel_columns_match_the_whole_track_computation():
    from abaw_rt.pipeline.plot import COLUMN_CHUNK, _columns

    n, plot_w = 3 * COLUMN_CHUNK + 17, 910
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.001, 0.08, n)) + 5.0
    found = rng.uniform(size=n) > 0.001
    found[n // 2 : n // 2 + 40] = False
    t0, t1 = float(t[0]), float(t[-1]) + 0.04
    cols = np.clip(((t - t0) / (t1 - t0) * plot_w).astype(int), 0, plot_w - 1)  # every frame at once
    first = np.clip(np.searchsorted(cols, np.arange(plot_w), side="right") - 1, 0, n - 1)
    missing = ~found[first]
    missing[cols[~found]] = True
    got_first, got_missing = _columns(t, t0, t1, plot_w, found)
    np.testing.assert_array_equal(got_first, first)
    np.testing.assert_array_equal(got_missing, missing)
    assert 0 < missing.sum() < plot_w
