"""Structured surgery: remove output channels / neurons physically, so the model really shrinks.

A prunable `Unit` is a layer whose output channels can go: the Conv2d / Linear that makes them
(`layer`), the BatchNorm that normalises them (`bn`) and the layers that read them as input
channels (`consumers`). Keeping indices `keep[layer]` cuts all three consistently, so removing
one of b channels between layers of fan-in a and fan-out c turns (a+c)·b·k·k weights into
(a+c)·(b−1)·k·k (k = 1 for Linear).

Supported families and what is prunable in each:
- MLP (lenet_300_100): every hidden Linear; the classifier's outputs are the classes.
- VGG: every conv (its BN and the next conv, or the classifier after global pooling, follow).
- ResNet: only `conv1` of each BasicBlock (its inner width). The channels a block adds to its
  shortcut are shared by every block of the stage and by the residual sums, so cutting them
  would need the same indices everywhere in the stage; we leave them alone (residual-safe).
- MobileNet: the stem and every pointwise conv. A depthwise conv has one filter per channel, so
  it is not a unit of its own: its channels (and groups) and its BN `follow` the unit before it
  (`Unit.followers`, cut along dim 0), and the next pointwise conv (or the classifier) reads
  them. Removing one of b channels between pointwise convs of fan-in a and fan-out c turns
  a·b + 9·b + c·b weights (+ 4·b BN γ, β) into the same with b − 1.
Any other model raises a one-line ValueError.

`channel_mask_model` is the masked twin: same shapes, removed channels silenced. Its removed
channels have zero filter, bias, BN γ and β (so they output exactly 0 after BN+ReLU, in train
and eval mode alike), so do their followers (a depthwise filter and its BN), and the consumers'
weights reading them are zero too. Its outputs equal
the physically pruned model's up to float summation order.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from lib.models.lenet import MLP
from lib.models.mobilenet import MobileNet
from lib.models.resnet import ResNet
from lib.models.vgg import VGG
from lib.runs import atomic_torch_save


@dataclass(frozen=True)
class Unit:
    """The output channels of `layer`, normalised by `bn` (or None), read by `consumers`.

    `followers` are layers whose channels map one-to-one onto the unit's (a depthwise conv and
    its BN): they lose the same channels along dim 0 and pass the rest on to `consumers`.
    """

    layer: str
    bn: str | None
    consumers: tuple[str, ...]
    followers: tuple[str, ...] = ()


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _mlp_units(model: MLP) -> list[Unit]:
    names = [n for n, _ in _linears(model)]
    return [Unit(a, None, (b,)) for a, b in zip(names[:-1], names[1:])]


def _mlp_arch(model: MLP) -> dict:
    fcs = [m for _, m in _linears(model)]
    # MLP only flattens its input, so (features,) rebuilds it for any input shape of that size
    return {"input_shape": (fcs[0].in_features,), "num_classes": fcs[-1].out_features,
            "hidden": tuple(m.out_features for m in fcs[:-1])}


def _vgg_units(model: VGG) -> list[Unit]:
    convs, bns = [], []
    for i, m in enumerate(model.features):
        if isinstance(m, nn.Conv2d):
            convs.append(f"features.{i}")
        elif isinstance(m, nn.BatchNorm2d):
            bns.append(f"features.{i}")
    readers = convs[1:] + ["classifier"]  # global average pooling: one input per channel
    return [Unit(c, b, (r,)) for c, b, r in zip(convs, bns, readers)]


def _resnet_units(model: ResNet) -> list[Unit]:
    return [Unit(f"{n}.conv1", f"{n}.bn1", (f"{n}.conv2",)) for n, _ in model.blocks()]


def _mobilenet_units(model: MobileNet) -> list[Unit]:
    names = [n for n, _ in model.convs()]  # stem, dw1, pw1, dw2, pw2, ...
    full = names[0::2]  # the stem and the pointwise convs: their outputs are prunable

    def bn(conv: str) -> str:  # features.i is a conv, features.(i+1) its BatchNorm
        return f"features.{int(conv.split('.')[1]) + 1}"

    units = []
    for k, conv in enumerate(full):
        if k + 1 < len(full):  # the next block's depthwise conv follows, its pointwise reads
            dw = names[2 * k + 1]
            units.append(Unit(conv, bn(conv), (full[k + 1],), (dw, bn(dw))))
        else:  # global average pooling: one classifier input per channel
            units.append(Unit(conv, bn(conv), ("classifier",)))
    return units


@dataclass(frozen=True)
class Family:
    """How to find a model class's prunable units and the constructor kwargs that rebuild it."""

    cls: type
    units: Callable[[nn.Module], list[Unit]]
    arch: Callable[[nn.Module], dict]


FAMILIES: dict[str, Family] = {f.cls.__name__: f for f in (
    Family(MLP, _mlp_units, _mlp_arch),
    Family(VGG, _vgg_units, VGG.arch),
    Family(ResNet, _resnet_units, ResNet.arch),
    Family(MobileNet, _mobilenet_units, MobileNet.arch),
)}


def family(model: nn.Module) -> Family:
    """The surgery family of `model`; one-line ValueError for a model type it does not support."""
    fam = FAMILIES.get(type(model).__name__)
    if fam is None or type(model) is not fam.cls:
        raise ValueError(f"surgery: unsupported model type '{type(model).__name__}', "
                         f"supported: {', '.join(sorted(FAMILIES))}")
    return fam


