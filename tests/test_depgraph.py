"""DepGraph pruning (lib/prune/depgraph.py, torch-pruning) cross-checked against our surgery on
the families both handle: the same prunable layers, channels and outputs."""
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


def test_bad_keep_is_one_line():
    model = models.build("resnet8", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"keep\['layer1.0.conv2'\]: not a layer that can be pruned alone"):
        depgraph.prune_channels(model, {"layer1.0.conv2": [0]}, (3, 32, 32))
    with pytest.raises(ValueError, match=r"keep\['layer1.0.conv1'\]: indices must be distinct"):
        depgraph.prune_channels(model, {"layer1.0.conv1": [0, 99]}, (3, 32, 32))
