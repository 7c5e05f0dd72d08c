"""A teacher's knowledge as loop hook: one hook for every distillation term of every method.

A `Term` names a loss of `lib.distill`, its weight, and where its inputs come from: "logits" or
a layer name (or a tuple of layer names, for a loss over several layer pairs such as AT), on the
student side and on the teacher side. `Distill` adds `Σ weight · loss(student, teacher)` to every
batch's loss. The teacher never changes, so for un-augmented data its outputs on the training
set can be computed once (`teacher_outputs`) and looked up by the batch's indices (`tables`);
otherwise (augmented batches, features too large to keep) the teacher runs online on the batch
under `torch.no_grad()`. Both give the same numbers: the teacher is in eval mode either way.

The label term is not here: pass `weighted_ce(w)` as the loop's `criterion` (w = 1 − α for
Hinton's mix, 0 for Label Refinery and FitNet's hint stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill.features import FeatureTap
from lib.train import Hook

Layers = str | tuple[str, ...]


def weighted_ce(weight: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """`criterion(x, y, logits) = weight · CE(logits, y)`, the label term of a distilled loss."""
    def criterion(x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        return weight * F.cross_entropy(logits, y)
    return criterion


@dataclass(frozen=True)
class Term:
    """`weight · loss(student[student], teacher[teacher])`; a tuple of layers passes lists."""

    name: str  # for logging: the term's mean value is reported as `loss_<name>`
    loss: nn.Module
    weight: float
    student: Layers = "logits"
    teacher: Layers = "logits"


def _names(layers: Layers) -> tuple[str, ...]:
    return (layers,) if isinstance(layers, str) else tuple(layers)


def _pick(values: dict[str, Tensor], layers: Layers) -> Tensor | list[Tensor]:
    return values[layers] if isinstance(layers, str) else [values[n] for n in layers]


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: Tensor, layers: Sequence[str] = (),
                    chunk: int = 2048) -> dict[str, Tensor]:
    """{"logits": (N, K), layer: its output} of `teacher` on `x` in eval mode, in chunks."""
    was_training = teacher.training
    teacher.eval()
    out: dict[str, list[Tensor]] = {"logits": [], **{n: [] for n in layers}}
    try:
        with FeatureTap(teacher, list(layers)) as tap:
            for i in range(0, len(x), chunk):
                out["logits"].append(teacher(x[i:i + chunk]))
                for name, feat in zip(layers, tap() if layers else ()):
                    out[name].append(feat)
    finally:
        teacher.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


class TermMeans(Hook):
    """Logs each named term's mean (unweighted) value per batch since the last evaluation, as
    the history columns `loss_<name>` that `term_ratios` reads. `add({name: value})` once per
    batch, from wherever the term is computed (`Distill`, or a criterion of its own such as DML's)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.sums: dict[str, Tensor | float] = {n: 0.0 for n in self.names}
        self.count = 0

    def add(self, values: dict[str, Tensor]) -> None:
        for name, value in values.items():
            self.sums[name] += value.detach()
        self.count += 1

    def metrics(self, model: nn.Module, data) -> dict:
        if not self.count:
            return {}
        row = {f"loss_{k}": float(v) / self.count for k, v in self.sums.items()}
        self.sums, self.count = {k: 0.0 for k in self.names}, 0
        return row


class Distill(TermMeans):
    """Adds `Σ_terms weight · loss(student side, teacher side)` to every batch's loss.

    `tables` ({"logits" or layer: (N_train, ...)}, from `teacher_outputs` on the training set)
    serve the teacher's side by batch index when they hold every teacher input the terms need;
    otherwise the teacher runs online. The losses' own parameters (FitNet's regressor) train
    with the student and travel in the loop's checkpoint. `metrics` reports each term's mean
    (unweighted) value since the last evaluation, as `loss_<name>`.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: Sequence[Term],
                 tables: dict[str, Tensor] | None = None):
        super().__init__([t.name for t in terms])
        self.terms, self.teacher = list(terms), teacher.eval()
        s_layers = sorted({n for t in self.terms for n in _names(t.student)} - {"logits"})
        self.t_layers = sorted({n for t in self.terms for n in _names(t.teacher)} - {"logits"})
        self.tap = FeatureTap(student, s_layers) if s_layers else None
        needed = {n for t in self.terms for n in _names(t.teacher)}
        self.tables = tables if tables is not None and needed <= set(tables) else None
        self.losses = nn.ModuleList(t.loss for t in self.terms)
        self.index: Tensor | None = None

    @property
    def online(self) -> bool:
        """True when the teacher runs on every batch (no table holds its side)."""
        return bool(self.terms) and self.tables is None

    def parameters(self):
        return self.losses.parameters()

    def on_batch(self, index: Tensor) -> None:
        self.index = index

    def teacher_batch(self, x: Tensor) -> dict[str, Tensor]:
        if self.tables is not None:
            if self.index is None:
                raise RuntimeError("Distill: no batch index yet (train() calls on_batch first)")
            return {k: v[self.index] for k, v in self.tables.items()}
        return teacher_outputs(self.teacher, x, self.t_layers, chunk=len(x))

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if not self.terms:
            return None
        t = self.teacher_batch(x)
        s = {"logits": logits, **(self.tap.features if self.tap else {})}
        total, values = logits.new_zeros(()), {}
        for term in self.terms:
            value = term.loss(_pick(s, term.student), _pick(t, term.teacher))
            values[term.name] = values.get(term.name, 0.0) + value.detach()
            total = total + term.weight * value
        self.add(values)
        return total

    def metrics(self, model: nn.Module, data) -> dict:
        if self.tap is not None:  # drop the (test-set sized) features the evaluation left behind
            self.tap.features.clear()
        return super().metrics(model, data)

    def state_dict(self) -> dict:
        return self.losses.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.losses.load_state_dict(state)

    def remove(self) -> None:
        if self.tap is not None:
            self.tap.remove()


@torch.no_grad()
def term_values(student: nn.Module, teacher: nn.Module, terms: Sequence[Term], x: Tensor,
                y: Tensor) -> dict[str, float]:
    """{"ce": label cross-entropy, <term name>: its unweighted value} on the batch (x, y), the
    teacher online, the student in its current mode: what a training step would add up at this
    point (e.g. at initialisation, to put each weighted term on the scale of the CE)."""
    hook = Distill(student, teacher, terms)
    try:
        logits = student(x)
        hook.extra_loss(x, y, logits)
        values = {k.removeprefix("loss_"): v for k, v in hook.metrics(student, None).items()}
    finally:
        hook.remove()
    return {"ce": F.cross_entropy(logits, y).item(), **values}


def term_ratios(history: Sequence[dict], weights: dict[str, float],
                ce_weight: float) -> dict[str, float]:
    """`ratio_<term>_start` / `_end`: weight · term over the label cross-entropy (unweighted),
    each a mean over the first / last evaluation interval of a training curve (`history` rows
    with `train_loss` = ce_weight·CE + Σ weight·term and the `loss_<term>` means `Distill`
    logs). Empty for a curve without training rows or without a label term."""
    rows = [r for r in history if r.get("step", 0) > 0 and all(f"loss_{n}" in r for n in weights)]
    if not rows or not weights or ce_weight <= 0:
        return {}
    out = {}
    for when, row in (("start", rows[0]), ("end", rows[-1])):
        weighted = {n: w * row[f"loss_{n}"] for n, w in weights.items()}
        ce = (row["train_loss"] - sum(weighted.values())) / ce_weight
        out.update({f"ratio_{n}_{when}": v / ce for n, v in weighted.items()})
    return out
