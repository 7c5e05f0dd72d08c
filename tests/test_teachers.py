"""The shared teacher cache: trained once per spec, then loaded, never retrained; one tiny
teacher for every smoke run."""
from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch

from conftest import tiny_splits
from experiments.common import SMOKE_DATA, Setup
from experiments.teachers import TeacherSpec, teacher, teacher_run
from lib.runs import config_hash
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


def test_teacher_spec_is_a_setup_and_its_default_keeps_its_hash():
    """TeacherSpec extends the experiments' Setup without changing the committed teacher's run
    folder (results/*/default name it f11e746d548e)."""
    spec = TeacherSpec()
    assert isinstance(spec, Setup) and spec.validate() is spec
    assert config_hash(spec) == "f11e746d548e"
    assert spec.data_fields() == {"dataset": "fashion_mnist", "val_size": 5000, "train_limit": 0,
                                  "test_limit": 0}
    with pytest.raises(ValueError, match=r"^teacher.val_size: must equal the students' val_size"):
        Setup(val_size=500).check_same_data(spec, "teacher")


def test_smoke_teacher_is_tiny_and_on_the_smoke_data():
    spec = TeacherSpec.smoke()
    assert {k: getattr(spec, k) for k in SMOKE_DATA} == SMOKE_DATA
    assert (spec.train.iterations, spec.train.epochs, spec.train.eval_every) == (40, 0.0, 20)
    assert replace(spec.train, iterations=0, epochs=6.0, eval_every=0) == TeacherSpec().train
    assert TeacherSpec.smoke(seed=1).seed == 1 and TeacherSpec.smoke(seed=1).train == spec.train


@pytest.mark.parametrize("experiment", ["rkd", "compression_pipeline"])
def test_smoke_runs_share_one_teacher(experiment):
    """Every distillation experiment's smoke preset names the same teacher, so a smoke run of
    all of them trains it once."""
    config = importlib.import_module(f"experiments.{experiment}.config")
    cfg = config.for_scale("smoke")
    spec = getattr(cfg.setup, "teacher", None) or cfg.teacher
    assert teacher_run(spec, "smoke").hash == teacher_run(TeacherSpec.smoke(), "smoke").hash
    cfg.setup.check_same_data(spec, "teacher")
