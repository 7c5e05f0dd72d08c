"""How many rounds of iterative pruning a network can take, computed before any training.

Round n of layer-wise IMP keeps `alive - round(rate * alive)` weights of each layer: after
enough rounds a layer is left with nothing, or with a stub of one or two weights that rounding
keeps where the rate asks for less than one. Either way the level's requested sparsity cannot
be met, and training such a net costs minutes to tabulate noise, so a config asking for it is
refused up front (`check_levels`), naming the layer and the last level that works.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from lib import models
from lib.prune.imp import PruneConfig
from lib.prune.mask import prunable_layers


@functools.lru_cache(maxsize=64)
def layer_sizes(model: str, input_shape: tuple[int, ...], num_classes: int) -> dict[str, tuple[str, int]]:
    """{prunable layer: (kind, number of weights)} of `model`. Built once per process on the
    CPU, the global RNG left as it was (on the meta device, init would import torch._dynamo)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        net = models.build(model, tuple(input_shape), num_classes)
    params = dict(net.named_parameters())
    return {name: (kind, params[name].numel()) for name, kind in prunable_layers(net).items()}


def first_empty_level(sizes: dict[str, int], rates: dict[str, float],
                      up_to: int) -> tuple[int, str] | None:
    """(level, layer) of the first IMP level <= `up_to` at which a layer of `sizes` would keep
    no weight: fewer than one at the nominal rate, `(1 - rate)^level * size < 1`, or none
    after the rounding of `prune_round`. None if every level up to `up_to` keeps some."""
    hits = []
    for name, size in sizes.items():
        rate = rates.get(name, 0.0)
        if rate <= 0 or size < 1:
            continue
        nominal = math.floor(math.log(size) / -math.log1p(-rate)) + 1  # first level below one
        alive, level = size, 0
        while level < min(up_to, nominal) and alive >= 1 and round(rate * alive) > 0:
            level += 1
            alive -= round(rate * alive)
        level = level if alive < 1 else nominal
        if level <= up_to:
            hits.append((level, name))
    return min(hits) if hits else None


def check_levels(model: str, shape: Sequence[int], num_classes: int, cfg: PruneConfig,
                 levels: int, field: str = "levels") -> None:
    """One-line ValueError when `levels` rounds of `cfg` leave some layer of `model` with no
    weight. A global ranking (one rate, `rate_fc`) is judged on the total of the ranked layers."""
    kinds = layer_sizes(model, tuple(shape), num_classes)
    if cfg.scope == "layerwise":
        sizes = {n: size for n, (_, size) in kinds.items()}
        rates = {n: r for n, r in cfg.rates({n: k for n, (k, _) in kinds.items()}).items()}
    else:
        ranked = [n for n, (k, _) in kinds.items() if k != "output" or getattr(cfg, "global_output", False)]
        sizes = {"the ranked layers": sum(kinds[n][1] for n in ranked)}
        rates = {"the ranked layers": cfg.rate_fc}
    hit = first_empty_level(sizes, rates, up_to=levels)
    if hit is not None:
        level, name = hit
        raise ValueError(f"{field}: at most {level - 1} for {model} at these pruning rates "
                         f"(level {level} leaves {name} with no weight), got {levels}")