def prunable_units(model: nn.Module) -> dict[str, Unit]:
    """Prunable units of `model` keyed by the name of the layer making the channels."""
    return {u.layer: u for u in family(model).units(model)}


def widths(model: nn.Module) -> dict[str, int]:
    """Current number of output channels / neurons of every prunable layer."""
    mods = dict(model.named_modules())
    return {n: mods[n].weight.shape[0] for n in prunable_units(model)}


def check_keep(model: nn.Module, keep: Mapping[str, Sequence[int] | Tensor]) -> dict[str, Tensor]:
    """Validate `keep` (layer -> channel indices) against `model`; return sorted index tensors."""
    sizes = widths(model)
    out = {}
    for name, idx in keep.items():
        if name not in sizes:
            raise ValueError(f"keep[{name!r}]: not a prunable layer, choose from {', '.join(sizes)}")
        idx = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
        n = sizes[name]
        if idx.numel() == 0:
            raise ValueError(f"keep[{name!r}]: keeps no channel of {n}; every layer needs at least one")
        if int(idx.min()) < 0 or int(idx.max()) >= n or idx.unique().numel() != idx.numel():
            raise ValueError(f"keep[{name!r}]: indices must be distinct and in [0, {n})")
        out[name] = idx.sort().values
    return out


_SIZE_ATTRS = {nn.Conv2d: ("out_channels", "in_channels"), nn.Linear: ("out_features", "in_features")}


@torch.no_grad()
def _cut(m: nn.Module, idx: Tensor, dim: int) -> None:
    """Keep entries `idx` of `m`'s output (dim 0) or input (dim 1) channels, in place.

    A depthwise conv (groups = in = out channels) is cut along dim 0 only: its input channels
    and groups follow its outputs. Any other grouped conv is a one-line ValueError.
    """
    depthwise = False
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        depthwise = m.groups == m.in_channels == m.out_channels
        if not depthwise or dim != 0:
            raise ValueError(f"surgery: grouped conv {m} is not supported"
                             + (" (a depthwise conv is cut along its outputs only)" if depthwise else ""))
    idx = idx.to(m.weight.device)
    names = ["weight", "bias"] if dim == 0 else ["weight"]
    if isinstance(m, nn.BatchNorm2d):
        names += ["running_mean", "running_var"]
        m.num_features = len(idx)
    elif depthwise:  # weight (C, 1, k, k): one filter per channel
        m.in_channels = m.out_channels = m.groups = len(idx)
    else:
        setattr(m, _SIZE_ATTRS[type(m)][dim], len(idx))
    for name in names:
        old = getattr(m, name)
        if old is None:
            continue
        t = old.detach().index_select(dim, idx).clone()
        if isinstance(old, nn.Parameter):
            t = nn.Parameter(t, requires_grad=old.requires_grad)
        setattr(m, name, t)  # a buffer stays a buffer: Module.__setattr__ keeps its registration


def prune_channels(model: nn.Module, keep: Mapping[str, Sequence[int] | Tensor]) -> nn.Module:
    """A smaller copy of `model` keeping only channels `keep[layer]` of each named layer.

    Layers absent from `keep` stay whole. The copy has the same class as `model` and is
    rebuilt exactly by `family(model).cls(**family(model).arch(pruned))` + its state_dict.
    """
    units = prunable_units(model)
    keep = check_keep(model, keep)
    new = copy.deepcopy(model)
    mods = dict(new.named_modules())
    for name, idx in keep.items():
        u = units[name]
        _cut(mods[u.layer], idx, 0)
        if u.bn is not None:
            _cut(mods[u.bn], idx, 0)
        for f in u.followers:
            _cut(mods[f], idx, 0)
        for c in u.consumers:
            _cut(mods[c], idx, 1)
    return new


@torch.no_grad()
def channel_mask_model(model: nn.Module, keep: Mapping[str, Sequence[int] | Tensor]) -> nn.Module:
    """A copy of `model`, same shapes, whose removed channels output exactly zero (masked twin)."""
    units = prunable_units(model)
    keep = check_keep(model, keep)
    new = copy.deepcopy(model)
    mods = dict(new.named_modules())
    for name, idx in keep.items():
        u = units[name]
        layer = mods[u.layer]
        gone = torch.ones(layer.weight.shape[0], dtype=torch.bool)
        gone[idx] = False
        gone = gone.to(layer.weight.device)
        for m in [layer] + ([mods[u.bn]] if u.bn else []) + [mods[f] for f in u.followers]:
            m.weight[gone] = 0
            if m.bias is not None:
                m.bias[gone] = 0
        for c in u.consumers:
            mods[c].weight[:, gone] = 0
    return new


def rebuild(family_name: str, arch: dict) -> nn.Module:
    """A fresh (randomly initialised) model of `family_name` with constructor kwargs `arch`."""
    if family_name not in FAMILIES:
        raise ValueError(f"family: unknown '{family_name}', choose from {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family_name].cls(**arch)


def save_pruned(model: nn.Module, path: Path) -> None:
    """Write the family, the widths (constructor kwargs) and the weights, atomically."""
    fam = family(model)
    atomic_torch_save({"family": fam.cls.__name__, "arch": fam.arch(model),
                       "state_dict": model.state_dict()}, path)


def load_pruned(path: Path, map_location: str = "cpu") -> nn.Module:
    """The model written by `save_pruned`: rebuilt from its widths, weights loaded."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = rebuild(state["family"], state["arch"])
    model.load_state_dict(state["state_dict"])
    return model.to(map_location)
