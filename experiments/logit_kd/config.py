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
SELECT = ("best", "final")


# SGD + momentum + weight decay, cosine, as the shared teacher but at lr 0.05 (the teacher's 0.1
# sent KD students to chance on some seeds: README, "Student learning rate"; RepDistiller's
# students use 0.05 too). The paper scale sets its own recipe.
STUDENT = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128,
               schedule="cosine")


def student_recipe(**kw) -> TrainConfig:
    return TrainConfig(**{**STUDENT, **kw})


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "lenet_300_100"  # the student (Hinton's MNIST students are MLPs too)
    # trained to convergence: cosine over at most 20 epochs, stopped once the validation loss has
    # not improved for 5 evaluations (one per epoch), so no trial is selected while still
    # learning (README: a 30-epoch curve of the student alone has its minimum at 80% of training)
    train: TrainConfig = recipe(**STUDENT, epochs=20.0, patience=5)
    # which weights a trial reports and hands down a chain: "best", those of its lowest
    # validation loss (the lab's rule); "final", those at the end of its schedule (with
    # train.patience 0: no early stop), as papers that train a fixed schedule report them
    select: str = "best"

    def validate(self) -> "Setup":
        super().validate()
        if self.select not in SELECT:
            raise ValueError(f"select: unknown '{self.select}', choose from {', '.join(SELECT)}")
        if self.select == "final" and self.train.patience:
            raise ValueError(f"select: 'final' means the end of the schedule; set train.patience=0 "
                             f"(got {self.train.patience}, which stops training early)")
        return self


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
    # TA-KD: teacher -> assistant -> ta_student, each step plain KD, against teacher ->
    # ta_student directly. The assistant is the main student ("" = setup.model), so its KD trial
    # is the kd arm's own; ta_student is smaller, so that the teacher-student gap is large.
    assistant: str = ""
    ta_student: str = "mlp_16"
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
        if self.setup.select == "final" and "dml" in self.methods:
            raise ValueError("select: 'final' is not implemented for dml (its peers keep their "
                             "best weights); drop dml from --methods")
        if self.assistant:
            models.check_model_name(self.assistant)
        if "ta" in self.methods:
            if not self.ta_student:
                raise ValueError(f"ta_student: none set for teacher {self.teacher.model} and "
                                 f"student {self.setup.model} at this scale; drop 'ta' from --methods")
            models.check_model_name(self.ta_student)
            if self.ta_student in (self.setup.model, self.assistant):
                raise ValueError(f"ta_student: must differ from the assistant "
                                 f"({self.assistant or self.setup.model}), got {self.ta_student}")
        self.setup.check_same_data(self.teacher, "teacher")
        require(self.T > 0, "T", "> 0", self.T)
        require(0.0 <= self.alpha <= 1.0, "alpha", "in [0, 1]", self.alpha)
        require(self.dml_peers >= 2, "dml_peers", ">= 2", self.dml_peers)
        if self.ban_generations < 1 or self.refinery_max < 1:
            raise ValueError("ban_generations/refinery_max: must be >= 1")
        return self


def for_scale(scale: str, model: str = "lenet_300_100") -> LogitKDConfig:
    if scale == "smoke":  # the one smoke teacher every distillation experiment shares
        setup = Setup(model=model, **SMOKE_DATA, train=student_recipe(iterations=30, eval_every=15))
        return LogitKDConfig(setup=setup, teacher=TeacherSpec.smoke(), seeds=2, ban_generations=2,
                             refinery_max=2)
    if scale == "default":
        # ~1.3 s per epoch of the MLP student on one thread: 3 seeds x (student, kd, 2 dml peers,
        # 2 ban, <= 2 lr, 3 small mlp_16 TA-KD arms) x <= 20 epochs, 735 s measured alone
        # (run.json), plus the teacher once (535 s, where it is first trained)
        return LogitKDConfig(setup=Setup(model=model), seeds=3, ban_generations=2,
                             refinery_max=2)
    # RepDistiller's CIFAR-100 recipe: SGD 0.05, batch 64, 240 epochs, lr /10 at 150, 180, 210
    recipe = student_recipe(lr=0.05, batch_size=64, epochs=240.0, schedule="step",
                            milestones=(150 / 240, 180 / 240, 210 / 240), augment=True,
                            channels_last=True)
    setup = Setup(dataset="cifar100", model=model, train=recipe)
    spec = TeacherSpec(dataset="cifar100", model="resnet56", train=recipe)
    # TA-KD as in the TA paper's ResNet chain: resnet56 -> resnet20 (the assistant, = the kd
    # trial of --model resnet20) -> resnet8; other students have no smaller registered ResNet
    ta_student = "resnet8" if model == "resnet20" else ""
    methods = METHODS if ta_student else tuple(m for m in METHODS if m != "ta")
    return LogitKDConfig(setup=setup, teacher=spec, ta_student=ta_student, methods=methods,
                         ban_generations=3, refinery_max=5)
