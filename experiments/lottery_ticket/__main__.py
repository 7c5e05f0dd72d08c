"""Iterative magnitude pruning with rewinding, ticket vs random re-initialisation.

    python -m experiments.lottery_ticket --scale smoke|default|paper [--model conv2] ...

For each seed: train the dense net (level 0), then for each level prune the lowest-magnitude
surviving weights of the previous level's *final* weights, rewind survivors to their initial
values (or to iteration k) and retrain: that is the `ticket`. The `reinit` control trains the
same mask from a fresh random init; `random_mask` (opt-in) a random mask with the same per-layer
sparsity from the ticket's init. Trials live in runs/lottery_ticket/<hash>/; finished ones are
reused, killed ones resume. Outputs: results/lottery_ticket/<scale>/.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from experiments.common import Context, Experiment, parse_list, lazy
from experiments.packing import TrialSpec, train_all
from experiments.lottery_ticket.config import VARIANTS, LotteryConfig, Trial, for_scale
from lib.prune.imp import prune
from lib.prune.mask import Mask, prunable_layers
from lib.runs import atomic_torch_save
from lib.train import Hook


class Snapshot(Hook):
    """Saves the weights after `step` optimiser steps (the late-rewinding point)."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def after_step(self, model, step):
        if step == self.step:
            atomic_torch_save(copy.deepcopy(model.state_dict()), self.path)


def flags(p) -> None:
    p.add_argument("--levels", type=int, default=None, help="pruning rounds after the dense run")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--rewind-step", type=int, default=None, help="late rewinding iteration k")


def configure(cfg: LotteryConfig, a) -> LotteryConfig:
    if a.rewind_step is not None:
        cfg = replace(cfg, setup=replace(cfg.setup, rewind_step=a.rewind_step))
    if a.variants is not None:
        cfg = replace(cfg, variants=parse_list(a.variants, VARIANTS, "variants"))
    return cfg if a.levels is None else replace(cfg, levels=a.levels)


class Chain:
    """One seed's IMP chain: its init, and the masks and trained weights of its levels so far."""

    def __init__(self, ctx: Context, seed: int):
        self.ctx, self.setup, self.seed = ctx, ctx.cfg.setup, seed
        self.init = copy.deepcopy(ctx.build(self.setup.model, seed).state_dict())
        self.kinds = prunable_layers(ctx.build(self.setup.model, seed))
        self.rewind_path = ctx.run(Trial(self.setup, seed, 0, "ticket")).path("rewind.pt")
        self.masks: dict[tuple[str, int], Mask] = {}
        self.finals: dict[int, dict] = {}

    def mask(self, variant: str, level: int) -> Mask:
        """The mask of (variant, level): the ticket prunes the previous level's final weights;
        reinit shares the ticket's mask; random_mask prunes at random to the same sparsity."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + level)
        prune_cfg = self.setup.prune
        if variant == "random_mask":
            prev = self.masks.get(("random_mask", level - 1), self.masks[("ticket", 0)])
            mask = prune(replace(prune_cfg, criterion="random"), prev, self.kinds, self.init,
                         self.init, gen)
        elif variant == "ticket" and level > 0:
            mask = prune(prune_cfg, self.masks[("ticket", level - 1)], self.kinds, self.init,
                         self.finals[level - 1], gen)
        elif variant == "ticket":
            mask = Mask.ones(self.ctx.build(self.setup.model, self.seed))
        else:  # reinit: the ticket's mask
            mask = self.masks[("ticket", level)]
        self.masks[(variant, level)] = mask
        return mask

    def spec(self, variant: str, level: int) -> TrialSpec:
        ctx, setup, seed = self.ctx, self.setup, self.seed
        run, mask = ctx.run(Trial(setup, seed, level, variant)), self.mask(variant, level)
        start = self.init
        if setup.rewind_step and level > 0:
            start = ctx.run(Trial(setup, seed, 0, "ticket")).load("rewind.pt", ctx.device)

        def build():
            if variant == "reinit":  # a new init, same architecture
                return ctx.build(setup.model, seed + 100_000 * level)
            model = ctx.build(setup.model, seed)
            model.load_state_dict(start)
            return model

        def after(model, res):
            if variant == "ticket":
                atomic_torch_save(model.state_dict(), run.path("final.pt"))
            mask.save(run.path("mask.pt"))
            return {"weights_left": mask.density()}

        snapshot = level == 0 and setup.rewind_step  # late rewinding: keep the step-k weights
        return TrialSpec(run, f"s{seed}-L{level}-{variant}", seed, build,
                         stage="train" if level == 0 else "prune", mask=mask, after=after,
                         hooks_for=(lambda m: [Snapshot(setup.rewind_step, self.rewind_path)])
                         if snapshot else None)

    def finished(self, level: int) -> None:
        """Read the level's trained ticket (the next level prunes it)."""
        run = self.ctx.run(Trial(self.setup, self.seed, level, "ticket"))
        self.finals[level] = run.load("final.pt", self.ctx.device)


def run(ctx: Context) -> list[dict]:
    """Level by level, every seed and variant of the level as one pack; one row per trial."""
    cfg = ctx.cfg
    chains = [Chain(ctx, seed) for seed in range(cfg.seeds)]
    rows = []
    for level in range(cfg.levels + 1):
        # at level 0 every variant is the same dense net
        keys = [(c, v) for c in chains for v in cfg.variants if level > 0 or v == "ticket"]
        specs = [c.spec(v, level) for c, v in keys]
        results = train_all(ctx, specs, cfg.setup.train, pack=ctx.pack)
        for (chain, variant), spec, res in zip(keys, specs, results):
            print(f"{spec.name:>20}: {res['weights_left']:7.2%} left, test acc "
                  f"{res['test_acc']:.4f} at iteration {res['early_stop_iter']} "
                  f"({res['train_wall_s']:.1f} s)", flush=True)
            rows.append({"seed": chain.seed, "level": level, "variant": variant, **res})
        for chain in chains:
            chain.finished(level)
    return rows


write_report = lazy("experiments.lottery_ticket.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="lottery_ticket", doc=__doc__, for_scale=for_scale, run=run, report=write_report,
    model="lenet_300_100", model_help="lenet_300_100, conv2, conv4, conv6", flags=flags,
    configure=configure, prune_flags=True, packs=True)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
