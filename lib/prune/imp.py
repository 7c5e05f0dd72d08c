"""Iterative magnitude pruning (Frankle & Carbin 2019) and its controls.

One round keeps, in each layer, the highest-scoring fraction (1 - rate) of the weights still
alive; the score is a criterion of `lib.prune.criteria` (`large_final` = magnitude). Rates are
per layer kind: LeNet prunes 20% of hidden and 10% of output weights per round, the conv nets
10-15% of conv weights. With `scope="global"`, one ranking across all layers at `rate_fc`.
Ties are broken at random with the trial's generator, so a mask is a function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lib.prune.criteria import check_criterion, scores
from lib.prune.mask import Mask

SCOPES = ("layerwise", "global")


@dataclass(frozen=True)
class PruneConfig:
    """Which weights a round removes. Defaults: the lottery-ticket paper's LeNet rates."""

    criterion: str = "large_final"
    scope: str = "layerwise"
    rate_fc: float = 0.2
    rate_conv: float = 0.15
    rate_output: float = 0.1
    # global ranking: prune the output layer too? open_lth's LeNet and VGG defaults ignore it
    # (`pruning_layers_to_ignore='fc.weight'`), and so do we
    global_output: bool = False

    def validate(self) -> "PruneConfig":
        check_criterion(self.criterion)
        if self.scope not in SCOPES:
            raise ValueError(f"scope: unknown '{self.scope}', choose from {', '.join(SCOPES)}")
        for field in ("rate_fc", "rate_conv", "rate_output"):
            rate = getattr(self, field)
            if not 0 <= rate < 1:
                raise ValueError(f"{field}: must be in [0, 1), got {rate}")
        return self

    def rates(self, kinds: dict[str, str]) -> dict[str, float]:
        """Per-layer rate from each layer's kind ('fc', 'conv', 'output')."""
        by_kind = {"fc": self.rate_fc, "conv": self.rate_conv, "output": self.rate_output}
        return {name: by_kind[kind] for name, kind in kinds.items()}


def keep_top(score: Tensor, alive: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Bool mask of the `k` highest scores among `alive` entries; ties broken at random."""
    flat = torch.where(alive.flatten(), score.flatten().float(), torch.tensor(-float("inf")))
    perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    # a stable sort of a random permutation orders equal scores at random
    order = perm[torch.argsort(flat[perm], descending=True, stable=True)]
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    return keep.view_as(alive) & alive


def prune_round(score: dict[str, Tensor], mask: Mask, rates: dict[str, float], *,
                scope: str = "layerwise", generator: torch.Generator) -> Mask:
    """One round: remove round(rate * alive) of each layer's (or all layers') live weights."""
    if scope == "layerwise":
        out = {}
        for name, alive in mask.items():
            n_alive = int(alive.sum())
            out[name] = keep_top(score[name], alive, n_alive - round(rates[name] * n_alive), generator)
        return Mask(out)
    names = list(mask)
    flat_alive = torch.cat([mask[n].flatten() for n in names])
    flat_score = torch.cat([score[n].flatten().float() for n in names])
    n_alive = int(flat_alive.sum())
    rate = next(iter(rates.values()))
    keep = keep_top(flat_score, flat_alive, n_alive - round(rate * n_alive), generator)
    out, start = {}, 0
    for n in names:
        out[n] = keep[start:start + mask[n].numel()].view_as(mask[n])
        start += mask[n].numel()
    return Mask(out)


def prune(cfg: PruneConfig, mask: Mask, kinds: dict[str, str], w_init: dict[str, Tensor],
          w_final: dict[str, Tensor], generator: torch.Generator) -> Mask:
    """Score with `cfg.criterion` and prune one round at the per-kind rates."""
    if cfg.scope == "global" and not cfg.global_output:  # open_lth: the classifier is ignored
        kept = Mask({n: m for n, m in mask.items() if kinds[n] != "output"})
        pruned = prune(replace(cfg, global_output=True), kept, kinds, w_init, w_final,
                       generator) if kept else kept
        return Mask({n: pruned.get(n, m) for n, m in mask.items()})
    s = scores(cfg.criterion, {n: w_init[n] for n in mask}, {n: w_final[n] for n in mask},
               generator, alive=mask)
    # a global ranking has a single rate: rate_fc applies to every layer it ranks
    rates = cfg.rates(kinds) if cfg.scope == "layerwise" else {n: cfg.rate_fc for n in mask}
    return prune_round(s, mask, rates, scope=cfg.scope, generator=generator)


def kept_after(levels: int, sizes: dict[str, int], rates: dict[str, float]) -> dict[str, int]:
    """Weights each layer keeps after `levels` layerwise rounds (with the rounds' rounding)."""
    alive = dict(sizes)
    for _ in range(levels):
        alive = {n: a - round(rates[n] * a) for n, a in alive.items()}
    return alive


def density_after(levels: int, sizes: dict[str, int], rates: dict[str, float]) -> float:
    """Fraction of weights left after `levels` layerwise rounds."""
    return sum(kept_after(levels, sizes, rates).values()) / sum(sizes.values())


def prune_oneshot(score: dict[str, Tensor], rates: dict[str, float], levels: int,
                  generator: torch.Generator) -> Mask:
    """One step to the per-layer sparsity that `levels` rounds of IMP would reach."""
    counts = kept_after(levels, {n: s.numel() for n, s in score.items()}, rates)
    return Mask({n: keep_top(s, torch.ones_like(s, dtype=torch.bool), counts[n], generator)
                 for n, s in score.items()})
