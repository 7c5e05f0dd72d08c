"""Configuration of the lottery-ticket experiment, per scale.

`Setup` holds everything that changes what one trial computes; it is hashed (with seed, level
and variant) into the trial's run folder. `LotteryConfig` adds what only decides which trials
to run (levels, seeds, variants), so adding levels or seeds reuses every finished trial.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from lib.prune.imp import PruneConfig
from lib.train import TrainConfig

VARIANTS = ("ticket", "reinit", "random_mask")


@dataclass(frozen=True)
class Setup(common.Setup):
    # the paper's LeNet recipe: Adam 1.2e-3, batch 60, 50k iterations
    train: TrainConfig = recipe(optimizer="adam", lr=1.2e-3, batch_size=60, iterations=50_000,
                                eval_every=100)
    prune: PruneConfig = field(default_factory=PruneConfig)
    rewind_step: int = 0  # 0 = rewind to init; k > 0 = late rewinding to iteration k


@dataclass(frozen=True)
class Trial:
    setup: Setup
    seed: int = 0
    level: int = 0
    variant: str = "ticket"


@dataclass(frozen=True)
class LotteryConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    levels: int = 15  # pruning rounds after the dense run: 0.8^15 -> 3.6% of weights left
    variants: tuple[str, ...] = ("ticket", "reinit")

    def validate(self) -> "LotteryConfig":
        super().validate()
        self.setup.prune.validate()
        for v in self.variants:
            if v not in VARIANTS:
                raise ValueError(f"variants: unknown '{v}', choose from {', '.join(VARIANTS)}")
        if "ticket" not in self.variants:
            raise ValueError("variants: 'ticket' is required (the other variants use its masks)")
        require(self.levels >= 0, "levels", ">= 0", self.levels)
        require(self.setup.rewind_step >= 0, "rewind_step", ">= 0", self.setup.rewind_step)
        steps = self.setup.train.total_steps(self.setup.n_train())
        require(self.setup.rewind_step < steps, "rewind_step", f"< the {steps} training steps",
                self.setup.rewind_step)
        self.setup.check_prune_levels(self.setup.prune, self.levels)
        return self


# the lottery-ticket paper's conv recipes on CIFAR-10 (Figure 2): lr, iterations, conv rate
PAPER_CONV = {"conv2": (2e-4, 20_000, 0.10), "conv4": (3e-4, 25_000, 0.10),
              "conv6": (3e-4, 30_000, 0.15)}


def for_scale(scale: str, model: str = "lenet_300_100") -> LotteryConfig:
    """The preset of `scale`; at paper scale a conv `model` brings its CIFAR-10 recipe."""
    if scale == "smoke":
        setup = Setup(model=model, **SMOKE_DATA,
                      train=TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60,
                                        iterations=120, eval_every=40))
        return LotteryConfig(setup=setup, levels=3, seeds=2)
    if scale == "default":
        # down to level 20 (1.2% of the weights), where ticket and reinit part most. Each trial
        # trains until its validation loss has not improved for 10 evaluations (3,000 steps),
        # at most 20k steps: sparse reinits learn slowly and must not be cut while still
        # learning; converged tickets stop early and cost nothing more
        setup = Setup(model=model, train=TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60,
                                                     iterations=20_000, eval_every=300,
                                                     patience=10))
        return LotteryConfig(setup=setup, levels=20, seeds=2)
    if model in PAPER_CONV:
        lr, iters, conv_rate = PAPER_CONV[model]
        setup = Setup(dataset="cifar10", model=model,
                      train=TrainConfig(optimizer="adam", lr=lr, batch_size=60, iterations=iters,
                                        eval_every=500),
                      prune=PruneConfig(rate_conv=conv_rate))
        return LotteryConfig(setup=setup, levels=20, seeds=5)
    return LotteryConfig(setup=replace(Setup(), dataset="mnist", model=model), levels=20, seeds=5)

