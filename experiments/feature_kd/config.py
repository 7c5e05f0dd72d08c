"""Configuration of the feature-distillation experiment, per scale.

`Setup` is the student's data, model and recipe; `TeacherSpec` (shared with logit_kd and rkd)
is the teacher. A `Trial` is one trained student: the method's loss weights, regressor and
layer pairs are in it, so they are in its run hash. `FeatureKDConfig` adds what only decides
which trials run (methods, seeds) and the weights the methods take: the papers' at paper scale,
weights on the scale of the cross-entropy at the default scale (see `for_scale`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from experiments.feature_kd.layers import Pairs
from experiments.teachers import TeacherSpec
from lib.distill.fitnet import REGRESSORS
from lib.train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """What a method adds to cross-entropy: a feature term, Hinton's KD, a feature stage first."""
    feature: str = ""  # "", "fitnet" (the hint pair, regressor W_r), "attention", "fsp"
    kd: bool = False
    two_stage: bool = False  # stage 1: the feature loss alone on the layers it reads; then train all


RECIPES: dict[str, Recipe] = {
    "student": Recipe(),
    "kd": Recipe(kd=True),
    "fitnet_2stage": Recipe("fitnet", two_stage=True),  # the paper's stages, stage 2 with CE
    "fitnet_2stage+kd": Recipe("fitnet", kd=True, two_stage=True),  # the paper's FitNet
    "fitnet": Recipe("fitnet"),  # RepDistiller: one stage, CE + w·hint
    "fitnet+kd": Recipe("fitnet", kd=True),
    "at": Recipe("attention"),
    "at+kd": Recipe("attention", kd=True),
    "fsp": Recipe("fsp", two_stage=True),  # the paper: FSP matrices first, then the task (CE)
    "fsp+kd": Recipe("fsp", kd=True, two_stage=True),
}
METHODS = tuple(RECIPES)
# one-stage FitNet is opt-in (--methods): it needs the teacher online at every step (its hint map
# is too large to cache), and the paper's FitNet is the two-stage one
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ("fitnet", "fitnet+kd"))
# the default scale also leaves the two-stage methods' KD arms opt-in, to fit 30 CPU minutes:
# with them the 2026-11-28 run took 35 minutes without the teacher (about 80 s per seed each)
DEFAULT_SCALE_METHODS = tuple(m for m in DEFAULT_METHODS if m not in ("fitnet_2stage+kd", "fsp+kd"))


# RepDistiller's student optimiser (SGD 0.05, momentum 0.9, wd 5e-4), cosine for short runs;
# selection on the best validation accuracy
STUDENT = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128,
               schedule="cosine", early_stop_on="val_acc", channels_last=True)
# vgg_tiny alone reaches its plateau in 6 epochs (calibration, seed 0: validation accuracy 89.96 %
# at step 2365, 89.94 % at the last, 2574; at 4 epochs it was still rising at the last step)
EPOCHS = 6.0


def student_recipe(**kw) -> TrainConfig:
    return TrainConfig(**{**STUDENT, **kw})


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "vgg_tiny"
    train: TrainConfig = recipe(**STUDENT, epochs=EPOCHS, eval_every=215)


@dataclass(frozen=True)
class Trial:
    """One trained student. `stage` "hint" is a two-stage method's stage 1 (its feature loss
    alone on the layers it reads, `hint_train` recipe); a stage-2 trial carries `hint_train`
    and the stage-1 layers and regressor too, so it is keyed by the stage 1 it starts from."""
    setup: Setup
    seed: int = 0
    method: str = "student"
    stage: str = "train"
    teacher: TeacherSpec | None = None
    ce_weight: float = 1.0
    kd_weight: float = 0.0
    T: float = 0.0
    feature: str = ""
    feature_weight: float = 0.0
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    hint_train: TrainConfig | None = None
    regressor: str = ""  # FitNet's W_r: "conv" (the paper's) or "1x1"


@dataclass(frozen=True)
class FeatureKDConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    seeds: int = 3
    methods: tuple[str, ...] = DEFAULT_METHODS
    T: float = 4.0
    kd_alpha: float = 0.9  # with KD: (1 − α)·CE + α·KD, the KD row's mix (RepDistiller -r .1 -a .9)
    hint_weight: float = 100.0  # FitNet one stage (RepDistiller -b 100)
    at_weight: float = 1000.0  # Attention Transfer β (official code, per-element mean)
    regressor: str = "conv"  # FitNet's W_r: the paper's where the shapes allow, else "1x1"
    at_min_depth: int = 2  # AT pairs: stages whose student side is at least this many convs deep
    hint_train: TrainConfig = recipe(**STUDENT, epochs=0.5, eval_every=107)
    probe_size: int = 2000  # test images on which the attention gap to the teacher is measured

    def validate(self) -> "FeatureKDConfig":
        super().validate()
        self.teacher.validate()
        self.hint_train.validate()
        self.setup.check_same_data(self.teacher, "teacher")
        for m in self.methods:
            if m not in RECIPES:
                raise ValueError(f"methods: unknown '{m}', choose from {', '.join(METHODS)}")
        require(self.T > 0, "T", "> 0", self.T)
        require(0.0 <= self.kd_alpha <= 1.0, "kd_alpha", "in [0, 1]", self.kd_alpha)
        require(self.hint_weight > 0, "hint_weight", "> 0", self.hint_weight)
        require(self.at_weight > 0, "at_weight", "> 0", self.at_weight)
        require(self.regressor in REGRESSORS, "regressor", f"one of {', '.join(REGRESSORS)}",
                self.regressor)
        require(self.at_min_depth >= 1, "at_min_depth", ">= 1", self.at_min_depth)
        require(self.probe_size >= 1, "probe_size", ">= 1", self.probe_size)
        return self


