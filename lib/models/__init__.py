"""Model registry: `build(name, input_shape, num_classes)` for every registered family.

A model file registers its constructors with `@register("name")`; a constructor takes
`(input_shape, num_classes, **kwargs)` and returns an initialised `nn.Module`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Decorator adding a model constructor to the registry under `name`."""
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        MODELS[name] = fn
        return fn
    return wrap


def check_model_name(name: str) -> None:
    """One-line error for a model the registry does not know."""
    if name not in MODELS:
        raise ValueError(f"model: unknown '{name}', choose from {', '.join(sorted(MODELS))}")


def build(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Construct registered model `name` for inputs of `input_shape` (C, H, W)."""
    check_model_name(name)
    return MODELS[name](tuple(input_shape), num_classes, **kwargs)


# importing the families fills the registry
from lib.models import conv, lenet, mobilenet, resnet, shufflenet, tvision, vgg, wrn  # noqa: E402,F401
