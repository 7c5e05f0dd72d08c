"""Reading intermediate features: forward hooks on named submodules, and shape helpers."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

Features = Tensor | Sequence[Tensor]


class FeatureTap:
    """Record the outputs of named submodules at every forward pass.

    `tap = FeatureTap(model, ["features.3"])`; after `model(x)`, `tap.features["features.3"]`
    is that module's output of the last forward, still attached to the graph (run a teacher
    under `torch.no_grad()`). Use as a context manager, or call `remove()` when done.
    """

    def __init__(self, model: nn.Module, layer_names: Sequence[str]):
        modules = dict(model.named_modules())
        for name in layer_names:
            if not name or name not in modules:
                choices = ", ".join(n for n in modules if n)
                raise ValueError(f"layer: unknown '{name}' in {type(model).__name__}, choose from {choices}")
        self.layer_names = list(layer_names)
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._store(name)) for name in self.layer_names]

    def _store(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            self.features[name] = output
        return hook

    def __call__(self) -> list[Tensor]:
        """The recorded features in `layer_names` order (a list for multi-layer losses)."""
        missing = [n for n in self.layer_names if n not in self.features]
        if missing:
            raise RuntimeError(f"FeatureTap: no forward pass has reached {', '.join(missing)} yet")
        return [self.features[n] for n in self.layer_names]

    def remove(self) -> None:
        """Remove the hooks; recorded features stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def match_spatial(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool whichever of two (B, C, H, W) maps is larger to the smaller H, W."""
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    if tuple(a.shape[2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


def feature_pairs(student: Features, teacher: Features, loss: str) -> list[tuple[Tensor, Tensor]]:
    """Zip one feature (or a list of them) of student and teacher into layer pairs."""
    s = [student] if isinstance(student, Tensor) else list(student)
    t = [teacher] if isinstance(teacher, Tensor) else list(teacher)
    if len(s) != len(t) or not s:
        raise ValueError(f"{loss}: needs as many student as teacher features, got {len(s)} and {len(t)}")
    return list(zip(s, t))
