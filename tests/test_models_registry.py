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
