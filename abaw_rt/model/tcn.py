"""Model layer: the temporal convolutional network of one modality (Zhou et al. 2023, method, step 1: a TCN per modality).

Activations stay in (batch, time, channels) layout, and each dilated convolution is computed as one
matrix product over the K time-shifted copies of its input (im2col along time). On CPU this runs at
the machine's matmul rate, where oneDNN's direct 1-D convolution reached only about 60 % of it
(benchmarks/results), and it exports to plain Slice/Concat/MatMul that every backend handles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv(nn.Module):
    """Dilated 1-D convolution over time on (B, T, C) inputs, 'same' length output.

    The weight is a Linear over the concatenated taps: ``weight[:, k * c_in + c]`` multiplies
    input channel ``c`` at time offset ``k * dilation - pad_left``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        span = (kernel_size - 1) * dilation
        self.pad = (span, 0) if causal else (span // 2, span - span // 2)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.linear = nn.Linear(kernel_size * c_in, c_out)
        nn.init.normal_(self.linear.weight, 0.0, 0.01)  # authors' TemporalBlock.init_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return self.linear(x)
        t = x.shape[1]
        xp = F.pad(x, (0, 0, self.pad[0], self.pad[1]))
        taps = [xp[:, k * self.dilation : k * self.dilation + t] for k in range(self.kernel_size)]
        return self.linear(torch.cat(taps, dim=-1))


class TemporalBlock(nn.Module):
    """Two dilated convolutions with PReLU and dropout, plus a residual (authors' TemporalBlock).

    Causal blocks pad on the left only, so a frame never sees later frames and padding appended
    after a sequence's end cannot reach its real frames. Non-causal blocks zero padded frames
    before each convolution, so they see the same zeros as an unpadded run's border.
    Weight normalisation (authors' training reparametrisation) is folded: inference uses plain weights.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, causal: bool, dropout: float):
        super().__init__()
        self.causal = causal
        self.conv1 = TemporalConv(c_in, c_out, kernel_size, dilation, causal)
        self.conv2 = TemporalConv(c_out, c_out, kernel_size, dilation, causal)
        self.act1, self.act2, self.act_out = nn.PReLU(), nn.PReLU(), nn.PReLU()
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Linear(c_in, c_out) if c_in != c_out else None  # 1x1 convolution
        if self.downsample is not None:
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); mask: (B, T, 1), 1 for real frames."""
        h = x if self.causal else x * mask
        h = self.drop(self.act1(self.conv1(h)))
        if not self.causal:
            h = h * mask
        h = self.drop(self.act2(self.conv2(h)))
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
