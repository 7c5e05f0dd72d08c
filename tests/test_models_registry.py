"""Every registered model, on MNIST- and CIFAR-shaped inputs: forward, backward, no NaN, and a
gradient reaching every parameter (timm's one test over the whole registry)."""
from __future__ import annotations

import pytest
import torch

from lib.models import MODELS, build

SHAPES = [(1, 28, 28), (3, 32, 32)]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name, shape):
    torch.manual_seed(0)
    model = build(name, shape, num_classes=5)
    x, y = torch.randn(3, *shape), torch.tensor([0, 1, 4])
    logits = model(x)
    assert logits.shape == (3, 5)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


def test_unknown_model_is_one_line_error():
    with pytest.raises(ValueError, match="model: unknown 'vgg7'"):
        build("vgg7", (1, 28, 28), 10)


@pytest.mark.parametrize("name", ["vgg_small", "resnet8"])
def test_widths_kwarg_rebuilds_architecture(name):
    model = build(name, (1, 28, 28), 10)
    arch = model.arch()
    again = build(name, (1, 28, 28), 10, widths=arch["widths"])
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_resnet_shortcuts_and_reference_sizes():
    from lib.metrics import count_params
    assert count_params(build("vgg19", (3, 32, 32), 10)) == 20_035_018  # paper: 20.04M
    assert count_params(build("resnet20", (3, 32, 32), 10, shortcut="A")) == 269_722  # 0.27M
    with pytest.raises(ValueError, match="shortcut: unknown 'C'"):
        build("resnet20", (3, 32, 32), 10, shortcut="C")
    with pytest.raises(ValueError, match="widths: expected 3"):
        build("resnet8", (3, 32, 32), 10, widths=(4, 4))


# The papers' parameter counts, and RepDistiller's: name -> (kwargs, classes, count, source).
# He et al. (CVPR 2016, Table 6) count the CIFAR ResNets with the parameter-free option-A
# shortcut; the WRN paper (Zagoruyko & Komodakis, BMVC 2016) and Network Slimming (Liu et al.
# ICCV 2017, Table 1) count theirs on CIFAR-10. The KD models have no count in the CRD paper:
# theirs is the closed form of RepDistiller's models/*.py layers on CIFAR-100 (`repdistiller`).
def _basic_resnet(n: int, stem: int, stages: tuple[int, ...], classes: int) -> int:
    """RepDistiller's resnet.py: 3x3 stem + BN, BasicBlocks, option-B 1x1 + BN projections."""
    total, c = 27 * stem + 2 * stem, stem
    for w in stages:
        for _ in range(n):
            total += 9 * c * w + 9 * w * w + 4 * w + ((c * w + 2 * w) if c != w else 0)
            c = w
    return total + c * classes + classes


def _wrn(depth: int, k: int, classes: int) -> int:
    """RepDistiller's wrn.py: 3x3 stem, pre-activation blocks, 1x1 projections, final BN."""
    n, total, c = (depth - 4) // 6, 27 * 16, 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * c + 9 * c * w + 2 * w + 9 * w * w + (c * w if c != w else 0)
            c = w
    return total + 2 * c + c * classes + classes


def _vgg_bias(layout: tuple[int, ...], classes: int) -> int:
    """RepDistiller's vgg.py (_bn): conv 3x3 with bias + BN per entry, Linear(512, classes)."""
    total, c = 0, 3
    for v in layout:
        total, c = total + 9 * c * v + v + 2 * v, v
    return total + 512 * classes + classes


def _mobilenet_v2(width: float, classes: int) -> int:
    """torchvision's MobileNetV2 (Sandler et al. 2018, Table 2's t, c, n) at `width` (channels
    c·width, no rounding: the registered widths are 1.0 and RepDistiller's 0.5): 3x3 stem + BN,
    inverted residual blocks (1x1 expansion + BN unless t = 1, 3x3 depthwise + BN, 1x1
    projection + BN), 1x1 conv to 1280 + BN, classifier. The stride of a block or of the stem
    changes no count."""
    stem = int(32 * width)
    total, c = 27 * stem + 2 * stem, stem
    for t, ch, n in ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)):
        for _ in range(n):
            o, e = int(ch * width), c * t
            total += (c * e + 2 * e if t != 1 else 0) + 9 * e + 2 * e + e * o + 2 * o
            c = o
    return total + c * 1280 + 2 * 1280 + 1280 * classes + classes


def _mobile_half(classes: int) -> int:
    """RepDistiller's mobilenetv2.py, T=6, width 0.5, minus its t=1 expansion conv + BN
    (16·16 + 2·16 = 288), which torchvision's block does not have: torchvision's at width 0.5."""
    return _mobilenet_v2(0.5, classes)


def _shufflenet_v1(classes: int) -> int:
    """RepDistiller's ShuffleNetv1.py: g=3, 240/480/960, 4/8/4 units, 1x1 stem."""
    total, c = 3 * 24 + 48, 24
    for w, n in ((240, 4), (480, 8), (960, 4)):
        for i in range(n):
            out = w - c if i == 0 else w
            mid, g1 = out // 4, 1 if c == 24 else 3
            total += c * mid // g1 + 2 * mid + 9 * mid + 2 * mid + mid * out // 3 + 2 * out
            c = w
    return total + c * classes + classes


