"""The one training loop of the lab.

Read it top to bottom: build the optimiser, restore a checkpoint if the run was killed, then
step through seeded batches, evaluating on validation and test every `eval_every` steps. Methods
never edit this file: a distillation loss is a `criterion`, an extra term (a penalty, a feature
loss) or a per-step action (masking, snapshots) is a `Hook`.

The early-stopping point is the evaluation with the lowest validation loss (or, by choice, the
highest validation accuracy); the test accuracy reported for a trial is the one measured there
(never selected on test).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.data import BatchIterator, Splits
from lib.runs import atomic_torch_save, checkpoint_every_s, read_checkpoint

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
EARLY_STOP = ("val_loss", "val_acc")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Exactly one of `iterations` and `epochs` is positive."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    iterations: int = 0
    epochs: float = 0.0
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()  # "step" schedule: fractions of training where lr *= gamma
    gamma: float = 0.1
    eval_every: int = 0  # steps between evaluations; 0 means once per epoch
    augment: bool = False  # random crop + flip (CIFAR)
    early_stop_on: str = "val_loss"  # or "val_acc" (supermasks: their loss is badly calibrated)
    channels_last: bool = False  # NHWC convs: 1.4-1.8x faster training on this CPU for small CNNs
    precision: str = "fp32"  # "bf16": forward and loss under bf16 autocast (weights stay fp32)
    # stop once the early-stopping criterion has not improved for `patience` evaluations (0:
    # train every step): the selected evaluation is then never the last one (not still learning),
    # and a trial that converges early costs no more steps
    patience: int = 0
    # the fraction of the recipe's steps actually trained (`--budget`: a paper recipe cut down,
    # e.g. on a CPU); milestones and the cosine are fractions of the steps, so the schedule
    # keeps its shape, and the recipe is still named as stated (lib.report.recipe_text)
    budget: float = 1.0

    def validate(self) -> "TrainConfig":
        """Raise a one-line ValueError naming the first bad field."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown '{self.optimizer}', choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown '{self.schedule}', choose from {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not math.isfinite(self.lr):
            raise ValueError(f"lr: must be finite, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.iterations < 0 or self.epochs < 0:
            raise ValueError(f"iterations/epochs: must be >= 0, got {self.iterations}/{self.epochs}")
        if (self.iterations > 0) == (self.epochs > 0):
            raise ValueError("iterations/epochs: set exactly one of them to a positive value")
        if not math.isfinite(self.epochs):
            raise ValueError(f"epochs: must be finite, got {self.epochs}")
        if self.early_stop_on not in EARLY_STOP:
            raise ValueError(f"early_stop_on: unknown '{self.early_stop_on}', choose from {', '.join(EARLY_STOP)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every: must be >= 0, got {self.eval_every}")
        if self.patience < 0:
            raise ValueError(f"patience: must be >= 0, got {self.patience}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget: must be in (0, 1], got {self.budget}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: unknown '{self.precision}', choose from {', '.join(PRECISIONS)}")
        return self

    def autocast(self, device: torch.device):
        """The forward pass's precision context: bf16 autocast, or nothing for fp32."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def total_steps(self, n_train: int) -> int:
        steps = self.iterations or self.epochs * (n_train // self.batch_size)
        return max(1, round(steps * self.budget))

    def lr_at(self, step: int, total: int) -> float:
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * step / total))
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(step >= m * total for m in self.milestones)
        return self.lr


class Hook:
    """Extension point of the loop; override only what a method needs.

    `parameters` adds trainable tensors (a FitNet regressor); `on_batch` receives the training-set
    indices of the coming batch (to look up per-example targets, e.g. cached teacher logits);
    `extra_loss` adds a term to the batch loss; `after_backward` may edit gradients; `after_step` runs after each optimiser step
    with the number of completed steps (masks are re-applied here); `metrics` adds columns to
    every evaluation row (e.g. the accuracy of a sampled supermask).
    """

    def parameters(self) -> Iterable[Tensor]:
        return ()

    def on_batch(self, index: Tensor) -> None:
        pass

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        return None

    def after_backward(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def metrics(self, model: nn.Module, data: Splits) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainResult:
    """Learning curve plus the numbers a trial reports."""

    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    images_per_s: float = 0.0
    early_stop_on: str = "val_loss"
    best_state: dict[str, Tensor] | None = None  # weights at `early_stop` (train(keep_best=True))
    diverged_step: int | None = None  # the step whose loss was not finite (training stopped)
    unfinished: bool = False  # a packed trial handed back before its end (others converged)

    def patience_spent(self, patience: int) -> bool:
        """True when the last `patience` evaluations did not improve on the selected one."""
        if not patience or not self.history:
            return False
        best = self.history.index(self.early_stop)
        return len(self.history) - 1 - best >= patience

    def improves(self, row: dict) -> bool:
        """True when `row` would be the new early-stop point (strictly better: first on ties)."""
        if not self.history:
            return True
        best = self.early_stop
        if self.early_stop_on == "val_acc":
            return row["val_acc"] > best["val_acc"]
        return row["val_loss"] < best["val_loss"]

    @property
    def early_stop(self) -> dict:
        """The evaluation with the lowest validation loss, or the highest validation accuracy
        (the first one on ties)."""
        if self.early_stop_on == "val_acc":
            return max(self.history, key=lambda r: r["val_acc"])
        return min(self.history, key=lambda r: r["val_loss"])

    @property
    def final(self) -> dict:
        return self.history[-1]

    def summary(self) -> dict:
        best, last = self.early_stop, self.final
        return {"early_stop_iter": best["step"], "final_step": last["step"],
                "selected_last": best["step"] == last["step"] and len(self.history) > 1,
                "val_acc": best["val_acc"], "test_acc": best["test_acc"],
                "final_test_acc": last["test_acc"],
                "final_val_acc": last["val_acc"], "train_wall_s": round(self.wall_s, 3),
                "images_per_s": round(self.images_per_s, 1), **self.divergence()}

    def divergence(self) -> dict:
        """`diverged` and `diverged_step` for a trial stopped by a non-finite loss (only then:
        the results of trials that converge keep their columns)."""
        if self.diverged_step is None:
            return {}
        return {"diverged": True, "diverged_step": self.diverged_step}


def prepare_device(device: torch.device) -> None:
    """On CUDA, let cuDNN pick the fastest convolution algorithms for the (fixed) batch shapes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of `model`'s parameters and buffers (its state_dict), detached."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def first_non_finite(losses: Sequence[Tensor]) -> list[int | None]:
    """For losses collected over steps (each a scalar, or (K,) for K packed trials): per trial,
    the index of the first step whose loss is not finite, or None. One host read in all."""
    bad = ~torch.isfinite(torch.stack(list(losses)).reshape(len(losses), -1))  # (steps, K)
    first = torch.where(bad.any(0), bad.float().argmax(0), -1).tolist()  # argmax: first True
    return [None if i < 0 else i for i in first]


def eval_chunk(x: Tensor) -> int:
    """Rows per forward in evaluation: 128 on a CPU, where a conv net's forward over 10,000
    images at once runs 3-7x slower than in chunks of 128 that stay in cache (vgg_narrow,
    vgg_small, resnet8, mobilenet_tiny on a 2-core AMD EPYC; an MLP does not care); 10,000 on
    a GPU, which wants large batches."""
    return 128 if x.device.type == "cpu" else 10_000


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y), in eval mode, `chunk` rows per
    forward (default: `eval_chunk`)."""
    chunk = chunk or eval_chunk(x)
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        logits = model(x[i:i + chunk])
        loss += F.cross_entropy(logits, y[i:i + chunk], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + chunk]).sum().item()
    model.train(was_training)
    return loss / len(x), correct / len(x)


def _without_dynamo(cls: type) -> None:
    """Let `cls` (and Optimizer) run without importing torch._dynamo (0.75 s of start-up).

    torch wraps some Optimizer methods in `_disable_dynamo`, which imports torch._dynamo on the
    first call only to mark them "never compile"; the lab never compiles, so the wrapped function
    is marked as its own disabled version. `step` is handled by `_raw_step`."""
    for owner in (torch.optim.Optimizer, cls):
        for f in vars(owner).values():
            code = getattr(f, "__code__", None)
            if code is not None and code.co_qualname == "_disable_dynamo.<locals>.inner":
                f.__wrapped__.__dynamo_disable = f.__wrapped__


def _raw_step(opt: torch.optim.Optimizer) -> None:
    """Bind `opt.step` to the optimiser's own update under no_grad, past torch's wrappers (the
    profiler hook and a dynamo graph break that imports torch._dynamo at every step)."""
    fn = type(opt).step
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__

    def step() -> None:
        with torch.no_grad():
            fn(opt)
    opt.step = step  # type: ignore[method-assign]


def make_optimizer(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD, fused where the device supports it (it halves per-step overhead on CPU)."""
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        cls = torch.optim.Adam
    else:
        cls, kw["momentum"] = torch.optim.SGD, cfg.momentum
    _without_dynamo(cls)
    try:
        opt = cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        opt = cls(params, foreach=True, **kw)
    _raw_step(opt)
    return opt


