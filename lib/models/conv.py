"""Conv-2 / Conv-4 / Conv-6 of the lottery-ticket paper (Frankle & Carbin 2019, Figure 2).

VGG-like: pairs of 3x3 convs (64, 128, 256 filters) each followed by 2x2 max-pooling, then
FC 256-256-classes. Adapted to any input shape: the first FC layer's width is computed from it.
"""
from __future__ import annotations

from torch import nn

from lib.models import register
from lib.models.init import glorot_


class ConvNet(nn.Module):
    """`pairs` conv-conv-pool blocks, then a fully connected head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, pairs: int,
                 fc: tuple[int, ...] = (256, 256)):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for width in (64, 128, 256)[:pairs]:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        widths = [c * h * w, *fc]
        head: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            head += [nn.Linear(a, b), nn.ReLU()]
        head.append(nn.Linear(widths[-1], num_classes))
        self.classifier = nn.Sequential(*head)
        glorot_(self)

    def forward(self, x):
        return self.classifier(self.features(x))


@register("conv2")
def conv2(input_shape, num_classes, **kw) -> nn.Module:
    return ConvNet(input_shape, num_classes, pairs=1)


@register("conv4")
def conv4(input_shape, num_classes, **kw) -> nn.Module:
    return ConvNet(input_shape, num_classes, pairs=2)


@register("conv6")
def conv6(input_shape, num_classes, **kw) -> nn.Module:
    return ConvNet(input_shape, num_classes, pairs=3)
