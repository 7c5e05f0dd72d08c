"""Real int8 execution through torch.ao.quantization eager mode (x86 / fbgemm backend).

`to_int8(model, calib_x)` = copy → check layers → wrap in QuantStub / DeQuantStub → fuse
Conv2d(+BatchNorm2d)(+ReLU) and Linear+ReLU runs inside nn.Sequential containers → prepare with
`get_default_qconfig("x86")` (per-channel symmetric int8 weights, histogram-calibrated uint8
activations with reduce_range) → run the calibration sample → convert. The float model is not
changed. Only modules are checked: a model whose forward uses functional ops on tensors
(e.g. residual `x + y`) needs FloatFunctional and is not handled here.
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import Iterator

import torch
from torch import Tensor, nn

from lib.metrics import latency_ms  # noqa: F401 - int8 vs float latency uses the shared timer

SUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.BatchNorm2d, nn.Dropout, nn.Identity,
)
FUSE_PATTERNS: tuple[tuple[type[nn.Module], ...], ...] = (  # longest first
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
    (nn.Linear, nn.ReLU),
)


class Int8Wrapper(nn.Module):
    """dequant(model(quant(x))): marks where tensors enter and leave the int8 domain."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.model = model
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self.model(self.quant(x)))


def check_int8_supported(model: nn.Module) -> None:
    """One-line ValueError naming the first module eager-mode int8 cannot convert."""
    allowed = ", ".join(t.__name__ for t in SUPPORTED)
    for name, mod in model.named_modules():
        if type(mod) in SUPPORTED:  # exact: a subclass (e.g. QuantLinear) has no int8 twin
            continue
        has_children = next(mod.children(), None) is not None
        owns_tensors = any(True for _ in mod.parameters(recurse=False))
        if has_children and not owns_tensors:  # a container: its children are checked
            continue
        raise ValueError(f"int8: unsupported layer {name or '<model>'} ({type(mod).__name__}); "
                         f"supported: {allowed} (and containers of them)")


def fusion_groups(model: nn.Module, prefix: str = "") -> list[list[str]]:
    """Names of consecutive Conv2d(+BN)(+ReLU) / Linear+ReLU runs inside nn.Sequentials."""
    groups: list[list[str]] = []
    for seq_name, seq in model.named_modules(prefix=prefix.rstrip(".")):
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.named_children())
        i = 0
        while i < len(kids):
            for pattern in FUSE_PATTERNS:
                run = kids[i:i + len(pattern)]
                if len(run) == len(pattern) and all(type(m) is t for (_, m), t in zip(run, pattern)):
                    groups.append([f"{seq_name}.{n}" if seq_name else n for n, _ in run])
                    i += len(pattern) - 1
                    break
            i += 1
    return groups


def _set_x86_engine() -> None:
    """int8 kernels run on the global quantized engine; use x86 (fbgemm) when it is not set."""
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        if "x86" not in engines:
            raise ValueError(f"int8: the x86 quantized engine is unavailable (have {engines})")
        torch.backends.quantized.engine = "x86"


def _batches(x: Tensor, chunk: int) -> Iterator[Tensor]:
    for i in range(0, len(x), chunk):
        yield x[i:i + chunk]


@torch.no_grad()
def to_int8(model: nn.Module, calib_x: Tensor, chunk: int = 256) -> nn.Module:
    """An int8 copy of `model` (CPU, eval mode) calibrated on `calib_x`; input and output float.

    Sets the global quantized engine to x86 if another one is active.
    """
    check_int8_supported(model)
    _set_x86_engine()
    with warnings.catch_warnings():  # torch.ao announces its move to torchao
        warnings.simplefilter("ignore")
        q = Int8Wrapper(copy.deepcopy(model).cpu().float()).eval()
        groups = fusion_groups(q.model, prefix="model")
        if groups:
            torch.ao.quantization.fuse_modules(q, groups, inplace=True)
        q.qconfig = torch.ao.quantization.get_default_qconfig("x86")
        torch.ao.quantization.prepare(q, inplace=True)
        for xb in _batches(calib_x.cpu().float(), chunk):
            q(xb)
        torch.ao.quantization.convert(q, inplace=True)
    return q


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the on-disk size, packed int8 weights included."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
