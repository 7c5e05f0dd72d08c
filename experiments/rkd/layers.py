"""Where the rkd experiment reads features: the embeddings (the classifier's input, for RKD) and
the last conv block (for SP), on the student and on the teacher.

The distillation hook itself is the lab's one (`lib.distill.teacher`); what is particular to
this experiment is which layers its terms compare.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lib import models


def embedding_layer(model: nn.Module) -> str:
    """The module whose output is the classifier's input (B, D): `flatten` (VGG) or `pool` (ResNet)."""
    names = dict(model.named_modules())
    for name in ("flatten", "pool"):
        if name in names:
            return name
    raise ValueError("has no global pool to read embeddings from; use a vgg* or resnet* model")


def last_conv_layer(model: nn.Module) -> str:
    """The last convolutional block's output, before global pooling: the last ReLU of a VGG's
    `features` (pools after it are skipped), the last stage `layerN` of a ResNet."""
    names = dict(model.named_modules())
    if isinstance(names.get("features"), nn.Sequential):
        relus = [i for i, m in enumerate(names["features"]) if isinstance(m, nn.ReLU)]
        if relus:
            return f"features.{relus[-1]}"
    stages = sorted(n for n in names if n.startswith("layer") and n[5:].isdigit())
    if stages:
        return max(stages, key=lambda n: int(n[5:]))
    raise ValueError("has no conv features for SP; use a vgg* or resnet* model")


@dataclass(frozen=True)
class Layers:
    """{"logits", "embed", "conv"} -> layer name, for the student and for the teacher."""

    student: dict[str, str]
    teacher: dict[str, str]


def find_layers(student: str, teacher: str, input_shape: tuple[int, ...] = (3, 32, 32),
                num_classes: int = 10) -> Layers:
    """The feature layers of both models; a model without them is a one-line ValueError naming
    its field. Layer names do not depend on the input shape, so the command line checks them
    before any data is loaded."""
    sides = {}
    for side, field, name in (("student", "model", student), ("teacher", "teacher.model", teacher)):
        model = models.build(name, input_shape, num_classes)
        try:
            sides[side] = {"logits": "logits", "embed": embedding_layer(model),
                           "conv": last_conv_layer(model)}
        except ValueError as e:
            raise ValueError(f"{field}: {name} {e}") from None
    return Layers(**sides)
