"""Configuration of the compression pipeline, per scale.

`Setup` is the data and the student; `TeacherSpec` (experiments/teachers.py) the shared teacher.
Each stage's `Trial` carries the recipe of that stage and of every stage before it, so its run
folder (the hash of the trial) changes when anything upstream changes, and only then.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments.teachers import TeacherSpec
from lib.prune.structured import check_criterion
from lib.quant import check_calibration_name
from lib.train import TrainConfig

# one row per stage, in pipeline order
STAGES = ("teacher", "student", "kd", "pruned", "pruned+kd", "ptq", "qat", "int8")


@dataclass(frozen=True)
class Setup:
    dataset: str = "fashion_mnist"
    model: str = "mobilenet_tiny"
    val_size: int = 5000
    train_limit: int = 0  # 0 = all
    test_limit: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", lr=2e-3, batch_size=128, epochs=4.0, schedule="cosine",
        channels_last=True))


@dataclass(frozen=True)
class Distill:
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
    distill: Distill | None = None
    prune: Prune | None = None
    finetune: TrainConfig | None = None
    qat: TrainConfig | None = None
    calib_size: int = 0
    calibration: str = ""  # PTQ activation ranges


@dataclass(frozen=True)
class PipelineConfig:
    setup: Setup = field(default_factory=Setup)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    seeds: int = 2
    distill: Distill = field(default_factory=Distill)
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
        for cfg in (self.setup.train, self.teacher.train, self.finetune, self.qat):
            cfg.validate()
        check_criterion(self.prune.criterion, "prune.criterion")
        check_calibration_name(self.calibration)
        if not 0 < self.prune.ratio < 1:
            raise ValueError(f"prune.ratio: must be in (0, 1), got {self.prune.ratio}")
        if not self.distill.T > 0:
            raise ValueError(f"distill.T: must be > 0, got {self.distill.T}")
        if not 0 <= self.distill.alpha <= 1:
            raise ValueError(f"distill.alpha: must be in [0, 1], got {self.distill.alpha}")
        for b in (*self.ptq_bits, *self.qat_bits):
            if not 2 <= b <= 16:
                raise ValueError(f"bits: must be in [2, 16], got {b}")
        if self.seeds < 1:
            raise ValueError(f"seeds: must be >= 1, got {self.seeds}")
        if self.calib_size < 1:
            raise ValueError(f"calib_size: must be >= 1, got {self.calib_size}")
        s, t = self.setup, self.teacher
        if (s.dataset, s.val_size, s.train_limit, s.test_limit) != (
                t.dataset, t.val_size, t.train_limit, t.test_limit):
            raise ValueError("teacher: must be trained on the student's data (dataset, val_size, "
                             "train_limit, test_limit)")
        return self


def teacher_for(setup: Setup, **kw) -> TeacherSpec:
    """The TeacherSpec defaults (resnet8, the shared recipe) on `setup`'s data."""
    return TeacherSpec(dataset=setup.dataset, val_size=setup.val_size,
                       train_limit=setup.train_limit, test_limit=setup.test_limit, **kw)


def for_scale(scale: str, model: str = "mobilenet_tiny") -> PipelineConfig:
    if scale == "smoke":
        setup = Setup(model=model, val_size=300, train_limit=2000, test_limit=500,
                      train=TrainConfig(optimizer="adam", lr=2e-3, batch_size=128, iterations=30,
                                        eval_every=30, schedule="cosine", channels_last=True))
        short = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, iterations=10,
                            eval_every=10, channels_last=True)
        teacher = teacher_for(setup, train=replace(TeacherSpec().train, epochs=0.0, iterations=30,
                                                   eval_every=30))
        return PipelineConfig(setup=setup, teacher=teacher, seeds=2, finetune=short,
                              qat=replace(short, lr=1e-4), calib_size=200, latency_batch=64)
    if scale == "default":
        setup = Setup(model=model)
        return PipelineConfig(setup=setup, teacher=teacher_for(setup), seeds=2)
    # paper scale: CIFAR-10, the v1-like MobileNet, a longer recipe; the teacher keeps the
    # TeacherSpec recipe (resnet8) unless a larger one is asked for in code
    setup = Setup(dataset="cifar10", model="mobilenet" if model == "mobilenet_tiny" else model,
                  train=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                                    batch_size=128, epochs=60.0, schedule="cosine",
                                    augment=True, channels_last=True))
    teacher = teacher_for(setup, train=replace(TeacherSpec().train, epochs=60.0, augment=True))
    return PipelineConfig(setup=setup, teacher=teacher, seeds=3,
                          finetune=replace(setup.train, lr=0.01, epochs=20.0),
                          qat=TrainConfig(optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=128,
                                          epochs=3.0, augment=True, channels_last=True))
