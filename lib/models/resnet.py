"""CIFAR ResNets (He et al. CVPR 2016, Section 4.2): depth 6n+2, stages of 16/32/64 channels.

A 3x3 conv-BN-ReLU stem, three stages of n BasicBlocks (the 2nd and 3rd start with stride 2),
global average pooling and one Linear classifier. resnet8 / 20 / 32 / 44 / 56 / 110 are
n = 1 / 3 / 5 / 7 / 9 / 18. RepDistiller's wide pair resnet8x4 / resnet32x4 (n = 1 / 5) has a
32-channel stem and stages of 64/128/256 channels (`stem`, `stages`): its first block projects
32 -> 64 channels with the option-B shortcut although its stride is 1.

Shortcut when a block changes shape: option B by default, a 1x1 conv + BN projection, as in the
RepDistiller code whose CIFAR-100 numbers REFERENCE.md quotes (resnet20: 272k parameters on
CIFAR-10). Option A (`shortcut="A"`, the paper's CIFAR choice, parameter-free: subsample by the
stride and append zero channels; resnet20: 270k, the paper's 0.27M) is available too.

`widths` gives each block's inner width (the output channels of its first conv), default the
stage width. It is the only width structured pruning changes: the channels a block adds to its
shortcut are tied across the whole stage, so they are kept (see lib/prune/surgery.py).
Init: Kaiming normal (fan_out) convs, BN weight 1 and bias 0.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn

from lib.models import register
from lib.models.init import kaiming_bn_

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: take every `stride`-th pixel and append `extra` zero channels."""

    def __init__(self, stride: int, extra: int):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C + extra, H', W')


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); conv1 maps c_in -> inner -> c_out."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                              nn.BatchNorm2d(c_out))
            else:
                self.shortcut = PadShortcut(stride, c_out - c_in)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, `stages` of `blocks_per_stage` BasicBlocks, global average pool, classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks_per_stage: int,
                 stages: Sequence[int] = (16, 32, 64), widths: Sequence[int] | None = None,
                 shortcut: str = "B", stem: int | None = None):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut: unknown '{shortcut}', choose from {', '.join(SHORTCUTS)}")
        n_blocks = blocks_per_stage * len(stages)
        widths = [w for w in stages for _ in range(blocks_per_stage)] if widths is None else list(widths)
        if len(widths) != n_blocks or min(widths) < 1:
            raise ValueError(f"widths: expected {n_blocks} positive inner widths, got {widths}")
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.blocks_per_stage, self.stages, self.shortcut = blocks_per_stage, tuple(stages), shortcut
        self.stem = stages[0] if stem is None else int(stem)
        self.conv1 = nn.Conv2d(input_shape[0], self.stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.stem)
        c, inner = self.stem, iter(widths)
        for s, width in enumerate(stages):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(c, next(inner), width, stride, shortcut))
                c = width
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        kaiming_bn_(self)  # the Network Slimming / RepDistiller init

    def blocks(self) -> list[tuple[str, BasicBlock]]:
        """Every BasicBlock with its module name, in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, BasicBlock)]

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(len(self.stages)):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(self.pool(x).flatten(1))  # (B, C) -> (B, classes)

    def arch(self) -> dict:
        """Constructor kwargs of this network, inner widths read from its current blocks."""
        return {"input_shape": self.input_shape, "num_classes": self.num_classes,
                "blocks_per_stage": self.blocks_per_stage, "stages": self.stages,
                "widths": tuple(b.conv1.out_channels for _, b in self.blocks()),
                "shortcut": self.shortcut, "stem": self.stem}


def _factory(name: str, n: int, **defaults):
    def build(input_shape, num_classes, **kw) -> nn.Module:
        return ResNet(input_shape, num_classes, blocks_per_stage=n, **{**defaults, **kw})
    build.__name__ = name
    build.__doc__ = f"{name}: CIFAR ResNet with {n} BasicBlock(s) per stage {defaults or ''}."
    return register(name)(build)


for _name, _n in (("resnet8", 1), ("resnet20", 3), ("resnet32", 5), ("resnet44", 7),
                  ("resnet56", 9), ("resnet110", 18)):
    _factory(_name, _n)
for _name, _n in (("resnet8x4", 1), ("resnet32x4", 5)):  # RepDistiller's 4x wider pair
    _factory(_name, _n, stem=32, stages=(64, 128, 256))
