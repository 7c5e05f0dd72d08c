"""Rethinking the value of network pruning: fine-tuned vs trained from scratch, ticket vs random.

    python -m experiments.rethinking_pruning --scale smoke|default|paper [--seeds N] [--model vgg16]
        [--methods l1,slimming,unstructured] [--lottery-methods l1,unstructured] [--pack K]

For each seed, the large model is trained once per (learning rate, BN-γ penalty) it is needed
at, and reused by every method (stage "train"). Then, per method of `methods` (l1 filters,
Network Slimming, unstructured magnitude) and prune ratio:
- pruned: its accuracy right after pruning, no training (stage "prune");
- finetune: the pruned weights trained on with the fine-tuning recipe;
- scratch_e: the pruned architecture (or mask) from a fresh init, the large model's epochs;
- scratch_b: the same for epochs × min(cost ratio, cap), the same computation budget.
And the lottery comparison (`lottery_methods`: l1 and unstructured), at each learning rate of
`lottery_lrs`: the large model trained at that rate, pruned, then retrained at it for its
epochs from the winning ticket (its original init, restricted to what was kept) or from a
random init of the large model restricted the same way (the same per-layer init scale as the
ticket). Scratch-E of a filter-pruned net starts from a fresh init of the smaller architecture
instead, as in the paper, whose filters start √2 larger at half width: at the large model's lr,
Scratch-E vs random init measures what that init scale alone does. For unstructured pruning
the two are one start, so random init at the large model's lr is the Scratch-E run itself.
Trials of one recipe and architecture (the seeds' Scratch-E runs, their Scratch-B runs, ...) train
as one stacked model (`--pack`, experiments.packing), each with its own numbers, as it would alone.
Trials live in runs/rethinking_pruning/<hash>/; finished ones are reused, killed ones resume.
Outputs: results/rethinking_pruning/<scale>/.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from torch import nn

from experiments.common import Context, Experiment, lazy, parse_floats, parse_list
from experiments.packing import TrialSpec, train_all
from experiments.rethinking_pruning.config import (LOTTERY_METHODS, METHODS, MODELS, RethinkConfig,
                                                   Trial, for_scale, scaled)
from experiments.rethinking_pruning.pruning import Pruned, init_std, prune_model
from lib.metrics import count_macs, count_params
from lib.prune.slimming import SlimmingHook
from lib.runs import atomic_torch_save
from lib.train import TrainConfig


def flags(p: argparse.ArgumentParser) -> None:
    for m in METHODS:
        p.add_argument(f"--{m}-ratios", default=None, help=f"comma list of {m} prune ratios in (0, 1)")
    p.add_argument("--lam", type=float, default=None, help="BN-γ L1 penalty of the slimming baseline")
    p.add_argument("--lottery-lrs", default=None, help="comma list of learning rates (ticket vs random)")
    p.add_argument("--methods", default=None,
                   help=f"comma list: fine-tuned vs scratch for these, from {', '.join(METHODS)}; "
                        "none: only the lottery comparison (and the large models' convergence "
                        "control)")
    p.add_argument("--lottery-methods", default=None,
                   help=f"comma list: ticket vs random init for these, from {', '.join(LOTTERY_METHODS)}")


def configure(cfg: RethinkConfig, a: argparse.Namespace) -> RethinkConfig:
    """`cfg` with the per-method ratios, --lam and --lottery-lrs applied."""
    changes = {f"{m}_ratios": parse_floats(getattr(a, f"{m}_ratios"), f"{m}_ratios")
               for m in METHODS if getattr(a, f"{m}_ratios") is not None}
    if a.lottery_lrs is not None:
        changes["lottery_lrs"] = parse_floats(a.lottery_lrs, "lottery_lrs")
    if a.lam is not None:
        changes["lam"] = a.lam
    if a.methods is not None:
        changes["methods"] = () if a.methods.strip() == "none" else parse_list(a.methods, METHODS,
                                                                                "methods")
    if a.lottery_methods is not None:
        changes["lottery_methods"] = parse_list(a.lottery_methods, LOTTERY_METHODS, "lottery_methods")
    return replace(cfg, **changes)


@dataclass
class Row:
    """A row of trials.csv to be: its fields, and its trial: a result already there (a large
    model, an evaluation), or `spec` to train with `recipe` on an architecture `arch`."""

    fields: dict
    res: dict | None = None
    spec: TrialSpec | None = None
    recipe: TrainConfig | None = None
    arch: tuple = ()


def shapes(model: nn.Module) -> tuple:
    """An architecture as its state dict's shapes: trials of equal shapes can be packed."""
    return tuple(tuple(t.shape) for t in model.state_dict().values())


def large_models(cfg: RethinkConfig) -> list[tuple[float, float]]:
    """(lr, BN-γ penalty) of every large model the grid prunes, in the order first needed."""
    lr0 = cfg.setup.train.lr
    keys = [(lr0, cfg.lam if m == "slimming" else 0.0) for m in cfg.methods if cfg.ratios(m)]
    keys += [(lr, 0.0) for m in cfg.lottery_methods if cfg.ratios(m) for lr in cfg.lottery_lrs]
    return list(dict.fromkeys(keys))


