"""torchvision's ImageNet architectures with CIFAR stems (never re-implemented here).

ImageNet stems downsample 224 -> 56 before the first stage; on 32x32 that leaves 8x8. The
CIFAR versions the papers train keep the resolution instead:

- `resnet50`, `resnet101` (He et al. 2016; RepDistiller's ResNet50 teacher, the lecture's
  "mix it" teacher): the 7x7 stride-2 conv + max-pool stem becomes a 3x3 stride-1 conv
  (64 channels), no max-pool. Bottleneck stages [3, 4, 6, 3] / [3, 4, 23, 3] as in torchvision.
- `mobilenet_v2` (Sandler et al. 2018, width 1.0, the "mix it" student): the stride-2 stem
  becomes stride 1, the rest is torchvision's (total stride 16: 2x2 before the pool on 32x32).
- `mobile_half`: RepDistiller's "MobileNetV2" of the KD tables: width 0.5 without rounding
  channels to multiples of 8, the stride-2 stem kept and the 24-channel stage at stride 1.
  torchvision's first (t = 1) block has no expansion conv where RepDistiller's has a 1x1
  16->16 one, so it has 288 parameters fewer (256 weights, 32 BN); everything else is the same.
- `shufflenet_v2` (Ma et al. 2018, 1.0x, RepDistiller's ShuffleV2): the 3x3 stride-2 conv +
  max-pool stem becomes RepDistiller's 1x1 stride-1 conv (24 channels), no max-pool.

torchvision's own initialisation is kept; the new stem conv is Kaiming-normal (fan_out).
`input_shape[0]` sets the stem's input channels, so every model also runs on 1x28x28.
"""
from __future__ import annotations

from torch import nn

from lib.models import register


def _tv():
    """torchvision.models, imported on first use: importing it costs ~1 s of start-up."""
    from torchvision import models

    return models


def _new_conv(old: nn.Conv2d, in_channels: int, kernel: int, stride: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, old.out_channels, kernel, stride, kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def cifar_resnet(ctor, input_shape, num_classes: int) -> nn.Module:
    """torchvision ResNet `ctor` with a 3x3 stride-1 stem and no max-pool."""
    model = ctor(num_classes=num_classes)
    model.conv1 = _new_conv(model.conv1, input_shape[0], 3, 1)
    model.maxpool = nn.Identity()
    return model


@register("resnet50")
def resnet50(input_shape, num_classes, **kw) -> nn.Module:
    return cifar_resnet(_tv().resnet50, input_shape, num_classes)


@register("resnet101")
def resnet101(input_shape, num_classes, **kw) -> nn.Module:
    return cifar_resnet(_tv().resnet101, input_shape, num_classes)


def cifar_mobilenet_v2(input_shape, num_classes: int, stem_stride: int, **kw) -> nn.Module:
    """torchvision MobileNetV2 (`kw` to its constructor) whose stem conv has `stem_stride`."""
    model = _tv().MobileNetV2(num_classes=num_classes, **kw)
    model.features[0][0] = _new_conv(model.features[0][0], input_shape[0], 3, stem_stride)
    return model


@register("mobilenet_v2")
def mobilenet_v2(input_shape, num_classes, **kw) -> nn.Module:
    return cifar_mobilenet_v2(input_shape, num_classes, stem_stride=1)


# RepDistiller's CIFAR setting (t, c, n, s): ImageNet's, with the 24-channel stage at stride 1
REPDISTILLER_MBV2 = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                     [6, 160, 3, 2], [6, 320, 1, 1]]


@register("mobile_half")
def mobile_half(input_shape, num_classes, **kw) -> nn.Module:
    return cifar_mobilenet_v2(input_shape, num_classes, stem_stride=2, width_mult=0.5,
                              round_nearest=1, inverted_residual_setting=REPDISTILLER_MBV2,
                              dropout=0.0)


@register("shufflenet_v2")
def shufflenet_v2(input_shape, num_classes, **kw) -> nn.Module:
    model = _tv().shufflenet_v2_x1_0(num_classes=num_classes)
    model.conv1[0] = _new_conv(model.conv1[0], input_shape[0], 1, 1)
    model.maxpool = nn.Identity()
    return model
