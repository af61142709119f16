"""Model layer: FusionModel, the paper's TCN + Transformer audio-visual fusion network (torch)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import HEAD_LABELS, LENGTHS, ModelConfig
from abaw_rt.model.tcn import TemporalConvNet
from abaw_rt.model.transformer import EncoderLayer, band_mask


class TaskHead(nn.Module):
    """Per-frame MLP for one task; VA is bounded to [-1, 1] with tanh."""

    def __init__(self, task: str, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.task = task
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, len(HEAD_LABELS[task]))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(x)
        return torch.tanh(y) if self.task == "va" else y


class FusionModel(nn.Module):
    """Per-modality TCNs -> concatenation -> 1x1 projection -> Transformer encoder -> task heads.

    Inputs are raw (un-normalised) features, one tensor per modality (B, T, D_m) holding that
    modality's feature groups concatenated in config order, and ``lengths`` (B,) giving each
    segment's number of real frames. Normalisation (per-dimension mean/std from the checkpoint)
    happens in-graph, in FP32. Padded frames never change a real frame's output: the TCNs are causal
    (or zero padded frames) and attention masks padded keys. With ``cfg.attention_band`` each frame attends
    only to frames within the band, so an output depends on at most ``cfg.future_frames`` later frames.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tcn = nn.ModuleDict(
            {
                m: TemporalConvNet(
                    cfg.modality_dim(m), cfg.channels(m), cfg.kernel_size, cfg.dilations, cfg.causal, cfg.dropout
                )
                for m in cfg.modalities
            }
        )
        concat = sum(cfg.channels(m)[-1] for m in cfg.modalities)
        self.proj = nn.Linear(concat, cfg.d_model)  # the authors' 1x1 convolution
        self.layers = nn.ModuleList(
            [EncoderLayer(cfg.d_model, cfg.n_heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.n_layers)]
        )
        self.heads = nn.ModuleDict({h: TaskHead(h, cfg.d_model, cfg.head_hidden, cfg.dropout) for h in cfg.heads})
        for m in cfg.modalities:
            dim = cfg.modality_dim(m)
            # Not part of state_dict: the statistics live in the checkpoint's JSON header.
            self.register_buffer(f"mean_{m}", torch.zeros(dim), persistent=False)
            self.register_buffer(f"std_{m}", torch.ones(dim), persistent=False)

    def set_normalization(self, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Set per-modality (mean, std) feature statistics."""
        for m in self.cfg.modalities:
            mean, std = stats[m]
            getattr(self, f"mean_{m}").copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
            getattr(self, f"std_{m}").copy_(torch.as_tensor(np.asarray(std), dtype=torch.float32))

    def to_precision(self, precision: str) -> "FusionModel":
        """fp32, or fp16 weights and activations with FP32 normalisation, LayerNorm and softmax."""
        if precision == "fp16":
            self.half()
            for m in self.cfg.modalities:  # input normalisation stays FP32
                setattr(self, f"mean_{m}", getattr(self, f"mean_{m}").float())
                setattr(self, f"std_{m}", getattr(self, f"std_{m}").float())
        elif precision == "fp32":
            self.float()
        else:
            raise AbawRtError(f"precision {precision!r}: expected 'fp32' or 'fp16'")
        return self

    def export_mode(self, enabled: bool = True) -> "FusionModel":
        """Explicit attention (matmul, FP32 softmax) for ONNX export; fused SDPA kernels otherwise."""
        for layer in self.layers:
            layer.attn.fused = not enabled
        return self

    def forward(self, feats: Mapping[str, torch.Tensor], lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """feats: {modality: (B, T, D_m) float32}; lengths: (B,) int64 -> {head: (B, T, n) float32}."""
        first = feats[self.cfg.modalities[0]]
        t = first.shape[1]
        valid = torch.arange(t, device=first.device)[None, :] < lengths[:, None]  # (B, T)
        dtype = self.proj.weight.dtype
        mask = valid[:, :, None].to(dtype)  # (B, T, 1)
        branches = []
        for m in self.cfg.modalities:
            x = (feats[m].float() - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
            branches.append(self.tcn[m](x.to(dtype), mask))  # (B, T, C_m)
        h = self.proj(torch.cat(branches, dim=-1))  # (B, T, d_model)
        key_valid = valid[:, None, None, :]
        band = None if self.cfg.attention_band is None else band_mask(t, self.cfg.attention_band, first.device)
        for layer in self.layers:
            h = layer(h, key_valid, band)
        return {name: head(h).float() for name, head in self.heads.items()}


class PositionalFusion(nn.Module):
    """FusionModel with positional inputs and tuple outputs in spec order, as ONNX export wants."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model
        self.modalities = model.cfg.modalities
        self.heads = model.cfg.heads

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = dict(zip(self.modalities, inputs[: len(self.modalities)]))
        out = self.model(feats, inputs[len(self.modalities)])
        return tuple(out[h] for h in self.heads)


def build_model(checkpoint, precision: str = "fp32") -> FusionModel:
    """A FusionModel in eval mode with the checkpoint's weights and normalisation.

    Raises:
        AbawRtError: the checkpoint's weights do not match its own config.
    """
    cfg = checkpoint.header.config
    model = FusionModel(cfg)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in checkpoint.tensors.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else "",
                f"wrong shape {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise AbawRtError(f"checkpoint '{checkpoint.path}': weights do not match its model config ({detail})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.set_normalization(checkpoint.header.normalization_arrays())
    model.eval()
    return model.to_precision(precision)


def init_state(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic freshly initialised weights for a config (CPU generator seeded with ``seed``)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = FusionModel(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


__all__ = ["FusionModel", "PositionalFusion", "TaskHead", "build_model", "init_state", "LENGTHS"]