class SeedGrid:
    """One seed's trials as its rows of trials.csv, in run order. Its large models are trained
    first (`large_spec`, with the other seeds'); `plan` then prunes them and lists every row:
    the pruned nets' evaluations (run here) and retraining trials (trained by `run`)."""

    def __init__(self, ctx: Context, seed: int):
        self.ctx, self.cfg, self.setup, self.seed = ctx, ctx.cfg, ctx.cfg.setup, seed
        self.large: dict[tuple[float, float], nn.Module] = {}  # (lr, lam) -> trained large model
        self.nets: dict[tuple[str, float, float], Pruned] = {}  # (method, ratio, lr) -> pruned
        self.rows: list[Row] = []

    def fresh(self, torch_seed: int | None = None) -> nn.Module:
        return self.ctx.build(self.setup.model, self.seed if torch_seed is None else torch_seed)

    def measure(self, m: nn.Module) -> dict:
        return {"params": count_params(m), "macs": count_macs(m, self.ctx.data.input_shape)}

    def epochs(self, train_cfg: TrainConfig) -> float:
        """Epochs of a recipe (smoke counts iterations: converted at its batch size)."""
        n = len(self.ctx.data.train_x)
        return train_cfg.epochs or round(train_cfg.iterations * train_cfg.batch_size / n, 3)

    def large_trial(self, lr: float, lam: float) -> Trial:
        return Trial(self.setup, self.seed, base_lr=0.0 if lr == self.setup.train.lr else lr,
                     base_lam=lam)

    def large_name(self, lr: float, lam: float) -> str:
        return f"s{self.seed}-large-lr{lr:g}" + (f"-lam{lam:g}" if lam else "")

    def large_spec(self, lr: float, lam: float) -> TrialSpec:
        """The large model at `lr` with BN-γ penalty `lam` (whose hook makes it train alone)."""
        run = self.ctx.run(self.large_trial(lr, lam))

        def after(m: nn.Module, _) -> dict:
            atomic_torch_save(m.state_dict(), run.path("final.pt"))
            return self.measure(m)

        return TrialSpec(run, self.large_name(lr, lam), self.seed, self.fresh, after=after,
                         hooks_for=(lambda m: [SlimmingHook(lam)]) if lam else None)

    def large_model(self, lr: float, lam: float) -> nn.Module:
        """The trained large model at (lr, lam), read once; its row goes where it is first used."""
        if (lr, lam) not in self.large:
            run = self.ctx.run(self.large_trial(lr, lam))
            model = self.fresh()
            model.load_state_dict(run.load("final.pt", self.ctx.device))
            self.large[(lr, lam)] = model.eval()
            fields = dict(method="slimming" if lam else "unpruned", prune_ratio=0.0,
                          variant="baseline", lr=lr, epochs=self.epochs(self.setup.train),
                          budget=1.0, start="init", init_std=init_std(self.fresh()))
            self.rows.append(Row(fields, res=run.result()))
        return self.large[(lr, lam)]

    def pruned_net(self, method: str, ratio: float, lr: float) -> tuple[Pruned, float]:
        lam = self.cfg.lam if method == "slimming" else 0.0
        if (method, ratio, lr) not in self.nets:
            final = self.large_model(lr, lam)
            self.nets[(method, ratio, lr)] = prune_model(
                method, ratio, final, self.fresh(), self.fresh, self.seed,
                self.ctx.data.input_shape, self.cfg.min_keep)
        return self.nets[(method, ratio, lr)], lam

    def retrain(self, method: str, ratio: float, lr: float, start: str, variant: str,
                train_cfg: TrainConfig | None = None) -> Pruned:
        """One pruned-net row: a trial to train with `train_cfg`, or (None) evaluated now."""
        ctx, cfg, seed = self.ctx, self.cfg, self.seed
        pr, lam = self.pruned_net(method, ratio, lr)
        trial = replace(self.large_trial(lr, lam), method=method, prune_ratio=ratio,
                        min_keep=cfg.min_keep if method == "slimming" else 1, start=start,
                        retrain=train_cfg)
        run, name = ctx.run(trial), f"s{seed}-{method}{ratio:g}-{variant}-lr{lr:g}"
        first = pr.start(start)
        fields = dict(method=method, prune_ratio=ratio, variant=variant,
                      lr=train_cfg.lr if train_cfg else lr,
                      epochs=self.epochs(train_cfg) if train_cfg else 0.0, budget=pr.budget,
                      start=start, init_std=init_std(first) if start != "trained" else float("nan"))
        if train_cfg is None:
            measured: dict = {}  # filled by build(), read by run_eval after it

            def build() -> nn.Module:
                m = pr.start(start)
                measured.update(pr.measure(m))
                return m

            res = ctx.evaluate(run, name=name, build=build, extra=measured, stage="prune")
            self.rows.append(Row(fields, res=res))
            say(name, res)
        else:
            stage = "finetune" if start == "trained" else "train"
            spec = TrialSpec(run, name, seed, lambda: pr.start(start), stage=stage, mask=pr.mask,
                             after=lambda m, r: pr.measure(m))
            self.rows.append(Row(fields, spec=spec, recipe=train_cfg, arch=shapes(first)))
        return pr

    def plan(self) -> list[Row]:
        """Every row of the seed, in run order (the large models trained already)."""
        cfg, setup = self.cfg, self.setup
        lr0 = setup.train.lr
        if cfg.long_baseline:  # the convergence control: the large model for Scratch-B's budget
            long_cfg = scaled(setup.train, cfg.scratch_b_cap)
            run = self.ctx.run(Trial(setup, self.seed, retrain=long_cfg))
            name = f"s{self.seed}-large-lr{lr0:g}-long"
            fields = dict(method="unpruned", prune_ratio=0.0, variant="baseline_long", lr=lr0,
                          epochs=self.epochs(long_cfg), budget=cfg.scratch_b_cap, start="init",
                          init_std=init_std(self.fresh()))
            spec = TrialSpec(run, name, self.seed, self.fresh, after=lambda m, _: self.measure(m))
            self.rows.append(Row(fields, spec=spec, recipe=long_cfg, arch=shapes(self.fresh())))
        for method in cfg.methods:
            # the paper's Scratch-E/B: a fresh init of the pruned architecture (for a mask, of the
            # masked large model: the same start as the lottery's random init)
            scratch = "random" if method == "unstructured" else "scratch"
            for ratio in cfg.ratios(method):
                pr = self.retrain(method, ratio, lr0, "trained", "pruned")
                self.retrain(method, ratio, lr0, "trained", "finetune", cfg.finetune)
                self.retrain(method, ratio, lr0, scratch, "scratch_e", setup.train)
                factor = min(pr.budget, cfg.scratch_b_cap)
                self.retrain(method, ratio, lr0, scratch, "scratch_b", scaled(setup.train, factor))
        for method in cfg.lottery_methods:
            for ratio in cfg.ratios(method):
                for lr in cfg.lottery_lrs:
                    at_lr = replace(setup.train, lr=lr)
                    self.retrain(method, ratio, lr, "ticket", "ticket_init", at_lr)
                    self.retrain(method, ratio, lr, "random", "random_init", at_lr)
        return self.rows


