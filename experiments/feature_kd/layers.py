"""Which layers to distil: each model's stage outputs, paired between student and teacher.

A *stage output* is the last module (in forward order) whose output has a given spatial size:
the ReLU before each max-pool of a VGG, `layer1`..`layer3` of a CIFAR ResNet. Student and teacher
stages are paired by equal spatial size (the "matching stages" of Attention Transfer), so no
pooling is needed; a student stage with no teacher stage of its size is left out. Each method
reads its own pairs (`Pairs`):
- FitNet: one pair, the middle one (the paper's hint is the teacher's middle layer,
  RepDistiller's `hint_layer=2` of a ResNet is `layer2`);
- AT: the pairs whose student side is at least `at_min_depth` convolutions deep. A stage one
  conv deep is a fixed bank of filters on the pixels, and its map would be asked to match a
  teacher stage several convs and a residual deep; from two convs on, the depths compare;
- FSP: every pair, as consecutive layers (the flow from one stage's output to the next).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.distill.fitnet import conv_regressor_fits


@torch.no_grad()
def stage_outputs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[tuple[int, int], tuple[str, tuple]]:
    """{(H, W): (name of the last module with that output size, its output shape (C, H, W))}.

    Found with one forward pass of a 2-image batch through a eval-mode forward; the
    model's mode is restored. Only 4-D outputs larger than 1x1 count (a globally pooled map has
    no spatial attention); the model itself is skipped.
    """
    found: dict[tuple[int, int], tuple[str, tuple]] = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
                size = tuple(output.shape[2:])
                found.pop(size, None)  # re-insert: dict order = order of each size's last module
                found[size] = (name, tuple(output.shape[1:]))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found


def stage_pairs(student: nn.Module, teacher: nn.Module,
                input_shape: tuple[int, ...]) -> list[tuple[str, str]]:
    """[(student layer, teacher layer)] of the stages with equal spatial size, in forward order.

    Raises a one-line ValueError when the two models share no feature-map size.
    """
    s, t = stage_outputs(student, input_shape), stage_outputs(teacher, input_shape)
    pairs = [(s[size][0], t[size][0]) for size in s if size in t]
    if not pairs:
        raise ValueError(f"layers: student and teacher share no feature-map size (student "
                         f"{sorted(s)}, teacher {sorted(t)}); both need conv stages")
    return pairs


def hint_pair(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """FitNet's single (guided, hint) pair: the middle of the matched stages."""
    return pairs[len(pairs) // 2]


@torch.no_grad()
def modules_up_to(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> set[str]:
    """Names of the modules whose forward has finished when `layer`'s output exists: the part
    of the network that computes it (FitNet's "lower layers", trained in stage 1)."""
    done: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: done.append(n))
               for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if layer not in done:
        raise ValueError(f"layer: '{layer}' is not run by {type(model).__name__}.forward")
    return set(done[:done.index(layer) + 1])  # a container finishes after its children


def conv_depth(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> int:
    """How many convolutions have run when `layer`'s output exists (a ResNet's 1×1 shortcut
    convs count too)."""
    modules = dict(model.named_modules())
    return sum(isinstance(modules[n], nn.Conv2d) for n in modules_up_to(model, layer, input_shape))


@dataclass(frozen=True)
class Pairs:
    """The (student layer, teacher layer) pairs each method reads, and every stage's shape."""

    stages: tuple[tuple[str, str], ...]  # every stage pair of equal spatial size, in forward order
    attention: tuple[tuple[str, str], ...]  # AT's: the student side deep enough
    shapes: dict[str, tuple[int, ...]]  # (C, H, W) of every stage output, student's and teacher's

    @property
    def hint(self) -> tuple[str, str]:
        """FitNet's single (guided, hint) pair: the middle of the matched stages."""
        return hint_pair(list(self.stages))

    @property
    def fsp(self) -> tuple[tuple[str, str], ...]:
        return self.stages

    def regressor(self, wanted: str) -> str:
        """FitNet's W_r: the paper's "conv" where the guided map is at least as large as the
        hint map, else "1x1" (with pooling)."""
        s, t = self.hint
        fits = conv_regressor_fits(self.shapes[s][1:], self.shapes[t][1:])
        return "conv" if wanted == "conv" and fits else "1x1"


def find_pairs(student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...],
               at_min_depth: int = 1) -> Pairs:
    """Every method's layer pairs for this student and teacher; a one-line ValueError when they
    share no stage size, or when no stage pair is deep enough for AT."""
    stages = stage_pairs(student, teacher, input_shape)
    attention = [(s, t) for s, t in stages if conv_depth(student, s, input_shape) >= at_min_depth]
    if not attention:
        raise ValueError(f"at_min_depth: no student stage is {at_min_depth} convs deep "
                         f"(stages {[s for s, _ in stages]})")
    shapes = {name: shape for net in (student, teacher)
              for name, shape in stage_outputs(net, input_shape).values()}
    return Pairs(tuple(stages), tuple(attention), shapes)


@dataclass
class Produced:
    """What the run hands the report: one row per trial (the teacher's first), the layer pairs,
    and the loss balance measured on the untrained students (one row per seed)."""
    rows: list[dict]
    pairs: Pairs
    balance: list[dict]
