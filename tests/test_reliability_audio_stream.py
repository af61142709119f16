"""Long inputs: audio features made while decoding (constant memory) equal the whole-track path's.

The pipeline no longer keeps a video's whole 16 kHz track (3.8 MB per minute) to cut audio windows at
the end: ``AudioStream`` receives the decoder's chunks as they come and runs each extractor's windows
as soon as they are complete. These tests decode the same files both ways and compare the features,
over the cases that stress the clock: VFR, audio that starts late or ends early, audio longer than the
video, Matroska, several extractors with other windows, hops and batches, and nearest / linear stretch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")

from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.pipeline.audio_stream import AudioStream  # noqa: E402
from abaw_rt.pipeline.decode import VideoDecoder  # noqa: E402
from abaw_rt.pipeline.extractor_spec import ExtractorSpec, Stretch  # noqa: E402
from abaw_rt.pipeline.extractors import FeatureExtractor, audio_coverage  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stream")
    syn.write_video(d / "cfr.mp4", frames=60)
    syn.write_video(d / "vfr.mp4", frames=40, vfr=True)
    syn.write_video(d / "late.mkv", frames=75, audio_start=1.2, audio_seconds=0.9)
    syn.write_video(d / "late.mp4", frames=75, audio_start=1.2, audio_seconds=0.9)
    syn.write_video(d / "long_audio.mp4", frames=20, audio_seconds=3.0)
    syn.write_video(d / "one.mp4", frames=1)
    syn.linear_extractor(d / "a800.onnx", "audio", 6, window=800, seed=1)
    syn.linear_extractor(d / "a1600.onnx", "audio", 5, window=1600, seed=2)
    return d


def _extractors(media: Path, stretch: Stretch) -> list[FeatureExtractor]:
    specs = [
        ExtractorSpec("a", "audio", media / "a800.onnx", 6, window=800, hop=160, stretch=stretch, batch=7),
        ExtractorSpec("b", "audio", media / "a1600.onnx", 5, window=1600, hop=640, stretch=stretch, batch=3),
    ]
    return [FeatureExtractor(s).__enter__() for s in specs]


@pytest.mark.parametrize("name", ["cfr.mp4", "vfr.mp4", "late.mkv", "late.mp4", "long_audio.mp4", "one.mp4"])
@pytest.mark.parametrize("stretch", [Stretch.nearest, Stretch.linear])
def test_streamed_audio_features_equal_the_whole_track(media, name, stretch):
    extractors = _extractors(media, stretch)
    try:
        whole = VideoDecoder(media / name)
        times = [f.time for f in whole.frames()]
        ft = np.asarray(times)
        expected = {e.name: e.audio_features(whole.audio, ft) for e in extractors}

        stream = AudioStream(extractors)
        streamed = VideoDecoder(media / name, audio_sink=stream.put)
        batches_before_end = 0
        for f in streamed.frames():
            stream.pump(f.time)
            batches_before_end = sum(len(c.feats) for c in stream.cursors)
        got = stream.finish(ft)
    finally:
        for e in extractors:
            e.__exit__()
    assert streamed.audio is None  # the track itself was never kept
    for e in extractors:
        assert got[e.name].shape == expected[e.name].shape == (len(ft), e.spec.dim)
        np.testing.assert_allclose(got[e.name], expected[e.name], rtol=0, atol=1e-6)
    assert stream.start == pytest.approx(whole.audio.start, abs=1e-9)
    assert stream.seconds == pytest.approx(len(whole.audio.samples) / 16000)
    assert audio_coverage(stream, ft) == audio_coverage(whole.audio, ft)
    if len(ft) > 30:
        assert batches_before_end > 0  # windows ran while decoding, not all at the end


def test_memory_held_by_the_stream_stays_small(media):
    """Only the samples some window still needs are kept: a few windows' worth, whatever the video's length."""
    extractors = _extractors(media, Stretch.nearest)
    try:
        stream = AudioStream(extractors)
        held = []
        for f in VideoDecoder(media / "cfr.mp4", audio_sink=stream.put).frames():
            stream.pump(f.time)
            held.append(stream._n)
        stream.finish(np.arange(60) / 25.0)
    finally:
        for e in extractors:
            e.__exit__()
    assert stream.seconds > 2.3
    most = max(held[10:])
    assert most < 0.5 * stream.seconds * 16000, most  # well under the track (and bounded by windows x batches)
    assert most <= 3 * 640 + 1600 + 4 * 1024 + 7 * 160 + 800, most
