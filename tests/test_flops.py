"""torch's own FLOP counter (lib.metrics.count_flops) against our module-hook MAC counter: equal
(2 FLOPs per MAC) on our conv and linear models, and it sees what the hooks miss."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import models
from lib.metrics import count_flops, count_macs

pytestmark = pytest.mark.usefixtures("one_thread")
CASES = [("lenet_300_100", (1, 28, 28)), ("conv2", (3, 32, 32)), ("vgg_small", (3, 32, 32)),
         ("resnet8", (3, 32, 32)), ("mobilenet_tiny", (3, 32, 32)), ("wrn_16_2", (3, 32, 32)),
         ("shufflenet_v1", (3, 32, 32)), ("mobile_half", (3, 32, 32))]


@pytest.mark.parametrize("name,shape", CASES, ids=[c[0] for c in CASES])
def test_flop_counter_agrees_with_mac_hooks(name, shape):
    model = models.build(name, shape, 10)
    assert count_flops(model, shape) == 2 * count_macs(model, shape) > 0


class Attention(nn.Module):
    """Self-attention over the 16 pixels of a 4x4 map: two matmuls outside any module."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Conv2d(8, 24, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)  # (B, 8, 16) each
        a = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, 16, 16)
        return self.fc((v @ a.transpose(1, 2)).mean(2))


def test_flop_counter_sees_functional_matmuls():
    model, shape = Attention(), (8, 4, 4)
    macs = count_macs(model, shape)  # the 1x1 conv and the Linear only
    assert macs == 16 * 24 * 8 + 8 * 3
    matmuls = 2 * (16 * 16 * 8)  # q^T k and v a^T: 16x16x8 MACs each
    assert count_flops(model, shape) == 2 * (macs + matmuls)
