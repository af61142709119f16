"""Model layer: the Transformer encoder over a segment's frames (Zhou et al. 2023, method, step 3: the Transformer encoder).

Written out rather than nn.TransformerEncoder so that (a) the key-padding mask is explicit and exports
to plain ONNX ops, (b) LayerNorm and softmax run in FP32 even when the rest of the graph is FP16 (what a
strongly typed TensorRT 11 build needs), and (c) the FLOPs are plain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics are accumulated in FP32 whatever the activation dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


# Added to the FP32 scores of keys outside the attention band: exp(-1e4) underflows to exactly zero, so they get
# exactly zero weight (scores themselves stay within a few hundred). Finite in FP16 too, so a graph lowered to FP16
# after export (`abaw-rt quantize`) keeps it as is, and out-of-band scores never become -inf: a padded query far from
# every real frame keeps finite scores, never a row that softmax would turn into NaN.
BAND_PENALTY = -1e4


def band_mask(t: int | torch.Tensor, band: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True where |i - j| <= band. Built from ``arange(t)`` so an exported graph keeps T dynamic."""
    i = torch.arange(t, device=device)
    return (i[:, None] - i[None, :]).abs() <= band


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask and, optionally, a band (``ModelConfig.attention_band``).

    Two numerically equivalent paths: ``fused`` (torch's scaled_dot_product_attention: flash-style
    kernels that never hold the T x T scores, softmax accumulated in FP32; used when running in torch)
    and the explicit matmul/softmax path (used for ONNX export, where the FP32 softmax must be visible
    in the graph). ``FusionModel.export_mode()`` switches every layer to the explicit path.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout
        self.fused = True

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, band: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D); key_valid: (B, 1, 1, T) bool, False for padded frames; band: (T, T) bool, True where
        key j is within the attention band of query i (``band_mask``), or None to attend over the whole window."""
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, Dh)
        if self.fused:
            mask = key_valid
            if band is not None:  # a padded query keeps its in-band keys (itself at least): no row is all False
                mask = band & (key_valid | ~key_valid.transpose(-2, -1))
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            q = q * self.head_dim**-0.5  # scale before the product: keeps FP16 scores in range
            # The key-padding mask rides inside the score product: q gains a constant 1 and k a bias of 0
            # (real frame) or a large negative number (padding), so padded keys score about -inf/2 and
            # get exactly zero weight, with no extra pass over the T x T scores (a separate Where cost
            # onnxruntime 11 % of the whole model at T=1200).
            penalty = torch.finfo(q.dtype).min / 2
            bias = ((~key_valid).transpose(-2, -1).to(k.dtype) * penalty).expand(b, self.n_heads, t, 1)
            q = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)
            k = torch.cat([k, bias], dim=-1)
            scores = torch.matmul(q, k.transpose(-2, -1)).float()
            if band is not None:  # the band cannot ride in the product (it is not rank one): one FP32 add
                scores = scores + (~band).to(torch.float32) * BAND_PENALTY
            attn = self.drop(torch.softmax(scores, dim=-1).to(v.dtype))
            y = torch.matmul(attn, v)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer with ReLU feed-forward (PyTorch's default, as the authors used)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.norm1 = FP32LayerNorm(d_model)
        self.norm2 = FP32LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, band: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, key_valid, band)))
        return self.norm2(x + self.drop(self.ff(x)))
