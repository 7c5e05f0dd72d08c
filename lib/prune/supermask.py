"""Learned supermasks (Zhou et al. 2019, Section 5): train a mask, never the weights.

Each prunable weight w (frozen: its init, or a signed constant) gets a trainable logit m. In
training the forward pass uses w * b with b ~ Bernoulli(sigmoid(m)) and a straight-through
gradient (b + p - p.detach(), p = sigmoid(m)), so d loss / d m flows through p. Evaluation uses
either the thresholded mask (p > 0.5) or a sampled one. Sampling is seeded by a step counter
kept in the module's state, so a resumed run draws the same masks.

`PackedSupermask` trains K of them as one stacked model (`lib.pack.PackedNet`): each trial
keeps its own logits, frozen weights and stream of draws (the same uniforms it would draw
alone), so a packed trial gives the same result as alone, to float tolerance.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lib.data import Splits
from lib.pack import PackedNet
from lib.packed_train import evaluate_packed
from lib.prune.mask import prunable_layers
from lib.train import Hook, evaluate

EVAL_MODES = ("threshold", "sampled")
# a sampled evaluation draws one mask per chunk, so the chunk is part of the measure: 10,000
# rows, as `lib.train.evaluate` used on every device when the committed results were made
EVAL_CHUNK = 10_000


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
        uniforms = draw_uniforms(self.seed, int(self.draws), [p.shape for p in probs.values()])
        self.draws += 1
        return {n: _sample(p, u.to(p.device), self.training) for (n, p), u in zip(probs.items(), uniforms)}

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
        accs = [evaluate(model, data.test_x, data.test_y, EVAL_CHUNK)[1] for _ in range(self.samples)]
        model.eval_mode = "threshold"
        return {"test_acc_sampled": sum(accs) / len(accs), "mask_density": model.density()}


def draw_uniforms(seed: int, draw: int, shapes: list[torch.Size]) -> list[Tensor]:
    """The uniforms of a trial's `draw`-th mask sample, one tensor per layer (CPU generator,
    so the same on every device)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + draw)
    return [torch.rand(shape, generator=g) for shape in shapes]


def _sample(p: Tensor, u: Tensor, straight_through: bool) -> Tensor:
    """Bernoulli(p) from uniforms u; with a straight-through gradient to p in training."""
    b = (u < p).to(p)
    return b + p - p.detach() if straight_through else b


class PackedSupermask(nn.Module):
    """K `SupermaskNet`s of one architecture as one module, with `PackedNet`'s interface
    (`k`, `stacked` = the trainable logits (K, *shape), `state(k)`, `load_state(k, state)`,
    forward (K, B, ...) -> (K, B, classes)) and `metrics(data)`, the per-trial columns of
    `SampledAccuracy`. Trials that share a seed draw the same uniforms alone; here they are
    drawn once."""

    def __init__(self, nets: list[SupermaskNet], input_shape, samples: int = 3):
        super().__init__()
        self.k, self.template, self.samples = len(nets), nets[0], samples
        self.packed = PackedNet([n.model for n in nets], input_shape)  # PackError: train alone
        for p in self.packed.parameters():
            p.requires_grad_(False)
        self.names, self.keys = nets[0].names, nets[0].keys
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([n.logits[k].detach() for n in nets]).clone()) for k in self.keys)
        self.frozen = [torch.stack([getattr(n, f"frozen__{k}") for n in nets]) for k in self.keys]
        self.seeds = [n.seed for n in nets]
        self.draws = [int(n.draws) for n in nets]
        self.eval_mode = "threshold"

    @property
    def channels_last(self) -> bool:
        return self.packed.channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        self.packed.channels_last = value

    def masks(self, mode: str) -> list[Tensor]:
        """(K, *shape) binary masks per layer; sampled ones advance every trial's draw."""
        probs = [torch.sigmoid(p) for p in self.stacked]
        if mode == "threshold":
            return [(p > 0.5).to(p) for p in probs]
        shapes, drawn = [p.shape[1:] for p in probs], {}
        per_trial = []
        for seed, draw in zip(self.seeds, self.draws):
            if (seed, draw) not in drawn:
                drawn[seed, draw] = draw_uniforms(seed, draw, shapes)
            per_trial.append(drawn[seed, draw])
        self.draws = [d + 1 for d in self.draws]
        return [_sample(p, torch.stack([u[i] for u in per_trial]).to(p.device), self.training)
                for i, p in enumerate(probs)]

    def forward(self, x: Tensor) -> Tensor:
        masks = self.masks("sampled" if self.training else self.eval_mode)
        weights = {n: w * m for n, w, m in zip(self.names, self.frozen, masks)}
        return self.packed(x, weights)

    def state(self, k: int) -> dict[str, Tensor]:
        """Trial k's `SupermaskNet` state dict."""
        out = {f"model.{n}": t for n, t in self.packed.state(k).items()}
        for key, logit, w in zip(self.keys, self.stacked, self.frozen):
            out[f"logits.{key}"] = logit[k].detach().clone()
            out[f"frozen__{key}"] = w[k].clone()
        out["draws"] = torch.tensor(self.draws[k])
        return {n: out[n] for n in self.template.state_dict()}

    def load_state(self, k: int, state: dict[str, Tensor]) -> None:
        self.packed.load_state(k, {n[len("model."):]: t for n, t in state.items() if n.startswith("model.")})
        with torch.no_grad():
            for key, logit, w in zip(self.keys, self.stacked, self.frozen):
                logit[k].copy_(state[f"logits.{key}"])
                w[k].copy_(state[f"frozen__{key}"])
        self.draws[k] = int(state["draws"])

    @torch.no_grad()
    def metrics(self, data: Splits) -> list[dict]:
        """Per trial, `SampledAccuracy`'s columns: the mean test accuracy of `samples` sampled
        masks and the thresholded mask's density, computed as alone (`evaluate`'s chunks, one
        mask drawn per chunk)."""
        self.eval_mode = "sampled"
        runs = [evaluate_packed(self, data.test_x, data.test_y, EVAL_CHUNK)[1]
                for _ in range(self.samples)]
        accs = [sum(r[k] for r in runs) for k in range(self.k)]
        self.eval_mode = "threshold"
        probs = [torch.sigmoid(p.detach()) for p in self.stacked]
        total = sum(p[0].numel() for p in probs)
        return [{"test_acc_sampled": accs[k] / self.samples,
                 "mask_density": float(sum((p[k] > 0.5).sum() for p in probs) / total)}
                for k in range(self.k)]
