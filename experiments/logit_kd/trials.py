"""Training one network of the experiment: a student on labels, or on a fixed network's logits.

`train(ctx, trial, source)` trains `trial` on `(1 − α)·CE(y) + α·loss(student, source)`, where
`source` is a finished network (the teacher, a previous generation, the assistant): the label
term is the loop's criterion, the soft term one `lib.distill.Distill` hook whose teacher side is
the source's logits on the training set, computed once and looked up per batch, or computed per
batch when the recipe augments. The loop keeps the weights of the best validation evaluation
(`keep_best`); they are saved as best.pt and are what a chain hands down, and the trial's
`test_acc` is measured at that evaluation (with `setup.select = "final"`: the final weights and
their accuracy instead, as papers that train a fixed schedule report them). The hook logs the soft term's mean per evaluation
interval (`loss_kd`, `loss_soft_ce`), from which the trial's result gets `ratio_kd_start` /
`_end` (`term_ratios`: α·term / CE; none for Label Refinery, which has no label term), and
`train_acc`, the selected weights' accuracy on the (unaugmented) training set: how much of its
training set a network fits, and so how many wrong soft targets it hands down in a chain.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.common import Context
from experiments.logit_kd.config import Trial
from lib import models
from lib.data import Splits
from lib.distill import KD, Distill, SoftCE, Term, teacher_outputs, term_ratios, weighted_ce
from lib.runs import atomic_torch_save
from lib.train import evaluate


class Ensemble(nn.Module):
    """Averages the members' softmax; returns its log, so CE and argmax apply as to logits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([F.softmax(m(x), dim=1) for m in self.members])  # (M, B, K)
        return probs.mean(0).clamp_min(1e-12).log()


class Source:
    """A finished network a student learns from: its run hash, model name and weights."""

    def __init__(self, run_hash: str, model_name: str, net: nn.Module, label: str):
        self.hash, self.model, self.net, self.label = run_hash, model_name, net.eval(), label
        self._tables: dict[str, Tensor] | None = None

    def distill(self, student: nn.Module, data: Splits, term: Term, augment: bool) -> Distill:
        """The hook adding `term` between `student` and this network."""
        if augment:  # the images differ per epoch: no table, the source runs on every batch
            return Distill(student, self.net, [term])
        return Distill(student, self.net, [term], tables=self.tables(data))

    def tables(self, data: Splits) -> dict[str, Tensor]:
        """{"logits": (N_train, K)}: this network on the training set, computed once."""
        if self._tables is None:
            self._tables = teacher_outputs(self.net, data.train_x)
        return self._tables

    def train_acc(self, data: Splits) -> float:
        """This network's accuracy on the training set (its logits table's argmax)."""
        return (self.tables(data)["logits"].argmax(1) == data.train_y).float().mean().item()


def load(ctx: Context, trial: Trial, label: str) -> Source:
    """A finished trial's selected weights, as a source for the next network."""
    model = trial.model or ctx.cfg.setup.model
    net = models.build(model, ctx.data.input_shape, ctx.data.num_classes).to(ctx.device)
    net.load_state_dict(ctx.run(trial).load("best.pt", ctx.device))
    return Source(ctx.run(trial).hash, model, net, label)


def train(ctx: Context, trial: Trial, source: Source | None = None, name: str = "") -> dict:
    """Train `trial` (from `source` if given) unless done; its result row."""
    setup = ctx.cfg.setup
    run, model_name = ctx.run(trial), trial.model or setup.model
    if source is not None and trial.parent != source.hash:
        raise ValueError(f"parent: {trial.parent} is not the source's run {source.hash}")

    term = None if source is None else (
        Term("soft_ce", SoftCE(), trial.alpha) if trial.method == "lr"
        else Term("kd", KD(trial.T), trial.alpha))

    def hooks_for(model: nn.Module) -> list[Distill]:  # only called when the trial trains
        return [] if term is None else [source.distill(model, ctx.data, term, setup.train.augment)]

    best = setup.select == "best"

    def after(model: nn.Module, res) -> dict:
        selected = model  # final weights; else a copy holding the best ones (no init drawn)
        if best:
            selected = copy.deepcopy(model)
            selected.load_state_dict(res.best_state)
        atomic_torch_save(selected.state_dict(), run.path("best.pt"))  # what the chain hands down
        fit = {"train_acc": evaluate(selected, ctx.data.train_x, ctx.data.train_y)[1]}
        # ratio_<term>_start/_end: α·term / CE; none without a teacher or a label term (lr)
        return fit if term is None else {**fit, **term_ratios(res.history, {term.name: term.weight},
                                                              1.0 - trial.alpha)}

    res = ctx.train(run, stage="distill" if source else "train", name=name, seed=trial.seed,
                    train_cfg=setup.train, build=lambda: ctx.build(model_name, trial.seed),
                    hooks_for=hooks_for, keep_best=best,
                    criterion=weighted_ce(1.0 - trial.alpha) if trial.alpha else None,
                    after=after)
    return row(ctx, trial, res, name, source.label if source else "")


def row(ctx: Context, trial: Trial, res: dict, name: str, teacher: str, peer: int = 0) -> dict:
    """The trials.csv row of `trial` (printed as it is made): `test_acc` and `val_acc` are those
    of the weights `setup.select` picks (the lowest validation loss, or the final ones)."""
    final = ctx.cfg.setup.select == "final" and "final_val_acc" in res  # the ensemble: its own
    test, val = ((res["final_test_acc"], res["final_val_acc"]) if final
                 else (res["test_acc"], res["val_acc"]))
    print(f"{name:>22}: test acc {test:.4f} (val {val:.4f})", flush=True)
    return {"method": trial.method, "teacher": teacher,
            "student": trial.model or ctx.cfg.setup.model, "seed": trial.seed,
            "generation": trial.generation, "peer": peer, "T": trial.T, "alpha": trial.alpha,
            "test_acc": test, "val_acc": val,
            "train_acc": res.get("train_acc"),  # absent from trials trained before it was logged
            "final_test_acc": res["final_test_acc"], "early_stop_iter": res["early_stop_iter"],
            "selected_last": res.get("selected_last"),
            "train_wall_s": res["train_wall_s"], "run": res.get("run", ""),
            **{k: v for k, v in res.items() if k.startswith("ratio_")}}


def ensemble(ctx: Context, trial: Trial, members: list[Source], name: str) -> dict:
    """Evaluate the softmax average of `members` (no training)."""
    res = ctx.evaluate(ctx.run(trial), name=name,
                       build=lambda: Ensemble([m.net for m in members]).eval())
    return row(ctx, trial, res, name, f"{len(members)} generations")
