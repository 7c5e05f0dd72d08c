"""Learned supermasks (Zhou et al. 2019, Section 5): train a mask, never the weights.

Each prunable weight w (frozen: its init, or a signed constant) gets a trainable logit m. In
training the forward pass uses w * b with b ~ Bernoulli(sigmoid(m)) and a straight-through
gradient (b + p - p.detach(), p = sigmoid(m)), so d loss / d m flows through p. Evaluation uses
either the thresholded mask (p > 0.5) or a sampled one. Sampling is seeded by a step counter
kept in the module's state, so a resumed run draws the same masks.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lib.data import Splits
from lib.prune.mask import prunable_layers
from lib.train import Hook, evaluate

EVAL_MODES = ("threshold", "sampled")


class SupermaskNet(nn.Module):
    """Wraps `model`: prunable weights become frozen buffers, each with a trainable logit."""

    def __init__(self, model: nn.Module, weights: dict[str, Tensor], seed: int,
                 init_logit: float = 0.0):
        super().__init__()
        self.model = model
        self.names = list(prunable_layers(model))
        self.keys = [n.replace(".", "__") for n in self.names]
        for p in model.parameters():
            p.requires_grad_(False)  # nothing but the logits is trained
        self.logits = nn.ParameterDict({k: nn.Parameter(torch.full_like(weights[n], init_logit))
                                        for n, k in zip(self.names, self.keys)})
        for n, k in zip(self.names, self.keys):
            self.register_buffer(f"frozen__{k}", weights[n].detach().clone())
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.seed, self.eval_mode = seed, "threshold"

    def probabilities(self) -> dict[str, Tensor]:
        return {n: torch.sigmoid(self.logits[k]) for n, k in zip(self.names, self.keys)}

    def masks(self, mode: str) -> dict[str, Tensor]:
        """Binary masks; in training mode with a straight-through gradient to the logits."""
        probs = self.probabilities()
        if mode == "threshold":
            return {n: (p > 0.5).to(p) for n, p in probs.items()}
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.draws))
        self.draws += 1
        out = {}
        for n, p in probs.items():
            b = (torch.rand(p.shape, generator=g).to(p.device) < p).to(p)
            out[n] = b + p - p.detach() if self.training else b
        return out

    def forward(self, x: Tensor) -> Tensor:
        masks = self.masks("sampled" if self.training else self.eval_mode)
        weights = {n: getattr(self, f"frozen__{k}") * masks[n] for n, k in zip(self.names, self.keys)}
        return functional_call(self.model, weights, (x,))

    def density(self) -> float:
        """Fraction of weights the thresholded mask keeps."""
        probs = self.probabilities()
        return float(sum((p > 0.5).sum() for p in probs.values()) / sum(p.numel() for p in probs.values()))


class SampledAccuracy(Hook):
    """Adds the test accuracy of a freshly sampled mask (mean of `samples`) to every eval row."""

    def __init__(self, samples: int = 3):
        self.samples = samples

    def metrics(self, model: SupermaskNet, data: Splits) -> dict:
        model.eval_mode = "sampled"
        accs = [evaluate(model, data.test_x, data.test_y)[1] for _ in range(self.samples)]
        model.eval_mode = "threshold"
        return {"test_acc_sampled": sum(accs) / len(accs), "mask_density": model.density()}
