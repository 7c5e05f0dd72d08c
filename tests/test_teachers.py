"""The shared teacher cache: trained once per spec, then loaded, never retrained."""
from __future__ import annotations

import torch

from conftest import tiny_splits
from experiments.teachers import TeacherSpec, teacher, teacher_run
from lib.train import TrainConfig, evaluate


def test_teacher_is_trained_once_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    data = tiny_splits(n_train=300, n_test=100, val=50)
    spec = TeacherSpec(dataset="synthetic", model="vgg_small",
                       train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=6,
                                         channels_last=True))
    first, result = teacher(spec, data, "smoke", torch.device("cpu"))
    assert not first.training
    run = teacher_run(spec, "smoke")
    assert run.done and run.path("final.pt").exists()
    assert run.dir.parent == tmp_path / "runs" / "smoke" / "teachers"
    stamp = run.path("final.pt").stat().st_mtime_ns
    second, again = teacher(spec, data, "smoke", torch.device("cpu"))
    assert run.path("final.pt").stat().st_mtime_ns == stamp  # not retrained
    assert again == result
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert evaluate(second, data.test_x, data.test_y)[1] == result["final_test_acc"]
    other = teacher_run(TeacherSpec(dataset="synthetic", model="vgg_small", seed=1,
                                    train=spec.train), "smoke")
    assert other.dir != run.dir
