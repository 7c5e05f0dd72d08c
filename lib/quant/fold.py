"""Batch-norm folding: each Conv2d → BatchNorm2d pair becomes one Conv2d, as deployed int8 models do.

In eval mode BN is an affine map per channel, y = γ·(z − μ)/√(σ² + ε) + β, so with
a = γ/√(σ² + ε) the pair conv(x; W, b) → BN equals conv(x; a·W, a·(b − μ) + β) (a scales the
output channels of W). Quantizing the *folded* weights is what an int8 deployment does (the
batch-norm folding of the Krishnamoorthi 2018 whitepaper): folding multiplies each output
channel by its own a, which widens the spread of ranges across channels, and per-tensor weight
ranges suffer from that. Without folding, fake quantization would quantize weights that never
exist on the device.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) computing bn(conv(x)) in eval mode (BN's running statistics)."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, True, conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * a.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(a * (bias - bn.running_mean) + bn.bias)
    return fused


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Conv2d → BatchNorm2d pair inside an nn.Sequential folded
    into one Conv2d (the BN becomes nn.Identity); the copy is in eval mode.

    One-line ValueError naming the first BatchNorm2d that does not directly follow a Conv2d in
    an nn.Sequential (e.g. a ResNet's `bn1` attribute): it cannot be folded here, and leaving it
    would quantize weights the deployed model does not have.
    """
    out = copy.deepcopy(model).eval()
    for seq in out.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.named_children())
        for (name_c, conv), (name_b, bn) in zip(kids, kids[1:]):
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d:
                setattr(seq, name_c, fold_conv_bn(conv, bn))
                setattr(seq, name_b, nn.Identity())
    for name, mod in out.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            raise ValueError(f"fold_bn: {name} ({type(mod).__name__}) does not follow a Conv2d in "
                             f"an nn.Sequential and cannot be folded")
    return out


def has_batchnorm(model: nn.Module) -> bool:
    """True when `model` has a BatchNorm layer (its deployed weights are the folded ones)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
