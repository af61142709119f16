"""Decoding with PyAV: timestamps (VFR), audio resampled to mono 16 kHz and aligned to frames by time, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")

from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.pipeline.decode import AUDIO_RATE, AudioTrack, VideoDecoder, probe  # noqa: E402
from abaw_rt.pipeline.extractor_spec import ExtractorSpec, Stretch  # noqa: E402
from abaw_rt.pipeline.extractors import FeatureExtractor, audio_coverage  # noqa: E402
from tests.reliability import audio_only, truncated_faststart, zero_frame_video  # noqa: E402

WINDOW = 800  # 50 ms windows: alignment errors of a frame (40 ms) show up clearly


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    syn.write_video(d / "cfr.mp4", frames=30)
    syn.write_video(d / "vfr.mp4", frames=20, vfr=True)
    syn.write_video(d / "late.mkv", frames=50, audio_start=0.8, audio_seconds=0.6)
    syn.write_video(d / "late.mp4", frames=50, audio_start=0.8, audio_seconds=0.6)
    syn.write_video(d / "silent.mp4", frames=10, audio=False)
    syn.write_video(d / "one.mp4", frames=1)
    syn.linear_extractor(d / "aud.onnx", "audio", 6, window=WINDOW)
    return d


def _decode(path: Path, **kw):
    dec = VideoDecoder(path, **kw)
    frames = []
    for f in dec.frames():
        frames.append((f.index, f.time, f.rgb().shape))
        f.release()
    return dec, frames


def _audio_extractor(media: Path, stretch=Stretch.nearest, hop=160) -> FeatureExtractor:
    spec = ExtractorSpec("aud", "audio", media / "aud.onnx", 6, window=WINDOW, hop=hop, stretch=stretch, batch=64)
    return FeatureExtractor(spec)


def test_probe_and_constant_rate_decode(media):
    info = probe(media / "cfr.mp4")
    assert (info.width, info.height, info.fps, info.has_audio) == (160, 120, 25.0, True)
    dec, frames = _decode(media / "cfr.mp4")
    assert [i for i, _, _ in frames] == list(range(30))
    np.testing.assert_allclose([t for _, t, _ in frames], np.arange(30) / 25.0, atol=1e-6)
    assert frames[0][2] == (120, 160, 3)
    assert dec.audio.rate == AUDIO_RATE and dec.audio.samples.dtype == np.float32
    # AAC adds a little padding; the track must cover the video and be mono 16 kHz
    assert 1.15 < len(dec.audio.samples) / AUDIO_RATE < 1.35 and abs(dec.audio.start) < 0.05


def test_variable_frame_rate_keeps_real_timestamps(media):
    _, frames = _decode(media / "vfr.mp4")
    times = np.array([t for _, t, _ in frames])
    expected = np.cumsum([0.0] + [(2.0 if i % 2 else 1.0) / 25.0 for i in range(19)])
    np.testing.assert_allclose(times, expected, atol=1e-4)


def test_scaled_rgb_through_own_reformatter(media):
    dec = VideoDecoder(media / "cfr.mp4", audio=False)
    frame = next(iter(dec.frames()))
    small = frame.rgb_at(80, 60)
    assert small.shape == (60, 80, 3)
    # the same frame at full size, averaged down, looks like the scaled one
    full = frame.rgb().astype(float).reshape(60, 2, 80, 2, 3).mean(axis=(1, 3))
    assert np.abs(full - small).mean() < 6


def test_audio_features_follow_timestamps_for_vfr(media):
    """A VFR frame at time t gets the audio feature of a CFR frame at the same t, not of the same index."""
    with _audio_extractor(media) as ext:
        d1, _ = _decode(media / "cfr.mp4")
        t1 = np.arange(30) / 25.0
        f_cfr = ext.audio_features(d1.audio, t1)
        d2, frames = _decode(media / "vfr.mp4")
        t2 = np.array([t for _, t, _ in frames])
        f_vfr = ext.audio_features(d2.audio, t2)
    assert f_cfr.shape == (30, 6) and f_vfr.shape == (20, 6)
    same_time = np.rint(t2 * 25).astype(int)
    inside = same_time < 28  # the CFR clip's audio ends at 1.2 s
    np.testing.assert_allclose(f_vfr[inside], f_cfr[same_time[inside]], atol=2e-3)
    by_count = np.arange(20)[inside]
    assert np.abs(f_vfr[inside] - f_cfr[by_count]).max() > 10 * 2e-3  # index-based alignment would differ


@pytest.mark.parametrize("name", ["late.mkv", "late.mp4"])
def test_late_and_short_audio_is_silence_outside_the_track(media, name):
    dec, frames = _decode(media / name)
    assert dec.audio.start == pytest.approx(0.8, abs=0.03)  # AAC priming may shift mp4 by a few ms
    assert dec.audio.end == pytest.approx(1.4, abs=0.05)
    times = np.array([t for _, t, _ in frames])
    with _audio_extractor(media) as ext:
        feats = ext.audio_features(dec.audio, times)
        silence = ext.audio_features(None, times[:1])[0]  # what the extractor gives for pure silence
    half = WINDOW / 2 / AUDIO_RATE
    quiet = (times + half < dec.audio.start - 0.01) | (times - half > dec.audio.end + 0.01)
    loud = (times - half > dec.audio.start + 0.05) & (times + half < dec.audio.end - 0.05)
    assert quiet.sum() >= 20 and loud.sum() >= 8
    np.testing.assert_allclose(feats[quiet], np.broadcast_to(silence, feats[quiet].shape), atol=1e-6)
    assert np.abs(feats[loud] - silence).max(axis=1).min() > 1e-3
    assert audio_coverage(dec.audio, times) == pytest.approx(0.6 / 2.0, abs=0.03)  # 0.6 s of audio in a 2 s clip


def test_linear_stretch_interpolates_between_windows(media):
    dec, frames = _decode(media / "cfr.mp4")
    times = np.array([t for _, t, _ in frames])
    with (
        _audio_extractor(media, Stretch.nearest, hop=1280) as near,
        _audio_extractor(media, Stretch.linear, hop=1280) as lin,
    ):
        a, b = near.audio_features(dec.audio, times), lin.audio_features(dec.audio, times)
    # hop 1280 = 80 ms = two frames: even frames sit on a window, odd frames halfway between two
    np.testing.assert_allclose(a[::2], b[::2], atol=1e-6)
    np.testing.assert_allclose(b[1:-1:2], (a[0:-2:2] + a[2::2]) / 2, atol=1e-5)


def test_no_audio_track(media):
    assert probe(media / "silent.mp4").has_audio is False
    dec, frames = _decode(media / "silent.mp4")
    assert len(frames) == 10 and dec.audio is None and not dec.stats.audio_stream


def test_one_frame_video(media):
    dec, frames = _decode(media / "one.mp4")
    assert len(frames) == 1 and frames[0][1] == 0.0
    with _audio_extractor(media) as ext:
        assert ext.audio_features(dec.audio, np.array([0.0])).shape == (1, 6)


def test_audio_track_on_timeline():
    track = AudioTrack(np.arange(1, 6, dtype=np.float32), start=2 / AUDIO_RATE)
    np.testing.assert_array_equal(track.on_timeline(0.0, 9), [0, 0, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(track.on_timeline(4 / AUDIO_RATE, 3), [3, 4, 5])


def test_bad_files_are_clear_errors(media, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((media / "cfr.mp4").read_bytes()[:5000])  # index (moov) at the end: gone
    cases = {
        tmp_path / "missing.mp4": "no such file",
        text: "not a readable video",
        cut: "not a readable video",
        tmp_path: "is a folder",
    }
    for path, match in cases.items():
        with pytest.raises(AbawRtError, match=match) as exc:
            probe(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(AbawRtError, match="no decodable video frames"):
        _decode(zero_frame_video(tmp_path / "zero.mkv"))
    with pytest.raises(AbawRtError, match="truncated or corrupt"):
        _decode(truncated_faststart(tmp_path / "half.mp4", tmp_path))
    with pytest.raises(AbawRtError, match="no video stream"):
        probe(audio_only(tmp_path / "audio.m4a"))


def test_reader_thread_gives_the_same_frames_and_stops_early(media):
    import threading

    from abaw_rt.pipeline.stream.reader import FrameReader

    direct = [(f.index, f.time, f.rgb().sum()) for f in VideoDecoder(media / "cfr.mp4").frames()]
    reader = FrameReader(VideoDecoder(media / "cfr.mp4"), 4, strict=True).start()
    caps = list(reader)
    assert [(c.frame.index, c.frame.time, c.frame.rgb().sum()) for c in caps] == direct
    assert all(c.decode_s > 0 for c in caps) and caps[0].mono <= caps[-1].mono
    reader = FrameReader(VideoDecoder(media / "cfr.mp4"), 2, strict=True).start()
    reader.get()
    reader.close()  # the consumer stops early: the decoder thread ends and closes the file
    assert not [t for t in threading.enumerate() if t.name == "abaw-rt-decode"]
    assert reader.ended_by == "stopped"


def test_reader_in_the_calling_thread_gives_the_same_frames(media):
    import threading

    from abaw_rt.pipeline.stream.reader import FrameReader

    before = threading.active_count()
    reader = FrameReader(VideoDecoder(media / "cfr.mp4"), 0, strict=True).start()
    assert threading.active_count() == before  # prefetch 0: no thread
    assert [c.frame.index for c in reader] == list(range(30)) and reader.ended_by == "end"


@pytest.mark.parametrize("strict", [True, False])
def test_reader_raises_decoding_errors_in_the_consumer(media, tmp_path, strict):
    """A file that breaks (offline, strict) raises; a live stream that breaks after its first frames ends there."""
    from abaw_rt.pipeline.stream.reader import END, FrameReader

    reader = FrameReader(VideoDecoder(truncated_faststart(tmp_path / "half.mp4", tmp_path)), 4, strict=strict).start()
    if strict:
        with pytest.raises(AbawRtError, match="truncated or corrupt"):
            list(reader)
    else:
        frames = list(reader)
        assert frames and reader.get() is END and "truncated or corrupt" in reader.ended_by
