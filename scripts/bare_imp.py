"""The benchmark's IMP job as a bare PyTorch script, no lab code: what `make benchmark` times
`python -m experiments.lottery_ticket` against, start-up included. LeNet-300-100 on
Fashion-MNIST (5,000 validation images carved from train), SGD, evaluation on validation and
test at the start and after every epoch; after each level the 20% (output layer: 10%) smallest
surviving weights of each layer are pruned and the survivors rewound to their init. The data
is read from $FASHION_DIR (default: the Debian package's folder)."""
import argparse
import gzip
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

p = argparse.ArgumentParser()
for flag, kind, default in [("--levels", int, 2), ("--epochs", int, 2), ("--batch-size", int, 128),
                            ("--lr", float, 0.1), ("--train-limit", int, 0)]:
    p.add_argument(flag, type=kind, default=default)
a = p.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"


def idx(name: str, offset: int) -> torch.Tensor:
    raw = gzip.open(os.environ.get("FASHION_DIR", "/usr/share/datasets/fashion-mnist") + f"/{name}-ubyte.gz").read()
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=offset).copy()).to(dev)


x, y = idx("train-images-idx3", 16).view(-1, 784).float() / 255, idx("train-labels-idx1", 8).long()
tx, ty = idx("t10k-images-idx3", 16).view(-1, 784).float() / 255, idx("t10k-labels-idx1", 8).long()
order = torch.from_numpy(np.random.default_rng(0).permutation(len(x))).to(dev)
vx, vy, x, y = x[order[:5000]], y[order[:5000]], x[order[5000:]], y[order[5000:]]
x, y = (x[:a.train_limit], y[:a.train_limit]) if a.train_limit else (x, y)
mean, std = x.mean(), x.std()
x, vx, tx = (x - mean) / std, (vx - mean) / std, (tx - mean) / std
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                      nn.Linear(100, 10)).to(dev)
init = {k: v.clone() for k, v in model.state_dict().items()}
rates = {"0.weight": 0.2, "2.weight": 0.2, "4.weight": 0.1}
masks = {n: torch.ones_like(w) for n, w in model.named_parameters() if n in rates}


@torch.no_grad()
def apply_masks() -> None:
    for n, w in model.named_parameters():
        if n in masks:
            w.mul_(masks[n])


@torch.no_grad()
def evaluate() -> list[float]:
    return [v for ex, ey in ((vx, vy), (tx, ty)) for logits in [model(ex)]
            for v in (F.cross_entropy(logits, ey).item(), (logits.argmax(1) == ey).float().mean().item())]


for level in range(a.levels + 1):
    model.load_state_dict(init)
    apply_masks()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    evaluate()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x), device=dev)
        for i in range(len(x) // a.batch_size):
            b = perm[i * a.batch_size:(i + 1) * a.batch_size]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            apply_masks()
        print(f"level {level} epoch {epoch}: val loss/acc, test loss/acc {evaluate()}")
    with torch.no_grad():  # prune the smallest surviving weights of each layer
        for n, w in model.named_parameters():
            if n in masks:
                alive = w[masks[n].bool()].abs()
                masks[n] *= w.abs() > alive.kthvalue(int(rates[n] * alive.numel())).values
