"""Model: shapes per head, bounds, padding invariance, FP16 placement, analytic FLOPs and parameters."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.model.config import (  # noqa: E402
    HEAD_LABELS,
    TINY,
    FeatureGroup,
    ModelConfig,
    flops_per_frame,
    parameter_count,
    preset,
)
from abaw_rt.model.fusion import FusionModel  # noqa: E402


def _feeds(cfg, b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, t, cfg.modality_dim(m), generator=g) for m in cfg.modalities}


@pytest.mark.parametrize("heads", [("va",), ("expr",), ("au",), ("va", "expr", "au")])
def test_output_shapes_per_head(heads):
    cfg = preset("va", heads=heads, **TINY)
    model = FusionModel(cfg).eval()
    with torch.no_grad():
        out = model(_feeds(cfg, 3, 11), torch.tensor([11, 5, 1]))
    assert list(out) == list(heads)
    for h in heads:
        assert out[h].shape == (3, 11, len(HEAD_LABELS[h]))
        assert out[h].dtype == torch.float32
    if "va" in out:
        assert out["va"].abs().max() <= 1.0


@pytest.mark.parametrize("name", ["va", "va_arcface", "expr", "au"])
def test_presets_follow_the_paper(name):
    cfg = preset(name, **TINY)
    dims = {"va": (2304, 512), "va_arcface": (2816, 512), "expr": (1280 + 512, None), "au": (2304, None)}[name]
    assert cfg.modality_dim("visual") == dims[0]
    assert (cfg.modality_dim("audio") or None) == dims[1]
    assert [s.name for s in cfg.input_specs()][-1] == "lengths"


@pytest.mark.parametrize("causal", [True, False])
def test_padding_never_changes_real_frames(causal):
    """A sequence run alone and inside a padded batch agree to 1e-5."""
    cfg = preset("va", heads=("va", "expr", "au"), causal=causal, **TINY)
    torch.manual_seed(0)
    model = FusionModel(cfg).eval()
    for p in model.parameters():  # larger weights than the init so that differences would show
        p.data.normal_(0, 0.2)
    feats = _feeds(cfg, 3, 64, seed=1)
    lengths = torch.tensor([64, 37, 9])
    with torch.no_grad():
        batched = model(feats, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model({m: x[i : i + 1, :n] for m, x in feats.items()}, torch.tensor([n]))
            # the padding holds garbage: it must not matter
            junk = {m: x[i : i + 1].clone() for m, x in feats.items()}
            for x in junk.values():
                x[:, n:] = 1e3
            padded = model(junk, torch.tensor([n]))
            for h in cfg.heads:
                np.testing.assert_allclose(batched[h][i, :n], alone[h][0], atol=1e-5, rtol=0)
                np.testing.assert_allclose(padded[h][0, :n], alone[h][0], atol=1e-5, rtol=0)


def test_causal_model_ignores_the_future():
    cfg = preset("expr", **TINY)
    model = FusionModel(cfg).eval()
    feats = _feeds(cfg, 1, 30)
    with torch.no_grad():
        a = model(feats, torch.tensor([30]))["expr"]
    # attention sees the whole segment, so changing the future must change earlier frames:
    # the invariance above comes from masking, not from the model ignoring context.
    feats2 = {m: x.clone() for m, x in feats.items()}
    feats2["visual"][:, 20:] += 5.0
    with torch.no_grad():
        b = model(feats2, torch.tensor([30]))["expr"]
    assert (a[0, :20] - b[0, :20]).abs().max() > 1e-6


def test_fp16_keeps_normalisation_layernorm_and_softmax_in_fp32():
    cfg = preset("va", **TINY)
    model = FusionModel(cfg).eval().to_precision("fp16")
    assert model.proj.weight.dtype == torch.float16
    assert model.mean_visual.dtype == torch.float32 and model.std_audio.dtype == torch.float32
    ref = FusionModel(cfg).eval()
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    feats = _feeds(cfg, 2, 16)
    with torch.no_grad():
        out16 = model(feats, torch.tensor([16, 8]))["va"]
        out32 = ref(feats, torch.tensor([16, 8]))["va"]
    assert out16.dtype == torch.float32  # outputs come back as float32
    assert (out16 - out32).abs().max() < 5e-2


def test_parameter_count_matches_the_module():
    for cfg in (preset("va", **TINY), preset("va"), preset("expr"), preset("au", causal=False)):
        assert parameter_count(cfg) == sum(p.numel() for p in FusionModel(cfg).parameters())


def test_flops_per_frame_matches_flop_counter_plus_attention():
    """torch's FlopCounterMode counts convs and matmuls; our formula must agree on those."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = preset("va", **TINY)
    model = FusionModel(cfg).eval()
    b, t = 2, 48
    attention = cfg.n_layers * 2 * 2 * t * cfg.d_model  # Q K^T and A V per frame
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_feeds(cfg, b, t), torch.tensor([t, t]))
    # torch's fused attention kernel (what TorchRunner runs) is invisible to the counter
    assert counter.get_total_flops() / (b * t) + attention == pytest.approx(flops_per_frame(cfg, t), rel=1e-9)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.export_mode()(_feeds(cfg, b, t), torch.tensor([t, t]))
    # the explicit path (what the ONNX graph computes) shows the attention matmuls, plus the one extra
    # score column per head that carries the padding mask (2 * T FLOPs per head per layer per frame)
    mask_column = cfg.n_layers * cfg.n_heads * 2 * t
    assert counter.get_total_flops() / (b * t) == pytest.approx(flops_per_frame(cfg, t) + mask_column, rel=1e-9)


@pytest.mark.parametrize("heads", [("va", "expr", "au")])
def test_fused_and_explicit_attention_agree(heads):
    cfg = preset("va", heads=heads, **TINY)
    torch.manual_seed(0)
    model = FusionModel(cfg).eval()
    feats, lengths = _feeds(cfg, 3, 50, seed=2), torch.tensor([50, 31, 1])
    with torch.no_grad():
        fused = model(feats, lengths)
        explicit = model.export_mode()(feats, lengths)
    for h in heads:
        for i, n in enumerate(lengths.tolist()):
            np.testing.assert_allclose(fused[h][i, :n], explicit[h][i, :n], atol=1e-5, rtol=0)


def test_paper_size_is_the_authors_architecture():
    cfg = preset("va")
    assert 41e6 < parameter_count(cfg) < 43e6  # about 42 M parameters (upczww/abaw5 widths)
    assert 85e6 < flops_per_frame(cfg, 300) < 92e6  # about 88 MFLOP per frame at T = 300


def test_invalid_config_is_rejected_with_a_clear_error():
    with pytest.raises(AbawRtError, match="heads"):
        preset("va", heads=("valence",))
    with pytest.raises(AbawRtError, match="modality"):
        ModelConfig(features=(FeatureGroup("x", 4, "smell"),))
    with pytest.raises(AbawRtError, match="divisible"):
        preset("va", d_model=30, n_heads=4)
    with pytest.raises(AbawRtError, match="unknown preset"):
        preset("valence")
