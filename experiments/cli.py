"""The command line every experiment shares: scales, one-line errors, the shared flags.

An experiment's own flags are added by its `Experiment.flags` and applied by its
`Experiment.configure`; everything here is the same for all ten.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from lib import data as datasets
from lib import models
from lib.prune.imp import PruneConfig
from lib.train import TrainConfig

SCALES = ("smoke", "default", "paper")


def fail(msg: str) -> None:
    """Exit with one line on stderr: bad input is reported before any compute. Characters that
    would break the line (a newline typed into a flag's value...) are shown escaped."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(msg))
    print(f"error: {line}", file=sys.stderr)
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


def parse_numbers(text: str, field: str, kind: type = float) -> tuple:
    """Comma-separated numbers of `kind` (one-line error naming `field` otherwise)."""
    try:
        out = tuple(kind(s) for s in text.split(",") if s.strip())
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise ValueError(f"{field}: expected comma-separated {noun}, got '{text}'") from None
    if not out:
        raise ValueError(f"{field}: empty list")
    return out


def parse_floats(text: str, field: str) -> tuple[float, ...]:
    return parse_numbers(text, field, float)


def parse_ints(text: str, field: str) -> tuple[int, ...]:
    return parse_numbers(text, field, int)


class Parser(argparse.ArgumentParser):
    """argparse, but a malformed command line is one line on stderr and exit 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{message} (see --help)")


def base_parser(prog: str, description: str, model_help: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=description,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="default",
                   help="smoke (seconds, CI), default (Fashion-MNIST on a CPU, <= 30 min) or "
                        "paper (the paper's dataset and budget; wants a GPU)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: per scale)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="set one field of the scale's config, e.g. --set alpha=0.5 or --set "
                        "finetune.epochs=6 (repeatable; a field of the setup is found by its "
                        "name too). Like every recipe flag it changes the trials' hashes: use it "
                        "with --out for a follow-up run")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the report (trials.csv, table.md, claims, plots, run.json) here "
                        "instead of results/<experiment>/<scale>/: a follow-up run with changed "
                        "flags beside the committed results, e.g. "
                        "results/<experiment>/default/followup/<name>")
    g = p.add_argument_group("data size overrides (cut a run down, e.g. a paper preset on a CPU)")
    g.add_argument("--train-limit", type=int, default=None,
                   help="train on a seeded subset of this many images (0: all)")
    g.add_argument("--test-limit", type=int, default=None,
                   help="test on a seeded subset of this many images (0: all)")
    g.add_argument("--val-size", type=int, default=None,
                   help="validation images carved out of the training set")
    return p


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags that override the scale's training recipe (each changes the trials' hashes)."""
    g = p.add_argument_group("training overrides")
    g.add_argument("--optimizer", default=None, help="sgd or adam")
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--batch-size", type=int, default=None, help="batch size")
    g.add_argument("--iterations", type=int, default=None, help="training steps per trial")
    g.add_argument("--epochs", type=float, default=None, help="training epochs per trial")
    g.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (0: per epoch)")
    g.add_argument("--precision", default=None,
                   help="fp32 (default: reproducible) or bf16 (autocast; CPUs with bf16 support, GPUs)")
    g.add_argument("--budget", type=float, default=None,
                   help="train every stage (trials, teachers, fine-tuning, QAT, hints) for this "
                        "fraction in (0, 1] of its recipe's steps, schedule shape kept (a paper "
                        "preset cut down, e.g. on a CPU)")


def apply_train_args(cfg: TrainConfig, a: argparse.Namespace) -> TrainConfig:
    """`cfg` with the flags of `add_train_args` that were given; --epochs clears iterations."""
    changes = {k: getattr(a, k) for k in ("optimizer", "lr", "batch_size", "eval_every", "precision")
               if getattr(a, k, None) is not None}
    cfg = replace(cfg, **changes)
    for name in ("epochs", "iterations"):  # both given: iterations wins
        if getattr(a, name, None) is not None:
            cfg = with_length(cfg, name, getattr(a, name))
    return cfg.validate()


def with_length(cfg: TrainConfig, name: str, value: float) -> TrainConfig:
    """`cfg` trained for `value` epochs or iterations (`name`), the other length cleared: a
    recipe sets exactly one."""
    other = "iterations" if name == "epochs" else "epochs"
    return replace(cfg, **{name: value, other: type(getattr(cfg, other))(0)})


def with_budget(obj, budget: float):
    """`obj` (a config dataclass) with `budget` set on every TrainConfig in it, nested ones
    (the trials', a teacher's, fine-tuning, QAT) included; validated."""
    if isinstance(obj, TrainConfig):
        return replace(obj, budget=budget).validate()
    if not is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {f.name: with_budget(getattr(obj, f.name), budget) for f in fields(obj)}
    return replace(obj, **{k: v for k, v in changes.items() if v is not getattr(obj, k)})


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


def preset(a: argparse.Namespace, for_scale: Callable):
    """(scale, config) from --scale/--model, with --dataset, --seeds, training and (where the
    setup has a pruning recipe) pruning flags applied. Raises ValueError (one line) on any bad
    name or value."""
    scale = check_scale(a.scale)
    models.check_model_name(a.model)
    cfg = for_scale(scale, a.model)
    setup = replace(cfg.setup, train=apply_train_args(cfg.setup.train, a))
    if hasattr(setup, "prune"):
        setup = replace(setup, prune=apply_prune_args(setup.prune, a))
    if a.dataset:
        datasets.check_dataset_name(a.dataset)
        setup = replace(setup, dataset=a.dataset)
    sizes = {k: getattr(a, k) for k in ("train_limit", "test_limit", "val_size")
             if getattr(a, k, None) is not None}
    setup = replace(setup, **sizes)
    cfg = replace(cfg, setup=setup)
    if getattr(a, "budget", None) is not None:
        cfg = with_budget(cfg, a.budget)
    if a.seeds is not None:
        cfg = replace(cfg, seeds=a.seeds)
    for item in getattr(a, "set", None) or []:
        cfg = set_field(cfg, item)
    return scale, cfg


def set_field(cfg, item: str):
    """`cfg` with one `--set path=value` applied: `path` names a scalar field of the config, of
    its setup (searched second) or, dotted, of a nested one (`finetune.epochs`); `value` is read
    as that field's type. One-line ValueError naming the field otherwise."""
    path, sep, text = item.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ValueError(f"set: must be path=value, got '{item}'")
    names = path.split(".")
    if names[0] not in _field_names(cfg) and names[0] in _field_names(getattr(cfg, "setup", None)):
        names = ["setup", *names]
    return _set(cfg, names, text.strip(), path)


def _field_names(obj) -> set[str]:
    return {f.name for f in fields(obj)} if is_dataclass(obj) else set()


def _set(obj, names: list[str], text: str, path: str):
    known = _field_names(obj)
    if names[0] not in known:
        raise ValueError(f"set: unknown field '{path}' (fields here: {', '.join(sorted(known))})")
    old = getattr(obj, names[0])
    if len(names) > 1:
        return replace(obj, **{names[0]: _set(old, names[1:], text, path)})
    if is_dataclass(old) or isinstance(old, (tuple, list, dict)):
        raise ValueError(f"set: {path} is not a single value; use its own flag or a dotted path")
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            new = text.lower() in ("true", "1")
        else:
            new = type(old)(text) if old is not None else text
    except ValueError:
        raise ValueError(f"set: {path} must be a {type(old).__name__}, got '{text}'") from None
    if isinstance(obj, TrainConfig) and names[0] in ("epochs", "iterations"):  # as --epochs does
        return with_length(obj, names[0], new)
    return replace(obj, **{names[0]: new})


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device: unknown '{name}', choose from auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return torch.device(name)
