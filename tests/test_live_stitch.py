"""LiveStitcher: which window a live frame's values come from, and when the frame is final (no media, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from abaw_rt.pipeline.stream.stitch import LiveStitcher

W = 10  # window length in these tests (half: 5)


def _window(start: int, end: int) -> dict[str, np.ndarray]:
    """Outputs that name their window: va = (its last frame, the frame), expr = one-hot on (last frame) % 8."""
    frames = np.arange(start, end + 1)
    va = np.stack([np.full(len(frames), end), frames], axis=1).astype(np.float64)
    return {"va": va, "expr": np.eye(8)[np.full(len(frames), end % 8)]}


def _frame(i: int) -> SimpleNamespace:
    return SimpleNamespace(index=i, time=i / 25, face=True)


def _each(rows) -> list:
    """A ``FinalRows`` (or None) as one (index, values, decisions) per frame."""
    if rows is None:
        return []
    return [(r.index, SimpleNamespace(merged={h: v[k] for h, v in rows.merged.items()},
                                      decisions={h: v[k] for h, v in rows.decisions.items()}))
            for k, r in enumerate(rows.frames)]


def _run(frames: int, lookahead: int, hop: int = 1, skip=()):
    """The live loop (LiveRun._row / _flush): a window ending at the newest frame every ``hop`` frames (none at the
    frames in ``skip``: shed), one at the last frame if it did not run; (frame, window end, received) per emission."""
    st = LiveStitcher({"va": 2, "expr": 8}, lookahead, W)
    out, last = [], -1
    for e in range(frames):
        st.add_frame(_frame(e))
        if (e + 1) % hop == 0 and e not in skip:
            st.add_window(max(0, e - W + 1), _window(max(0, e - W + 1), e))
            last = e
        out += [(i, em, e + 1) for i, em in _each(st.ready(last))]
    if last != frames - 1:
        st.add_window(max(0, frames - W), _window(max(0, frames - W), frames - 1))
        last = frames - 1
    out += [(i, em, frames) for i, em in _each(st.ready(last)) + _each(st.flush())]
    return out


@pytest.mark.parametrize("lookahead", [0, 1, 3, 5])
def test_a_frame_takes_the_window_ending_lookahead_frames_after_it(lookahead):
    n = 30
    out = _run(n, lookahead)
    assert [i for i, _, _ in out] == list(range(n))  # every frame once, in order
    for i, em, received in out:
        end = min(i + lookahead, n - 1)
        assert em.merged["va"].tolist() == [end, i]  # that window's own values, not an average
        assert em.decisions["expr"] == end % 8
        assert received >= min(i + 1 + lookahead, n)  # never before its lookahead frames were in


def test_past_half_a_window_the_frame_stays_with_the_window_where_it_is_central():
    n = 30
    for lookahead in (6, 9, 12):  # window 10: at most 5 frames after it count
        for i, em, received in _run(n, lookahead):
            assert em.merged["va"].tolist() == [min(i + 5, n - 1), i]
            assert received >= min(i + 1 + lookahead, n)


def test_with_a_hop_or_shed_windows_a_frame_takes_the_first_window_run_after_its_lookahead():
    n = 31
    for hop, skip in ((3, ()), (1, (8, 9, 10, 11))):
        run_ends = [e for e in range(n) if (e + 1) % hop == 0 and e not in skip] + [n - 1]
        for i, em, received in _run(n, 2, hop, skip):
            end = next(e for e in run_ends if e >= i + 2 or e == n - 1)
            assert em.merged["va"].tolist() == [end, i]
            assert received >= min(end + 1, n)  # final only once that window ran


def test_emitted_values_are_never_revised_by_later_windows():
    st = LiveStitcher({"va": 2, "expr": 8}, 0, W)
    st.add_frame(_frame(0))
    st.add_window(0, _window(0, 0))
    first = st.ready(0)
    assert first.start == 0 and len(first) == 1
    kept = first.merged["va"].copy()
    st.add_frame(_frame(1))
    st.add_window(0, _window(0, 1))
    assert [i for i, _ in _each(st.ready(1))] == [1]
    assert first.merged["va"].tolist() == kept.tolist()
