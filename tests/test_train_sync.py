"""The training loops read nothing back from the device between evaluations (no host sync per
step: on a GPU each read would stall the queue), yet still find the step a loss diverged at."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_splits
from lib import models
from lib.pack import PackedNet
from lib.packed_train import train_packed
from lib.train import TrainConfig, first_non_finite, prepare_device, train

pytestmark = pytest.mark.usefixtures("one_thread")
READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.fixture(scope="module")
def data():
    return tiny_splits(n_train=400, n_test=100, val=50)


def count_reads(monkeypatch) -> list[str]:
    """Every host read of a tensor's value from now on, by method name."""
    reads: list[str] = []
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **kw):
            reads.append(_name)
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def build(seed: int):
    torch.manual_seed(seed)
    return models.build("lenet_300_100", (1, 28, 28), 10)


@pytest.mark.parametrize("packed", [False, True], ids=["train", "train_packed"])
def test_reads_do_not_grow_with_steps(data, monkeypatch, packed):
    counts = []
    for steps in (5, 25):  # the same two evaluations (start and end), 5x the steps
        cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=16, iterations=steps,
                          eval_every=steps, augment=True)
        reads = count_reads(monkeypatch)
        if packed:
            train_packed(PackedNet([build(0), build(1)], data.input_shape), data, cfg, seeds=[0, 1])
        else:
            train(build(0), data, cfg, seed=0)
        counts.append(len(reads))
        monkeypatch.undo()
    assert counts[0] == counts[1], counts


def test_a_diverged_trial_is_back_at_its_last_evaluation(data):
    cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=16, iterations=30, eval_every=10)
    calls = []

    def nan_from_17(x, y, logits):
        calls.append(0)
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) > 17 else loss

    model = build(0)
    res = train(model, data, cfg, seed=0, criterion=nan_from_17)
    assert res.diverged_step == 17 and [r["step"] for r in res.history] == [0, 10]
    clean = build(0)
    train(clean, data, TrainConfig(optimizer="adam", lr=1e-3, batch_size=16, iterations=10), seed=0)
    for name, t in clean.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], t, rtol=0, atol=0, msg=name)


def test_first_non_finite():
    steps = [torch.tensor([1.0, 2.0]), torch.tensor([float("inf"), 1.0]), torch.tensor([float("nan"), 3.0])]
    assert first_non_finite(steps) == [1, None]
    assert first_non_finite([torch.tensor(1.0), torch.tensor(float("nan"))]) == [1]


def test_prepare_device_turns_cudnn_benchmark_on_for_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    prepare_device(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    prepare_device(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


def test_device_cuda_without_cuda_is_one_line(monkeypatch, capsys):
    from experiments.lottery_ticket.__main__ import EXPERIMENT

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        EXPERIMENT.parse_args(["--scale", "smoke", "--device", "cuda"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: device: cuda requested but no CUDA device is available")
