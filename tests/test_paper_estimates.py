"""scripts/paper_estimates.py: the paper presets' work and the estimate arithmetic, against
hand-computed cases (no timing: the rates are given)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import paper_estimates as pe  # noqa: E402


def test_lottery_ticket_work_is_the_paper_protocol():
    """Frankle & Carbin's LeNet protocol: 5 seeds x (the dense net + 20 levels x ticket, reinit)
    = 205 trainings of 50,000 iterations of batch 60."""
    [j] = pe.work("lottery_ticket", pe.paper_config("lottery_ticket"))
    assert (j.model, j.count, j.batch, j.packed) == ("lenet_300_100", 205, 60, True)
    assert j.images == 205 * 50_000 * 60


def test_compression_pipeline_work_by_hand():
    """CIFAR-10 (50,000 - 5,000 for validation): the ResNet-101 teacher's 60 epochs, then per
    seed (3) the student alone and KD for 60 epochs, the pruned fine-tuning for 20 and one
    QAT of 3 epochs; the teacher's forward pass on every distilled batch (augmented)."""
    jobs = pe.work("compression_pipeline", pe.paper_config("compression_pipeline"))
    n = 45_000
    assert [(j.model, j.teacher, j.count, j.images) for j in jobs] == [
        ("resnet101", "", 1, 60 * n), ("mobilenet_v2", "", 3, 3 * 60 * n),
        ("mobilenet_v2", "resnet101", 3, 3 * 60 * n), ("mobilenet_v2", "resnet101", 3, 3 * 20 * n),
        ("mobilenet_v2", "resnet101", 3, 3 * 3 * n)]


def test_quantization_work_by_hand():
    """The whitepaper preset on CIFAR-10 (45,000 training images): per model (MobileNet-v2,
    then MobileNet-v1) 3 seeds of 240 float epochs, then per seed QAT at 3 widths and the float
    control, 10 epochs each."""
    jobs = pe.work("quantization", pe.paper_config("quantization"))
    n = 45_000
    assert [(j.model, j.count, j.batch, j.images) for j in jobs] == [
        ("mobilenet_v2", 3, 64, 3 * 240 * n), ("mobilenet_v2", 12, 64, 12 * 10 * n),
        ("mobilenet", 3, 64, 3 * 240 * n), ("mobilenet", 12, 64, 12 * 10 * n)]


@pytest.mark.paper  # imports and configures all ten experiments
def test_every_experiment_has_work():
    for name in pe.EXPERIMENTS:
        jobs = pe.work(name, pe.paper_config(name))
        assert jobs and all(j.count > 0 and j.images > 0 for j in jobs), name


def test_seconds_add_the_online_teachers_forward_pass():
    """1,000 images at 100 images/s: 10 s; a teacher training at 300 images/s forwards at 900:
    1,000 / 900 s more."""
    rates = {"s": 100.0, "t": 300.0}

    def rate(model, dataset, batch, packed):
        return pe.Rate(rates[model], "given")

    j = pe.Job("x", "s", "cifar10", 64, 1, 1000.0)
    assert pe.seconds(j, rate) == pytest.approx(10.0)
    assert pe.seconds(pe.Job("x", "s", "cifar10", 64, 1, 1000.0, teacher="t"), rate) == pytest.approx(
        10.0 + 1000 / 900)


def test_an_unmeasured_model_is_scaled_by_macs_from_the_nearest_measured_one():
    """a: 100 MACs at 1,000 images/s, b: 10,000 MACs at 20; c (400 MACs) is nearest to a in
    MACs (4x against 25x): 1,000 x 100 / 400 = 250 images/s."""
    from lib import data

    shape = data.SHAPES["cifar10"][0]
    measured = {("a", shape, False): 1000.0, ("b", shape, False): 20.0, ("c", shape, True): 5.0}
    mac = {"a": 100, "b": 10_000, "c": 400}.__getitem__
    r = pe.scaled_rate("c", "cifar10", False, measured, lambda m, d: mac(m))
    assert (r.images_per_s, r.basis) == (pytest.approx(250.0), "scaled by MACs from a on cifar10")
    assert pe.scaled_rate("c", "cifar10", True, measured, lambda m, d: mac(m)).basis == "measured, packed"
    assert pe.scaled_rate("a", "cifar10", False, measured, lambda m, d: mac(m)).images_per_s == 1000.0
