"""Model layer: the temporal convolutional network of one modality (PAPER.md, "Model" step 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalBlock(nn.Module):
    """Two dilated 1-D convolutions with PReLU and dropout, plus a residual (authors' TemporalBlock).

    Causal blocks pad on the left only, so a frame never sees later frames and padding appended
    after a sequence's end cannot reach its real frames. Non-causal blocks zero padded frames
    before each convolution, so they see the same zeros as an unpadded run's border.
    Weight normalisation (authors' training reparametrisation) is folded: inference uses plain weights.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, causal: bool, dropout: float):
        super().__init__()
        span = (kernel_size - 1) * dilation
        self.pad = (span, 0) if causal else (span // 2, span - span // 2)
        self.causal = causal
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, dilation=dilation)
        self.act1, self.act2, self.act_out = nn.PReLU(), nn.PReLU(), nn.PReLU()
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        for conv in (self.conv1, self.conv2, self.downsample):
            if conv is not None:
                nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T); mask: (B, 1, T), 1 for real frames."""
        h = x if self.causal else x * mask
        h = self.drop(self.act1(self.conv1(F.pad(h, self.pad))))
        if not self.causal:
            h = h * mask
        h = self.drop(self.act2(self.conv2(F.pad(h, self.pad))))
        res = x if self.downsample is None else self.downsample(x)
        return self.act_out(h + res)


class TemporalConvNet(nn.Module):
    """A stack of temporal blocks with growing dilation (authors: 3 blocks, dilations 1, 2, 4)."""

    def __init__(self, c_in: int, channels, kernel_size: int, dilations, causal: bool, dropout: float):
        super().__init__()
        blocks = []
        for c_out, dilation in zip(channels, dilations):
            blocks.append(TemporalBlock(c_in, c_out, kernel_size, dilation, causal, dropout))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x
