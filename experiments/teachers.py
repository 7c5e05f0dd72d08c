"""Teachers shared by every distillation experiment: trained once, cached by config hash.

`teacher(spec, data, scale, device)` trains `spec.model` on `spec.dataset` under
`runs/[smoke/]teachers/<hash>/` (its final weights in final.pt) unless that run is done, then
loads it in eval mode. logit_kd, feature_kd and rkd ask for the same spec at a scale (the
compression pipeline too at smoke and paper scale; its default trains on 20k images, so its
teacher is its own), so they train it once between them and every student and seed reuses it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from experiments.common import SMOKE_DATA, Setup, recipe, run_trial
from lib import models
from lib.data import Splits
from lib.runs import Run, atomic_torch_save
from lib.train import TrainConfig

EXPERIMENT = "teachers"


@dataclass(frozen=True)
class TeacherSpec(Setup):
    """What makes a teacher: data (as the student's `Setup` names it), model, recipe, seed.

    The default (resnet8, SGD 0.1 cosine, 6 epochs; run hash f11e746d548e, 92.4% test) is kept
    for issue #12: logit_kd widens the teacher-student gap with a smaller student, not here."""

    model: str = "resnet8"
    train: TrainConfig = recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                                batch_size=128, epochs=6.0, schedule="cosine", channels_last=True)
    seed: int = 0

    @classmethod
    def smoke(cls, **kw) -> "TeacherSpec":
        """The one tiny teacher every smoke run shares: 40 steps on the smoke data."""
        return cls(**{**SMOKE_DATA, "train": replace(cls().train, epochs=0.0, iterations=40,
                                                     eval_every=20), **kw})


def teacher_run(spec: TeacherSpec, scale: str) -> Run:
    return Run(EXPERIMENT, spec, scale=scale)


def teacher(spec: TeacherSpec, data: Splits, scale: str, device: torch.device) -> tuple[nn.Module, dict]:
    """(trained teacher in eval mode with its final weights, its result dict incl. test_acc).

    `result["final_test_acc"]` is the accuracy of the returned weights."""
    run = teacher_run(spec, scale)

    def build():
        torch.manual_seed(spec.seed)
        return models.build(spec.model, data.input_shape, data.num_classes).to(device)

    result = run_trial(run, experiment=EXPERIMENT, stage="teacher", scale=scale,
                       name=f"teacher-{spec.model}-s{spec.seed}", seed=spec.seed, data=data,
                       train_cfg=spec.train, build=build,
                       after=lambda m, r: atomic_torch_save(m.state_dict(), run.path("final.pt")))
    model = build()
    model.load_state_dict(run.load("final.pt", device))
    return model.eval(), result
