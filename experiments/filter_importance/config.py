"""Configuration of the filter-importance experiment, per scale.

`Setup` holds what makes the baseline (dataset, model, training recipe); it is hashed with each
`Trial`'s fields into the trial's run folder. `FilterConfig` adds what only decides which trials
run (criteria, per-layer prune ratios, seeds) and the fine-tuning recipe.

Every criterion prunes the same fraction of every prunable layer, so for one ratio every
criterion yields the same architecture: equal parameters and MACs by construction, and only the
choice of *which* filters go differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from experiments import common
from experiments.common import SMOKE_DATA, require
from lib import models
from lib.prune.structured import IMPORTANCE, check_criterion, select_by_ratio
from lib.prune.surgery import widths
from lib.train import TrainConfig

CRITERIA = tuple(IMPORTANCE)  # l1, l2, fpgm, bn_gamma, apoz, random
STAGES = ("baseline", "pruned", "finetuned")


def papers_sgd(epochs: float = 0.0, **kw) -> TrainConfig:
    """The papers' CIFAR baseline (Li et al. 2017, He et al. 2019): SGD 0.1, momentum 0.9,
    weight decay 5e-4, lr ÷10 at 50% and 75% of training. Weight decay matters here: behind BN
    a filter's scale does not change the function, so without decay (or under Adam) filter
    norms drift with the optimiser rather than with importance."""
    return TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128,
                       epochs=epochs, schedule="step", milestones=(0.5, 0.75),
                       channels_last=True, **kw)


def papers_finetune(epochs: float = 0.0, **kw) -> TrainConfig:
    """Li et al.'s retraining: SGD at the baseline's last lr 1e-3, constant, momentum 0.9, weight
    decay 5e-4, for a quarter of the baseline's epochs (40 of 160)."""
    return TrainConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=128,
                       epochs=epochs, channels_last=True, **kw)


@dataclass(frozen=True)
class Setup(common.Setup):
    model: str = "vgg_narrow"
    train: TrainConfig = field(default_factory=lambda: papers_sgd(epochs=8.0))


@dataclass(frozen=True)
class Trial:
    """One trial: the baseline (stage "baseline"), or `criterion` at `prune_ratio` per layer,
    evaluated right after surgery ("pruned") or after fine-tuning ("finetuned")."""
    setup: Setup
    seed: int = 0
    stage: str = "baseline"
    criterion: str = ""
    prune_ratio: float = 0.0
    apoz_samples: int = 0  # training images APoZ is measured on (apoz only)
    finetune: TrainConfig | None = None
    layers: tuple[str, ...] = ()  # the prunable layers `prune_ratio` applies to (empty: every one)


@dataclass(frozen=True)
class FilterConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    criteria: tuple[str, ...] = CRITERIA
    ratios: tuple[float, ...] = (0.3, 0.6)  # fraction of filters removed from every prunable layer
    apoz_samples: int = 2000
    finetune: TrainConfig = field(default_factory=lambda: papers_finetune(epochs=2.0))
    latency_batch: int = 256
    # Li et al.'s choice: prune only these layers (the others keep every filter); empty: all
    layers: tuple[str, ...] = ()
    sensitivity: bool = False  # also prune each layer alone (l1, no retraining): Li et al.'s Fig. 2

    def layer_ratios(self, ratio: float) -> float | dict[str, float]:
        """What `prune_structured` takes for `ratio`: one value, or one per listed layer."""
        return {name: ratio for name in self.layers} if self.layers else ratio

    def validate(self, input_shape: tuple[int, ...] = (1, 28, 28)) -> "FilterConfig":
        """One-line ValueError naming the first bad field; checks every ratio against every
        prunable layer of the model (and that surgery supports the model) before any compute."""
        super().validate()
        self.finetune.validate()
        if not self.criteria:
            raise ValueError(f"criteria: empty, choose from {', '.join(CRITERIA)}")
        for c in self.criteria:
            check_criterion(c, "criteria")
        if not self.ratios:
            raise ValueError("ratios: empty, give at least one prune ratio in (0, 1)")
        require(self.apoz_samples >= 1, "apoz_samples", ">= 1", self.apoz_samples)
        layers = widths(models.build(self.setup.model, input_shape, 10))  # surgery support
        unknown = [n for n in self.layers if n not in layers]
        if unknown or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers: {', '.join(unknown) or 'a layer listed twice'}: give distinct "
                             f"prunable layers of {self.setup.model}: {', '.join(layers)}")
        for r in self.ratios:
            if not 0 < r < 1:
                raise ValueError(f"ratios: each must be in (0, 1), got {r}")
            select_by_ratio({n: torch.zeros(w) for n, w in layers.items()}, self.layer_ratios(r))
        return self


def for_scale(scale: str, model: str = "vgg_narrow") -> FilterConfig:
    """The scale's recipe for `model` (the CLI passes vgg16 at the paper scale, vgg_narrow
    otherwise; resnet56 is the paper's other network)."""
    if scale == "smoke":
        setup = Setup(model=model, **SMOKE_DATA, train=papers_sgd(iterations=50, eval_every=50))
        return FilterConfig(setup=setup, seeds=2, apoz_samples=256, latency_batch=16,
                            finetune=papers_finetune(iterations=6, eval_every=6))
    if scale == "default":
        # 0.2 per layer removes ~35% of the MACs (Li et al.'s VGG-16 setting: 34%), 0.6 ~83%:
        # 3 seeds at the two, for the criteria the claims compare (bn_gamma, whose claim needs
        # sparsity training, is left to --criteria). Estimated ~17 min alone from the old
        # default's throughput (not yet calibrated: see the README).
        return FilterConfig(setup=Setup(model=model), seeds=3, ratios=(0.2, 0.6),
                            criteria=("l1", "l2", "fpgm", "apoz", "random"))
    # Li et al. 2017: VGG-16 on CIFAR-10, SGD 0.1 for 160 epochs, fine-tuned 40 epochs at 0.001
    setup = Setup(dataset="cifar10", model=model, train=papers_sgd(epochs=160.0, augment=True))
    return FilterConfig(setup=setup, seeds=3, ratios=(0.3, 0.5), apoz_samples=10000,
                        finetune=papers_finetune(epochs=40.0, augment=True))