def replay(log: Callable[[dict], None], rows: list[dict]) -> None:
    """Hand the evaluation rows a resumed run restored to `log`: through `log.replay(rows)`
    where it has one (`lib.log.TrialLog`: its wandb run may hold them already), else row by row."""
    if hasattr(log, "replay"):
        log.replay(rows)
    else:
        for row in rows:
            log(row)


def show_progress() -> bool:
    """Progress bars on a terminal, or when LAB_PROGRESS=1; quiet in logs and CI."""
    return os.environ.get("LAB_PROGRESS") == "1" or sys.stderr.isatty()


def train(model: nn.Module, data: Splits, cfg: TrainConfig, *, seed: int,
          hooks: Sequence[Hook] = (), criterion: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
          checkpoint: Path | None = None, log: Callable[[dict], None] | None = None,
          desc: str = "train", keep_best: bool = False) -> TrainResult:
    """Train `model` in place on `data.train_*`; evaluate on validation and test.

    `criterion(x, y, logits)` replaces cross-entropy (distillation); `checkpoint` is a file
    written atomically at every evaluation and read back if it exists, so a killed run resumes
    exactly where its last evaluation left it; `log(row)` receives every evaluation row.
    `keep_best` copies the weights at every evaluation that becomes the early-stop point into
    `result.best_state` (a chain hands the *selected* network down, not the last one).
    A non-finite loss stops training (`result.diverged_step` is its step): the batch losses are
    read at each evaluation, not at every step (no host sync per step on a GPU), so the loop
    finds it there, puts the model back to its state at the previous evaluation (its last
    checkpoint) and stops; the evaluations before it stand, and the early-stop point is chosen
    among them.
    """
    cfg.validate()
    device = data.train_x.device
    prepare_device(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    batches = BatchIterator(data.train_x, data.train_y, cfg.batch_size, seed, cfg.augment, data.black)
    total = cfg.total_steps(len(data.train_x))
    eval_every = cfg.eval_every or batches.steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for h in hooks for p in h.parameters()]
    opt = make_optimizer(params, cfg)
    result, step = TrainResult(early_stop_on=cfg.early_stop_on), 0

    state = read_checkpoint(checkpoint, device) if checkpoint is not None else None
    if state is not None:  # an unreadable checkpoint was moved aside: start from step 0
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for h, hs in zip(hooks, state["hooks"]):
            h.load_state_dict(hs)
        step, result.history = state["step"], state["history"]
        result.wall_s, result.best_state = state["wall_s"], state.get("best_state")
        if log is not None:
            replay(log, result.history)  # so the resumed run's log is whole
        if result.patience_spent(cfg.patience):
            total = step  # it had converged when it was killed

    eval_s = 0.0  # time spent evaluating, left out of the training throughput

    def record(train_loss: float) -> None:
        nonlocal eval_s
        t0 = time.perf_counter()
        val_loss, val_acc = evaluate(model, data.val_x, data.val_y)
        test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
        row = dict(step=step, train_loss=train_loss, val_loss=val_loss, val_acc=val_acc,
                   test_loss=test_loss, test_acc=test_acc, lr=cfg.lr_at(step, total))
        for h in hooks:
            row.update(h.metrics(model, data))
        if keep_best and result.improves(row):
            result.best_state = snapshot(model)
        result.history.append(row)
        if log is not None:
            log(row)
        eval_s += time.perf_counter() - t0

    if step == 0:  # the untrained model is the first point of every learning curve
        record(float("nan"))
    bar = tqdm(total=total, initial=step, desc=desc, disable=not show_progress(), leave=False)
    model.train()
    started, start_step = time.perf_counter(), step
    every_s, saved_at = checkpoint_every_s(), 0.0  # a checkpoint at the end, and every every_s
    running, seen = torch.zeros((), device=device), 0
    losses: list[Tensor] = []  # this evaluation interval's batch losses, read at its end
    last_eval = snapshot(model)  # the state to go back to if the interval diverged
    for xb, yb in batches.from_step(step):
        if step >= total:
            break
        if cfg.schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step, total)
        if cfg.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        for h in hooks:
            h.on_batch(batches.index)
        with cfg.autocast(device):
            logits = model(xb)
            loss = criterion(xb, yb, logits) if criterion else F.cross_entropy(logits, yb)
            for h in hooks:
                extra = h.extra_loss(xb, yb, logits)
                if extra is not None:
                    loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for h in hooks:
            h.after_backward(model)
        opt.step()
        step += 1
        for h in hooks:
            h.after_step(model, step)
        running += loss.detach()
        seen += 1
        losses.append(loss.detach())
        bar.update(1)
        if step % eval_every == 0 or step == total:
            bad = first_non_finite(losses)[0]
            if bad is not None:  # diverged: every later step would be NaN too
                result.diverged_step = step - len(losses) + bad
                model.load_state_dict(last_eval)
                break
            record(running.item() / seen)
            running.zero_(), losses.clear(), bar.set_postfix(val_acc=f"{result.history[-1]['val_acc']:.4f}")
            if result.patience_spent(cfg.patience):
                total = step  # converged: stop here (the checkpoint below marks the end)
            seen = 0
            last_eval = snapshot(model)
            elapsed = time.perf_counter() - started
            if checkpoint is not None and (step >= total or elapsed - saved_at >= every_s):
                saved_at = elapsed
                atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "hooks": [h.state_dict() for h in hooks], "step": step,
                                   "history": result.history, "wall_s": result.wall_s + elapsed,
                                   "best_state": result.best_state},
                                  checkpoint)
    bar.close()
    elapsed = time.perf_counter() - started
    result.wall_s += elapsed
    result.images_per_s = (step - start_step) * cfg.batch_size / max(elapsed - eval_s, 1e-9)
    return result
