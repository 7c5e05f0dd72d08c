"""Configuration of the quantization experiment, per scale.

Two models, each with its own `Setup` (data, model, float recipe, hashed into every trial of
that model) and its own fine-tuning recipe (QAT, and the float control trained for the same
extra steps): the MLP (`setup`, `--model`) and a conv net with BatchNorm (`conv`,
`--conv-model`), whose BN is folded into its convs before anything is quantized.
`QuantConfig` adds what only decides which trials run (bits, calibration methods, seeds).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from lib.quant import check_calibration_name
from lib.train import TrainConfig

METHODS = ("float", "float_ft", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16")
GRANULARITIES = ("per_tensor", "per_channel")


@dataclass(frozen=True)
class Setup(common.Setup):
    # Adam with a cosine decay: the float model ends annealed (lr 0), so the fine-tuning arms
    # (QAT and its float control) start from a trained-out model
    train: TrainConfig = recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=12.0,
                                schedule="cosine")


@dataclass(frozen=True)
class Trial:
    """One trial: `method` "float" is the trained model; the others start from its final weights
    (BN folded into the convs first where `fold_bn`)."""
    setup: Setup
    seed: int = 0
    method: str = "float"
    bits: int = 0  # weight bits; fraction bits for fixed_point; 0: not applicable (float)
    act_bits: int = 0  # activation bits; 0: activations stay float
    granularity: str = ""  # of the weight ranges
    calibration: str = ""  # of the activation ranges
    calib_size: int = 0
    finetune: TrainConfig | None = None  # qat and float_ft: the extra training
    fold_bn: bool = False


def conv_setup(model: str = "mobilenet_tiny", **kw) -> Setup:
    """The conv model's setup: MobileNet-style, trained as the pipeline trains it (Adam 2e-3,
    cosine, channels_last); the default preset sets its epochs."""
    return Setup(model=model, **kw, train=TrainConfig(
        optimizer="adam", lr=2e-3, batch_size=128, epochs=15.0, schedule="cosine",
        channels_last=True))


@dataclass(frozen=True)
class QuantConfig(common.Config):
    setup: Setup = field(default_factory=Setup)  # the MLP (--model)
    finetune: TrainConfig = recipe(optimizer="adam", lr=1e-4, batch_size=128, epochs=3.0)
    conv: Setup | None = field(default_factory=conv_setup)  # None: the MLP alone
    conv_finetune: TrainConfig = recipe(optimizer="adam", lr=1e-4, batch_size=128, epochs=3.0,
                                        channels_last=True)
    seeds: int = 3
    bits: tuple[int, ...] = (8, 4, 3, 2)  # PTQ weight bits (and activation bits for WkAk)
    act8_bits: tuple[int, ...] = (4, 3, 2)  # PTQ weight bits also run with 8-bit activations
    calibrations: tuple[str, ...] = ("minmax", "percentile", "mse")
    # (weight, activation) bits of the QAT arms; () = post-training only (--qat-bits none)
    qat_bits: tuple[tuple[int, int], ...] = ((8, 8), (4, 8), (4, 4))
    frac_bits: tuple[int, ...] = (12, 8, 6, 4, 3, 2)
    floats: tuple[str, ...] = ("float16", "bfloat16")
    calib_size: int = 2000  # training images for activation ranges and int8 calibration
    latency_batch: int = 256
    source: str = ""  # the paper recipe a preset follows, named in table.md (paper scale)

    def validate(self) -> "QuantConfig":
        super().validate()
        self.finetune.validate()
        self.conv_finetune.validate()
        if self.conv is not None:
            self.conv.validate()
            self.setup.check_same_data(self.conv, "conv")
            require(self.conv.model != self.setup.model, "conv_model",
                    f"a model other than --model ({self.setup.model})", self.conv.model)
        for c in self.calibrations:
            check_calibration_name(c)
        for b in (*self.bits, *self.act8_bits):
            require(2 <= b <= 16, "bits", "in [2, 16]", b)
        for pair in self.qat_bits:
            require(len(pair) == 2 and all(2 <= b <= 16 for b in pair), "qat_bits",
                    "(weight, activation) bit pairs, each in [2, 16]", pair)
        require(self.calib_size >= 1, "calib_size", ">= 1", self.calib_size)
        return self

    def models(self) -> list[tuple[Setup, TrainConfig]]:
        """(setup, fine-tuning recipe) of each model, the MLP first."""
        conv = [] if self.conv is None else [(self.conv, self.conv_finetune)]
        return [(self.setup, self.finetune), *conv]

    def ptq_grid(self) -> list[tuple[int, int, str, str]]:
        """(weight bits, activation bits, weight granularity, calibration) of every PTQ trial.

        Weights alone (activation bits 0), per tensor and per channel. Weights and activations
        at the same width: per-tensor weights with minmax ranges, per-channel weights with every
        calibration method. 4-bit-and-lower weights with 8-bit activations (the whitepaper's
        4-bit setting), per-channel weights and MSE ranges. Weights are symmetric, activations
        per tensor and asymmetric.
        """
        grid = []
        for b in self.bits:
            grid += [(b, 0, g, "") for g in GRANULARITIES]
            grid.append((b, b, "per_tensor", "minmax"))
            grid += [(b, b, "per_channel", c) for c in self.calibrations]
        grid += [(b, 8, "per_channel", "mse") for b in self.act8_bits]
        return grid


def default_preset(model: str = "lenet_300_100") -> QuantConfig:
    """Fashion-MNIST on 2 CPU cores within the 30-minute budget (README, "Where the time goes"):
    both models on 20k training images (the validation and test sets stay whole), 3 seeds
    (every comparison paired by seed), the conv model trained 10 epochs, QAT and its control
    fine-tuned 2 epochs. Fewer configurations instead of fewer seeds: PTQ at 8, 4 and 2 bits
    with minmax and MSE ranges, W4A8 beside; the precision curve at 8, 6, 4, 2 fraction bits."""
    data = dict(train_limit=20_000)
    ft = TrainConfig(optimizer="adam", lr=1e-4, batch_size=128, epochs=2.0)
    conv = conv_setup(**data)
    return QuantConfig(setup=Setup(model=model, **data), finetune=ft,
                       conv=replace(conv, train=replace(conv.train, epochs=10.0)),
                       conv_finetune=replace(ft, channels_last=True), seeds=3, bits=(8, 4, 2),
                       act8_bits=(4,), calibrations=("minmax", "mse"), frac_bits=(8, 6, 4, 2))


def for_scale(scale: str, model: str = "lenet_300_100") -> QuantConfig:
    if scale == "smoke":
        short = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, iterations=60,
                            eval_every=30)
        setup = Setup(model=model, **SMOKE_DATA, train=short)
        conv = Setup(model="mobilenet_tiny", **SMOKE_DATA,
                     train=replace(short, lr=2e-3, iterations=30, channels_last=True))
        ft = TrainConfig(optimizer="adam", lr=1e-4, batch_size=128, iterations=15, eval_every=15)
        return QuantConfig(setup=setup, finetune=ft, conv=conv,
                           conv_finetune=replace(ft, iterations=10, eval_every=10,
                                                 channels_last=True),
                           seeds=2, bits=(8, 4), act8_bits=(4,), frac_bits=(8, 4),
                           calib_size=200, latency_batch=64)
    if scale == "default":
        return default_preset(model)
    return paper_preset(model)


def paper_preset(model: str = "mobilenet_v2") -> QuantConfig:
    """The whitepaper's recipe (Krishnamoorthi 2018, "Quantizing deep convolutional networks for
    efficient inference: a whitepaper", arXiv:1806.08342) carried to CIFAR-10.

    The whitepaper quantizes ImageNet classifiers, MobileNet-v1 and MobileNet-v2 among them, and
    trains QAT by fine-tuning the trained float model with fake quantization in the graph (not
    from scratch): weights per channel and symmetric, activations per layer and asymmetric, BN
    folded into the convs. Its numbers, in its abstract: 8-bit PTQ within 2% of float, QAT within
    1% at 8 bits, 4-bit weights with QAT losing 2% to 10%, 4x smaller, 2-3x faster on CPUs
    (claims.py). Here: its two MobileNets in their CIFAR form (`mobilenet_v2`, torchvision's with
    a stride-1 stem, as --model; `mobilenet`, v1 adapted to CIFAR, as the conv model), trained
    with RepDistiller's CIFAR recipe (Tian et al. 2020: SGD, momentum 0.9, wd 5e-4, batch 64,
    240 epochs, lr /10 at 150, 180 and 210, crop + flip; lr 0.05, 0.01 for MobileNetV2 as
    RepDistiller sets it). The fine-tuning length is ours, not the paper's (its step counts are
    ImageNet's): 10 epochs at the float lr after two decays (/100), constant, for QAT and for
    its float control alike.
    """
    def repdistiller(lr: float) -> TrainConfig:
        return TrainConfig(optimizer="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, batch_size=64,
                           epochs=240.0, schedule="step",
                           milestones=(150 / 240, 180 / 240, 210 / 240), augment=True,
                           channels_last=True)

    def finetune(lr: float) -> TrainConfig:
        return replace(repdistiller(lr / 100), epochs=10.0, schedule="constant", milestones=())

    lr = 0.01 if model in ("mobilenet_v2", "mobile_half") else 0.05
    return QuantConfig(setup=Setup(dataset="cifar10", model=model, train=repdistiller(lr)),
                       finetune=finetune(lr),
                       conv=Setup(dataset="cifar10", model="mobilenet", train=repdistiller(0.05)),
                       conv_finetune=finetune(0.05), source=PAPER_SOURCE)


PAPER_SOURCE = ("The whitepaper's recipe (Krishnamoorthi 2018, arXiv:1806.08342) carried to "
                "CIFAR-10: two of its models (MobileNet-v2, MobileNet-v1), QAT by fine-tuning the "
                "trained float model; the float models trained with RepDistiller's CIFAR recipe "
                "(Tian et al. 2020); the fine-tuning length is the lab's.")
