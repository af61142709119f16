"""Banded attention (ModelConfig.attention_band): bounded future context in torch and in the exported graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import PRESET_FEATURES, TINY, ModelConfig, preset

BAND = 3  # TINY has 2 layers: with a causal TCN an output depends on at most 6 later frames


def _band_cfg(**kw):
    return preset("va", heads=("va", "expr"), **{**TINY, "attention_band": BAND, **kw})


# -- config ---------------------------------------------------------------------------------------------------------
def test_future_frames_is_layers_times_band_with_a_causal_tcn():
    assert _band_cfg().future_frames == 2 * BAND
    assert _band_cfg(n_layers=5).future_frames == 5 * BAND
    assert preset("va", **TINY).future_frames is None  # whole-window attention: unbounded
    assert preset("va", n_layers=0, **{k: v for k, v in TINY.items() if k != "n_layers"}).future_frames == 0
    # a non-causal TCN adds its right half-span: two convolutions per block, kernel 5, dilations 1, 2, 4
    assert _band_cfg(causal=False).future_frames == 2 * (2 + 4 + 8) + 2 * BAND
    for name in PRESET_FEATURES:  # the paper's presets attend over the whole window
        assert preset(name).attention_band is None and preset(name).future_frames is None


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "25"])
def test_bad_band_values_are_refused(bad):
    with pytest.raises(AbawRtError, match=r"attention_band: got .*expected an integer >= 1 or None"):
        _band_cfg(attention_band=bad)
    with pytest.raises(AbawRtError, match="attention_band"):
        ModelConfig.from_dict({**_band_cfg().to_dict(), "attention_band": bad})


def test_a_recipe_override_sets_the_band():
    from abaw_rt.train.config import load_train_recipe

    root = Path(__file__).resolve().parents[1] / "training" / "recipes" / "va.toml"
    store = {n: {"dim": 4, "modality": "audio" if n == "wav2vec2" else "visual"} for n in PRESET_FEATURES["va"][0]}
    cfg = load_train_recipe(root, ["model.size=tiny", "model.arch.attention_band=25"])
    assert cfg.model_config(store).attention_band == 25 and cfg.model_config(store).future_frames == 50
    assert load_train_recipe(root).model_config(store).attention_band is None  # the paper's recipe: no band
    with pytest.raises(AbawRtError, match="attention_band"):
        load_train_recipe(root, ["model.arch.attention_band=0"]).model_config(store)


# -- checkpoints ----------------------------------------------------------------------------------------------------
def test_band_round_trips_and_old_headers_load_without_it(tiny_ckpt, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    from abaw_rt.checkpoint import METADATA_KEY, CheckpointHeader, load_checkpoint, save_checkpoint

    header = tiny_ckpt.header
    banded = CheckpointHeader(header.config.replace(attention_band=BAND), header.normalization, 40, 25)
    path = save_checkpoint(tmp_path / "band.safetensors", banded, tiny_ckpt.tensors)
    assert load_checkpoint(path).header.config.attention_band == BAND
    old = header.to_dict()
    del old["config"]["attention_band"]  # a header written before the field existed
    path = tmp_path / "old.safetensors"
    save_file(dict(tiny_ckpt.tensors), str(path), metadata={METADATA_KEY: json.dumps(old)})
    loaded = load_checkpoint(path).header.config
    assert loaded.attention_band is None and loaded == header.config


# -- torch ----------------------------------------------------------------------------------------------------------
def _model(cfg, seed=0):
    torch = pytest.importorskip("torch")
    from abaw_rt.model.fusion import FusionModel

    torch.manual_seed(seed)
    return FusionModel(cfg).eval()


def _feats(cfg, b, t, seed=1):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(0, 1, (b, t, cfg.modality_dim(m))).astype(np.float32) for m in cfg.modalities}


def _change_from(feats, start):
    """A copy whose frames from ``start`` on (every modality) are changed."""
    out = {m: x.copy() for m, x in feats.items()}
    for x in out.values():
        x[:, start:] += 3.0
    return out


def _torch_va(model, feats, lengths):
    import torch

    with torch.no_grad():
        out = model({m: torch.from_numpy(x) for m, x in feats.items()}, torch.from_numpy(np.asarray(lengths)))
    return np.concatenate([out[h].numpy() for h in model.cfg.heads], axis=-1)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_torch_output_ignores_frames_beyond_future_frames(path, causal):
    cfg = _band_cfg(causal=causal)
    model = _model(cfg).export_mode(path == "explicit")
    f, t, start = cfg.future_frames, 60, 40
    feats = _feats(cfg, 1, t)
    a = _torch_va(model, feats, [t])
    b = _torch_va(model, _change_from(feats, start), [t])
    diff = np.abs(a - b)[0].max(-1)
    np.testing.assert_array_equal(diff[: start - f], 0.0)  # beyond t + future_frames: exactly unchanged
    # within the reach it changes, up to the edge (there, through a non-causal TCN's outermost taps, by little)
    assert (diff[start - f :] > 0).all() and diff[start - f :].max() > 1e-2
    if causal:
        assert diff[start - f] > 1e-4


def test_without_a_band_every_earlier_frame_sees_the_change():
    cfg = preset("va", heads=("va", "expr"), **TINY)
    model = _model(cfg)
    feats = _feats(cfg, 1, 60)
    diff = np.abs(_torch_va(model, feats, [60]) - _torch_va(model, _change_from(feats, 40), [60]))[0].max(-1)
    assert (diff[:40] > 1e-7).all()


@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_padding_never_changes_real_frames_with_a_band(path):
    """Garbage padding, and padded frames further than the band from any real frame: real frames are unchanged."""
    cfg = _band_cfg()
    model = _model(cfg).export_mode(path == "explicit")
    for p in model.parameters():  # larger weights than the init so that differences would show
        p.data.normal_(0, 0.2)
    feats = _feats(cfg, 3, 64)
    lengths = np.array([64, 37, 2])
    batched = _torch_va(model, feats, lengths)
    junk = {m: x.copy() for m, x in feats.items()}
    for i, n in enumerate(lengths):
        for x in junk.values():
            x[i, n:] = 1e3
    padded = _torch_va(model, junk, lengths)
    assert np.isfinite(batched).all() and np.isfinite(padded).all()
    for i, n in enumerate(lengths):
        alone = _torch_va(model, {m: x[i : i + 1, :n] for m, x in feats.items()}, [n])
        np.testing.assert_allclose(batched[i, :n], alone[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(padded[i, :n], alone[0], atol=1e-5, rtol=0)


def test_fused_and_explicit_band_paths_agree():
    cfg = _band_cfg()
    model = _model(cfg)
    feats, lengths = _feats(cfg, 3, 50, seed=2), np.array([50, 31, 1])
    fused = _torch_va(model, feats, lengths)
    explicit = _torch_va(model.export_mode(), feats, lengths)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(fused[i, :n], explicit[i, :n], atol=1e-5, rtol=0)


# -- the exported graph ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def band_exports(tmp_path_factory):
    """{precision: ExportResult} of a tiny banded checkpoint (torchscript exporter, with the multi-length check)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from abaw_rt.checkpoint import init_checkpoint, load_checkpoint
    from abaw_rt.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("band")
    ckpt = load_checkpoint(init_checkpoint(folder / "band.safetensors", _band_cfg(), seed=5, window=40, stride=25))
    return {p: export_onnx(ckpt, folder / f"band.{p}.onnx", precision=p) for p in ("fp32", "fp16")}


