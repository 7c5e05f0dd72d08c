"""Configuration of the compression pipeline, per scale.

`Setup` is the data and the student; `TeacherSpec` (experiments/teachers.py) the shared teacher.
Each stage's `Trial` carries the recipe of that stage and of every stage before it, so its run
folder (the hash of the trial) changes when anything upstream changes, and only then.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from experiments.teachers import TeacherSpec
from lib.prune.structured import check_criterion
from lib.quant import check_calibration_name
from lib.train import TrainConfig

# one row per stage, in pipeline order
STAGES = ("teacher", "student", "kd", "pruned", "pruned+kd", "ptq", "qat", "int8")


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "mobilenet_tiny"
    train: TrainConfig = recipe(optimizer="adam", lr=2e-3, batch_size=128, epochs=4.0,
                                schedule="cosine", channels_last=True)


@dataclass(frozen=True)
class KDMix:
    """Hinton's mix: `alpha·T²·KL(teacher ‖ student at T) + (1 − alpha)·CE(labels)`."""

    T: float = 4.0
    alpha: float = 0.9


@dataclass(frozen=True)
class Prune:
    """Filter pruning of the KD student: `ratio` of every prunable unit's channels, per layer."""

    criterion: str = "l1"
    ratio: float = 0.5


@dataclass(frozen=True)
class Trial:
    """One stage of one seed. Fields past `method` stay None until the stage uses them."""

    setup: Setup
    teacher: TeacherSpec | None = None  # the KD stages and everything after them
    seed: int = 0
    method: str = "student"
    bits: int = 0  # 0: float
    distill: KDMix | None = None
    prune: Prune | None = None
    finetune: TrainConfig | None = None
    qat: TrainConfig | None = None
    calib_size: int = 0
    calibration: str = ""  # PTQ activation ranges


@dataclass(frozen=True)
class PipelineConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    distill: KDMix = field(default_factory=KDMix)
    prune: Prune = field(default_factory=Prune)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", lr=1e-3, batch_size=128, epochs=2.0, schedule="cosine",
        channels_last=True))
    qat: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", lr=1e-4, batch_size=128, epochs=1.0, channels_last=True))
    qat_bits: tuple[int, ...] = (4,)
    ptq_bits: tuple[int, ...] = (8, 4)
    calib_size: int = 1000  # training images for activation ranges and int8 calibration
    calibration: str = "mse"  # PTQ activation ranges (QAT starts from minmax, then tracks them)
    latency_batch: int = 256

    def validate(self) -> "PipelineConfig":
        super().validate()
        for cfg in (self.teacher, self.finetune, self.qat):
            cfg.validate()
        self.setup.check_same_data(self.teacher, "teacher")
        check_criterion(self.prune.criterion, "prune.criterion")
        check_calibration_name(self.calibration)
        require(0 < self.prune.ratio < 1, "prune.ratio", "in (0, 1)", self.prune.ratio)
        require(self.distill.T > 0, "distill.T", "> 0", self.distill.T)
        require(0 <= self.distill.alpha <= 1, "distill.alpha", "in [0, 1]", self.distill.alpha)
        for b in (*self.ptq_bits, *self.qat_bits):
            require(2 <= b <= 16, "bits", "in [2, 16]", b)
        require(self.calib_size >= 1, "calib_size", ">= 1", self.calib_size)
        return self


def stage_trials(cfg: PipelineConfig, seed: int) -> dict[tuple[str, int], Trial]:
    """Every stage's `Trial` of one seed, by (method, bits as reported), in pipeline order."""
    kd = Trial(cfg.setup, cfg.teacher, seed, "kd", distill=cfg.distill)
    pruned = replace(kd, method="pruned", prune=cfg.prune)
    ft = replace(pruned, method="pruned+kd", finetune=cfg.finetune)
    out = {("student", 32): Trial(cfg.setup, seed=seed, method="student"), ("kd", 32): kd,
           ("pruned", 32): pruned, ("pruned+kd", 32): ft}
    out.update({("ptq", b): replace(ft, method="ptq", bits=b, calib_size=cfg.calib_size,
                                    calibration=cfg.calibration) for b in cfg.ptq_bits})
    out.update({("qat", b): replace(ft, method="qat", bits=b, qat=cfg.qat,
                                    calib_size=cfg.calib_size) for b in cfg.qat_bits})
    out["int8", 8] = replace(ft, method="int8", bits=8, calib_size=cfg.calib_size)
    return out


def teacher_for(setup: Setup, **kw) -> TeacherSpec:
    """The TeacherSpec defaults (resnet8, the shared recipe) on `setup`'s data."""
    return TeacherSpec(**setup.data_fields(), **kw)


def for_scale(scale: str, model: str = "mobilenet_tiny") -> PipelineConfig:
    if scale == "smoke":  # the tiny teacher every smoke run shares
        setup = Setup(model=model, **SMOKE_DATA,
                      train=replace(Setup().train, epochs=0.0, iterations=30, eval_every=30))
        short = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, iterations=10,
                            eval_every=10, channels_last=True)
        return PipelineConfig(setup=setup, teacher=TeacherSpec.smoke(), seeds=2, finetune=short,
                              qat=replace(short, lr=1e-4), calib_size=200, latency_batch=64)
    if scale == "default":
        setup = Setup(model=model)
        return PipelineConfig(setup=setup, teacher=teacher_for(setup), seeds=2)
    # paper scale: CIFAR-10, a longer recipe, the lecture's "mix it" pair, both torchvision's with
    # a CIFAR stem: ResNet-101 (the TeacherSpec recipe) -> MobileNetV2 (pruned through DepGraph)
    setup = Setup(dataset="cifar10", model="mobilenet_v2" if model == "mobilenet_tiny" else model,
                  train=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                                    batch_size=128, epochs=60.0, schedule="cosine",
                                    augment=True, channels_last=True))
    teacher = teacher_for(setup, model="resnet101",
                          train=replace(TeacherSpec().train, epochs=60.0, augment=True))
    return PipelineConfig(setup=setup, teacher=teacher, seeds=3,
                          finetune=replace(setup.train, lr=0.01, epochs=20.0),
                          qat=TrainConfig(optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=128,
                                          epochs=3.0, augment=True, channels_last=True))