def run(ctx: Context) -> list[dict]:
    """Every seed's trials, one row each. Trials of one recipe and architecture train together,
    packed (`--pack`): the seeds' large models at one lr, then, of every seed, the fine-tuned
    nets of a method, its Scratch-E and its Scratch-B runs, the ticket and random inits at one
    lr... A trial whose model cannot be packed (a residual net, the slimming hook, pruned
    architectures that differ between seeds) trains alone (`experiments.packing`)."""
    grids = [SeedGrid(ctx, seed) for seed in range(ctx.cfg.seeds)]
    for lr, lam in large_models(ctx.cfg):
        specs = [g.large_spec(lr, lam) for g in grids]
        results = train_all(ctx, specs, replace(ctx.cfg.setup.train, lr=lr), pack=ctx.pack)
        for s, res in zip(specs, results):
            say(s.name, res)
    rows = [(g.seed, r) for g in grids for r in g.plan()]
    groups: dict[tuple, dict[str, TrialSpec]] = {}  # (recipe, arch) -> {run hash: spec}
    for _, r in rows:
        if r.spec is not None:  # a run that two rows share trains once
            groups.setdefault((r.recipe, r.arch), {})[r.spec.run.hash] = r.spec
    done: dict[str, dict] = {}
    for (recipe, _), specs in groups.items():
        done.update(zip(specs, train_all(ctx, list(specs.values()), recipe, pack=ctx.pack)))
        for h, s in specs.items():
            say(s.name, done[h])
    return [{"seed": seed, **row(done[r.spec.run.hash] if r.spec else r.res, **r.fields)}
            for seed, r in rows]


def say(name: str, res: dict) -> None:
    print(f"{name:>40}: test acc {res['final_test_acc']:.4f}", flush=True)


def row(res: dict, **fields) -> dict:
    """A trials.csv row: test_acc is the final weights' (fixed schedules, as the paper)."""
    return {**fields, "params": res["params"], "macs": res["macs"], "test_acc": res["final_test_acc"],
            "early_stop_test_acc": res["test_acc"], "val_acc": res.get("final_val_acc", res["val_acc"]),
            "selected_last": res.get("selected_last", float("nan")),  # NaN: evaluated, not trained
            "train_wall_s": res["train_wall_s"], "pack_size": res.get("pack_size", 1),  # 1: alone
            "run": res["run"]}


HELP = "a VGG or ResNet with BN that surgery supports: vgg_narrow, vgg16, resnet56, ..."
write_report = lazy("experiments.rethinking_pruning.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment("rethinking_pruning", __doc__, for_scale, run, write_report, model=MODELS,
                        model_help=HELP, flags=flags, configure=configure, packs=True)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