def _ort_va(runner, feats, lengths):
    out = runner.infer({**feats, "lengths": np.asarray(lengths, np.int64)})
    return np.concatenate([out[h] for h in runner.header.config.heads], axis=-1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_band_graph_is_dynamic_and_honours_the_band(band_exports, precision):
    import onnx

    from abaw_rt.runners.ort_runner import OrtRunner

    res = band_exports[precision]
    assert 1 in res.checked_lengths and 211 in res.checked_lengths  # the export's own multi-length check passed
    graph = onnx.load(str(res.path), load_external_data=False)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.input}
    assert dims["visual"][:2] == ["batch", "time"] and dims["lengths"] == ["batch"]
    with OrtRunner(res.path, threads=1) as ort:
        cfg = ort.header.config
        assert cfg.attention_band == BAND
        f = cfg.future_frames
        for t, start in ((40, 30), (23, 15)):  # two lengths through one graph: time stays dynamic
            feats = _feats(cfg, 2, t, seed=t)
            a = _ort_va(ort, feats, [t, t - 4])
            b = _ort_va(ort, _change_from(feats, start), [t, t - 4])
            diff = np.abs(a - b)[0].max(-1)
            np.testing.assert_array_equal(diff[: start - f], 0.0)
            assert diff[start - f] > 1e-5


@pytest.mark.slow  # the dynamo exporter takes about a minute for the tiny model here
def test_dynamo_exports_a_band_model(band_exports, tmp_path):
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.export.onnx_export import export_onnx

    ckpt = load_checkpoint(band_exports["fp32"].path.with_name("band.safetensors"))
    res = export_onnx(ckpt, tmp_path / "band.fp16.onnx", precision="fp16", exporter="dynamo")
    assert res.checked_lengths == (1, 7, 39, 40, 41, 80, 211) and res.max_abs_error < 5e-2


def test_flops_are_the_same_with_a_band():
    """The band masks scores, it does not skip them: the analytic count and torch's counter are unchanged."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from abaw_rt.model.config import flops_per_frame

    counts = []
    for band in (None, BAND):
        cfg = _band_cfg(attention_band=band)
        model = _model(cfg).export_mode()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model({m: torch.from_numpy(x) for m, x in _feats(cfg, 2, 48).items()}, torch.tensor([48, 30]))
        counts.append((counter.get_total_flops(), flops_per_frame(cfg, 48)))
    assert counts[0] == counts[1]
