"""Shape buckets (what CUDA graphs are captured for): padding a batch up to its bucket leaves the outputs alone."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.runners.buckets import ShapeBuckets, pad_feeds, unpad_outputs

torch = pytest.importorskip("torch")


def test_bucket_rounding():
    b = ShapeBuckets(batch=(1, 4, 16), time=(75, 300))
    assert b.bucket(1, 1) == (1, 75)
    assert b.bucket(2, 75) == (4, 75)
    assert b.bucket(16, 76) == (16, 300)
    assert b.bucket(17, 301) == (17, 301)  # past the last bucket: the exact shape
    for bad in ((), (4, 2), (0, 1), (1, 1)):
        with pytest.raises(AbawRtError, match="increasing positive integers"):
            ShapeBuckets(batch=bad)


@pytest.fixture(scope="module", params=[True, False], ids=["causal", "non-causal"])
def runner(request, tmp_path_factory):
    """Both TCN variants: padding must not leak into real frames through either."""
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, preset
    from abaw_rt.runners.torch_runner import TorchRunner

    path = tmp_path_factory.mktemp("buckets") / "m.safetensors"
    init_checkpoint(path, preset("va", **TINY, causal=request.param), seed=5)
    with TorchRunner(path) as r:
        yield r


@pytest.mark.parametrize("batch, time", [(1, 1), (3, 37), (5, 74)])
def test_padding_to_a_bucket_leaves_every_frame_unchanged(runner, batch, time):
    feeds = runner.example_feeds(batch, time, rng=np.random.default_rng(batch * 100 + time), padded=True)
    run_b, run_t = ShapeBuckets().bucket(batch, time)
    padded = pad_feeds(feeds, runner.input_specs, run_b, run_t)
    assert padded["lengths"].shape == (run_b,) and (padded["lengths"][batch:] == 1).all()
    assert all(padded[m].shape[:2] == (run_b, run_t) for m in ("visual", "audio"))
    direct = runner.infer(feeds)
    via_bucket = unpad_outputs(runner.infer(padded), batch, time)
    for name, want in direct.items():
        assert via_bucket[name].shape == want.shape
        np.testing.assert_allclose(via_bucket[name], want, atol=2e-5, rtol=0)


def test_cuda_options_need_a_cuda_device(tmp_path):
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, preset
    from abaw_rt.runners.torch_runner import TorchRunner

    path = init_checkpoint(tmp_path / "m.safetensors", preset("va", **TINY))
    for kw in ({"cuda_graphs": True}, {"compile": True}):
        with pytest.raises(AbawRtError, match="need a CUDA device"):
            TorchRunner(path, **kw)
    plain = TorchRunner(path)
    assert plain.buckets is None and not plain.cuda_graphs  # the CPU path is plain eager
