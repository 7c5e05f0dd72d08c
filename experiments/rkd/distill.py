"""The distillation step of the rkd experiment: one hook for any mix of loss terms.

A `Term` names a loss of `lib.distill`, its weight and where its inputs come from ("logits" or a
layer name, on the student and on the teacher side). `Distill` adds `Σ weight · loss` to the
batch loss. The teacher never changes, so for un-augmented data its outputs on the training set
are computed once (`teacher_tables`) and looked up by the batch's indices; features too large to
keep (conv maps for SP) or augmented batches use the teacher online, under `torch.no_grad()`.
Both give the same numbers: the teacher is in eval mode either way.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill import FeatureTap
from lib.train import Hook, evaluate


@dataclass(frozen=True)
class Term:
    name: str  # a key of lib.distill.LOSSES, used for logging
    loss: nn.Module
    weight: float
    student: str  # "logits" or a student layer name (read by FeatureTap)
    teacher: str  # "logits" or a teacher layer name


def embedding_layer(model: nn.Module) -> str:
    """The module whose output is the classifier's input (B, D): `flatten` (VGG) or `pool` (ResNet)."""
    names = dict(model.named_modules())
    for name in ("flatten", "pool"):
        if name in names:
            return name
    raise ValueError("has no global pool to read embeddings from; use a vgg* or resnet* model")


def last_conv_layer(model: nn.Module) -> str:
    """The last convolutional block's output, before global pooling: the last ReLU of a VGG's
    `features` (pools after it are skipped), the last stage `layerN` of a ResNet."""
    names = dict(model.named_modules())
    if isinstance(names.get("features"), nn.Sequential):
        relus = [i for i, m in enumerate(names["features"]) if isinstance(m, nn.ReLU)]
        if relus:
            return f"features.{relus[-1]}"
    stages = sorted(n for n in names if n.startswith("layer") and n[5:].isdigit())
    if stages:
        return max(stages, key=lambda n: int(n[5:]))
    raise ValueError("has no conv features for SP; use a vgg* or resnet* model")


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: Tensor, layers: list[str], chunk: int = 2048) -> dict[str, Tensor]:
    """{"logits": (N, K), layer: its output} of `teacher` on `x`, computed in chunks, detached."""
    out: dict[str, list[Tensor]] = {"logits": [], **{n: [] for n in layers}}
    with FeatureTap(teacher, layers) as tap:
        for i in range(0, len(x), chunk):
            out["logits"].append(teacher(x[i:i + chunk]))
            for name, feat in zip(layers, tap()):
                out[name].append(feat)
    return {k: torch.cat(v) for k, v in out.items()}


class Distill(Hook):
    """Adds `Σ_terms weight · loss(student input, teacher input)` to every batch's loss.

    `label_weight` w scales the labels' cross-entropy: the loop always adds CE with weight 1
    (`run_trial` takes no criterion), so the hook adds (w − 1)·CE, e.g. w = 1 − α for Hinton's
    `α·KD + (1 − α)·CE`.

    `tables` ({"logits" or layer: (N_train, ...)}, from `teacher_outputs` on the training set)
    serve the teacher's side by batch index when they hold every teacher input the terms need;
    otherwise the teacher runs online on the batch. `metrics` reports each term's mean
    (unweighted) value since the last evaluation, as `loss_<name>`.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: list[Term],
                 tables: dict[str, Tensor] | None = None, label_weight: float = 1.0):
        self.terms, self.teacher, self.label_weight = terms, teacher, label_weight
        s_layers = sorted({t.student for t in terms} - {"logits"})
        self.t_layers = sorted({t.teacher for t in terms} - {"logits"})
        self.tap = FeatureTap(student, s_layers) if s_layers else None
        needed = {t.teacher for t in terms}
        self.tables = tables if tables is not None and needed <= set(tables) else None
        self.index: Tensor | None = None
        self.sums = {t.name: 0.0 for t in terms}
        self.count = 0

    @property
    def online(self) -> bool:
        return bool(self.terms) and self.tables is None

    def on_batch(self, index: Tensor) -> None:
        self.index = index

    def teacher_batch(self, x: Tensor) -> dict[str, Tensor]:
        if self.tables is not None:
            return {k: v[self.index] for k, v in self.tables.items()}
        return teacher_outputs(self.teacher, x, self.t_layers, chunk=len(x))

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if not self.terms:
            return None
        t = self.teacher_batch(x)
        s = {"logits": logits, **(self.tap.features if self.tap else {})}
        total = logits.new_zeros(())
        if self.label_weight != 1.0:
            total = total + (self.label_weight - 1.0) * F.cross_entropy(logits, y)
        for term in self.terms:
            value = term.loss(s[term.student], t[term.teacher])
            self.sums[term.name] += value.detach()
            total = total + term.weight * value
        self.count += 1
        return total

    def metrics(self, model: nn.Module, data) -> dict:
        if not self.count:
            return {}
        row = {f"loss_{k}": float(v) / self.count for k, v in self.sums.items()}
        self.sums, self.count = {k: 0.0 for k in self.sums}, 0
        return row

    def remove(self) -> None:
        if self.tap is not None:
            self.tap.remove()


class BestWeights(Hook):
    """Keeps a copy of the weights at the trial's selected evaluation: the lowest validation loss
    (or highest validation accuracy), first on ties, the rule of `lib.train.TrainResult`.

    It re-evaluates on validation only (cheap next to an epoch) so the copy is exactly the model
    whose test accuracy the trial reports; the copy travels in the loop's checkpoint.
    """

    def __init__(self, early_stop_on: str = "val_loss"):
        self.early_stop_on = early_stop_on
        self.step, self.best_step, self.best_score, self.best = 0, -1, float("inf"), None

    def after_step(self, model: nn.Module, step: int) -> None:
        self.step = step

    def metrics(self, model: nn.Module, data) -> dict:
        loss, acc = evaluate(model, data.val_x, data.val_y)
        score = loss if self.early_stop_on == "val_loss" else -acc
        if score < self.best_score:
            self.best_score, self.best_step = score, self.step
            self.best = copy.deepcopy(model.state_dict())
        return {}

    def state_dict(self) -> dict:
        return {"step": self.step, "best_step": self.best_step, "best_score": self.best_score,
                "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.best_step = state["step"], state["best_step"]
        self.best_score, self.best = state["best_score"], state["best"]
