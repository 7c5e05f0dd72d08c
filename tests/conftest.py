"""Test isolation: every test session writes runs, results and wandb files under a temp dir."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def isolated_outputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    env = {"LAB_RUNS_DIR": str(base / "runs"), "LAB_RESULTS_DIR": str(base / "results"),
           "WANDB_DIR": str(base), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           # a checkpoint at every evaluation: the resume tests kill runs between evaluations
           "LAB_CHECKPOINT_EVERY_S": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    tiny batches run faster on one thread, and far faster when the CPU is shared."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_splits(n_train: int = 600, n_test: int = 200, shape=(1, 28, 28), val: int = 100):
    """Synthetic data small enough for unit tests."""
    from lib import data

    raw = data.raw_synthetic(n_train=n_train, n_test=n_test, shape=shape)
    orig = data.DATASETS["synthetic"]
    data.DATASETS["synthetic"] = lambda d, dl: raw
    try:
        return data.load("synthetic", val_size=val)
    finally:
        data.DATASETS["synthetic"] = orig


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A DATA_DIR holding small synthetic CIFAR-10, CIFAR-100 and MNIST in torchvision's exact
    on-disk layouts (tests/synthetic_data.py): 600 training and 200 test images each."""
    from synthetic_data import write_all

    return write_all(tmp_path_factory.mktemp("data"))
