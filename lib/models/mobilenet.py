"""MobileNet-style CNN (Howard et al. 2017): depthwise-separable blocks.

A 3x3 conv-BN-ReLU stem, then blocks of depthwise 3x3 conv (groups = channels)-BN-ReLU followed
by pointwise 1x1 conv-BN-ReLU, some with stride 2 (on the depthwise conv), global average
pooling and one Linear classifier. A block of c -> w channels costs 9·c + c·w weights instead of
a full 3x3 conv's 9·c·w, and 9·c·H·W + c·w·H·W MACs instead of 9·c·w·H·W.

Every layer is an nn.Module inside the flat `features` Sequential (no functional ops), so
`lib.quant.to_int8` can fuse conv+BN+ReLU runs and convert the whole network to int8.

`stem` is the stem's output channels and `blocks` a sequence of (pointwise width, stride).
Structured pruning (lib/prune/surgery.py) changes these widths: a pointwise conv's (or the
stem's) output channels, with the BN after it, the next depthwise conv (its channels and
groups) and its BN, and the next pointwise conv's inputs (or the classifier). A pruned network
is rebuilt from `model.arch()`.

- `mobilenet_tiny` (~19k parameters): for 1x28x28 on a CPU, the pipeline's student.
- `mobilenet`: MobileNet v1 as adapted to CIFAR (stride-1 stem, 13 blocks, 3.2M parameters).
Init: Kaiming normal (fan_out) convs, BN weight 1 and bias 0, classifier N(0, 0.01).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from lib.models import register
from lib.models.init import kaiming_bn_

CONFIGS: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {
    "mobilenet_tiny": (16, ((32, 2), (64, 2), (64, 1), (128, 2))),
    "mobilenet": (32, ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                       (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))),
}


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class MobileNet(nn.Module):
    """`features` (stem, then depthwise + pointwise conv-BN-ReLU per block), pool, `classifier`."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, stem: int,
                 blocks: Sequence[Sequence[int]]):
        super().__init__()
        blocks = tuple((int(w), int(s)) for w, s in blocks)
        if stem < 1 or any(w < 1 or s not in (1, 2) for w, s in blocks):
            raise ValueError(f"blocks: widths must be >= 1 and strides 1 or 2, got stem {stem}, "
                             f"blocks {blocks}")
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.stem, self.blocks = int(stem), blocks
        layers = _conv_bn_relu(input_shape[0], stem, 3)
        c = stem
        for w, s in blocks:
            layers += _conv_bn_relu(c, c, 3, s, groups=c)  # depthwise: one 3x3 filter per channel
            layers += _conv_bn_relu(c, w, 1)  # pointwise: mixes channels
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)
        kaiming_bn_(self, linear_std=0.01)  # the Network Slimming / RepDistiller init

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))  # (B, C) -> (B, classes)

    def convs(self) -> list[tuple[str, nn.Conv2d]]:
        """(name, conv) of every conv in `features`, in forward order: stem, then dw, pw per block."""
        return [(f"features.{i}", m) for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]

    def arch(self) -> dict:
        """Constructor kwargs of this network, widths read from its current layers."""
        convs = [m for _, m in self.convs()]
        pointwise = convs[2::2]  # stem, dw1, pw1, dw2, pw2, ...
        return {"input_shape": self.input_shape, "num_classes": self.num_classes,
                "stem": convs[0].out_channels,
                "blocks": tuple((m.out_channels, s) for m, (_, s) in zip(pointwise, self.blocks))}


def mobilenet_params(in_channels: int, num_classes: int, stem: int,
                     blocks: Sequence[Sequence[int]]) -> int:
    """Parameter count of `MobileNet(...)`, in closed form: each conv's weights plus 2 per BN
    channel (γ, β), and the classifier's weights and biases."""
    total, c = in_channels * stem * 9 + 2 * stem, stem
    for w, _ in blocks:
        total += (9 * c + 2 * c) + (c * w + 2 * w)  # depthwise + BN, pointwise + BN
        c = w
    return total + c * num_classes + num_classes


def _factory(name: str):
    def build(input_shape, num_classes, stem: int | None = None,
              blocks: Sequence | None = None, **kw) -> nn.Module:
        default_stem, default_blocks = CONFIGS[name]
        return MobileNet(input_shape, num_classes, stem=stem or default_stem,
                         blocks=default_blocks if blocks is None else blocks)
    build.__name__ = name
    build.__doc__ = f"{name}: MobileNet with stem {CONFIGS[name][0]} and blocks {CONFIGS[name][1]}."
    return register(name)(build)


for _name in CONFIGS:
    _factory(_name)
