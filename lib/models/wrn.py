"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016), as RepDistiller builds them for CIFAR.

WRN-d-k: a 3x3 conv stem of 16 channels, three groups of n = (d − 4) / 6 pre-activation blocks
of 16k / 32k / 64k channels (the 2nd and 3rd groups start with stride 2), then BN-ReLU, global
average pooling and one Linear classifier. A block computes

    a = relu(bn1(x));  y = conv2(relu(bn2(conv1(a)))) + shortcut

where the shortcut is x itself when the block keeps its width, else a 1x1 projection of `a`
(the pre-activated input, as in the paper's code). No dropout (RepDistiller's default).
Init: Kaiming normal (fan_out) convs, BN weight 1 and bias 0, classifier bias 0.

The KD tables use WRN-40-2 as the teacher and WRN-16-2 / WRN-40-1 as students.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lib.models import register
from lib.models.init import kaiming_bn_


class WideBlock(nn.Module):
    """Pre-activation basic block, c_in -> c_out channels at `stride`."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.project = None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return y + (x if self.project is None else self.project(a))


class WideResNet(nn.Module):
    """Stem, three groups of `(depth − 4) / 6` WideBlocks, BN-ReLU, global average pool, classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int, widen: int):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth: must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        c = 16
        for g, w in enumerate(widths):
            blocks = [WideBlock(c if b == 0 else w, w, 2 if g > 0 and b == 0 else 1) for b in range(n)]
            setattr(self, f"block{g + 1}", nn.Sequential(*blocks))
            c = w
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        kaiming_bn_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.bn(x))).flatten(1))  # (B, C) -> (B, classes)


def _factory(name: str, depth: int, widen: int):
    def build(input_shape, num_classes, **kw) -> nn.Module:
        return WideResNet(input_shape, num_classes, depth=depth, widen=widen)
    build.__name__ = name
    build.__doc__ = f"{name}: WRN-{depth}-{widen}."
    return register(name)(build)


for _name, _depth, _widen in (("wrn_16_2", 16, 2), ("wrn_40_1", 40, 1), ("wrn_40_2", 40, 2)):
    _factory(_name, _depth, _widen)
