"""MobileNet: shapes, the parameter formula, and structured surgery through depthwise convs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.metrics import count_macs, count_params
from lib.models import build
from lib.models.mobilenet import CONFIGS, MobileNet, mobilenet_params
from lib.prune import structured as st
from lib.prune.surgery import (_cut, channel_mask_model, family, load_pruned, prunable_units,
                               prune_channels, save_pruned, widths)
from lib.quant import to_int8
from nets import random_keep, randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def small(shape=(1, 12, 12)) -> MobileNet:
    torch.manual_seed(0)
    return randomize_bn(MobileNet(shape, 5, stem=6, blocks=((8, 2), (10, 1), (12, 2))))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["1x28x28", "3x32x32"])
def test_shapes_formula_and_depthwise_layout(name, shape):
    model = build(name, shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)
    stem, blocks = CONFIGS[name]
    assert count_params(model) == mobilenet_params(shape[0], 10, stem, blocks)
    convs = [m for _, m in model.convs()]
    assert len(convs) == 1 + 2 * len(blocks)
    for dw, pw in zip(convs[1::2], convs[2::2]):
        assert dw.groups == dw.in_channels == dw.out_channels and dw.weight.shape[1:] == (1, 3, 3)
        assert pw.groups == 1 and pw.kernel_size == (1, 1)
    assert MobileNet(**model.arch()).arch() == model.arch()


def test_reference_sizes():
    assert count_params(build("mobilenet", (3, 32, 32), 10)) == 3_217_226  # CIFAR MobileNet v1
    # depthwise-separable: far fewer MACs than the teacher ResNet-8 on the same input
    tiny, teacher = build("mobilenet_tiny", (1, 28, 28), 10), build("resnet8", (1, 28, 28), 10)
    assert 5 * count_macs(tiny, (1, 28, 28)) < count_macs(teacher, (1, 28, 28))


def test_bad_widths_fail_in_one_line():
    with pytest.raises(ValueError, match="blocks: widths must be >= 1 and strides 1 or 2"):
        MobileNet((1, 28, 28), 10, stem=8, blocks=((16, 3),))


def test_units_cover_stem_and_pointwise_convs():
    model = small()
    units = prunable_units(model)
    names = [n for n, _ in model.convs()]
    assert list(units) == names[0::2]  # stem, pw1, pw2, pw3
    first = units[names[0]]
    assert first.followers == (names[1], "features.4") and first.consumers == (names[2],)
    assert units[names[-1]].consumers == ("classifier",) and units[names[-1]].followers == ()


def test_removing_one_channel_changes_params_by_formula():
    """Channel b of a pointwise conv between fan-in a and fan-out c: a + 9 + c weights, and
    2 BN parameters each for the pointwise and the depthwise BN, go."""
    model = small()
    a, b, c = 8, 10, 12
    pw2 = "features.12"  # stem(0..2), dw1(3..5), pw1(6..8), dw2(9..11), pw2(12..14)
    assert model.features[12].weight.shape == (b, a, 1, 1)
    pruned = prune_channels(model, {pw2: [i for i in range(b) if i != 4]})
    assert count_params(model) - count_params(pruned) == a + 9 + c + 4
    assert pruned.features[15].groups == pruned.features[15].in_channels == b - 1
    assert pruned.features[18].weight.shape == (c, b - 1, 1, 1)
    arch = pruned.arch()
    assert arch["blocks"] == ((8, 2), (9, 1), (12, 2)) and arch["stem"] == 6
    assert count_params(pruned) == mobilenet_params(1, 5, arch["stem"], arch["blocks"])


@pytest.mark.parametrize("frac", [0.5, 0.2])
@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 16, 16)])
def test_pruned_equals_masked_twin(frac, shape):
    model = small(shape)
    keep = random_keep(model, frac, seed=int(frac * 10))
    pruned, twin = prune_channels(model, keep), channel_mask_model(model, keep)
    x = torch.randn(6, *shape)
    for train_mode in (False, True):  # BN with batch statistics too
        pruned.train(train_mode), twin.train(train_mode), model.train(train_mode)
        out_p, out_t = pruned(x), twin(x)
        assert torch.allclose(out_p, out_t, atol=1e-5), (train_mode, (out_p - out_t).abs().max())
        assert not torch.allclose(out_p, model(x), atol=1e-3)  # pruning did change something
    assert count_params(pruned) == mobilenet_params(shape[0], 5, **{k: pruned.arch()[k] for k in ("stem", "blocks")})


def test_save_load_roundtrip(tmp_path):
    model = small()
    pruned = prune_channels(model, random_keep(model, 0.5))
    save_pruned(pruned, tmp_path / "m.pt")
    again = load_pruned(tmp_path / "m.pt").eval()
    assert type(again) is MobileNet and again.arch() == pruned.arch()
    x = torch.randn(4, 1, 12, 12)
    assert torch.equal(again(x), pruned(x))
    assert family(again).cls is MobileNet


@pytest.mark.parametrize("criterion", ["l1", "bn_gamma", "fpgm", "apoz"])
def test_structured_criteria_prune_half_of_every_unit(criterion):
    model = small()
    x = torch.randn(32, 1, 12, 12)
    pruned, keep = st.prune_structured(model, criterion, 0.5, x=x)
    before = widths(model)
    assert {n: w for n, w in widths(pruned).items()} == {n: w - round(0.5 * w) for n, w in before.items()}
    assert count_macs(pruned, (1, 12, 12)) < 0.5 * count_macs(model, (1, 12, 12))
    assert torch.allclose(pruned(x), channel_mask_model(model, keep)(x), atol=1e-5)


def test_grouped_convs_other_than_depthwise_are_rejected():
    grouped = nn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(ValueError, match="grouped conv .* is not supported"):
        _cut(grouped, torch.tensor([0, 1]), 0)
    depthwise = nn.Conv2d(4, 4, 3, groups=4)
    with pytest.raises(ValueError, match="cut along its outputs only"):
        _cut(depthwise, torch.tensor([0, 1]), 1)
    _cut(depthwise, torch.tensor([1, 3]), 0)
    assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (2, 2, 2)
    assert depthwise(torch.randn(1, 2, 5, 5)).shape == (1, 2, 3, 3)


def test_int8_conversion_of_pruned_mobilenet():
    torch.manual_seed(0)
    model = build("mobilenet_tiny", (1, 28, 28), 10)
    pruned = randomize_bn(prune_channels(model, random_keep(model, 0.5)))
    calib = torch.rand(64, 1, 28, 28)
    q = to_int8(pruned, calib)
    x = torch.rand(16, 1, 28, 28)
    ref, out = pruned(x), q(x)
    assert out.shape == ref.shape
    # int8 rounding: outputs stay close relative to their spread, and the ranking mostly holds
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3
    convs = [m for m in q.modules() if type(m).__name__ == "ConvReLU2d" and "quantized" in type(m).__module__]
    assert len(convs) == len(model.convs())  # every conv-BN-ReLU was fused and converted
