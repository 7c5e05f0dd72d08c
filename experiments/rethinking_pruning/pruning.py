"""The three pruning methods, each turning a trained large model into a `Pruned` net.

A `Pruned` knows how to start each retraining variant (`STARTS`):
- trained: the large model's pruned weights (fine-tuning);
- ticket: the large model's initial weights restricted to what was kept (the winning ticket);
- random: a fresh init *of the large model*, restricted the same way: the ticket's control,
  with the same per-layer init scale (the authors' lottery code masks the full model, so its
  random init has that scale too);
- scratch: a fresh init of the pruned architecture itself (Scratch-E, Scratch-B, as the paper's
  main experiments). Kaiming fan-out init scales a conv's weights by 1/√(out channels), so the
  filters of a VGG with half the channels start √2 larger than the ticket's; behind BN that
  changes the effective learning rate. For unstructured pruning the architecture is the mask on
  the large model, so scratch and random are one start.
- l1: per conv, drop the `ratio` filters with the smallest L1 norm (Li et al. 2017); physical.
- slimming: one global |γ| threshold over all BN channels (Liu et al. 2017) with a per-layer
  floor of `min_keep` channels, on a model trained with the BN-γ penalty; physical.
- unstructured: per layer, zero the `ratio` smallest-magnitude weights (Han et al. 2015); the
  mask (`Pruned.mask`, data: alone a `MaskHook`, in a pack `lib.packed_train`'s stacked mask) is
  kept through training, so the net stays dense in shape.
`budget` is the large model's cost over the pruned one's: MACs for structured pruning, the
parameter count over the non-zero one for unstructured pruning (its MACs do not shrink on dense
hardware), as the paper does. Scratch-B trains for epochs × min(budget, cap).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lib.metrics import count_macs, count_params
from lib.prune.imp import PruneConfig, prune
from lib.prune.mask import Mask, prunable_layers
from lib.prune.structured import prune_structured
from lib.prune.surgery import family, prune_channels, rebuild

RANDOM_INIT_SEED = 10_000  # + seed: a random init that shares no draws with the original init


@dataclass
class Pruned:
    trained: Callable[[], nn.Module]
    ticket: Callable[[], nn.Module]
    random: Callable[[], nn.Module]
    measure: Callable[[nn.Module], dict]  # params / macs of a (trained) net of this pruning
    budget: float

    scratch: Callable[[], nn.Module] | None = None  # None: the same start as `random`
    mask: Mask | None = None  # unstructured: the pruned weights, held at zero through training

    def start(self, name: str) -> nn.Module:
        if name == "scratch":
            return (self.scratch or self.random)()
        return {"trained": self.trained, "ticket": self.ticket, "random": self.random}[name]()


STARTS = ("trained", "ticket", "random", "scratch")


def init_std(model: nn.Module) -> float:
    """Mean over conv layers of the std of their non-zero weights (masked weights excluded):
    the init scale a retraining variant starts from."""
    stds = [m.weight[m.weight != 0].std().item() for m in model.modules()
            if isinstance(m, nn.Conv2d) and (m.weight != 0).sum() > 1]
    return sum(stds) / len(stds) if stds else float("nan")


def check_prunable(model: nn.Module, method: str, ratio: float, min_keep: int = 1) -> None:
    """One-line ValueError if `method` cannot prune `ratio` of `model` (before any training)."""
    if method == "unstructured":
        params = dict(model.named_parameters())
        for name in prunable_layers(model):
            n = params[name].numel()
            if n - round(ratio * n) < 1:
                raise ValueError(f"ratio: pruning {ratio} of '{name}' ({n} weights) leaves none")
        return
    scope = "global" if method == "slimming" else "layer"
    prune_structured(model, "bn_gamma" if method == "slimming" else "l1", ratio, scope=scope,
                     min_keep=min_keep)


def _structured(method: str, ratio: float, min_keep: int, final: nn.Module, init: nn.Module,
                fresh: Callable[[int], nn.Module], random_seed: int, input_shape) -> Pruned:
    if method == "l1":
        pruned, keep = prune_structured(final, "l1", ratio)
    else:
        pruned, keep = prune_structured(final, "bn_gamma", ratio, scope="global", min_keep=min_keep)
    fam, arch = family(pruned), family(pruned).arch(pruned)
    device = next(final.parameters()).device

    def scratch() -> nn.Module:
        torch.manual_seed(random_seed)
        return rebuild(fam.cls.__name__, arch).to(device)

    def measure(m: nn.Module) -> dict:
        return {"params": count_params(m), "macs": count_macs(m, input_shape)}

    budget = count_macs(final, input_shape) / count_macs(pruned, input_shape)
    return Pruned(trained=lambda: copy.deepcopy(pruned), ticket=lambda: prune_channels(init, keep),
                  random=lambda: prune_channels(fresh(random_seed), keep), scratch=scratch,
                  measure=measure, budget=budget)


def _unstructured(ratio: float, final: nn.Module, init: nn.Module, fresh: Callable[[int], nn.Module],
                  random_seed: int, seed: int, input_shape) -> Pruned:
    kinds = prunable_layers(final)
    cfg = PruneConfig(rate_fc=ratio, rate_conv=ratio, rate_output=ratio).validate()
    w_init, w_final = dict(init.named_parameters()), dict(final.named_parameters())
    mask = prune(cfg, Mask.ones(final), kinds, {n: w_init[n].detach() for n in kinds},
                 {n: w_final[n].detach() for n in kinds}, torch.Generator().manual_seed(seed))

    def masked(model: nn.Module) -> nn.Module:
        return mask.apply(copy.deepcopy(model))

    def measure(m: nn.Module) -> dict:
        """Parameters that are not pruned-and-zero: a mask that leaked would count here."""
        params = dict(m.named_parameters())
        held = sum(int((~mask[n].to(params[n].device) & (params[n] == 0)).sum()) for n in mask)
        return {"params": count_params(m) - held, "macs": count_macs(m, input_shape)}

    total = count_params(final)
    budget = total / (total - (mask.size() - mask.kept()))
    return Pruned(trained=lambda: masked(final), ticket=lambda: masked(init),
                  random=lambda: masked(fresh(random_seed)), mask=mask, measure=measure,
                  budget=budget)


def prune_model(method: str, ratio: float, final: nn.Module, init: nn.Module,
                fresh: Callable[[int], nn.Module], seed: int, input_shape, min_keep: int = 1) -> Pruned:
    """Prune the trained `final` (whose initial weights were `init`) with `method` at `ratio`;
    `fresh(s)` builds the large model from torch seed `s`."""
    random_seed = RANDOM_INIT_SEED + seed
    if method == "unstructured":
        return _unstructured(ratio, final, init, fresh, random_seed, seed, input_shape)
    return _structured(method, ratio, min_keep, final, init, fresh, random_seed, input_shape)
