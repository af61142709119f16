"""TrtRunner's logic on the fakes of tests/fakes_trt.py: profiles, buckets, buffers, graphs, types, refusals.

The fakes check the CUDA / TensorRT call contract (see their docstring); the last tests plant faults
in a runner and show the fakes catch each one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from abaw_rt.cuda.memory import HostBusyError
from abaw_rt.errors import AbawRtError
from abaw_rt.io import file_sha256
from abaw_rt.runners.buckets import ShapeBuckets
from abaw_rt.runners.trt_runner import TrtRunner
from abaw_rt.trt.profiles import AxisRange, ProfileSpec
from abaw_rt.trt.sidecar import read_sidecar, write_sidecar
from tests.fakes_trt import ContractError, install, make_fake_engine, reference

LIVE = ProfileSpec("live", AxisRange(1, 1, 4), AxisRange(1, 75, 300))
WIDE = ProfileSpec("wide", AxisRange(1, 8, 16), AxisRange(1, 300, 300))
LONG = ProfileSpec("long", AxisRange(1, 1, 4), AxisRange(300, 600, 1200))
PROFILES = (WIDE, LIVE, LONG)


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch)


def runner(tmp_path, fake, dtype="float32", cls=TrtRunner, **kw):
    cuda, _ = fake
    return cls(make_fake_engine(tmp_path, dtype, PROFILES), cuda=cuda, **kw)


def feeds_for(r, batch, time, seed=0):
    return r.example_feeds(batch, time, rng=np.random.default_rng(seed), padded=batch > 1)


def expected(r, feeds, dtype="float32"):
    cast = {k: (v.astype(dtype) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    return reference(cast, r.output_specs[0].shape[2])


def contexts(fake):
    _, trt = fake
    return trt.runtimes[-1].engines[-1].contexts


def test_each_call_runs_on_the_tightest_profile_and_matches_the_engine(tmp_path, fake):
    with runner(tmp_path, fake) as r:
        for (batch, time), profile in [((1, 75), 1), ((8, 300), 0), ((2, 301), 2), ((1, 10), 1)]:
            feeds = feeds_for(r, batch, time, seed=time)
            out = r.infer(feeds)["va"]
            assert out.shape == (batch, time, 2) and out.dtype == np.float32
            np.testing.assert_allclose(out, expected(r, feeds), rtol=1e-5, atol=1e-6)
            assert contexts(fake)[0].profile == profile
        assert contexts(fake)[0].profiles_set == [1, 0, 2, 1]  # set only when it changes
        with pytest.raises(AbawRtError, match="batch 17, time 5 is outside every optimisation profile"):
            r.infer(feeds_for(r, 17, 5))
    with runner(tmp_path, fake, profile="wide") as pinned:
        pinned.infer(feeds_for(pinned, 1, 75))
        assert contexts(fake)[0].profile == 0


def test_buffers_are_reused_and_grown_only_for_larger_shapes(tmp_path, fake):
    cuda, _ = fake
    with runner(tmp_path, fake) as r:
        r.infer(feeds_for(r, 2, 100))
        first, n = dict(contexts(fake)[0].addresses), cuda.mallocs
        for batch, time in [(1, 50), (2, 100), (1, 1)]:  # smaller or equal: same memory
            np.testing.assert_allclose(r.infer(f := feeds_for(r, batch, time))["va"], expected(r, f), rtol=1e-5)
        assert cuda.mallocs == n and contexts(fake)[0].addresses == first
        big = feeds_for(r, 4, 300)
        np.testing.assert_allclose(r.infer(big)["va"], expected(r, big), rtol=1e-5)
        assert cuda.mallocs == n + 4  # visual, audio, lengths, va device buffers regrown (pinned staging apart)
        assert all(contexts(fake)[0].addresses[k] != first[k] for k in first)
    assert cuda.device == {} and cuda.pinned == [] and cuda.streams == {}  # everything freed on exit


def test_cuda_graphs_pad_to_buckets_and_capture_once_per_bucket(tmp_path, fake):
    cuda, _ = fake
    buckets = ShapeBuckets(batch=(1, 4), time=(75, 300))
    with runner(tmp_path, fake, cuda_graphs=True, buckets=buckets) as r:
        calls = [(1, 75), (1, 40), (3, 300), (4, 120), (1, 75), (3, 300), (2, 301)]
        for i, (batch, time) in enumerate(calls):
            feeds = feeds_for(r, batch, time, seed=i)
            out = r.infer(feeds)["va"]
            assert out.shape == (batch, time, 2)
            np.testing.assert_allclose(out, expected(r, feeds), rtol=1e-5, atol=1e-6)
        keys = sorted(k[1] for k in r._graphs)  # the visual input's (padded) shape per captured graph
        assert keys == [(1, 75, 2304), (4, 300, 2304), (4, 301, 2304)]  # time 301 is past the buckets: kept
        assert len(contexts(fake)) == 1 + 3  # the shared context (unused here) and one per graph
        assert sorted(g.launches for g in cuda.graphs) == [0, 2, 2]  # a capture runs eagerly; repeats replay
        shapes = sorted(c.shapes["visual"] for c in contexts(fake)[1:])
        assert shapes == keys  # each graph's context holds the shapes it was captured with


def test_fp16_engines_take_fp16_inputs_and_return_float32(tmp_path, fake):
    cuda, _ = fake
    with runner(tmp_path, fake, dtype="float16") as r:
        assert r._dtypes["visual"] == np.float16 and r._dtypes["va"] == np.float16
        assert r._dtypes["lengths"] == np.int64
        feeds = feeds_for(r, 2, 50)
        out = r.infer(feeds)["va"]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected(r, feeds, "float16"), rtol=2e-3, atol=2e-3)
        ctx = contexts(fake)[0]
        visual = cuda.resolve(ctx.addresses["visual"], 2 * 50 * 2304 * 2, "test").view(np.float16)
        np.testing.assert_array_equal(visual, feeds["visual"].astype(np.float16).ravel())


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda s: s["tensors"].pop(), r"has tensors \['visual', 'audio', 'lengths'\], its sidecar declares"),
        (lambda s: s["profiles"].pop(), "has 2 optimisation profiles, its sidecar declares 3"),
        (lambda s: s["profiles"][1]["visual"][2].__setitem__(1, 299), r"profile 1 \('live'\) input 'visual' is"),
        (lambda s: s["tensors"][0].__setitem__("dtype", "bool"), "tensor 'visual' has type DataType.BOOL"),
    ],
)
def test_an_engine_unlike_its_sidecar_is_refused_on_activation(tmp_path, fake, tamper, match):
    cuda, _ = fake
    r = TrtRunner(make_fake_engine(tmp_path, "float32", PROFILES, tamper=tamper), cuda=cuda)
    with pytest.raises(AbawRtError, match=match):
        r.activate()
    assert not r.is_active and cuda.device == {} and cuda.streams == {}  # nothing left allocated


def test_unloadable_or_replaced_plans_are_refused_with_the_rebuild_command(tmp_path, fake):
    cuda, _ = fake
    plan = make_fake_engine(tmp_path, "float32", PROFILES)
    plan.write_bytes(b"\x00not a plan")
    with pytest.raises(AbawRtError, match="plan's sha256 differs from its sidecar's.*rebuild it: abaw-rt build"):
        TrtRunner(plan, cuda=cuda)
    write_sidecar(plan, replace(read_sidecar(plan), plan_sha256=file_sha256(plan)))
    with pytest.raises(AbawRtError, match="TensorRT could not load the plan; rebuild it: abaw-rt build"):
        TrtRunner(plan, cuda=cuda).activate()


# -- planted faults: each broken runner is caught by the fakes ----------------------------------------------
class NoOutputAddress(TrtRunner):
    def _bind(self, trt_context, k, shapes, io):
        out = super()._bind(trt_context, k, shapes, io)
        trt_context.addresses.pop("va")  # as if set_tensor_address were never called for the output
        return out


class HalfSizeBuffers(TrtRunner):
    def _bind(self, trt_context, k, shapes, io):
        real = self._nbytes
        self._nbytes = lambda name, shape: real(name, shape) // (2 if name == "va" else 1)  # half the output
        try:
            return super()._bind(trt_context, k, shapes, io)
        finally:
            del self._nbytes


class ShapeBlindGraphCache(TrtRunner):
    def _replay(self, k, shapes, feeds):  # keys graphs by profile only, forgetting the shapes
        entry = self._graphs.get(k)
        if entry is None:
            entry = self._graphs[k] = self._capture(k, shapes, feeds)
        else:
            self._upload(entry.io, shapes, feeds)
            entry.graph.launch()
        self._download(entry.io, entry.out_shapes)
        return entry.io, entry.out_shapes


def test_planted_faults_are_caught(tmp_path, fake):
    with runner(tmp_path, fake, cls=NoOutputAddress) as r:
        feeds = feeds_for(r, 1, 20)
        with pytest.raises(ContractError, match="execute_async_v3: tensor 'va' has no address"):
            r.infer(feeds)
    with runner(tmp_path, fake, cls=HalfSizeBuffers) as r:
        with pytest.raises(ContractError, match=r"overrun its allocation of"):
            r.infer(feeds)


def test_a_graph_replayed_for_other_shapes_is_caught(tmp_path, fake):
    with runner(tmp_path, fake, cls=ShapeBlindGraphCache, cuda_graphs=True, buckets=ShapeBuckets(time=(1,))) as r:
        r.infer(feeds_for(r, 1, 200))  # captured for (1, 200) on profile 'live'
        with pytest.raises(ContractError, match=r"captured for input 'visual' \(1, 200, 2304\).*replayed after"):
            r.infer(feeds_for(r, 1, 100))  # same profile, other shape: the (1, 200) graph would replay


def test_outputs_read_before_the_stream_is_synchronised_are_caught(tmp_path, fake):
    cuda, _ = fake
    with runner(tmp_path, fake) as r:
        r._stream.synchronize = lambda: None  # a runner that forgets to synchronise
        with pytest.raises(HostBusyError, match="pinned host buffer read or written while an async copy"):
            r.infer(feeds_for(r, 1, 20))
        assert any(s.queue for s in cuda.streams.values())  # the copies had not even run yet
        del r._stream.synchronize