def _shufflenet_v2(classes: int) -> int:
    """RepDistiller's ShuffleNetv2.py, net_size 1: 1x1 stem, DownBlock + 3/7/3 BasicBlocks."""
    total, c = 3 * 24 + 48, 24
    for w, n in ((116, 3), (232, 7), (464, 3)):
        m = w // 2
        total += 9 * c + 2 * c + c * m + 2 * m + c * m + 2 * m + 9 * m + 2 * m + m * m + 2 * m
        total += n * (m * m + 2 * m + 9 * m + 2 * m + m * m + 2 * m)
        c = w
    return total + c * 1024 + 2 * 1024 + 1024 * classes + classes


PAPER_COUNTS = {
    # name: (kwargs, classes, expected count, how the source states it)
    "resnet20": ({"shortcut": "A"}, 10, 0.27e6, "He et al. 2016, Table 6: 0.27M"),
    "resnet32": ({"shortcut": "A"}, 10, 0.46e6, "He et al. 2016, Table 6: 0.46M"),
    "resnet44": ({"shortcut": "A"}, 10, 0.66e6, "He et al. 2016, Table 6: 0.66M"),
    "resnet56": ({"shortcut": "A"}, 10, 0.85e6, "He et al. 2016, Table 6: 0.85M"),
    "resnet110": ({"shortcut": "A"}, 10, 1.7e6, "He et al. 2016, Table 6: 1.7M"),
    "wrn_40_1": ({}, 10, 0.6e6, "Zagoruyko & Komodakis 2016: 0.6M"),
    "wrn_40_2": ({}, 10, 2.2e6, "Zagoruyko & Komodakis 2016: 2.2M"),
    "vgg19": ({}, 10, 20.04e6, "Liu et al. 2017, Table 1: 20.04M"),
}
REPDISTILLER_COUNTS = {  # CIFAR-100; exact
    "resnet20": _basic_resnet(3, 16, (16, 32, 64), 100),
    "resnet32": _basic_resnet(5, 16, (16, 32, 64), 100),
    "resnet44": _basic_resnet(7, 16, (16, 32, 64), 100),
    "resnet56": _basic_resnet(9, 16, (16, 32, 64), 100),
    "resnet110": _basic_resnet(18, 16, (16, 32, 64), 100),
    "resnet8x4": _basic_resnet(1, 32, (64, 128, 256), 100),
    "resnet32x4": _basic_resnet(5, 32, (64, 128, 256), 100),
    "wrn_16_2": _wrn(16, 2, 100), "wrn_40_1": _wrn(40, 1, 100), "wrn_40_2": _wrn(40, 2, 100),
    "vgg8": _vgg_bias((64, 128, 256, 512, 512), 100),
    "vgg13": _vgg_bias((64, 64, 128, 128, 256, 256, 512, 512, 512, 512), 100),
    "mobile_half": _mobile_half(100), "shufflenet_v1": _shufflenet_v1(100),
    "shufflenet_v2": _shufflenet_v2(100),
}
# Hinton et al. 2015 (Section 3) describe the MNIST nets by their layers: 784-1200-1200-10, 784-800-800-10
HINTON_COUNTS = {"mlp_1200": 784 * 1200 + 1200 * 1200 + 1200 * 10 + 1200 + 1200 + 10,
                 "mlp_800": 784 * 800 + 800 * 800 + 800 * 10 + 800 + 800 + 10}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_the_papers(name):
    from lib.metrics import count_params
    kw, classes, expected, source = PAPER_COUNTS[name]
    got = count_params(build(name, (3, 32, 32), classes, **kw))
    digits = len(source.split(": ")[1].split(".")[1].rstrip("M"))  # the precision the paper gives
    assert round(got / 1e6, digits) == round(expected / 1e6, digits), (name, got, source)


@pytest.mark.parametrize("name", sorted(REPDISTILLER_COUNTS))
def test_parameter_counts_match_repdistiller(name):
    from lib.metrics import count_params
    assert count_params(build(name, (3, 32, 32), 100)) == REPDISTILLER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(HINTON_COUNTS))
def test_parameter_counts_match_hinton(name):
    from lib.metrics import count_params
    assert count_params(build(name, (1, 28, 28), 10)) == HINTON_COUNTS[name]


def test_torchvision_models_keep_torchvision_apart_from_the_stem():
    """resnet50/101 and mobilenet_v2 are torchvision's, only the stem changed (7x7 -> 3x3 conv
    for the ResNets; a stride for MobileNetV2)."""
    import torchvision
    from lib.metrics import count_params
    for name, stem_delta in (("resnet50", 64 * 3 * (49 - 9)), ("resnet101", 64 * 3 * (49 - 9)),
                             ("mobilenet_v2", 0)):
        ref = count_params(getattr(torchvision.models, name)(num_classes=100))
        assert count_params(build(name, (3, 32, 32), 100)) == ref - stem_delta, name


def test_mobilenet_v2_parameter_count():
    """The "mix it" student at paper scale, torchvision's MobileNetV2 (width 1.0) with the CIFAR
    stem, on CIFAR-10: the closed form of its layers, 2.24M."""
    from lib.metrics import count_params
    got = count_params(build("mobilenet_v2", (3, 32, 32), 10))
    assert got == _mobilenet_v2(1.0, 10)
    assert round(got / 1e6, 2) == 2.24
