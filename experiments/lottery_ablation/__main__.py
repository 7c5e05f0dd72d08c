"""Deconstructing lottery tickets: mask criteria, mask-1 and mask-0 actions, supermasks.

    python -m experiments.lottery_ablation --scale smoke|default|paper [--criteria a,b]
        [--ablations a,b] [--mask0 a,b] [--studies criteria,mask1,mask0,supermask] [--seeds N]

Per seed: one dense run gives w_init and w_final. Each criterion scores every weight from them
and keeps the top of each layer (the sparsity of n IMP rounds); the kept weights start from a
mask-1 action (rewind, reinit, reshuffle, signed constant, ...), the pruned ones follow a mask-0
action (zero, or frozen at init), and the net is retrained. Supermasks: each criterion's mask on
the untrained weights (no training), and a mask learned by a straight-through Bernoulli sample.
Outputs: results/lottery_ablation/<scale>/ (trials.csv, table.md, overlap.csv, sign_flips.csv, PNGs).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
from dataclasses import replace

import torch

from experiments.common import Context, Experiment, lazy, parse_ints, parse_list
from experiments.packing import TrialSpec, train_all
from experiments.lottery_ablation.config import (MODES, STUDIES, SUPERMASK_WEIGHTS,
                                                 AblationConfig, Trial, for_scale)
from lib.prune.ablations import MASK0, MASK1, mask0_fill, mask1_values, signed_constant
from lib.prune.criteria import CRITERIA, scores
from lib.prune.imp import prune_oneshot, prune_round
from lib.prune.mask import Mask, prunable_layers
from lib.prune.supermask import PackedSupermask, SampledAccuracy, SupermaskNet
from lib.runs import Run, atomic_torch_save

SUPERMASK_SAMPLES = 5  # sampled masks averaged per evaluation of a learned supermask


def flags(p: argparse.ArgumentParser) -> None:
    """The sub-grid to run: which studies, criteria, mask-1/mask-0 actions and levels."""
    p.add_argument("--studies", default=None, help=f"comma list of {', '.join(STUDIES)}")
    p.add_argument("--criteria", default=None, help=f"comma list of {', '.join(CRITERIA)}")
    p.add_argument("--ablations", default=None, help=f"mask-1 actions: {', '.join(MASK1)}")
    p.add_argument("--mask0", default=None, help=f"mask-0 actions: {', '.join(MASK0)}")
    p.add_argument("--levels", default=None, help="comma list of IMP-equivalent levels, e.g. 3,7,15")
    p.add_argument("--mode", default=None, help="oneshot (default scale) or iterative (paper scale)")


def configure(cfg: AblationConfig, a: argparse.Namespace) -> AblationConfig:
    """`cfg` with the flags of `flags` applied (ValueError naming the field on a bad value)."""
    if a.mode:
        cfg = replace(cfg, setup=replace(cfg.setup, mode=parse_list(a.mode, MODES, "mode")[0]))
    lists = {"studies": (a.studies, STUDIES), "criteria": (a.criteria, tuple(CRITERIA)),
             "ablations": (a.ablations, tuple(MASK1)), "mask0s": (a.mask0, tuple(MASK0))}
    changes = {k: parse_list(v, choices, k.replace("mask0s", "mask0"))
               for k, (v, choices) in lists.items() if v is not None}
    if a.levels is not None:
        changes["levels"] = parse_ints(a.levels, "levels")
    return replace(cfg, **changes)


class SeedRun:
    """All trials of one seed; masks and trained weights are computed once and memoised."""

    def __init__(self, ctx: Context, seed: int):
        self.ctx, self.cfg, self.setup, self.seed = ctx, ctx.cfg, ctx.cfg.setup, seed
        self.init = {n: t.clone() for n, t in self.fresh_model(seed).state_dict().items()}
        self.reinit = {n: t.clone() for n, t in self.fresh_model(seed + 7919).state_dict().items()}
        self.kinds = prunable_layers(self.fresh_model(seed))
        self.rates = self.setup.prune.rates(self.kinds)
        self.masks: dict[tuple, Mask] = {}
        self.finals: dict[tuple, dict] = {}
        self.rows: list[dict] = []

    def fresh_model(self, seed: int):
        return self.ctx.build(self.setup.model, seed)

    def run(self, **kw) -> Run:
        return self.ctx.run(Trial(self.setup, self.seed, **kw))

    def gen(self, *key) -> torch.Generator:
        """A generator seeded by (seed, key), stable across processes (unlike hash())."""
        digest = hashlib.sha1(repr((self.seed, *key)).encode()).hexdigest()
        return torch.Generator().manual_seed(int(digest[:15], 16))

    # ------------------------------------------------------------------ masks and weights
    def final(self, criterion: str, ablation: str, mask0: str, level: int) -> dict:
        """Trained weights of a chain at `level` (level 0: the dense run, shared by all)."""
        if level == 0:
            criterion, ablation, mask0 = "large_final", "rewind", "zero"
        key = (criterion, ablation, mask0, level)
        if key not in self.finals:  # read once: every mask and mask-0 fill of a level needs it
            run = self.run(criterion=criterion, ablation=ablation, mask0=mask0, level=level)
            if not run.done:
                self.train(criterion, ablation, mask0, level)
            self.finals[key] = run.load("final.pt", self.ctx.device)
        return self.finals[key]

    def source(self, criterion: str, ablation: str, mask0: str, level: int) -> tuple[Mask, dict]:
        """The mask a level starts from and the trained weights it is scored on."""
        if self.setup.mode == "oneshot" or level == 1:
            return Mask.ones(self.fresh_model(self.seed)), self.final(criterion, ablation, mask0, 0)
        prev = (criterion, ablation, mask0, level - 1)
        return self.mask(*prev), self.final(*prev)

    def mask(self, criterion: str, ablation: str, mask0: str, level: int) -> Mask:
        # one-shot masks depend on the criterion only; iterative ones on the whole chain
        chain = (ablation, mask0) if self.setup.mode == "iterative" else ("", "")
        key = (criterion, *chain, level)
        if key not in self.masks:
            alive, w_final = self.source(criterion, ablation, mask0, level)
            g = self.gen("mask", *key)
            s = scores(criterion, {n: self.init[n] for n in alive}, {n: w_final[n] for n in alive}, g,
                       alive=alive)
            if self.setup.mode == "iterative":
                self.masks[key] = prune_round(s, alive, self.rates, generator=g)
            else:
                self.masks[key] = prune_oneshot(s, self.rates, level, g)
        return self.masks[key]

    # ------------------------------------------------------------------ trials
    def spec(self, criterion: str, ablation: str, mask0: str, level: int) -> TrialSpec:
        """A retrained trial: the kept weights start from the mask-1 action, the pruned ones are
        held at the mask-0 value (zero unless a fill is given)."""
        run = self.run(criterion=criterion, ablation=ablation, mask0=mask0, level=level)
        dense = level == 0
        mask = Mask.ones(self.fresh_model(self.seed)) if dense else self.mask(criterion, ablation, mask0, level)
        fill = None if dense else mask0_fill(mask0, self.init, self.source(criterion, ablation, mask0, level)[1], mask)

        def build():
            model = self.fresh_model(self.seed)
            state = dict(self.init)
            if not dense:
                state.update(mask1_values(ablation, self.init, self.reinit, mask, self.gen("mask1", ablation, level)))
            model.load_state_dict(state)
            return model

        def after(model, res):
            atomic_torch_save(model.state_dict(), run.path("final.pt"))
            nonzero = sum(int((model.state_dict()[n] != 0).sum()) for n in mask) / mask.size()
            return {"weights_left": mask.density(), "nonzero_left": nonzero}

        return TrialSpec(run, self.name(criterion, ablation, mask0, level), self.seed,
                         build, stage="train" if dense else "prune", mask=mask, fill=fill,
                         after=after)

    def train(self, criterion: str, ablation: str, mask0: str, level: int) -> dict:
        """One retrained trial alone (a chain's missing link); grids go through `level_specs`."""
        spec = self.spec(criterion, ablation, mask0, level)
        return train_all(self.ctx, [spec], self.setup.train)[0]

    def untrained(self, criterion: str, values: str, level: int) -> dict:
        """A criterion's mask on the untrained weights (`values`: init or signed_constant)."""
        mask = self.mask(criterion, "rewind", "zero", level)
        run = self.run(criterion=criterion, ablation=values, level=level, trained=False)

        def build():
            model = self.fresh_model(self.seed)
            if values == "signed_constant":
                model.load_state_dict({**self.init, **{n: signed_constant(self.init[n]) for n in mask}})
            return mask.apply(model)

        name = f"s{self.seed}-L{level}-{criterion}-{values}-untrained"
        density = mask.density()
        res = self.ctx.evaluate(run, name=name, build=build,
                                extra={"weights_left": density, "nonzero_left": density})
        return res

    def learned_spec(self, weights: str) -> TrialSpec:
        """A learned supermask on frozen weights (`weights`: init or signed_constant); the
        trials of all seeds train as one pack (`PackedSupermask`), or alone with its hook."""
        run = self.run(criterion="learned", ablation=weights, level=0)

        def build():
            base = self.fresh_model(self.seed)
            w = {n: signed_constant(self.init[n]) if weights == "signed_constant" else self.init[n]
                 for n in self.kinds}
            return SupermaskNet(base, w, seed=self.seed).to(self.ctx.device)

        def after(model, res):
            best = res.early_stop
            return {"weights_left": best["mask_density"], "nonzero_left": best["mask_density"],
                    "test_acc_sampled": best["test_acc_sampled"]}

        def pack_with(nets):
            return PackedSupermask(nets, self.ctx.data.input_shape, SUPERMASK_SAMPLES)

        return TrialSpec(run, f"s{self.seed}-learned-supermask-{weights}", self.seed, build,
                         stage="supermask", hooks_for=lambda m: [SampledAccuracy(SUPERMASK_SAMPLES)],
                         pack_with=pack_with, after=after)

    def name(self, criterion: str, ablation: str, mask0: str, level: int) -> str:
        """A trial's name in progress lines and logs: s<seed>-L<level>-<criterion>-<1>-<0>."""
        return f"s{self.seed}-L{level}-{criterion}-{ablation}-{mask0}"

    def report(self, key: dict, res: dict) -> None:
        name = self.name(key["criterion"], key["ablation"], key["mask0"], key["level"])
        print(f"{name:>48}: {res['weights_left']:7.2%} left, test acc {res['test_acc']:.4f}", flush=True)

    # ------------------------------------------------------------------ studies
    def retrained(self, level: int) -> list[tuple[str, tuple[str, str, str]]]:
        """(study, (criterion, ablation, mask0)) of every retrained trial of `level`."""
        cfg, out = self.cfg, []
        if "criteria" in cfg.studies:
            out += [("criteria", (c, "rewind", "zero")) for c in cfg.criteria]
        if "mask1" in cfg.studies:
            out += [("mask1", ("large_final", a, "zero")) for a in cfg.ablations]
        if "mask0" in cfg.studies:
            out += [("mask0", ("large_final", "rewind", m0)) for m0 in cfg.mask0s]
        return out

    def add(self, study: str, res: dict, **key) -> None:
        self.report(key, res)
        self.rows.append({"study": study, "seed": self.seed, **key, **res})

    def add_retrained(self, level: int, results: dict[tuple, dict]) -> None:
        for study, (c, a, m0) in self.retrained(level):
            res = results[(c, a, m0, level)]
            self.add(study, {**res, **self.fit(res, criterion=c, ablation=a, mask0=m0, level=level)},
                     criterion=c, ablation=a, mask0=m0, level=level, trained=True)

    def fit(self, res: dict, **key) -> dict:
        """`train_loss` and `val_loss` at the selected evaluation, read back from the trial's
        metrics.csv (so trials finished before they were reported have them too): how well the
        network fits its training data, beside how well it generalises."""
        with open(self.run(**key).path("metrics.csv"), newline="") as f:
            row = next(r for r in csv.DictReader(f) if int(r["step"]) == res["early_stop_iter"])
        return {"train_loss": float(row["train_loss"]), "val_loss": float(row["val_loss"])}

    def add_supermasks(self, level: int) -> None:
        """Each criterion's mask on the untrained weights (evaluations, no training)."""
        if "supermask" in self.cfg.studies:
            for c in self.cfg.criteria:
                for values in SUPERMASK_WEIGHTS:
                    self.add("supermask", self.untrained(c, values, level), criterion=c,
                             ablation=values, mask0="zero", level=level, trained=False)

    def add_learned(self, results: dict[str, dict]) -> None:
        """The rows of this seed's learned supermasks (`results`: by frozen-weight kind)."""
        for weights, res in results.items():
            key = dict(criterion="learned", ablation=weights, mask0="zero", level=0, trained=True)
            self.add("supermask", {**res, "mask_eval": "threshold"}, **key)
            self.add("supermask", {**res, "mask_eval": "sampled", "test_acc": res["test_acc_sampled"]}, **key)

    def statistics(self) -> tuple[list[dict], list[dict]]:
        masks = {(c, lv): self.mask(c, "rewind", "zero", lv) for c in self.cfg.criteria for lv in self.cfg.levels}
        from experiments.lottery_ablation.report import mask_statistics  # pandas: once trained

        return mask_statistics(self.seed, masks, self.init, self.final("large_final", "rewind", "zero", 0))


def run_all(ctx: Context) -> tuple[list[dict], list[dict], list[dict]]:
    """Level by level, every seed's retrained trials of the level as packs; then the learned
    supermasks of every seed as packs; then each seed's mask overlaps and sign flips:
    (rows, overlap, flips)."""
    cfg = ctx.cfg
    seeds = [SeedRun(ctx, seed) for seed in range(cfg.seeds)]
    dense = train_all(ctx, [s.spec("large_final", "rewind", "zero", 0) for s in seeds],
                      cfg.setup.train, pack=ctx.pack)
    for s, res in zip(seeds, dense):
        fit = s.fit(res, criterion="large_final", ablation="rewind", mask0="zero", level=0)
        s.add("dense", {**res, **fit}, criterion="none", ablation="none", mask0="none", level=0, trained=True)
    # iterative chains need every level up to the last one asked for; one-shot only those
    last = max(cfg.levels)
    levels = range(1, last + 1) if cfg.setup.mode == "iterative" else cfg.levels
    for level in levels:
        keys = {(s, (*k, level)) for s in seeds for _, k in s.retrained(level)}
        keys = sorted(keys, key=lambda sk: (sk[0].seed, sk[1]))  # a shared trial runs once
        results = train_all(ctx, [s.spec(*k) for s, k in keys], cfg.setup.train, pack=ctx.pack)
        done = {(s.seed, k): r for (s, k), r in zip(keys, results)}
        if level in cfg.levels:
            for s in seeds:
                s.add_retrained(level, {k: r for (seed, k), r in done.items() if seed == s.seed})
                s.add_supermasks(level)
    if "supermask" in cfg.studies:
        keys = [(s, w) for s in seeds for w in SUPERMASK_WEIGHTS]
        learned = train_all(ctx, [s.learned_spec(w) for s, w in keys], cfg.setup.supermask_train,
                            pack=ctx.pack)
        for s in seeds:
            s.add_learned({w: r for (s2, w), r in zip(keys, learned) if s2 is s})
    rows, overlap, flips = [], [], []
    for s in seeds:
        o, f = s.statistics()
        rows, overlap, flips = rows + s.rows, overlap + o, flips + f
    return rows, overlap, flips


write_report = lazy("experiments.lottery_ablation.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="lottery_ablation", doc=__doc__, for_scale=for_scale, model="lenet_300_100",
    model_help="lenet_300_100, conv2, conv4, conv6", flags=flags, configure=configure,
    prune_flags=True, packs=True, report=write_report, run=run_all)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
