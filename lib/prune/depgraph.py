"""Physical channel pruning of any traceable CNN through torch-pruning's dependency graph.

`lib.prune.surgery` knows our four families by hand. Models it does not cover (torchvision's
ResNet-101, MobileNetV2, ShuffleNetV2, ...) are cut with DepGraph (Fang et al. CVPR 2023,
the `torch-pruning` package): it traces one forward pass, and removing output channels of one
layer removes, as one group, everything tied to them: the BatchNorm after it, the depthwise
conv and BN that follow it channel for channel, and the input channels of every layer that
reads them.

Same interface as `surgery.prune_channels`: `keep` maps a layer name to the output-channel
indices it keeps, and the result is a pruned copy. The prunable layers (`prunable_layers`) are
chosen with surgery's residual-safe rule: a Conv2d / Linear whose group cuts no other
full (non-depthwise) layer's outputs, and not the classifier. So a residual block's inner
widths are prunable, and the channels a residual sum ties across a stage are not, as in
surgery; on the models both handle, the two choose the same layers and give the same outputs
(tests/test_depgraph.py).

`prune_structured` scores and cuts in one call with the weight criteria of
`lib.prune.structured` (the compression pipeline's path for torchvision's MobileNetV2);
`save_pruned` / `load_pruned` store a pruned registry model as its widths and weights.
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lib.prune.structured import IMPORTANCE, LayerView, select_by_ratio
from lib.runs import atomic_torch_save

FULL = (nn.Conv2d, nn.Linear)


def _graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    p = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
    was = model.training
    model.eval()  # tracing must not move BatchNorm statistics
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=x)
    finally:
        model.train(was)


def _out_handler(m: nn.Module):
    return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels


def _is_full(m: nn.Module) -> bool:
    """A Conv2d that is not depthwise/grouped, or a Linear."""
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def _cut_outputs(group) -> set[nn.Module]:
    """The full layers whose output channels `group` removes."""
    return {it.dep.target.module for it in group
            if getattr(it.dep.handler, "__name__", "") == "prune_out_channels"
            and _is_full(it.dep.target.module)}


def prunable_layers(model: nn.Module, input_shape: Sequence[int],
                    graph: tp.DependencyGraph | None = None) -> list[str]:
    """Names of the layers whose output channels can go alone (see the module docstring)."""
    graph = graph or _graph(model, input_shape)
    layers = [(n, m) for n, m in model.named_modules() if _is_full(m)]
    names = []
    for name, m in layers[:-1]:  # the last one is the classifier: its outputs are the classes
        group = graph.get_pruning_group(m, _out_handler(m), idxs=[0])
        if _cut_outputs(group) == {m}:
            names.append(name)
    return names


def prune_channels(model: nn.Module, keep: Mapping[str, Sequence[int] | Tensor],
                   input_shape: Sequence[int]) -> nn.Module:
    """A smaller copy of `model` keeping only output channels `keep[layer]` of each named layer
    (and everything tied to them). One-line ValueError for a layer that is not prunable alone."""
    new = copy.deepcopy(model)
    graph = _graph(new, input_shape)
    allowed = set(prunable_layers(new, input_shape, graph))
    mods = dict(new.named_modules())
    plans = []
    for name, idx in keep.items():
        if name not in allowed:
            raise ValueError(f"keep[{name!r}]: not a layer that can be pruned alone, choose from "
                             f"{', '.join(sorted(allowed))}")
        m = mods[name]
        n = m.weight.shape[0]
        kept = torch.as_tensor(idx, dtype=torch.long).flatten().unique().tolist()
        if not kept or kept[0] < 0 or kept[-1] >= n or len(kept) != len(idx):
            raise ValueError(f"keep[{name!r}]: indices must be distinct, in [0, {n}), at least one")
        plans.append((m, sorted(set(range(n)) - set(kept))))
    for m, drop in plans:  # each prunable layer's group is its own: indices stay valid
        if drop:
            graph.get_pruning_group(m, _out_handler(m), idxs=drop).prune()
    return new


# criteria that score a layer from its own weights (bn_gamma and apoz need surgery's map from a
# layer to the BatchNorm / activation after it)
WEIGHT_CRITERIA = ("l1", "l2", "fpgm", "random")


def check_criterion(name: str, field: str = "criterion") -> None:
    """One-line error for a criterion DepGraph pruning cannot score."""
    if name not in WEIGHT_CRITERIA:
        raise ValueError(f"{field}: '{name}' is not available for models pruned through DepGraph, "
                         f"choose from {', '.join(WEIGHT_CRITERIA)}")


def prune_structured(model: nn.Module, criterion: str, ratio: float, input_shape: Sequence[int],
                     seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    """Drop `ratio` of the output channels of every prunable layer, lowest `criterion` score
    first (structured.IMPORTANCE, weight criteria only); the pruned copy and the kept indices."""
    check_criterion(criterion)
    mods, g = dict(model.named_modules()), torch.Generator().manual_seed(seed)
    scores = {n: IMPORTANCE[criterion](LayerView(n, mods[n].weight.detach(), None, None, g)).float().cpu()
              for n in prunable_layers(model, input_shape)}
    keep = select_by_ratio(scores, ratio)
    return prune_channels(model, keep, input_shape), keep


def save_pruned(model: nn.Module, path, name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """Write registry model `name`'s widths after pruning and the weights, atomically (the
    DepGraph counterpart of surgery.save_pruned)."""
    mods = dict(model.named_modules())
    widths = {n: mods[n].weight.shape[0] for n in prunable_layers(model, input_shape)}
    atomic_torch_save({"model": name, "input_shape": list(input_shape), "num_classes": num_classes,
                       "widths": widths, "state_dict": model.state_dict()}, path)


def load_pruned(path, map_location: str = "cpu") -> nn.Module:
    """The model written by `save_pruned`: built from the registry, cut to its widths (which
    channels go does not matter, the weights are loaded after), weights loaded."""
    from lib import models

    state = torch.load(path, map_location="cpu", weights_only=True)
    shape = state["input_shape"]
    model = models.build(state["model"], shape, state["num_classes"])
    model = prune_channels(model, {n: list(range(w)) for n, w in state["widths"].items()}, shape)
    model.load_state_dict(state["state_dict"])
    return model.to(map_location)
