"""DepGraph pruning (lib/prune/depgraph.py, torch-pruning) cross-checked against our surgery on
the families both handle, and on torchvision's ResNet-101 and MobileNetV2, which only it can
cut: the pruned network computes what the full one computes with those channels removed."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import models
from lib.prune import depgraph, surgery

pytestmark = pytest.mark.usefixtures("one_thread")
BOTH = [("lenet_300_100", (1, 28, 28)), ("vgg_small", (3, 32, 32)), ("resnet8", (3, 32, 32)),
        ("mobilenet_tiny", (3, 32, 32))]


def randomised(name: str, shape) -> nn.Module:
    """A model in eval mode whose BatchNorms have non-trivial statistics and affine terms."""
    torch.manual_seed(0)
    model = models.build(name, shape, 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def random_keep(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mods = dict(model.named_modules())
    out = {}
    for n in layers:
        c = mods[n].weight.shape[0]
        out[n] = torch.randperm(c, generator=g)[: max(1, c // 2)].sort().values
    return out


@pytest.mark.parametrize("name,shape", BOTH, ids=[b[0] for b in BOTH])
def test_same_layers_same_channels_same_outputs_as_surgery(name, shape):
    model = randomised(name, shape)
    layers = depgraph.prunable_layers(model, shape)
    assert sorted(layers) == sorted(surgery.prunable_units(model))  # the residual-safe choice
    keep = random_keep(model, layers)
    ours, theirs = surgery.prune_channels(model, keep), depgraph.prune_channels(model, keep, shape)
    assert ({n: p.shape for n, p in ours.named_parameters()}
            == {n: p.shape for n, p in theirs.named_parameters()})
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)


def zero_removed_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> list:
    """Forward hooks that zero, for each pruned layer, its removed channels where its readers
    take them: at the output of the last BatchNorm between it and the next full layer (its
    own BN, or the BN after the depthwise conv that follows it), what removing them computes."""
    order = list(model.named_modules())
    full = lambda m: isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    hooks = []
    for layer, kept in keep.items():
        start = [n for n, _ in order].index(layer) + 1
        bn = None
        for _, m in order[start:]:
            if full(m):
                break
            bn = m if isinstance(m, nn.BatchNorm2d) else bn
        gone = torch.ones(bn.num_features, dtype=torch.bool)
        gone[kept] = False

        def zero(m, args, out, gone=gone):
            return out * (~gone).to(out.dtype)[None, :, None, None]
        hooks.append(bn.register_forward_hook(zero))
    return hooks


@pytest.mark.parametrize("name", ["resnet101", "mobilenet_v2"])
def test_torchvision_models_prune_physically(name):
    shape = (3, 32, 32)
    model = randomised(name, shape)
    pruned, keep = depgraph.prune_structured(model, "l1", 0.5, shape)
    full_params, kept_params = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    assert kept_params < 0.75 * full_params
    x = torch.randn(2, *shape)
    hooks = zero_removed_channels(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-4)
    for h in hooks:
        h.remove()


def test_bad_keep_is_one_line():
    model = models.build("resnet8", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"keep\['layer1.0.conv2'\]: not a layer that can be pruned alone"):
        depgraph.prune_channels(model, {"layer1.0.conv2": [0]}, (3, 32, 32))
    with pytest.raises(ValueError, match=r"keep\['layer1.0.conv1'\]: indices must be distinct"):
        depgraph.prune_channels(model, {"layer1.0.conv1": [0, 99]}, (3, 32, 32))


def test_prune_structured_by_criterion_saves_and_loads(tmp_path):
    """The pipeline's DepGraph path: a criterion's lowest-scoring channels go (l1: the smallest
    filters), and the saved file rebuilds the same network from the registry."""
    shape = (3, 32, 32)
    model = randomised("mobilenet_tiny", shape)  # small; any registered model DepGraph can cut
    pruned, keep = depgraph.prune_structured(model, "l1", 0.5, shape)
    mods = dict(model.named_modules())
    for name, kept in keep.items():
        l1 = mods[name].weight.detach().flatten(1).abs().sum(1)
        gone = torch.ones(len(l1), dtype=torch.bool)
        gone[kept] = False
        assert len(kept) == len(l1) - round(0.5 * len(l1)) and l1[kept].min() >= l1[gone].max()
    depgraph.save_pruned(pruned, tmp_path / "m.pt", "mobilenet_tiny", shape, 10)
    again = depgraph.load_pruned(tmp_path / "m.pt").eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))
    with pytest.raises(ValueError, match="criterion: 'bn_gamma' is not available for models pruned "
                                         "through DepGraph, choose from l1, l2, fpgm, random"):
        depgraph.prune_structured(model, "bn_gamma", 0.5, shape)
