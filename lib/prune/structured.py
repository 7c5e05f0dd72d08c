"""Channel / neuron importance for structured pruning, and the choice of channels to keep.

A criterion scores every output channel of one prunable layer (see `surgery.Unit`); higher
scores are kept. The criteria, by name in `IMPORTANCE`:
- l1, l2 (Li et al. ICLR 2017): the 1- or 2-norm of each output filter over its (in, k, k).
- fpgm (He et al. CVPR 2019): the summed Euclidean distance of a filter to all other filters of
  the layer, as in the official code; the filters nearest the geometric median score lowest.
- bn_gamma (Liu et al. ICCV 2017): |γ| of the BatchNorm after the layer.
- apoz (Hu et al. 2016): 1 − APoZ, the fraction of non-zero activations after the ReLU that
  follows the layer (its BN when it has one), over a data sample, in eval mode.
- random: uniform scores from a seeded generator.

Selection turns scores into kept indices: per layer by ratio, by threshold, or by one global
ratio with a per-layer floor (Network Slimming's global threshold can empty a layer; ours
cannot). Global selection compares scores across layers, which suits bn_gamma and apoz; norm
scores depend on fan-in, so prefer per-layer selection for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.prune.surgery import prune_channels, prunable_units, widths


def l1_norm(w: Tensor) -> Tensor:
    """Σ|w| of each output filter: (out, in, k, k) or (out, in) -> (out,)."""
    return w.flatten(1).abs().sum(1)


def l2_norm(w: Tensor) -> Tensor:
    """Euclidean norm of each output filter -> (out,)."""
    return w.flatten(1).norm(dim=1)


def fpgm(w: Tensor) -> Tensor:
    """Summed Euclidean distance of each filter to every other filter of the layer -> (out,)."""
    flat = w.flatten(1)  # (out, in*k*k)
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").sum(1)


def _zero_counts(act: Tensor) -> tuple[Tensor, int]:
    """Zeros per channel of (N, C, ...) activations, and how many values each channel has."""
    per_channel = act.transpose(0, 1).flatten(1)  # (C, N*H*W)
    return (per_channel == 0).sum(1), per_channel.shape[1]


def apoz(act: Tensor) -> Tensor:
    """Average percentage of zeros of each channel of post-ReLU activations (N, C, ...) -> (C,)."""
    zeros, n = _zero_counts(act)
    return zeros.double().div(n).to(act.dtype)


@dataclass
class LayerView:
    """What a criterion may look at for one prunable layer."""

    name: str
    weight: Tensor  # (out, in, k, k) or (out, in)
    gamma: Tensor | None  # scale of the BN after the layer
    apoz: Tensor | None  # (out,), filled only for criteria that need data
    generator: torch.Generator


def _bn_gamma(v: LayerView) -> Tensor:
    if v.gamma is None:
        raise ValueError(f"criterion: 'bn_gamma' needs a BatchNorm after layer '{v.name}'")
    return v.gamma.abs()


IMPORTANCE: dict[str, Callable[[LayerView], Tensor]] = {
    "l1": lambda v: l1_norm(v.weight),
    "l2": lambda v: l2_norm(v.weight),
    "fpgm": lambda v: fpgm(v.weight),
    "bn_gamma": _bn_gamma,
    "apoz": lambda v: 1 - v.apoz,
    "random": lambda v: torch.rand(v.weight.shape[0], generator=v.generator),
}
NEEDS_DATA = ("apoz",)
SCOPES = ("layer", "global")


def check_criterion(name: str, field: str = "criterion") -> None:
    """One-line error for a criterion the registry does not know."""
    if name not in IMPORTANCE:
        raise ValueError(f"{field}: unknown '{name}', choose from {', '.join(IMPORTANCE)}")


@torch.no_grad()
def layer_apoz(model: nn.Module, x: Tensor, chunk: int = 256) -> dict[str, Tensor]:
    """APoZ of every prunable layer's channels after its (BN and) ReLU, over inputs `x`."""
    mods = dict(model.named_modules())
    counts: dict[str, list] = {}

    def hook(name):
        def fn(module, inputs, out):
            zeros, n = _zero_counts(F.relu(out))
            acc = counts.setdefault(name, [0, 0])
            acc[0], acc[1] = acc[0] + zeros, acc[1] + n
        return fn

    handles = [mods[u.bn or u.layer].register_forward_hook(hook(name))
               for name, u in prunable_units(model).items()]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {n: (z.double() / c).float().cpu() for n, (z, c) in counts.items()}


def importance(criterion: str, model: nn.Module, x: Tensor | None = None,
               seed: int = 0) -> dict[str, Tensor]:
    """Score of every output channel of every prunable layer of `model` (higher = keep)."""
    check_criterion(criterion)
    units = prunable_units(model)
    if criterion in NEEDS_DATA and x is None:
        raise ValueError(f"x: criterion '{criterion}' needs a data sample")
    zeros = layer_apoz(model, x) if criterion in NEEDS_DATA else {}
    mods, g = dict(model.named_modules()), torch.Generator().manual_seed(seed)
    out = {}
    for name, u in units.items():
        gamma = mods[u.bn].weight.detach() if u.bn else None
        view = LayerView(name, mods[u.layer].weight.detach(), gamma, zeros.get(name), g)
        out[name] = IMPORTANCE[criterion](view).float().cpu()
    return out


