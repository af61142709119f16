"""Zoo layer: the paper's visual extractors in plain torch (no timm, no torchvision), public checkpoints' layouts.

``EfficientNet`` follows timm's ``efficientnet_b2`` (what HSEmotion fine-tuned), ``DAN`` the authors' repository
(yaoing/DAN ``networks/dan.py``: the ResNet-18 trunk as ``features`` and four cross-attention heads, so its
``state_dict`` keys are those of the released ``.pth`` files) and ``IResNet`` insightface's ``arcface_torch``.
Each returns ``(features, logits)`` or ``features`` only; widths are parameters, so tiny variants share the code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _divisible(v: float, d: int = 8) -> int:
    """timm's make_divisible: nearest multiple of d, never more than 10 % below v."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.conv_expand(s))


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return layers + ([nn.SiLU()] if act else [])


class _MBConv(nn.Module):
    """Inverted residual (expand 1x1, depthwise kxk, squeeze-excite, project 1x1); expand 1 = timm's DS block."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        layers = _conv_bn(c_in, mid, 1) if expand != 1 else []
        layers += _conv_bn(mid, mid, k, stride, groups=mid)
        layers += [_SqueezeExcite(mid, max(1, int(c_in * 0.25)))]
        layers += _conv_bn(mid, c_out, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


# EfficientNet-B0 stages: (expand, kernel, stride, channels, repeats); B2 scales width 1.1 and depth 1.2.
_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip


class EfficientNet(nn.Module):
    """EfficientNet as in timm (symmetric padding, SiLU, SE 0.25); B2: width 1.1, depth 1.2, 260x260 input.

    Args:
        width, depth: the compound scaling multipliers (B2: 1.1, 1.2).
        head: channels of the last 1x1 conv = the pooled feature width (B2 native: 1408; the paper states 1280).
        classes: classifier outputs (HSEmotion AffectNet-8: 8).
    """

    def __init__(self, width: float = 1.1, depth: float = 1.2, head: int = 1408, classes: int = 8):
        super().__init__()
        stem = _divisible(32 * width)
        blocks, c_in = [], stem
        for expand, k, stride, c, reps in _B0_STAGES:
            c_out = _divisible(c * width)
            for i in range(int(math.ceil(reps * depth))):
                blocks.append(_MBConv(c_in, c_out, k, stride if i == 0 else 1, expand))
                c_in = c_out
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, 2))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(c_in, head, 1))
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        f = self.head(self.blocks(self.stem(x))).mean((2, 3))  # global average pool: the paper's "Eff" feature
        return f, self.classifier(f)


# -- DAN (yaoing/DAN) ---------------------------------------------------------------------------------
class _BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names, so checkpoint keys match)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet18_trunk(widths: tuple[int, ...] = (64, 128, 256, 512)) -> nn.Sequential:
    """torchvision resnet18 without avgpool and fc: indices 0-7 as in ``list(resnet.children())[:-2]``."""
    layers, c_in = [], widths[0]
    for i, w in enumerate(widths):
        layers.append(nn.Sequential(_BasicBlock(c_in, w, 1 if i == 0 else 2), _BasicBlock(w, w, 1)))
        c_in = w
    stem = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]  # fmt: skip
    return nn.Sequential(*stem, *layers)


class _SpatialAttention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        r = c // 2
        self.conv1x1 = nn.Sequential(nn.Conv2d(c, r, 1), nn.BatchNorm2d(r))
        self.conv_3x3 = nn.Sequential(nn.Conv2d(r, c, 3, padding=1), nn.BatchNorm2d(c))
        self.conv_1x3 = nn.Sequential(nn.Conv2d(r, c, (1, 3), padding=(0, 1)), nn.BatchNorm2d(c))
        self.conv_3x1 = nn.Sequential(nn.Conv2d(r, c, (3, 1), padding=(1, 0)), nn.BatchNorm2d(c))
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv1x1(x)
        y = self.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
        return x * y.sum(dim=1, keepdim=True)


class _ChannelAttention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        r = max(1, c // 16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.attention = nn.Sequential(nn.Linear(c, r), nn.BatchNorm1d(r), nn.ReLU(inplace=True), nn.Linear(r, c),
                                       nn.Sigmoid())  # fmt: skip

    def forward(self, sa):
        sa = self.gap(sa).flatten(1)
        return sa * self.attention(sa)


class _CrossAttentionHead(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.sa = _SpatialAttention(c)
        self.ca = _ChannelAttention(c)

    def forward(self, x):
        return self.ca(self.sa(x))


class DAN(nn.Module):
    """DAN: ResNet-18 trunk, ``heads`` cross-attention heads, log-softmax across heads, their sum (the 512-d
    feature the paper uses), then ``fc`` + ``bn`` to class logits (AffectNet-8: 8 classes, RAF-DB: 7)."""

    def __init__(self, classes: int = 8, heads: int = 4, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.features = resnet18_trunk(widths)
        self.num_head = heads
        for i in range(heads):
            setattr(self, f"cat_head{i}", _CrossAttentionHead(widths[-1]))
        self.fc = nn.Linear(widths[-1], classes)
        self.bn = nn.BatchNorm1d(classes)

    def forward(self, x):
        x = self.features(x)
        heads = torch.stack([getattr(self, f"cat_head{i}")(x) for i in range(self.num_head)], dim=1)
        if self.num_head > 1:
            heads = F.log_softmax(heads, dim=1)
        f = heads.sum(dim=1)
        return f, self.bn(self.fc(f))


# -- ArcFace IResNet (insightface arcface_torch) -----------------------------------------------------
class _IBasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """insightface IResNet: 112x112 aligned face -> 512-d identity embedding (r50: layers 3,4,14,3; r100: 3,13,30,3)."""

    def __init__(self, layers=(3, 4, 14, 3), widths=(64, 128, 256, 512), embedding: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        c_in, stages = widths[0], []
        for n, w in zip(layers, widths):
            stages.append(nn.Sequential(*[_IBasicBlock(c_in if i == 0 else w, w, 2 if i == 0 else 1) for i in range(n)]))
            c_in = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.fc = nn.Linear(c_in * 7 * 7, embedding)  # 112 / 16 = 7
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))
