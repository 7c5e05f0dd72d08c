"""Configuration of the feature-distillation experiment, per scale.

`Setup` is the student's data, model and recipe; `TeacherSpec` (shared with logit_kd and rkd)
is the teacher. A `Trial` is one trained student: the method's loss weights and layer pairs are
in it, so they are in its run hash. `FeatureKDConfig` adds what only decides which trials run
(methods, seeds) and the weights the methods take from their papers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from experiments.feature_kd.layers import hint_pair
from experiments.teachers import TeacherSpec
from lib.train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """What a method adds to cross-entropy: a feature term, Hinton's KD, FitNet's stage 1."""
    feature: str = ""  # "", "fitnet" (one hint pair, regressor W_r) or "attention" (every pair)
    kd: bool = False
    two_stage: bool = False  # FitNet paper: hint-train the lower layers first, then train all


RECIPES: dict[str, Recipe] = {
    "student": Recipe(),
    "kd": Recipe(kd=True),
    "fitnet_2stage": Recipe("fitnet", two_stage=True),  # stage 2 with CE only
    "fitnet_2stage+kd": Recipe("fitnet", kd=True, two_stage=True),  # the paper's FitNet
    "fitnet": Recipe("fitnet"),  # RepDistiller: one stage, CE + 100·hint
    "fitnet+kd": Recipe("fitnet", kd=True),
    "at": Recipe("attention"),
    "at+kd": Recipe("attention", kd=True),
}
METHODS = tuple(RECIPES)


# RepDistiller's student optimiser (SGD 0.05, momentum 0.9, wd 5e-4), cosine for short runs;
# selection on the best validation accuracy
STUDENT = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128,
               schedule="cosine", early_stop_on="val_acc", channels_last=True)


def student_recipe(**kw) -> TrainConfig:
    return TrainConfig(**{**STUDENT, **kw})


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "vgg_tiny"
    train: TrainConfig = recipe(**STUDENT, epochs=1.5, eval_every=215)


@dataclass(frozen=True)
class Trial:
    """One trained student. `stage` "hint" is FitNet's stage 1 (lower layers + W_r on the hint
    loss alone, `hint_train` recipe); a stage-2 trial carries `hint_train` and the hint pair too,
    so it is keyed by the stage 1 it starts from."""
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


@dataclass(frozen=True)
class FeatureKDConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    seeds: int = 3
    methods: tuple[str, ...] = METHODS
    T: float = 4.0
    kd_alpha: float = 0.9  # with KD: (1 − α)·CE + α·KD, the KD row's mix (RepDistiller -r .1 -a .9)
    hint_weight: float = 100.0  # FitNet one stage (RepDistiller -b 100)
    at_weight: float = 1000.0  # Attention Transfer β (official code, per-element mean)
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
        require(self.probe_size >= 1, "probe_size", ">= 1", self.probe_size)
        return self


DEFAULT_STUDENT = {"smoke": "vgg_tiny", "default": "vgg_tiny", "paper": "resnet20"}


def for_scale(scale: str, model: str | None = None) -> FeatureKDConfig:
    model = model or DEFAULT_STUDENT[scale]
    if scale == "smoke":  # the one smoke teacher every distillation experiment shares
        setup = Setup(model=model, **SMOKE_DATA, train=student_recipe(iterations=20, eval_every=10))
        return FeatureKDConfig(setup=setup, teacher=TeacherSpec.smoke(), seeds=2,
                               hint_train=student_recipe(iterations=10, eval_every=10),
                               probe_size=300)
    if scale == "default":
        return FeatureKDConfig(setup=Setup(model=model))
    # RepDistiller's CIFAR-100 recipe: 240 epochs, lr 0.05 ÷10 at 150/180/210, batch 64, crop+flip
    paper = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                 schedule="step", milestones=(150 / 240, 180 / 240, 210 / 240), gamma=0.1,
                 augment=True, channels_last=True)
    setup = Setup(dataset="cifar100", model=model,
                  train=TrainConfig(epochs=240.0, early_stop_on="val_acc", **paper))
    teacher = TeacherSpec(dataset="cifar100", model="resnet56",
                          train=TrainConfig(epochs=240.0, **paper))
    return FeatureKDConfig(setup=setup, teacher=teacher, seeds=3,
                           hint_train=replace(setup.train, epochs=30.0))


def make_trial(cfg: FeatureKDConfig, pairs: list[tuple[str, str]], method: str, seed: int,
               stage: str = "train") -> Trial:
    """The trial of `method` at `seed`: its loss weights and layers (from its recipe and the
    matched stage `pairs`); every trial that learns from the teacher names it."""
    plan, hint = RECIPES[method], hint_pair(pairs)
    if stage == "hint":  # FitNet stage 1 (hint loss alone, W_r, lower layers), shared by
        # both two-stage methods: its key names no stage-2 method
        return Trial(cfg.setup, seed, "fitnet_2stage", "hint", cfg.teacher, ce_weight=0.0,
                     feature="fitnet", feature_weight=1.0, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), hint_train=cfg.hint_train)
    kd = {}
    if plan.kd:  # (1 − α)·CE + α·KD, rounded so that 1 − 0.9 reads 0.1 in tables
        kd = dict(kd_weight=cfg.kd_alpha, T=cfg.T, ce_weight=round(1 - cfg.kd_alpha, 12))
    teacher = cfg.teacher if plan.kd or plan.feature else None
    if plan.two_stage:  # stage 2: no feature term, starts from its stage 1
        return Trial(cfg.setup, seed, method, stage, teacher, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), hint_train=cfg.hint_train, **kd)
    if plan.feature == "fitnet":
        return Trial(cfg.setup, seed, method, stage, teacher, feature="fitnet",
                     feature_weight=cfg.hint_weight, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), **kd)
    if plan.feature == "attention":
        return Trial(cfg.setup, seed, method, stage, teacher, feature="attention",
                     feature_weight=cfg.at_weight, student_layers=tuple(s for s, _ in pairs),
                     teacher_layers=tuple(t for _, t in pairs), **kd)
    return Trial(cfg.setup, seed, method, stage, teacher, **kd)
