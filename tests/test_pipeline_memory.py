"""What keeps a long video's memory flat: per-stage timings and the decoder's packet records hold constant memory,
and the heap's free pages go back to the system when a video's decoder closes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from abaw_rt.pipeline import synthetic as syn
from abaw_rt.pipeline.report import CallTimes, StageTimes, release_freed_memory
from abaw_rt.pipeline.timeline import Timeline


def test_call_times_percentiles_are_within_a_bin_of_the_exact_ones():
    x = np.random.default_rng(0).lognormal(mean=-6.0, sigma=1.2, size=20000)  # ~2.5 ms, a long tail
    c = CallTimes()
    for v in x:
        c.add(float(v))
    got = c.percentiles((50, 90, 99))
    want = np.percentile(x, [50, 90, 99])
    np.testing.assert_allclose(got, want, rtol=0.012)
    assert c.count == len(x) and c.total == pytest.approx(float(x.sum()), rel=1e-12)


def test_call_times_hold_constant_memory_and_exact_extremes():
    c = CallTimes()
    size = len(c.bins)
    for k in range(50000):
        c.add(1e-4 * (1 + k % 7))
    assert len(c.bins) == size and sum(c.bins) == 50000  # one counter per bin, however many calls
    assert c.percentiles((0, 100)) == [pytest.approx(1e-4), pytest.approx(7e-4)]
    one = CallTimes()
    one.add(0.0123)
    assert one.percentiles((50, 90, 99)) == [0.0123, 0.0123, 0.0123]  # one call: its own time
    edge = CallTimes()
    for s in (0.0, 1e6):  # below and above the bins' range: counted in the end bins
        edge.add(s)
    assert sum(edge.bins) == 2 and edge.bins[0] == edge.bins[-1] == 1 and edge.percentiles((0, 100)) == [0.0, 1e6]


def test_stage_times_summary():
    t = StageTimes()
    for s in (0.001, 0.002, 0.003, 0.004):
        t.add("detect", s, items=2)
    t.add("fusion", 0.05, items=8)
    s = t.summary(wall=1.0)
    assert s["detect"]["calls"] == 4 and s["detect"]["items"] == 8
    assert s["detect"]["total_s"] == pytest.approx(0.01) and s["detect"]["share"] == pytest.approx(0.01)
    assert 1.0 <= s["detect"]["p50_ms"] <= s["detect"]["p90_ms"] <= s["detect"]["p99_ms"] <= 4.0
    assert s["fusion"]["p50_ms"] == s["fusion"]["p99_ms"] == 50.0
    assert t.total("fusion") == 0.05 and t.total("absent") == 0.0


LOST = 2700  # the time of the packet that fails to decode, late in the stream


def _lost_frames(packets, out, forget: bool):
    """Packet times in decode order; ``out``: the frame times the decoder gives back after each packet (errors
    from the first packet whose frame never came). Returns (lost times as ``decode`` finds them, most held)."""
    timeline, lost, last, held = Timeline(), [], None, 0
    errors = False
    for pts, frames in zip(packets, out):
        timeline.sent(SimpleNamespace(pts=pts, is_discard=False))
        errors = errors or pts == LOST
        for f in frames:
            if errors:
                lost += timeline.passed(f, last)
            last = f if last is None else max(last, f)
            if forget:
                timeline.forget(last)
        held = max(held, len(timeline.pending))
    return lost + (timeline.passed(None, last) if errors else []), held


def test_timeline_forgets_settled_packets_and_finds_the_same_lost_frames():
    n = 3000
    packets = [p for k in range(0, n, 3) for p in (k + 2, k, k + 1)]  # B-frames: each P sent before two Bs
    sent_at = {p: i for i, p in enumerate(packets)}
    out, ready = [[] for _ in packets], 0
    for f in sorted(packets):  # frames come in time order, once their packet and every earlier one were sent
        ready = max(ready, sent_at[f])
        if f != LOST:  # this packet failed to decode: its frame never comes
            out[min(ready + 2, len(out) - 1)].append(f)  # the decoder gives frames two packets late
    lost_kept, held_kept = _lost_frames(packets, out, forget=False)
    lost_forgot, held_forgot = _lost_frames(packets, out, forget=True)
    assert lost_forgot == lost_kept == [LOST]
    assert held_kept >= LOST - 10 and held_forgot <= 6  # without forget: one record per packet until the end


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_freed_heap_pages_go_back_to_the_system():
    ctypes = pytest.importorskip("ctypes")
    try:
        ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        pytest.skip("no glibc malloc_trim here")
    held = [np.ones(4000) for _ in range(3000)]  # 32 kB blocks: inside the heap, not mapped one by one
    del held[::2]  # 48 MB of holes the heap keeps resident (its top stays in use)
    before = _rss_mb()
    release_freed_memory()
    assert before - _rss_mb() > 30, (before, _rss_mb())


def test_the_decoder_releases_freed_memory_when_it_closes(tmp_path, monkeypatch):
    pytest.importorskip("av")
    from abaw_rt.pipeline import decode

    video = syn.write_video(tmp_path / "v.mp4", frames=12, audio=False)
    calls = []
    monkeypatch.setattr(decode, "release_freed_memory", lambda: calls.append(1))
    frames = decode.VideoDecoder(video).frames()
    assert sum(1 for _ in frames) == 12 and calls == [1]
    early = decode.VideoDecoder(video).frames()
    next(early)
    early.close()  # stopped early (an error downstream, Ctrl-C): the container closes all the same
    assert calls == [1, 1]
