"""The training loop of `lib.train`, for K packed trials at once (`lib.pack.PackedNet`).

Each trial keeps everything it would have alone: its own seeded batch order (the same
`BatchIterator` as `train`), its own mask (and fixed values for pruned weights), its own
optimiser state (one stacked tensor per parameter; Adam and SGD are element-wise), its own
learning curve, early-stopping point and best weights, and its own checkpoint file, written in
`train`'s format: a packed trial killed anywhere resumes packed or alone, with the same numbers.
The batch loss is the sum of the K trials' mean cross-entropies, so each trial's gradient is
exactly the gradient it gets alone. Evaluation is one batched forward of all K trials. A trial
whose loss is not finite stops, as it would alone (found at the next evaluation, where the
losses are read: no host sync per step): it is put back to its state at its previous
evaluation and frozen there, it is left out of later evaluations and checkpoints, and the
others go on.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from lib.data import BatchIterator, Splits
from lib.pack import PackedNet
from lib.runs import atomic_torch_save, checkpoint_every_s, read_checkpoint
from lib.train import (TrainConfig, TrainResult, eval_chunk, first_non_finite, make_optimizer,
                       prepare_device, replay, show_progress)

MaskDict = dict[str, Tensor]


@torch.no_grad()
def evaluate_packed(net: PackedNet, x: Tensor, y: Tensor, chunk: int | None = None) -> tuple[list[float], list[float]]:
    """Per-trial mean cross-entropy and accuracy of the K packed trials on the same (x, y),
    `chunk` rows per forward (default: `lib.train.eval_chunk`; 3.7x faster than 5,000 rows for
    3 packed vgg_narrow on a 2-core AMD EPYC, `make benchmark`)."""
    chunk = chunk or eval_chunk(x)
    was = net.training
    net.eval()
    loss = torch.zeros(net.k, device=x.device, dtype=torch.float64)
    correct = torch.zeros(net.k, device=x.device, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        logits = net(xb.unsqueeze(0).expand(net.k, *xb.shape))  # (K, B, classes)
        yk = yb.unsqueeze(0).expand(net.k, -1)
        loss += F.cross_entropy(logits.transpose(1, 2), yk, reduction="none").sum(1).double()
        correct += (logits.argmax(2) == yk).sum(1).double()
    net.train(was)
    n = len(x)
    return (loss / n).tolist(), (correct / n).tolist()


class PackedMask:
    """Stacked masks: gradients of pruned weights are zeroed after backward, and pruned weights
    are written back to their fixed value (zero, or the trial's `fill`) after every step."""

    def __init__(self, net: PackedNet, masks: Sequence[MaskDict | None],
                 fills: Sequence[MaskDict | None]):
        names = sorted({n for m in masks if m for n in m})
        self.items = []
        for name in names:
            p = net.param(name)
            keep = torch.stack([(m[name] if m and name in m else torch.ones_like(p[0], dtype=torch.bool))
                                for m in masks]).to(device=p.device, dtype=p.dtype)
            fixed = None
            if any(f and name in f for f in fills):
                fixed = torch.stack([(f[name].to(p) if f and name in f else torch.zeros_like(p[0]))
                                     for f in fills]) * (1 - keep)
            self.items.append((p, keep, fixed))
        self.after_step()

    def after_backward(self) -> None:
        for p, keep, _ in self.items:
            if p.grad is not None:
                p.grad.mul_(keep)

    @torch.no_grad()
    def after_step(self) -> None:
        for p, keep, fixed in self.items:
            p.mul_(keep)
            if fixed is not None:
                p.add_(fixed)


class Frozen:
    """The packed trials that diverged: each keeps the state (parameters and BN statistics) it
    is frozen in (its last evaluation's), as it would alone: gradients are zeroed, and the
    state is written back after every step (momentum would still move it)."""

    def __init__(self, net: PackedNet, params: list[Tensor]):
        self.net, self.params, self.trials = net, params, {}

    def add(self, i: int) -> None:
        self.trials[i] = self.net.state(i)

    @torch.no_grad()
    def after_backward(self) -> None:
        for i in self.trials:
            for p in self.params:
                if p.grad is not None:
                    p.grad[i] = 0

    def after_step(self) -> None:
        for i, state in self.trials.items():
            self.net.load_state(i, state)


def _trial_optimizer_state(opt: torch.optim.Optimizer, params: list[Tensor], k: int) -> dict:
    """Trial k's slice of a stacked optimiser's state, in a single trial's state_dict format."""
    state = {}
    for i, p in enumerate(params):
        s = opt.state.get(p, {})
        state[i] = {n: (v[k].clone() if torch.is_tensor(v) and v.shape == p.shape
                        else v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
    groups = [{**{n: v for n, v in g.items() if n != "params"}, "params": list(range(len(params)))}
              for g in opt.param_groups]
    return {"state": state, "param_groups": groups}


def _load_optimizer_states(opt: torch.optim.Optimizer, params: list[Tensor], states: list[dict]) -> None:
    """Stack K single-trial optimiser states into the packed optimiser."""
    for i, p in enumerate(params):
        per = [s["state"].get(i, {}) for s in states]
        if not per[0]:
            continue
        merged = {}
        for n, v in per[0].items():
            if torch.is_tensor(v) and v.dim() and v.shape == p.shape[1:]:
                merged[n] = torch.stack([s[n] for s in per]).to(p.device)
            else:
                merged[n] = v.to(p.device) if torch.is_tensor(v) and n != "step" else v
        opt.state[p] = merged


def train_packed(net: PackedNet, data: Splits, cfg: TrainConfig, *, seeds: Sequence[int],
                 masks: Sequence[MaskDict | None] | None = None,
                 fills: Sequence[MaskDict | None] | None = None,
                 checkpoints: Sequence[Path] | None = None,
                 logs: Sequence[Callable[[dict], None]] | None = None,
                 keep_best: bool = False, desc: str = "pack",
                 metrics: Callable[[], list[dict]] | None = None) -> list[TrainResult]:
    """Train the K trials of `net` in place; one `TrainResult` per trial, as `lib.train.train`
    would give for each alone (same batches, same evaluations, same selection rule). `net` is a
    `PackedNet` or a module with its interface (`lib.prune.supermask.PackedSupermask`);
    `metrics()` adds per-trial columns to every evaluation row (a hook's `metrics` alone). With
    `cfg.patience`, training returns at the first evaluation where some trial has converged:
    the others come back `unfinished`, at that evaluation's checkpoint, to be repacked."""
    cfg.validate()
    prepare_device(data.train_x.device)
    net.channels_last = cfg.channels_last  # NHWC convs, as `train` runs the model alone
    k = net.k
    masks, fills = list(masks or [None] * k), list(fills or [None] * k)
    iters = [BatchIterator(data.train_x, data.train_y, cfg.batch_size, s, cfg.augment, data.black)
             for s in seeds]
    total = cfg.total_steps(len(data.train_x))
    eval_every = cfg.eval_every or iters[0].steps_per_epoch
    params = list(net.stacked)
    opt = make_optimizer(params, cfg)
    results = [TrainResult(early_stop_on=cfg.early_stop_on) for _ in range(k)]
    step = 0
    states = [read_checkpoint(Path(c), data.train_x.device) for c in checkpoints or ()]
    if states and all(s is not None for s in states):  # else (none, or one unreadable) from step 0
        if len({s["step"] for s in states}) != 1:
            raise ValueError("pack: the trials' checkpoints are at different steps; resume them alone")
        for i, s in enumerate(states):
            net.load_state(i, s["model"])
            results[i].history, results[i].wall_s = s["history"], s["wall_s"]
            results[i].best_state = s.get("best_state")
        _load_optimizer_states(opt, params, [s["optimizer"] for s in states])
        step = states[0]["step"]
        for i, r in enumerate(results):
            if logs:
                replay(logs[i], r.history)
    mask = PackedMask(net, masks, fills)
    frozen = Frozen(net, params)
    eval_s = 0.0

    def record(train_losses: list[float]) -> None:
        nonlocal eval_s
        t0 = time.perf_counter()
        val_loss, val_acc = evaluate_packed(net, data.val_x, data.val_y)
        test_loss, test_acc = evaluate_packed(net, data.test_x, data.test_y)
        extra = metrics() if metrics else [{}] * k
        for i, r in enumerate(results):
            if i in frozen.trials:
                continue
            row = dict(step=step, train_loss=train_losses[i], val_loss=val_loss[i],
                       val_acc=val_acc[i], test_loss=test_loss[i], test_acc=test_acc[i],
                       lr=cfg.lr_at(step, total), **extra[i])
            if keep_best and r.improves(row):
                r.best_state = net.state(i)
            r.history.append(row)
            if logs:
                logs[i](row)
        eval_s += time.perf_counter() - t0

    if step == 0:
        record([float("nan")] * k)
    bar = tqdm(total=total, initial=step, desc=desc, disable=not show_progress(), leave=False)
    net.train()
    started, start_step = time.perf_counter(), step
    every_s, saved_at = checkpoint_every_s(), 0.0  # a checkpoint at the end, and every every_s
    running, seen = torch.zeros(k, device=data.train_x.device), 0
    losses: list[Tensor] = []  # this evaluation interval's (K,) batch losses, read at its end
    last_eval = [net.state(i) for i in range(k)]  # each trial's state to go back to if it diverged
    streams = [it.from_step(step) for it in iters]
    while step < total:
        if cfg.schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step, total)
        batch = [next(s) for s in streams]
        xb = torch.stack([b[0] for b in batch])  # (K, B, ...)
        yb = torch.stack([b[1] for b in batch])  # (K, B)
        with cfg.autocast(xb.device):
            logits = net(xb)
            per_trial = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(1)  # (K,)
        opt.zero_grad(set_to_none=True)
        per_trial.sum().backward()
        mask.after_backward()
        frozen.after_backward()
        opt.step()
        mask.after_step()
        frozen.after_step()
        step += 1
        running += per_trial.detach().nan_to_num(0.0, 0.0, 0.0)
        seen += 1
        losses.append(per_trial.detach())
        bar.update(1)
        if step % eval_every == 0 or step == total:
            for i, bad in enumerate(first_non_finite(losses)):
                if bad is not None and i not in frozen.trials:  # back to its last evaluation
                    results[i].diverged_step = step - len(losses) + bad
                    net.load_state(i, last_eval[i])
                    frozen.add(i)
            if len(frozen.trials) == k:
                break
            losses.clear()
            record((running / seen).tolist())
            last_eval = [net.state(i) for i in range(k)]
            running.zero_()
            seen = 0
            elapsed = time.perf_counter() - started
            live = [i for i in range(k) if i not in frozen.trials]
            hand_back = bool(cfg.patience) and any(results[i].patience_spent(cfg.patience) for i in live)
            due = step == total or hand_back or elapsed - saved_at >= every_s
            saved_at = elapsed if due else saved_at
            for i, c in enumerate(checkpoints or () if due else ()):
                if i in frozen.trials:  # its last checkpoint stays the one before it diverged
                    continue
                r = results[i]
                atomic_torch_save({"model": net.state(i), "optimizer": _trial_optimizer_state(opt, params, i),
                                   "hooks": [{}], "step": step, "history": r.history,
                                   "wall_s": r.wall_s + elapsed / k, "best_state": r.best_state}, c)
            if hand_back:
                # some trials converged: hand every trial back; the caller finishes the converged
                # ones and repacks the rest from the checkpoints just written, so a finished trial
                # costs no more steps
                for i in live:
                    results[i].unfinished = not results[i].patience_spent(cfg.patience)
                break
    bar.close()
    elapsed = time.perf_counter() - started
    for r in results:
        r.wall_s += elapsed / k  # a trial's share of the pack's time
        r.images_per_s = k * (step - start_step) * cfg.batch_size / max(elapsed - eval_s, 1e-9)
    return results

