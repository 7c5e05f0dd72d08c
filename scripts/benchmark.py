"""Speed figures for the README (not a test: timings never gate CI).

    python scripts/benchmark.py

1. LeNet-300-100 training throughput on Fashion-MNIST (Adam, batch 60, masks applied every step
   as in IMP), images per second, measured inside the lab's training loop.
2. Wall time of a small IMP job run as a user would, start-up included: 3 levels (dense + 2
   pruning rounds) x 2 epochs at batch 128, SGD lr 0.1, in a fresh runs folder.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.common import machine  # noqa: E402
from lib import data, models  # noqa: E402
from lib.prune.mask import Mask  # noqa: E402
from lib.train import TrainConfig, train  # noqa: E402


def throughput(batch_size: int, iterations: int = 6000) -> float:
    splits = data.load("fashion_mnist")
    torch.manual_seed(0)
    model = models.build("lenet_300_100", splits.input_shape, splits.num_classes)
    cfg = TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=batch_size, iterations=iterations,
                      eval_every=iterations)
    res = train(model, splits, cfg, seed=0, hooks=[Mask.ones(model).hook(model)])
    return res.images_per_s


def imp_job() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LAB_RUNS_DIR": f"{tmp}/runs", "LAB_RESULTS_DIR": f"{tmp}/results",
               "WANDB_DIR": tmp, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.lottery_ticket", "--scale", "default",
                        "--levels", "2", "--seeds", "1", "--variants", "ticket", "--optimizer",
                        "sgd", "--lr", "0.1", "--batch-size", "128", "--epochs", "2"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


if __name__ == "__main__":
    print(f"machine: {machine()}")
    for bs in (60, 128):
        print(f"LeNet-300-100 training, batch {bs}: {throughput(bs):,.0f} images/s")
    print(f"IMP job, 3 levels x 2 epochs, batch 128, SGD 0.1 (wandb offline): {imp_job():.2f} s wall")
