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
