"""Model size and speed metrics: parameter counts, non-zeros, bytes, MACs and FLOPs, CPU latency."""
from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor, nn


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what a sparse format would store)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def size_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers as stored densely."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one input of `input_shape` (C, H, W).

    Counts Conv2d (output elements × in_channels/groups × kh × kw) and Linear (in × out per
    output row); BatchNorm, activations, pooling and biases are left out, as in the papers.
    """
    total = 0

    def hook(m: nn.Module, inputs, out) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
        with torch.inference_mode():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass on one input, counted by torch itself
    (`torch.utils.flop_counter.FlopCounterMode`, at the aten level).

    It sees every convolution and matrix product wherever it is computed: functional calls
    outside modules (a packed conv, an attention's `q @ k.T`, `F.scaled_dot_product_attention`)
    that `count_macs`'s module hooks miss. A multiply-accumulate is 2 FLOPs, so on models made of
    Conv2d and Linear modules `count_flops == 2 * count_macs` (biases, BN and activations are
    left out by both).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _median_seconds(model: nn.Module, x: Tensor, repeats: int, warmup: int = 2) -> float:
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def latency_ms(model: nn.Module, x: Tensor, repeats: int = 20) -> float:
    """Median wall time in milliseconds of `model(x)` in eval + inference mode (after warm-up)."""
    return 1000 * _median_seconds(model, x, repeats)


def throughput(model: nn.Module, x: Tensor, repeats: int = 20) -> float:
    """Images per second of `model` on batch `x`, from the median batch time."""
    return len(x) / _median_seconds(model, x, repeats)
