"""Configuration of the quantization experiment, per scale.

`Setup` holds what changes the float model (dataset, model, training recipe); it is hashed
with each `Trial`'s fields into the trial's run folder. `QuantConfig` adds what only decides
which trials run (bits, calibration methods, seeds) and the QAT recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from experiments import common
from experiments.common import SMOKE_DATA, recipe, require
from lib.quant import check_calibration_name
from lib.train import TrainConfig

METHODS = ("float", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16")
SCOPES = ("weights", "weights+acts")
GRANULARITIES = ("per_tensor", "per_channel")


@dataclass(frozen=True)
class Setup(common.Setup):
    train: TrainConfig = recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=3.0)


@dataclass(frozen=True)
class Trial:
    """One trial: `method` "float" is the trained model; the others read its final weights."""
    setup: Setup
    seed: int = 0
    method: str = "float"
    bits: int = 0  # 0: not applicable (float); fraction bits for fixed_point
    scope: str = ""
    granularity: str = ""
    calibration: str = ""
    calib_size: int = 0
    qat: TrainConfig | None = None


@dataclass(frozen=True)
class QuantConfig(common.Config):
    setup: Setup = field(default_factory=Setup)
    bits: tuple[int, ...] = (8, 6, 4, 3, 2)
    calibrations: tuple[str, ...] = ("minmax", "percentile", "mse")
    qat_bits: tuple[int, ...] = (4, 2)
    qat: TrainConfig = recipe(optimizer="adam", lr=1e-4, batch_size=128, epochs=1.0)
    frac_bits: tuple[int, ...] = (12, 8, 6, 4, 3, 2)
    floats: tuple[str, ...] = ("float16", "bfloat16")
    calib_size: int = 2000  # training images for activation ranges and int8 calibration
    latency_batch: int = 256

    def validate(self) -> "QuantConfig":
        super().validate()
        self.qat.validate()
        for c in self.calibrations:
            check_calibration_name(c)
        for b in (*self.bits, *self.qat_bits):
            require(2 <= b <= 16, "bits", "in [2, 16]", b)
        require(self.calib_size >= 1, "calib_size", ">= 1", self.calib_size)
        return self

    def ptq_grid(self) -> list[tuple[int, str, str, str]]:
        """(bits, scope, granularity, calibration) of every PTQ trial.

        Weights only: per tensor and per channel (weights use their own min / max). Weights +
        activations: per-tensor weights with minmax activations, and per-channel weights with
        every calibration method for the activations.
        """
        grid = []
        for b in self.bits:
            grid += [(b, "weights", g, "minmax") for g in GRANULARITIES]
            grid.append((b, "weights+acts", "per_tensor", "minmax"))
            grid += [(b, "weights+acts", "per_channel", c) for c in self.calibrations]
        return grid


def for_scale(scale: str, model: str = "lenet_300_100") -> QuantConfig:
    if scale == "smoke":
        setup = Setup(model=model, **SMOKE_DATA,
                      train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=128,
                                        iterations=60, eval_every=30))
        return QuantConfig(setup=setup, seeds=2,
                           qat=TrainConfig(optimizer="adam", lr=1e-4, batch_size=128,
                                           iterations=15, eval_every=15))
    if scale == "default":
        return QuantConfig(setup=Setup(model=model), seeds=2)
    setup = Setup(dataset="cifar10", model=model,
                  train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, epochs=30.0))
    return QuantConfig(setup=setup, seeds=3,
                       qat=TrainConfig(optimizer="adam", lr=1e-4, batch_size=128, epochs=3.0))
