"""ShuffleNet V1 (Zhang et al. CVPR 2018) for CIFAR, as RepDistiller's KD tables use it.

torchvision has no V1 (V2 is `lib/models/tvision.py`), so it is written here. RepDistiller's
CIFAR layout: a 1x1 conv-BN-ReLU stem of 24 channels at full resolution, three stages of
4 / 8 / 4 units with 240 / 480 / 960 output channels and g = 3 groups, global average pooling
and one Linear classifier. A unit of c_in -> c_out channels with m = c_out / 4 bottleneck
channels computes

    h = relu(bn1(gconv1x1(x)));  h = shuffle(h);  h = relu(bn2(dwconv3x3(h)));  h = bn3(gconv1x1(h))
    y = relu(h + x)                    (stride 1)
    y = relu(cat(h, avgpool3x3(x)))    (stride 2, the first unit of a stage: h has c_out − c_in channels)

The first 1x1 conv of the first stage is not grouped (its input is the 24-channel stem), as in
the paper. RepDistiller puts a ReLU after the depthwise conv (the paper does not); we follow it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.models import register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g·c, H, W) -> (B, c·g, H, W): channel j of group i moves to position j·g + i."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit; `stride` 2 concatenates an average-pooled shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, group_input: bool = True):
        super().__init__()
        out = c_out - c_in if stride == 2 else c_out
        mid = out // 4
        self.g1 = groups if group_input else 1
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out)

    def forward(self, x):
        h = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        h = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(h)))))
        if self.stride == 2:
            return F.relu(torch.cat([h, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(h + x)


class ShuffleNetV1(nn.Module):
    """1x1 stem, stages of ShuffleUnits (each starts with stride 2), global average pool, classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 widths: tuple[int, ...] = (240, 480, 960), units: tuple[int, ...] = (4, 8, 4),
                 groups: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        c, stages = 24, []
        for w, n in zip(widths, units):
            stages.append(nn.Sequential(*[  # the stem's output (first unit) is not grouped
                ShuffleUnit(c if i == 0 else w, w, 2 if i == 0 else 1, groups, group_input=bool(stages or i))
                for i in range(n)]))
            c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)  # PyTorch's default init, as in RepDistiller

    def forward(self, x):
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))  # (B, C) -> (B, classes)


@register("shufflenet_v1")
def shufflenet_v1(input_shape, num_classes, **kw) -> nn.Module:
    """RepDistiller's ShuffleV1: g = 3, 240 / 480 / 960 channels, 4 / 8 / 4 units."""
    return ShuffleNetV1(input_shape, num_classes)
