"""Fully connected nets: LeNet-300-100 (LeCun et al. 1998), the lottery-ticket paper's, and the
MNIST nets of Hinton et al. 2015 ("Distilling the knowledge in a neural network", Section 3):
the teacher with two hidden layers of 1200 ReLUs (`mlp_1200`; the paper trains it with dropout,
a training choice left to the recipe) and the student with two of 800 (`mlp_800`)."""
from __future__ import annotations

import math

from torch import nn

from lib.models import register
from lib.models.init import glorot_


class MLP(nn.Module):
    """Flatten, then Linear+ReLU for each hidden width, then a Linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]):
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)
        glorot_(self)

    def forward(self, x):
        return self.net(x)


@register("lenet_300_100")
def lenet_300_100(input_shape, num_classes, hidden: tuple[int, ...] = (300, 100), **kw) -> nn.Module:
    """`hidden` rebuilds a neuron-pruned LeNet from its surviving widths."""
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


@register("mlp_1200")
def mlp_1200(input_shape, num_classes, hidden: tuple[int, ...] = (1200, 1200), **kw) -> nn.Module:
    """Hinton et al.'s MNIST teacher, 784-1200-1200-10."""
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


@register("mlp_800")
def mlp_800(input_shape, num_classes, hidden: tuple[int, ...] = (800, 800), **kw) -> nn.Module:
    """Hinton et al.'s MNIST student, 784-800-800-10."""
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


@register("mlp_4")
def mlp_4(input_shape, num_classes, hidden: tuple[int, ...] = (4,), **kw) -> nn.Module:
    """One hidden layer of 4 units (~3.2k parameters on 28x28): a student far below the
    teacher, for TA-KD across a larger gap than mlp_16's."""
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


@register("mlp_16")
def mlp_16(input_shape, num_classes, hidden: tuple[int, ...] = (16,), **kw) -> nn.Module:
    """One hidden layer of 16 units (~12.7k parameters on 28x28): logit_kd's small TA-KD student."""
    return MLP(input_shape, num_classes, hidden=tuple(hidden))
