"""CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015, as used by Network Slimming).

Layout of the Network Slimming code (Liu et al. 2017): conv3x3-BN-ReLU blocks with 2x2
max-pooling between stages and no pool after the last stage, then global average pooling and
one Linear classifier. On 3x32x32 the last feature map is 2x2, so the global average is the
paper's AvgPool2d(2); VGG-19 for CIFAR-10 has 20.04M parameters, as in the paper.

`widths` is the config list: an int is a conv's output channels, 'M' a max-pool. A pool that
would shrink the map below 1 pixel is skipped, so every config runs on 1x28x28 as on 3x32x32.
A pruned network is rebuilt from its channel counts with `VGG(..., widths=model.arch()["widths"])`.

`vgg8` / `vgg13` are RepDistiller's (the CRD paper's KD tables): the same conv-BN-ReLU blocks, but
convs with biases (`conv_bias`), and on 32x32 only three max-pools (RepDistiller skips the 4th
pool below 64x64), so the last stage runs at 4x4 before the global average.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from lib.models import register
from lib.models.init import kaiming_bn_

CONFIGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512),
    # narrow and cheap, for CPU runs on 28x28
    "vgg_small": (32, "M", 64, "M", 128, 128, "M"),
    "vgg_narrow": (16, "M", 32, "M", 64, 64, "M"),  # ~61k parameters, ~4.7k train img/s on 2 cores
    "vgg_tiny": (8, "M", 16, "M", 32, "M"),  # ~6k parameters: the distillation student
}
# RepDistiller's VGG-8 ('S') and VGG-13 ('B') as laid out on 32x32; convs have biases
REPDISTILLER: dict[str, tuple] = {
    "vgg8": (64, "M", 128, "M", 256, "M", 512, 512),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """`features` (conv-BN-ReLU and pools, per `widths`), global average pool, `classifier`."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: Sequence,
                 conv_bias: bool = False):
        super().__init__()
        c, h, w = input_shape
        self.input_shape, self.num_classes, self.conv_bias = tuple(input_shape), num_classes, conv_bias
        self._layout = tuple(widths)  # the constructor's widths; after surgery only its 'M's hold
        layers: list[nn.Module] = []
        for v in self._layout:
            if v == "M":
                if min(h, w) >= 2:  # never pool a 1-pixel map away
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"widths: entries must be positive ints or 'M', got {v!r}")
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)
        kaiming_bn_(self, linear_std=0.01)  # the Network Slimming / RepDistiller init

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))  # (B, C) -> (B, classes)

    def arch(self) -> dict:
        """Constructor kwargs of this network, channel counts read from its current layers."""
        convs = iter(m.out_channels for m in self.features if isinstance(m, nn.Conv2d))
        widths = tuple(v if v == "M" else next(convs) for v in self._layout)
        return {"input_shape": self.input_shape, "num_classes": self.num_classes, "widths": widths,
                "conv_bias": self.conv_bias}


def _factory(name: str, layout: tuple, conv_bias: bool = False):
    def build(input_shape, num_classes, widths: Sequence | None = None, **kw) -> nn.Module:
        return VGG(input_shape, num_classes, widths=layout if widths is None else widths,
                   conv_bias=conv_bias)
    build.__name__ = name
    build.__doc__ = f"{name}: VGG with widths {layout} unless `widths` is given."
    return register(name)(build)


for _name, _layout in CONFIGS.items():
    _factory(_name, _layout)
for _name, _layout in REPDISTILLER.items():
    _factory(_name, _layout, conv_bias=True)