DEFAULT_STUDENT = {"smoke": "vgg_tiny", "default": "vgg_tiny", "paper": "resnet20"}
# Default scale: each one-stage feature weight puts its term on the scale of the cross-entropy
# at initialisation, w = CE / term, rounded to one significant digit: on the untrained students
# (3 seeds, first 1024 training images) and the shared teacher, CE 2.303, hint MSE 0.533 (the
# paper's regressor), AT 0.0111 (the two AT pairs), so w = 4.3 -> 4 and 207 -> 200.
# balance.md recomputes those values with every report; trials.csv logs w·term / CE over the
# first and the last evaluation interval of every trial.
BALANCED = dict(hint_weight=4.0, at_weight=200.0)


def for_scale(scale: str, model: str | None = None) -> FeatureKDConfig:
    model = model or DEFAULT_STUDENT[scale]
    if scale == "smoke":  # the one smoke teacher every distillation experiment shares
        setup = Setup(model=model, **SMOKE_DATA, train=student_recipe(iterations=20, eval_every=10))
        return FeatureKDConfig(setup=setup, teacher=TeacherSpec.smoke(), seeds=2, **BALANCED,
                               hint_train=student_recipe(iterations=10, eval_every=10),
                               probe_size=300)
    if scale == "default":
        return FeatureKDConfig(setup=Setup(model=model), methods=DEFAULT_SCALE_METHODS, **BALANCED)
    # RepDistiller's CIFAR-100 recipe: 240 epochs, lr 0.05 ÷10 at 150/180/210, batch 64, crop+flip;
    # the papers' weights
    paper = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                 schedule="step", milestones=(150 / 240, 180 / 240, 210 / 240), gamma=0.1,
                 augment=True, channels_last=True)
    setup = Setup(dataset="cifar100", model=model,
                  train=TrainConfig(epochs=240.0, early_stop_on="val_acc", **paper))
    teacher = TeacherSpec(dataset="cifar100", model="resnet56",
                          train=TrainConfig(epochs=240.0, **paper))
    return FeatureKDConfig(setup=setup, teacher=teacher, seeds=3,
                           hint_train=replace(setup.train, epochs=30.0))


def make_trial(cfg: FeatureKDConfig, pairs: Pairs, method: str, seed: int,
               stage: str = "train") -> Trial:
    """The trial of `method` at `seed`: its loss weights, layers and regressor (from its recipe
    and the model's layer `pairs`); every trial that learns from the teacher names it."""
    plan = RECIPES[method]
    layers = {"fitnet": [pairs.hint], "attention": pairs.attention, "fsp": pairs.fsp}.get(plan.feature, [])
    where = dict(student_layers=tuple(s for s, _ in layers), teacher_layers=tuple(t for _, t in layers))
    if plan.feature == "fitnet":
        where["regressor"] = pairs.regressor(cfg.regressor)
    if stage == "hint":  # stage 1 (the feature loss alone), shared by a family's two methods:
        # its key names no stage-2 method
        family = method.split("+")[0]
        return Trial(cfg.setup, seed, family, "hint", cfg.teacher, ce_weight=0.0,
                     feature=plan.feature, feature_weight=1.0, hint_train=cfg.hint_train, **where)
    kd = {}
    if plan.kd:  # (1 − α)·CE + α·KD, rounded so that 1 − 0.9 reads 0.1 in tables
        kd = dict(kd_weight=cfg.kd_alpha, T=cfg.T, ce_weight=round(1 - cfg.kd_alpha, 12))
    teacher = cfg.teacher if plan.kd or plan.feature else None
    if plan.two_stage:  # stage 2: no feature term, starts from its stage 1
        return Trial(cfg.setup, seed, method, stage, teacher, hint_train=cfg.hint_train,
                     **where, **kd)
    if plan.feature:
        weight = cfg.hint_weight if plan.feature == "fitnet" else cfg.at_weight
        return Trial(cfg.setup, seed, method, stage, teacher, feature=plan.feature,
                     feature_weight=weight, **where, **kd)
    return Trial(cfg.setup, seed, method, stage, teacher, **kd)
