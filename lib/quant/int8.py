"""Real int8 execution through torch.ao.quantization's FX graph mode (x86 / fbgemm backend).

`to_int8(model, calib_x)` = copy → check → `prepare_fx` with `get_default_qconfig_mapping("x86")`
(per-channel symmetric int8 weights, histogram-calibrated uint8 activations with reduce_range;
Conv2d(+BatchNorm2d)(+ReLU) and Linear(+ReLU) fused wherever the traced graph has them) → run
the calibration sample → `convert_fx`. Input and output stay float; the float model is not
changed.

Why graph mode: the forward is traced (torch.fx), so operations outside modules are quantized
too. A ResNet's residual `relu(bn2(conv2(y)) + shortcut(x))` becomes one int8 `add_relu`, the
`torch.cat` / channel shuffle of ShuffleNet and torchvision's ReLU6 run on int8 tensors, and
no model needs hand-written `FloatFunctional`s. (The eager flow this module used before converted
modules only: a ResNet passed its check and then failed on its first forward with
`NotImplementedError` for `aten::add` on int8 tensors.) Every family the lab registers converts
and runs (tests/test_quant.py::test_int8_on_every_family).

Refused in one line before converting: a layer with parameters or a torch.nn layer that has no
int8 kernel here (e.g. GELU, LSTM, a QuantLinear subclass), and a forward torch.fx cannot trace
(data-dependent control flow).

Why not torchao's PT2E flow, which torch 2.14 names as the successor (issue #14): tried with
torchao 0.18.0 on this CPU (`scripts/int8_pt2e_check.py`, results/quantization/pt2e_check.md:
ResNet-8 on Fashion-MNIST, the same float model and calibration images). It works with torch
2.14 (`torch.export` → `prepare_pt2e` with `X86InductorQuantizer` → `convert_pt2e`; the batch
dimension must be exported as dynamic) and its accuracy matches ours (77.20% vs 77.15%, float
76.90%), but it is not as fast: as exported it runs quantize/dequantize around float kernels
(828 ms a batch of 256 vs 150 ms for this module's int8 model, float 290 ms), and even compiled
by inductor (24 s of compilation; a C++ compiler needed) it took 465 ms; its saved model is
the float one's size (406 kB vs 105 kB), since the weights stay float until lowering. So the FX
flow stays: same accuracy, 3x faster here, 4x smaller on disk, no new dependency.
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import Iterator

import torch
import torch.fx
from torch import Tensor, nn

from lib.metrics import latency_ms  # noqa: F401 - int8 vs float latency uses the shared timer

SUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.BatchNorm2d, nn.Dropout, nn.Identity,
)


def check_int8_supported(model: nn.Module) -> None:
    """One-line ValueError naming the first layer int8 cannot convert, or saying that the
    forward cannot be traced. Containers and parameter-free modules of the model's own (e.g. a
    shortcut that pads) are traced through; torch.nn layers must be in SUPPORTED."""
    allowed = ", ".join(t.__name__ for t in SUPPORTED)
    for name, mod in model.named_modules():
        if type(mod) in SUPPORTED:  # exact: a subclass (e.g. QuantLinear) has no int8 twin
            continue
        owns_tensors = any(True for _ in mod.parameters(recurse=False))
        builtin_leaf = (type(mod).__module__.startswith("torch.nn.modules")
                        and not isinstance(mod, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))
        if owns_tensors or builtin_leaf:
            raise ValueError(f"int8: unsupported layer {name or '<model>'} ({type(mod).__name__}); "
                             f"supported: {allowed} (and containers of them)")
    try:
        torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the same refusal
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"int8: torch.fx cannot trace {type(model).__name__}'s forward "
                         f"({type(e).__name__}: {first[:120]}); graph-mode int8 needs a traceable "
                         f"forward") from None


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
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    check_int8_supported(model)
    _set_x86_engine()
    x = calib_x.cpu().float()
    with warnings.catch_warnings():  # torch.ao announces its move to torchao
        warnings.simplefilter("ignore")
        fp = copy.deepcopy(model).cpu().float().eval()
        q = prepare_fx(fp, get_default_qconfig_mapping("x86"), (x[:1],))
        for xb in _batches(x, chunk):
            q(xb)
        q = convert_fx(q)
    return q.eval()


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the on-disk size, packed int8 weights included."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def est_size_bytes(model: nn.Module, weight_bits: int, other_bits: int = 32) -> float:
    """Storage estimate: weight matrices / kernels at `weight_bits`, the rest (biases, BN) at
    `other_bits`; quantization scales and BN running statistics are left out."""
    bits = sum(p.numel() * (weight_bits if p.dim() >= 2 else other_bits) for p in model.parameters())
    return bits / 8


def int8_weight_bytes(q: nn.Module) -> int:
    """Bytes of the int8 weight tensors of a model converted by `to_int8` (one byte per weight;
    scales, zero points and float biases left out)."""
    return sum(m.weight().numel() for m in q.modules()
               if callable(getattr(m, "weight", None)) and hasattr(m, "_packed_params"))