def _check_ratio(ratio: float, field: str = "ratio") -> None:
    if not 0 <= ratio < 1:
        raise ValueError(f"{field}: must be in [0, 1), got {ratio}")


def _kept_counts(sizes: Mapping[str, int], ratio: float | Mapping[str, float]) -> dict[str, int]:
    """Channels each layer keeps when it prunes `ratio` (one value, or per layer) of them."""
    per_layer = isinstance(ratio, Mapping)
    unknown = sorted(set(ratio) - set(sizes)) if per_layer else []
    if unknown:
        raise ValueError(f"ratio: unknown layer(s) {', '.join(unknown)}, choose from {', '.join(sizes)}")
    out = {}
    for name, n in sizes.items():
        r = ratio.get(name, 0.0) if per_layer else ratio
        _check_ratio(r, f"ratio[{name!r}]" if per_layer else "ratio")
        out[name] = n - round(r * n)
        if out[name] < 1:
            raise ValueError(f"ratio: pruning {r} of layer '{name}' ({n} channels) leaves none")
    return out


def _floors(sizes: Mapping[str, int], ratio: float, min_keep: float) -> tuple[dict[str, int], int]:
    """Per-layer floor and number of channels to prune globally; errors if they conflict."""
    if not isinstance(ratio, (int, float)):
        raise ValueError(f"ratio: global selection takes one number, got {type(ratio).__name__}")
    _check_ratio(ratio)
    if isinstance(min_keep, float) and 0 < min_keep < 1:
        floors = {n: max(1, math.ceil(min_keep * s)) for n, s in sizes.items()}
    elif isinstance(min_keep, int) and min_keep >= 1:
        floors = {n: min(s, min_keep) for n, s in sizes.items()}
    else:
        raise ValueError(f"min_keep: must be an int >= 1 or a fraction in (0, 1), got {min_keep}")
    total = sum(sizes.values())
    n_prune, prunable = round(ratio * total), total - sum(floors.values())
    if n_prune > prunable:
        raise ValueError(f"ratio: {ratio} prunes {n_prune} of {total} channels but the per-layer "
                         f"floor min_keep={min_keep} leaves only {prunable} prunable")
    return floors, n_prune


def _top(score: Tensor, k: int) -> Tensor:
    """Sorted indices of the k highest scores (ties: the lower index wins)."""
    return torch.argsort(score, descending=True, stable=True)[:k].sort().values


def select_by_ratio(scores: Mapping[str, Tensor], ratio: float | Mapping[str, float]) -> dict[str, Tensor]:
    """Keep the highest-scoring channels of each layer, pruning `ratio` of each (or ratio[layer])."""
    counts = _kept_counts({n: s.numel() for n, s in scores.items()}, ratio)
    return {n: _top(scores[n], k) for n, k in counts.items()}


def select_by_threshold(scores: Mapping[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """Keep the channels scoring above `threshold`; error if that empties a layer."""
    for n, s in scores.items():
        if not bool((s > threshold).any()):
            raise ValueError(f"threshold: {threshold} leaves layer '{n}' with no channel "
                             f"(its highest score is {float(s.max()):.4g})")
    return {n: torch.nonzero(s > threshold).flatten() for n, s in scores.items()}


def select_global(scores: Mapping[str, Tensor], ratio: float, min_keep: float = 1) -> dict[str, Tensor]:
    """Prune the round(ratio·total) lowest scores over all layers, each layer keeping its floor.

    `min_keep` is a count (int >= 1) or a fraction (0, 1) of each layer's channels.
    """
    floors, n_prune = _floors({n: s.numel() for n, s in scores.items()}, ratio, min_keep)
    names = list(scores)
    cand, owner, index = [], [], []  # channels above each layer's protected top `floor`
    for i, n in enumerate(names):
        rest = torch.argsort(scores[n], descending=True, stable=True)[floors[n]:]
        cand.append(scores[n][rest])
        owner.append(torch.full_like(rest, i))
        index.append(rest)
    cand, owner, index = torch.cat(cand), torch.cat(owner), torch.cat(index)
    gone = torch.argsort(cand, stable=True)[:n_prune]
    keep = {}
    for i, n in enumerate(names):
        alive = torch.ones(scores[n].numel(), dtype=torch.bool)
        alive[index[gone][owner[gone] == i]] = False
        keep[n] = torch.nonzero(alive).flatten()
    return keep


def prune_structured(model: nn.Module, criterion: str, ratio: float, *, scope: str = "layer",
                     min_keep: float = 1, x: Tensor | None = None,
                     seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    """Score, select and cut in one call: (physically smaller copy of `model`, kept indices).

    Every argument is checked (criterion, scope, ratio against each layer's size, model type)
    before any scoring.
    """
    check_criterion(criterion)
    if scope not in SCOPES:
        raise ValueError(f"scope: unknown '{scope}', choose from {', '.join(SCOPES)}")
    sizes = widths(model)
    if scope == "layer":
        _kept_counts(sizes, ratio)
    else:
        _floors(sizes, ratio, min_keep)
    scores = importance(criterion, model, x, seed)
    keep = select_by_ratio(scores, ratio) if scope == "layer" else select_global(scores, ratio, min_keep)
    return prune_channels(model, keep), keep
