"""Structured pruning: importance criteria, selection, surgery, slimming, MACs (tiny shapes)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.metrics import count_macs, latency_ms, throughput
from lib.models import build
from lib.models.lenet import MLP
from lib.models.vgg import VGG
from lib.prune import structured as st
from lib.prune.slimming import SlimmingHook, all_gammas
from lib.prune.surgery import (channel_mask_model, load_pruned, prunable_units, prune_channels,
                               save_pruned, widths)
from nets import random_keep, randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def weight_count(model: nn.Module, kind: type) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kind))


# -- the parameter-count formula ---------------------------------------------------------------

def test_removing_one_neuron_changes_weights_by_a_plus_c():
    a, b, c = 6, 5, 4
    model = MLP((a,), 3, hidden=(b, c))
    pruned = prune_channels(model, {"net.1": [0, 1, 3, 4]})  # drop neuron 2 of b
    assert pruned.net[1].weight.shape == (b - 1, a) and pruned.net[3].weight.shape == (c, b - 1)
    before = model.net[1].weight.numel() + model.net[3].weight.numel()
    after = pruned.net[1].weight.numel() + pruned.net[3].weight.numel()
    assert (before, after) == ((a + c) * b, (a + c) * (b - 1))
    assert weight_count(model, nn.Linear) - weight_count(pruned, nn.Linear) == a + c


def test_removing_one_filter_changes_conv_weights_by_a_plus_c_times_k2():
    a, b, c, k = 4, 5, 6, 3
    model = VGG((2, 8, 8), 3, widths=(a, b, c))
    pruned = prune_channels(model, {"features.3": [0, 2, 3, 4]})  # the b-wide conv
    assert weight_count(model, nn.Conv2d) - weight_count(pruned, nn.Conv2d) == (a + c) * k * k
    assert pruned.features[3].weight.shape == (b - 1, a, k, k)
    assert pruned.features[6].weight.shape == (c, b - 1, k, k)
    assert pruned.features[4].num_features == b - 1 and pruned.arch()["widths"] == (a, b - 1, c)


# -- physically pruned == masked twin ---------------------------------------------------------

@pytest.mark.parametrize("name,shape", [("lenet_300_100", (1, 28, 28)), ("vgg_small", (1, 28, 28)),
                                        ("vgg11", (3, 32, 32)), ("resnet8", (3, 32, 32)),
                                        ("resnet20", (1, 28, 28))])
def test_pruned_equals_masked_twin(name, shape):
    torch.manual_seed(0)
    model = randomize_bn(build(name, shape, 10))
    keep = random_keep(model, 0.4)
    pruned, twin = prune_channels(model, keep).eval(), channel_mask_model(model, keep).eval()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.allclose(pruned(x), twin(x), atol=1e-5)
        assert not torch.allclose(pruned(x), model(x), atol=1e-3)  # the pruning did something
    pruned.train()(x).sum().backward()  # and the smaller model still trains
    assert all(p.grad is not None for p in pruned.parameters())


def test_resnet_prunes_only_inner_convs():
    model = build("resnet20", (3, 32, 32), 10)
    units = prunable_units(model)
    assert len(units) == 9 and all(n.endswith(".conv1") for n in units)
    pruned = prune_channels(model, random_keep(model, 0.5))
    for (_, b0), (_, b1) in zip(model.blocks(), pruned.blocks()):
        assert b1.conv2.out_channels == b0.conv2.out_channels  # residual channels untouched
        assert b1.conv1.out_channels == b0.conv1.out_channels // 2


def test_save_load_roundtrip(tmp_path):
    for name in ("lenet_300_100", "vgg_small", "resnet8"):
        model = randomize_bn(build(name, (1, 28, 28), 10))
        pruned = prune_channels(model, random_keep(model, 0.3)).eval()
        save_pruned(pruned, tmp_path / f"{name}.pt")
        loaded = load_pruned(tmp_path / f"{name}.pt").eval()
        assert [p.shape for p in loaded.parameters()] == [p.shape for p in pruned.parameters()]
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(loaded(x), pruned(x))


# -- importance --------------------------------------------------------------------------------

def test_norm_scores_on_hand_made_filters():
    w = torch.tensor([[1., 1, 1, 1], [3, 0, 0, 0], [.5, .5, .5, .5]]).view(3, 1, 2, 2)
    assert st.l1_norm(w).tolist() == [4, 3, 2]  # order 0 > 1 > 2
    assert st.l2_norm(w).tolist() == [2, 3, 1]  # order 1 > 0 > 2


def test_fpgm_scores_the_median_filter_lowest():
    w = torch.tensor([0., 1, 10]).view(3, 1, 1, 1)  # distances: 0->1+10, 1->1+9, 10->10+9
    assert st.fpgm(w).tolist() == [11, 10, 19]
    assert st.fpgm(w).argmin() == 1 and st.l1_norm(w).argmin() == 0


def test_apoz_on_hand_made_activation():
    act = torch.tensor([[[0., 0], [0, 1], [2, 3]], [[0, 0], [4, 0], [1, 1]]])  # (N=2, C=3, 2)
    assert st.apoz(act).tolist() == [1.0, 0.5, 0.0]


def test_apoz_importance_finds_a_dead_neuron():
    model = MLP((6,), 3, hidden=(5, 4))
    with torch.no_grad():
        model.net[1].bias[2] = -1e6  # neuron 2 never fires
    scores = st.importance("apoz", model, torch.randn(50, 6))
    assert scores["net.1"][2] == 0 and scores["net.1"].argmin() == 2
    assert all(((s >= 0) & (s <= 1)).all() for s in scores.values())


@pytest.mark.parametrize("criterion", list(st.IMPORTANCE))
@pytest.mark.parametrize("scope", st.SCOPES)
def test_every_criterion_prunes_vgg_small(criterion, scope):
    model = build("vgg_small", (1, 28, 28), 10)
    pruned, keep = st.prune_structured(model, criterion, 0.5, scope=scope, x=torch.randn(8, 1, 28, 28))
    assert sum(map(len, keep.values())) == sum(widths(model).values()) // 2
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_bn_gamma_scores_are_absolute_scales():
    model = build("resnet8", (1, 28, 28), 10)
    with torch.no_grad():
        model.layer1[0].bn1.weight.copy_(torch.linspace(-1, 1, 16))
    assert torch.equal(st.importance("bn_gamma", model)["layer1.0.conv1"], torch.linspace(-1, 1, 16).abs())


# -- selection ---------------------------------------------------------------------------------

def test_select_by_ratio_and_threshold():
    scores = {"a": torch.tensor([.1, .5, .3, .9]), "b": torch.tensor([2., 1.])}
    keep = st.select_by_ratio(scores, 0.5)
    assert keep["a"].tolist() == [1, 3] and keep["b"].tolist() == [0]
    assert st.select_by_ratio(scores, {"a": 0.25})["b"].tolist() == [0, 1]
    assert st.select_by_threshold(scores, 0.4)["a"].tolist() == [1, 3]


def test_global_selection_never_empties_a_layer():
    scores = {"tiny": torch.full((8,), 1e-6), "big": torch.linspace(1, 2, 8), "one": torch.tensor([0.])}
    keep = st.select_global(scores, 0.5)  # prunes round(0.5 * 17) = 8 channels
    assert sum(map(len, keep.values())) == 17 - 8
    assert [len(k) for k in keep.values()] == [1, 7, 1]  # a plain global threshold empties 2 layers
    keep = st.select_global(scores, 0.5, min_keep=0.25)  # floors: 2, 2, 1
    assert [len(k) for k in keep.values()] == [2, 6, 1]
    assert keep["big"].tolist() == [2, 3, 4, 5, 6, 7]  # its lowest scores went first


def test_errors_are_one_line_and_name_the_field():
    model = build("vgg_small", (1, 28, 28), 10)
    cases = [
        (lambda: st.importance("l3", model), "criterion: unknown 'l3'"),
        (lambda: st.select_by_ratio({"a": torch.ones(4)}, 1.0), r"ratio: must be in \[0, 1\)"),
        (lambda: st.select_by_ratio({"a": torch.ones(1)}, 0.6), "layer 'a'"),
        (lambda: st.select_global({"a": torch.ones(3)}, 0.9), "min_keep=1"),
        (lambda: st.select_global({"a": torch.ones(3)}, 0.5, min_keep=0), "min_keep: must be"),
        (lambda: st.select_by_ratio({"a": torch.ones(3)}, {"b": 0.5}), "ratio: unknown layer"),
        (lambda: st.select_by_threshold({"a": torch.ones(3)}, 2.0), "threshold: 2.0 leaves layer 'a'"),
        (lambda: st.prune_structured(model, "l1", 0.5, scope="net"), "scope: unknown 'net'"),
        (lambda: st.prune_structured(model, "apoz", 0.5), "x: criterion 'apoz' needs"),
        (lambda: st.importance("bn_gamma", MLP((4,), 2, (3,))), "needs a BatchNorm after layer 'net.1'"),
        (lambda: prune_channels(build("conv2", (1, 28, 28), 10), {}), "surgery: unsupported model type 'ConvNet'"),
        (lambda: prune_channels(model, {"features.99": [0]}), r"keep\['features.99'\]: not a prunable"),
        (lambda: prune_channels(model, {"features.0": []}), "keeps no channel"),
        (lambda: prune_channels(model, {"features.0": [0, 0]}), "distinct"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            fn()
        assert "\n" not in str(err.value)


def test_impossible_ratio_fails_before_scoring(monkeypatch):
    calls = []
    monkeypatch.setitem(st.IMPORTANCE, "l1", lambda v: calls.append(v) or v.weight.flatten(1).sum(1))
    model = MLP((4,), 2, (1, 3))
    with pytest.raises(ValueError, match="layer 'net.1'"):
        st.prune_structured(model, "l1", 0.6)
    assert calls == []


# -- slimming and metrics ------------------------------------------------------------------------

def test_slimming_hook_adds_lambda_sign_gamma():
    model = build("vgg_small", (1, 28, 28), 10)
    with torch.no_grad():
        model.features[1].weight[:5] *= -1
        model.features[1].weight[5] = 0
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.weight.grad.clone() for m in bns]
    SlimmingHook(lam=1e-3).after_backward(model)
    for m, g in zip(bns, before):
        assert torch.allclose(m.weight.grad - g, 1e-3 * torch.sign(m.weight.detach()), rtol=0, atol=1e-7)
    assert all_gammas(model).numel() == 32 + 64 + 128 + 128 and (all_gammas(model) >= 0).all()


def test_macs_match_hand_formula():
    conv, fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(20, 7)
    assert count_macs(conv, (3, 10, 10)) == 8 * 10 * 10 * 3 * 3 * 3
    assert count_macs(fc, (20,)) == 20 * 7
    grouped = nn.Conv2d(4, 8, 3, stride=2, groups=2)
    assert count_macs(grouped, (4, 9, 9)) == 8 * 4 * 4 * 2 * 3 * 3
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(800, 5))
    assert count_macs(net, (3, 10, 10)) == 21600 + 4000
    model = build("vgg_small", (1, 28, 28), 10)
    pruned = prune_channels(model, random_keep(model, 0.5))
    assert count_macs(pruned, (1, 28, 28)) < count_macs(model, (1, 28, 28)) / 2


def test_latency_and_throughput_are_positive():
    model, x = nn.Linear(8, 2), torch.randn(4, 8)
    assert latency_ms(model, x, repeats=3) > 0 and throughput(model, x, repeats=3) > 0
