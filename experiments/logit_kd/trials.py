"""Training one network of the experiment: a student on labels, or on a fixed network's logits.

`Lab` binds the config, data, scale and device. `Lab.train(trial, source)` trains `trial` with
`(1 − α)·CE(y) + α·loss(student, source)` where `source` is a finished network (the teacher, a
previous generation, the assistant): its logits on the training set are computed once and looked
up per batch (`LogitTargets`), or computed per batch when the recipe augments (`OnlineTargets`).
The weights at the best validation evaluation are saved as best.pt and are what a chain hands
down; the trial's `test_acc` is measured at that evaluation.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.common import run_eval, run_trial
from experiments.logit_kd.config import LogitKDConfig, Trial
from experiments.logit_kd.dml import Peers, mutual_criterion
from experiments.logit_kd.select import BestWeights, same_selection
from lib import models
from lib.data import Splits
from lib.distill import KD, LogitTargets, SoftCE, cached_logits
from lib.runs import Run
from lib.train import Hook

EXPERIMENT = "logit_kd"


class OnlineTargets(Hook):
    """`weight · loss(student_logits, source(x))` with `source` run on each (augmented) batch."""

    def __init__(self, source: nn.Module, loss: nn.Module, weight: float):
        self.source, self.loss, self.weight = source.eval(), loss, weight

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.source(x)
        return self.weight * self.loss(logits, target)


class AsCriterion(Hook):
    """Makes the loop's batch loss `criterion(x, y, logits)` instead of `CE(logits, y)`.

    `run_trial` takes no `criterion`, so this hook adds `criterion − CE` to the loop's CE: the
    label term's weight (1 − α in Hinton's mix, 0 for Label Refinery) and the DML objective
    reach the loop through the hook interface, with the same gradient.
    """

    def __init__(self, criterion: Callable[[Tensor, Tensor, Tensor], Tensor]):
        self.criterion = criterion

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        return self.criterion(x, y, logits) - F.cross_entropy(logits, y)


def label_term(weight: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return lambda x, y, logits: weight * F.cross_entropy(logits, y)


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
        self._table: Tensor | None = None

    def hook(self, data: Splits, loss: nn.Module, weight: float, augment: bool) -> Hook:
        if augment:  # the images differ per epoch: no table
            return OnlineTargets(self.net, loss, weight)
        if self._table is None:
            self._table = cached_logits(self.net, data.train_x)  # (N_train, K), once
        return LogitTargets(self._table, loss, weight)


class Lab:
    def __init__(self, cfg: LogitKDConfig, data: Splits, scale: str, device: torch.device):
        self.cfg, self.setup, self.data, self.scale, self.device = cfg, cfg.setup, data, scale, device

    def build(self, name: str, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return models.build(name, self.data.input_shape, self.data.num_classes).to(self.device)

    def run(self, trial: Trial) -> Run:
        return Run(EXPERIMENT, trial, scale=self.scale)

    def load(self, trial: Trial, label: str) -> Source:
        """A finished trial's selected weights, as a source for the next network."""
        run = self.run(trial)
        net = models.build(trial.model or self.setup.model, self.data.input_shape,
                           self.data.num_classes).to(self.device)
        net.load_state_dict(torch.load(run.path("best.pt"), map_location=self.device,
                                       weights_only=True))
        return Source(run.hash, trial.model or self.setup.model, net, label)

    def train(self, trial: Trial, source: Source | None = None, name: str = "") -> dict:
        """Train `trial` (from `source` if given) unless done; its result row."""
        run, model_name = self.run(trial), trial.model or self.setup.model
        hooks: list[Hook] = []
        if source is not None and trial.parent != source.hash:
            raise ValueError(f"parent: {trial.parent} is not the source's run {source.hash}")

        def hooks_for(model: nn.Module) -> list[Hook]:  # only called when the trial trains
            if source is not None:
                loss = SoftCE() if trial.method == "lr" else KD(trial.T)
                hooks.append(source.hook(self.data, loss, trial.alpha, self.setup.train.augment))
            if trial.alpha:
                hooks.append(AsCriterion(label_term(1.0 - trial.alpha)))
            hooks.append(BestWeights(model))
            return hooks

        def after(model: nn.Module, res) -> dict:
            best = hooks[-1]
            if not same_selection(best, res.history):
                raise RuntimeError(f"{name}: kept weights of step {best.best['step']}, the loop "
                                   f"selected another evaluation")
            best.save(run.path("best.pt"))
            return {}

        res = run_trial(run, experiment=EXPERIMENT, stage="distill" if source else "train",
                        scale=self.scale, name=name, seed=trial.seed, data=self.data,
                        train_cfg=self.setup.train, build=lambda: self.build(model_name, trial.seed),
                        hooks_for=hooks_for, after=after)
        return self.row(trial, res, name, source.label if source else "")

    def row(self, trial: Trial, res: dict, name: str, teacher: str) -> dict:
        print(f"{name:>22}: test acc {res['test_acc']:.4f} (val {res['val_acc']:.4f})", flush=True)
        return {"method": trial.method, "teacher": teacher, "student": trial.model or self.setup.model,
                "seed": trial.seed, "generation": trial.generation, "peer": 0, "T": trial.T,
                "alpha": trial.alpha, "test_acc": res["test_acc"], "val_acc": res["val_acc"],
                "final_test_acc": res["final_test_acc"], "early_stop_iter": res["early_stop_iter"],
                "train_wall_s": res["train_wall_s"], "run": res.get("run", "")}

    def train_dml(self, trial: Trial, name: str) -> list[dict]:
        """`trial.peers` students of the setup's model trained together; one row per peer.

        Peer 0 starts from the student-alone init of the same seed, peer k from seed + 1000·k.
        """
        run, hooks = self.run(trial), []

        def build() -> Peers:
            return Peers([self.build(self.setup.model, trial.seed + 1000 * k)
                          for k in range(trial.peers)])

        def hooks_for(model: Peers) -> list[Hook]:
            hooks.append(AsCriterion(mutual_criterion(model)))
            hooks.extend(BestWeights(p, prefix=f"peer{k}_") for k, p in enumerate(model.peers))
            return hooks

        def after(model: Peers, res) -> dict:
            out = {}
            for k, best in enumerate(hooks[1:]):
                best.save(run.path(f"best_peer{k}.pt"))
                out.update({f"peer{k}_{m}": best.best[m] for m in ("val_acc", "test_acc", "step")})
            final = res.final
            out.update({f"peer{k}_final_test_acc": final[f"peer{k}_test_acc"]
                        for k in range(trial.peers)})
            return out

        res = run_trial(run, experiment=EXPERIMENT, stage="distill", scale=self.scale, name=name,
                        seed=trial.seed, data=self.data, train_cfg=self.setup.train, build=build,
                        hooks_for=hooks_for, after=after)
        rows = []
        for k in range(trial.peers):
            peer = {"test_acc": res[f"peer{k}_test_acc"], "val_acc": res[f"peer{k}_val_acc"],
                    "final_test_acc": res[f"peer{k}_final_test_acc"],
                    "early_stop_iter": res[f"peer{k}_step"]}
            row = self.row(trial, {**res, **peer}, f"{name}-peer{k}", f"{trial.peers - 1} peer(s)")
            rows.append({**row, "peer": k})
        return rows

    def ensemble(self, trial: Trial, members: list[Source], name: str) -> dict:
        """Evaluate the softmax average of `members` (no training)."""
        res = run_eval(self.run(trial), experiment=EXPERIMENT, scale=self.scale, name=name,
                       data=self.data, build=lambda: Ensemble([m.net for m in members]).eval())
        return self.row(trial, res, name, f"{len(members)} generations")
