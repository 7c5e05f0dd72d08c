"""Configuration of the logit-distillation experiment, per scale.

`Setup` holds what every student shares (data, student model, training recipe); it is hashed
with each `Trial`'s fields into the trial's run folder. A trial names its own teacher by the run
hash of that teacher (`parent`), so a chain step (Born-Again generation k, a refinery step, the
TA student) is keyed by everything upstream of it. `LogitKDConfig` adds what only decides which
trials run, and the shared teacher's `TeacherSpec`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from experiments.teachers import TeacherSpec
from lib import models
from lib.train import TrainConfig

# student alone (= Born-Again / Label Refinery generation 0) is always trained: every other
# method is compared with it
METHODS = ("kd", "dml", "ban", "lr", "ta")


# SGD + momentum, cosine, as the shared teacher (students and teacher differ in length only)
STUDENT = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128,
               schedule="cosine", channels_last=True)


def student_recipe(**kw) -> TrainConfig:
    return TrainConfig(**{**STUDENT, **kw})


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "vgg_tiny"  # the student
    train: TrainConfig = recipe(**STUDENT, epochs=3.0)


@dataclass(frozen=True)
class Trial:
    """One trained network. `method` "student" is trained on labels; the others learn from the
    network whose run hash is `parent` (teacher, previous generation, assistant) or, for "dml",
    from `peers` − 1 peers trained with it."""
    setup: Setup
    seed: int = 0
    method: str = "student"
    model: str = ""  # "" = setup.model; the assistant of TA-KD sets its own
    generation: int = 0
    parent: str = ""
    T: float = 0.0  # 0: no temperature (student, dml, lr)
    alpha: float = 0.0  # weight of the soft term; 0: labels only
    peers: int = 0


@dataclass(frozen=True)
class LogitKDConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    assistant: str = "vgg_narrow"  # TA-KD: between teacher and student in size
    seeds: int = 3
    methods: tuple[str, ...] = METHODS
    T: float = 4.0  # Hinton KD, Born-Again and TA-KD (RepDistiller's T = 4, α = 0.9)
    alpha: float = 0.9
    dml_peers: int = 2
    ban_generations: int = 3  # born-again generations after the label-trained generation 0
    refinery_max: int = 3  # label refinery: at most this many refinements (stops earlier if val acc drops)

    def validate(self) -> "LogitKDConfig":
        super().validate()
        self.teacher.validate()
        for name in (self.setup.model, self.teacher.model):
            models.check_model_name(name)
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: unknown '{m}', choose from {', '.join(METHODS)}")
        if "ta" in self.methods:
            if not self.assistant:
                raise ValueError(f"assistant: none set for teacher {self.teacher.model} and student "
                                 f"{self.setup.model} at this scale; drop 'ta' from --methods")
            models.check_model_name(self.assistant)
        self.setup.check_same_data(self.teacher, "teacher")
        require(self.T > 0, "T", "> 0", self.T)
        require(0.0 <= self.alpha <= 1.0, "alpha", "in [0, 1]", self.alpha)
        require(self.dml_peers >= 2, "dml_peers", ">= 2", self.dml_peers)
        if self.ban_generations < 1 or self.refinery_max < 1:
            raise ValueError("ban_generations/refinery_max: must be >= 1")
        return self


def for_scale(scale: str, model: str = "vgg_tiny") -> LogitKDConfig:
    if scale == "smoke":  # the one smoke teacher every distillation experiment shares
        setup = Setup(model=model, **SMOKE_DATA, train=student_recipe(iterations=30, eval_every=15))
        return LogitKDConfig(setup=setup, teacher=TeacherSpec.smoke(), seeds=2, ban_generations=2,
                             refinery_max=2)
    if scale == "default":
        # ~20 s per vgg_tiny student on 2 cores: 3 seeds x (student, kd, 2 dml peers, 2 ban, <= 2
        # lr, ta student) + 3 vgg_narrow assistants ~ 11 min, plus the shared teacher once (~3 min)
        return LogitKDConfig(setup=Setup(model=model), ban_generations=2, refinery_max=2)
    # RepDistiller's CIFAR-100 recipe: SGD 0.05, batch 64, 240 epochs, lr /10 at 150, 180, 210
    recipe = student_recipe(lr=0.05, batch_size=64, epochs=240.0, schedule="step",
                            milestones=(150 / 240, 180 / 240, 210 / 240), augment=True)
    setup = Setup(dataset="cifar100", model=model, train=recipe)
    spec = TeacherSpec(dataset="cifar100", model="resnet56", train=recipe)
    # TA-KD needs a network between teacher and student: for resnet56 -> resnet20 that would
    # be resnet32/44, not in the registry; with --model resnet8 the TA paper's resnet20 serves
    assistant = "resnet20" if model == "resnet8" else ""
    methods = METHODS if assistant else tuple(m for m in METHODS if m != "ta")
    return LogitKDConfig(setup=setup, teacher=spec, assistant=assistant, methods=methods,
                         ban_generations=3, refinery_max=5)
