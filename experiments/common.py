"""What every experiment's __main__ shares: scales, CLI errors, devices, running one trial."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from lib import data as datasets
from lib import models
from lib.data import Splits
from lib.log import TrialLog
from lib.prune.imp import PruneConfig
from lib.runs import Run, flat_config
from lib.train import Hook, TrainConfig, TrainResult, evaluate, train

SCALES = ("smoke", "default", "paper")


def fail(msg: str) -> None:
    """Exit with one line on stderr: bad input is reported before any compute."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse_list(text: str, choices: Sequence[str], field: str) -> tuple[str, ...]:
    """Comma-separated names, each checked against `choices` (one-line error otherwise)."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    for item in items:
        if item not in choices:
            raise ValueError(f"{field}: unknown '{item}', choose from {', '.join(choices)}")
    if not items:
        raise ValueError(f"{field}: empty list, choose from {', '.join(choices)}")
    return items


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="default",
                   help="smoke (seconds, CI), default (Fashion-MNIST on a CPU, <= 30 min) or "
                        "paper (the paper's dataset and budget; wants a GPU)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: per scale)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lenet_300_100", help="lenet_300_100, conv2, conv4, conv6")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")


def preset(a: argparse.Namespace, for_scale: Callable):
    """(scale, config) from --scale/--model, with --dataset, training and (where the setup has a
    pruning recipe) pruning flags applied to its `setup`. Raises ValueError (one line) on any
    bad name or value."""
    scale = check_scale(a.scale)
    models.check_model_name(a.model)
    cfg = for_scale(scale, a.model)
    setup = replace(cfg.setup, train=apply_train_args(cfg.setup.train, a))
    if hasattr(setup, "prune"):
        setup = replace(setup, prune=apply_prune_args(setup.prune, a))
    if a.dataset:
        datasets.check_dataset_name(a.dataset)
        setup = replace(setup, dataset=a.dataset)
    return scale, replace(cfg, setup=setup)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags that override the scale's training recipe (each changes the trials' hashes)."""
    g = p.add_argument_group("training overrides")
    g.add_argument("--optimizer", default=None, help="sgd or adam")
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--batch-size", type=int, default=None, help="batch size")
    g.add_argument("--iterations", type=int, default=None, help="training steps per trial")
    g.add_argument("--epochs", type=float, default=None, help="training epochs per trial")
    g.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (0: per epoch)")


def apply_train_args(cfg: TrainConfig, a: argparse.Namespace) -> TrainConfig:
    """`cfg` with the flags of `add_train_args` that were given; --epochs clears iterations."""
    changes = {k: getattr(a, k) for k in ("optimizer", "lr", "batch_size", "eval_every")
               if getattr(a, k, None) is not None}
    if getattr(a, "epochs", None) is not None:
        changes.update(epochs=a.epochs, iterations=0)
    if getattr(a, "iterations", None) is not None:
        changes.update(iterations=a.iterations, epochs=0.0)
    return replace(cfg, **changes).validate()


def add_prune_args(p: argparse.ArgumentParser) -> None:
    """Flags that override the per-round pruning rates and the ranking scope."""
    g = p.add_argument_group("pruning overrides")
    g.add_argument("--rate-fc", type=float, default=None, help="fraction of hidden fc weights pruned per round")
    g.add_argument("--rate-conv", type=float, default=None, help="fraction of conv weights pruned per round")
    g.add_argument("--rate-output", type=float, default=None, help="fraction of output-layer weights pruned per round")
    g.add_argument("--scope", default=None, help="layerwise (default) or global ranking")


def apply_prune_args(cfg: PruneConfig, a: argparse.Namespace) -> PruneConfig:
    """`cfg` with the flags of `add_prune_args` that were given, validated."""
    changes = {k: getattr(a, k) for k in ("rate_fc", "rate_conv", "rate_output", "scope")
               if getattr(a, k, None) is not None}
    return replace(cfg, **changes).validate()


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale: unknown '{scale}', choose from {', '.join(SCALES)}")
    return scale


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device: unknown '{name}', choose from auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


def machine() -> str:
    """A one-line description of where the numbers were produced."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def load_data(setup, device: torch.device) -> Splits:
    """The splits an experiment's `setup` names (dataset, val_size, limits), on `device`;
    a missing dataset exits with the loader's one-line hint."""
    try:
        return datasets.load(setup.dataset, val_size=setup.val_size,
                             train_limit=setup.train_limit or None,
                             test_limit=setup.test_limit or None).to(device)
    except datasets.DataError as e:
        fail(str(e))


def run_trial(run: Run, *, experiment: str, stage: str, scale: str, name: str, seed: int,
              data: Splits, train_cfg: TrainConfig, build: Callable[[], nn.Module],
              hooks_for: Callable[[nn.Module], Sequence[Hook]] = lambda m: (),
              after: Callable[[nn.Module, TrainResult], dict | None] | None = None) -> dict:
    """Train one trial unless it is done; return its result dict.

    `build()` makes the model in its starting state (init, rewound weights, mask applied);
    `hooks_for(model)` gives the loop hooks; `after(model, result)` saves artefacts (final
    weights) and may add entries to the result. The done marker is written last, so a trial
    killed anywhere before it resumes from its checkpoint.
    """
    if run.done:
        return run.result()
    run.start()
    model = build()
    hooks = hooks_for(model)
    with TrialLog(run.dir, experiment=experiment, stage=stage, scale=scale, name=name,
                  config=flat_config(run.cfg), config_hash=run.hash) as tlog:
        res = train(model, data, train_cfg, seed=seed, hooks=hooks,
                    checkpoint=run.path("checkpoint.pt"), log=tlog.log, desc=name)
        summary = res.summary()
        summary.update((after(model, res) if after else None) or {})
        tlog.finish(summary)
    run.finish({**summary, "run": run.hash})
    run.path("checkpoint.pt").unlink(missing_ok=True)  # optimiser state is not needed any more
    return run.result()


def run_eval(run: Run, *, experiment: str, scale: str, name: str, data: Splits,
             build: Callable[[], nn.Module], extra: dict | None = None,
             stage: str = "evaluate") -> dict:
    """An untrained trial (e.g. a supermask at init): evaluate once, log, mark done."""
    if run.done:
        return run.result()
    run.start()
    model = build()
    val_loss, val_acc = evaluate(model, data.val_x, data.val_y)
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    row = dict(step=0, val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc)
    result = dict(val_acc=val_acc, test_acc=test_acc, final_test_acc=test_acc, early_stop_iter=0,
                  train_wall_s=0.0, **(extra or {}))
    with TrialLog(run.dir, experiment=experiment, stage=stage, scale=scale, name=name,
                  config=flat_config(run.cfg), config_hash=run.hash) as tlog:
        tlog.log(row)
        tlog.finish(result)
    run.finish({**result, "run": run.hash})
    return run.result()


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
