"""K models of one architecture as one module: packed trials.

A grid trains many small networks that differ only in their weights (seed, mask, init). Alone,
each keeps a CPU (or GPU) mostly idle between tiny matmuls; stacked, K of them run as one
batched matmul (`baddbmm`) or one grouped convolution, with the same per-trial arithmetic.

`PackedNet(models)` stacks the parameters of K models that share an architecture made of
Linear, Conv2d, BatchNorm2d, ReLU, pooling and Flatten layers applied in module order (LeNet,
Conv-2/4/6, the lab's VGGs). Its forward takes (K, B, ...) inputs (trial k's batch at [k]) and
returns (K, B, classes). Activations of conv layers live as (B, K·C, H, W), so a grouped
convolution with K·groups groups, and a BatchNorm over K·C channels, compute exactly K
independent layers; linear layers see (K, B, F). Every parameter is one tensor (K, *shape), so
Adam or SGD on it is exactly K independent optimisers (both are element-wise).

The constructor checks its own forward against the K models on a random batch and raises
`PackError` if they differ (an architecture whose forward is not its module order, a residual
add): a model that cannot be packed is trained alone, never wrongly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ELEMENTWISE = (nn.ReLU, nn.Identity)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Flatten, *ELEMENTWISE, *POOLS)


class PackError(ValueError):
    """These models cannot be packed; the message says why (train them alone instead)."""


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


class PackedNet(nn.Module):
    """K models as one; `state(k)` gives trial k's state dict back. With `channels_last` the
    conv stack runs in NHWC (as `TrainConfig.channels_last` runs a model alone)."""

    channels_last: bool = False

    def __init__(self, models: Sequence[nn.Module], input_shape: Sequence[int] | None = None):
        super().__init__()
        if len(models) < 1:
            raise PackError("pack: needs at least one model")
        self.k = len(models)
        self.layers = _leaves(models[0])
        for name, m in self.layers:
            if not isinstance(m, SUPPORTED):
                raise PackError(f"pack: layer {name!r} ({type(m).__name__}) is not packable")
            if isinstance(m, nn.Flatten) and m.start_dim != 1:
                raise PackError(f"pack: layer {name!r} flattens from dim {m.start_dim}")
        shapes = [{n: t.shape for n, t in m.state_dict().items()} for m in models]
        if any(s != shapes[0] for s in shapes):
            raise PackError("pack: the models differ in architecture")
        self.names = [n for n, _ in models[0].named_parameters()]
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone())
            for n in self.names)
        self.buffer_names = [n for n, _ in models[0].named_buffers()]
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buf{i}", torch.stack([dict(m.named_buffers())[n] for m in models]).clone())
        self.template = models[0]
        if input_shape is not None:  # prove the packed forward equals the models' own
            self._check(models, tuple(input_shape))

    # ------------------------------------------------------------------ parameters by name
    def param(self, name: str) -> Tensor:
        return self.stacked[self.names.index(name)]

    def buffer(self, name: str) -> Tensor:
        return getattr(self, f"buf{self.buffer_names.index(name)}")

    def state(self, k: int) -> dict[str, Tensor]:
        """Trial k's state dict (parameters and buffers), detached copies."""
        out = {n: self.param(n)[k].detach().clone() for n in self.names}
        out.update({n: self.buffer(n)[k].clone() for n in self.buffer_names})
        return {n: out[n] for n in self.template.state_dict()}

    def load_state(self, k: int, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for n in self.names:
                self.param(n)[k].copy_(state[n])
            for n in self.buffer_names:
                self.buffer(n)[k].copy_(state[n])

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, weights: dict[str, Tensor] | None = None) -> Tensor:
        """x: (K, B, ...) -> (K, B, classes). `weights` (name -> (K, *shape)) stand in for those
        stacked parameters in this call (a learned supermask's masked frozen weights)."""
        weights = weights or {}

        def param(n: str) -> Tensor:
            return weights[n] if n in weights else self.param(n)

        if x.shape[0] != self.k:
            raise ValueError(f"pack: expected {self.k} trials in dim 0, got shape {tuple(x.shape)}")
        conv = False  # layout: (K, B, F...) or, inside the conv stack, (B, K*C, H, W)
        for name, m in self.layers:
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, *POOLS)) and not conv:
                kk, b = x.shape[:2]
                x, conv = x.transpose(0, 1).reshape(b, kk * x.shape[2], *x.shape[3:]), True
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            if isinstance(m, nn.Conv2d):
                w = param(f"{name}.weight")
                w = w.reshape(-1, *w.shape[2:])  # (K*O, C/groups, kh, kw)
                bias = self.param(f"{name}.bias").reshape(-1) if m.bias is not None else None
                x = F.conv2d(x, w, bias, m.stride, m.padding, m.dilation, m.groups * self.k)
            elif isinstance(m, nn.BatchNorm2d):
                x = self._batch_norm(name, m, x)
            elif isinstance(m, nn.Flatten):
                if conv:  # (B, K*C, H, W) -> (K, B, C*H*W)
                    x, conv = x.reshape(x.shape[0], self.k, -1).transpose(0, 1), False
                else:
                    x = x.flatten(2)
            elif isinstance(m, nn.Linear):
                if conv:
                    raise PackError(f"pack: linear layer {name!r} on a conv map without Flatten")
                # feature-major: (K, out, in) @ (K, in, B), so the weight's gradient comes out
                # (K, out, in) contiguous; x @ w^T would give it transposed and cost a copy of
                # every weight per step (1.3x slower for K = 16 LeNets). x and the result are
                # (K, B, F) views of (K, F, B) tensors.
                w = param(f"{name}.weight")  # (K, out, in)
                xt = x.transpose(1, 2)
                if m.bias is None:
                    x = torch.bmm(w, xt).transpose(1, 2)
                else:
                    x = torch.baddbmm(self.param(f"{name}.bias").unsqueeze(2), w, xt).transpose(1, 2)
            else:  # ReLU, Identity, pools: channel-wise, the same in either layout
                x = m(x)
        if conv:
            raise PackError("pack: the network does not end in a Flatten + Linear head")
        return x

    def _batch_norm(self, name: str, m: nn.BatchNorm2d, x: Tensor) -> Tensor:
        mean, var = self.buffer(f"{name}.running_mean"), self.buffer(f"{name}.running_var")
        training = self.training or not m.track_running_stats
        if self.training and m.track_running_stats:
            with torch.no_grad():
                self.buffer(f"{name}.num_batches_tracked").add_(1)
        w = self.param(f"{name}.weight").reshape(-1) if m.affine else None
        b = self.param(f"{name}.bias").reshape(-1) if m.affine else None
        # views of the (K, C) buffers: the in-place running-stat update lands in them
        return F.batch_norm(x, mean.view(-1), var.view(-1), w, b, training, m.momentum, m.eps)

    @torch.no_grad()
    def _check(self, models: Sequence[nn.Module], shape: tuple[int, ...]) -> None:
        was = [m.training for m in models]
        x = torch.randn(self.k, 3, *shape, device=self.stacked[0].device)
        self.eval()
        for m in models:
            m.eval()
        try:
            want = torch.stack([m(x[i]) for i, m in enumerate(models)])
            got = self(x)
        except (RuntimeError, PackError) as e:
            raise PackError(f"pack: the packed forward fails ({str(e).splitlines()[0]})") from None
        finally:
            for m, w in zip(models, was):
                m.train(w)
            self.train()
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise PackError("pack: the packed forward differs from the models' own "
                            "(a forward that is not its module order, e.g. a residual add)")


def can_pack(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """True when `model`'s architecture can be packed (checked on two copies of it)."""
    import copy

    try:
        PackedNet([model, copy.deepcopy(model)], input_shape)
        return True
    except PackError:
        return False
