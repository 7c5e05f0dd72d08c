"""The shape of an experiment, written once.

An experiment is a module `experiments/<name>/` with
- `config.py`: a `Setup` subclass (the data, model and recipe every trial shares, hashed into
  each trial's run folder), a `Trial` and a config with one preset per scale (`for_scale`);
- `__main__.py`: one `Experiment(...)`, filled in with what is particular to its paper: its own
  flags, how to run its trials (`run(ctx)`) and how to report them (`report(ctx, produced)`);
- `report.py`, `README.md`, a notebook and a smoke test.

`Experiment.main` is the rest, the same for all: parse the shared command line, pick the preset,
load the data, run the trials (`run_trial` / `run_eval`: a finished trial is reused, a killed one
resumes), record which invocation trained what (`provenance`), write the report.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from experiments import dashboard, faults, launch, provenance
from experiments.cli import (add_prune_args, add_train_args, base_parser, check_scale, fail,
                             parse_floats, parse_ints, parse_list, pick_device, preset)
from experiments.trial import POLICY, Missing, run_eval, run_trial, status
from lib import data as datasets
from lib import models
from lib.data import Splits
from lib.prune.limits import check_levels
from lib.runs import Run, atomic_torch_save, results_dir
from lib.train import TrainConfig, TrainResult

__all__ = ["Setup", "Config", "recipe", "require", "SMOKE_DATA", "Experiment", "Context",
           "each_seed", "lazy", "run_trial", "run_eval", "fail", "parse_list", "parse_floats",
           "parse_ints", "check_scale", "machine"]

# the data of every smoke run: shared, so smoke runs of the distillation experiments share
# one tiny teacher (experiments.teachers.TeacherSpec.smoke)
SMOKE_DATA = dict(val_size=500, train_limit=2000, test_limit=1000)


def require(ok: bool, field: str, rule: str, got: Any) -> None:
    """One-line ValueError `<field>: must be <rule>, got <got>` unless `ok`."""
    if not ok:
        raise ValueError(f"{field}: must be {rule}, got {got}")


def recipe(**kw) -> Any:
    """A dataclass field whose default is `TrainConfig(**kw)`."""
    return field(default_factory=lambda: TrainConfig(**kw))


@dataclass(frozen=True)
class Setup:
    """What every trial of an experiment shares: data, model, training recipe.

    An experiment's `Setup` extends this one, re-declaring only the defaults it changes (its
    model, its recipe) and adding its own fields. A trial's run folder is the hash of the fields
    that differ from these defaults, so changing a default here changes every run hash."""

    dataset: str = "fashion_mnist"
    model: str = "lenet_300_100"
    val_size: int = 5000
    train_limit: int = 0  # 0 = all
    test_limit: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Setup":
        """One-line ValueError naming the first bad field of the recipe or the data sizes."""
        self.train.validate()
        datasets.check_dataset_name(self.dataset)
        n = datasets.SHAPES[self.dataset][2]
        require(0 <= self.val_size < n, "val_size", f"in [0, {n}) ({self.dataset} has {n} "
                "training images)", self.val_size)
        require(self.train_limit >= 0 and self.test_limit >= 0, "train_limit/test_limit",
                ">= 0", (self.train_limit, self.test_limit))
        require(self.train.batch_size <= self.n_train(), "batch_size",
                f"<= {self.n_train()}, the training images", self.train.batch_size)
        return self

    def n_train(self) -> int:
        """Training images once validation is carved out and the limit applied (from the
        dataset's known size: checks before any data is read)."""
        n = datasets.SHAPES[self.dataset][2] - self.val_size
        return min(n, self.train_limit) if self.train_limit else n

    def check_prune_levels(self, prune: Any, levels: int, field: str = "levels") -> None:
        """One-line ValueError when `levels` rounds of `prune` leave a layer with no weight."""
        shape, classes, _ = datasets.SHAPES[self.dataset]
        check_levels(self.model, shape, classes, prune, levels, field)

    def data_fields(self) -> dict:
        """The fields that choose the data (what a teacher must share with its students)."""
        return dict(dataset=self.dataset, val_size=self.val_size, train_limit=self.train_limit,
                    test_limit=self.test_limit)

    def check_same_data(self, other: "Setup", name: str) -> None:
        """One-line ValueError when `other` (e.g. a teacher) is trained on different data."""
        for k, v in self.data_fields().items():
            if getattr(other, k) != v:
                raise ValueError(f"{name}.{k}: must equal the students' {k} ({v}), "
                                 f"got {getattr(other, k)}")


@dataclass(frozen=True)
class Config:
    """What decides which trials an experiment runs (never hashed): its `Setup` and seed count,
    plus the experiment's own lists (levels, methods, ratios...) in its subclass."""

    setup: Setup = field(default_factory=Setup)
    seeds: int = 2

    def validate(self) -> "Config":
        self.setup.validate()
        require(self.seeds >= 1, "seeds", ">= 1", self.seeds)
        return self


@dataclass
class Context:
    """What an experiment's `run` and `report` receive: the config, scale, device and data."""

    experiment: str
    cfg: Any
    scale: str
    device: torch.device
    data: Splits
    pack: int = 0  # trials trained together as one stacked model (0: all that can be)
    out_dir: Path | None = None  # --out: where the report goes (None: results/<experiment>/<scale>)

    def run(self, trial: Any) -> Run:
        """The run folder of `trial` in this experiment at this scale."""
        return Run(self.experiment, trial, scale=self.scale)

    def train(self, run: Run, **kw) -> dict:
        """`run_trial` in this experiment, at this scale, on this data."""
        return run_trial(run, experiment=self.experiment, scale=self.scale, data=self.data, **kw)

    def train_final(self, run: Run, *, model: str, seed: int, name: str, train_cfg: TrainConfig,
                    stage: str = "train", **kw) -> tuple[nn.Module, dict]:
        """Train a fresh `model` (init drawn from `seed`) as `run` unless done, keeping its final
        weights in final.pt; return them loaded, in eval mode, with the trial's result."""
        after = kw.pop("after", None)

        def save(m: nn.Module, res: TrainResult) -> dict | None:
            atomic_torch_save(m.state_dict(), run.path("final.pt"))
            return after(m, res) if after else None

        res = self.train(run, stage=stage, name=name, seed=seed, train_cfg=train_cfg,
                         build=lambda: self.build(model, seed), after=save, **kw)
        net = self.build(model, seed)
        net.load_state_dict(run.load("final.pt", self.device))
        return net.eval(), res

    def evaluate(self, run: Run, **kw) -> dict:
        """`run_eval` in this experiment, at this scale, on this data."""
        return run_eval(run, experiment=self.experiment, scale=self.scale, data=self.data, **kw)

    def build(self, model: str, seed: int) -> nn.Module:
        """A freshly initialised `model` for this data, its init drawn from `seed`."""
        torch.manual_seed(seed)
        return models.build(model, self.data.input_shape, self.data.num_classes).to(self.device)

    @property
    def out(self) -> Path:
        """results/<experiment>/<scale>/, or --out's folder (a follow-up run beside the default)"""
        return self.out_dir or results_dir(self.experiment, self.scale)

    def provenance(self, run_hashes: Sequence[str]) -> dict:
        """run.json for a table whose trials have `run_hashes` (see experiments.provenance)."""
        return provenance.gather(self.experiment, self.scale, {h for h in run_hashes if h},
                                 self.out)


def lazy(module: str, name: str) -> Callable:
    """`module.name`, imported at its first call: an experiment's `report` (its module imports
    pandas, seaborn and matplotlib, ~1 s) is loaded once its trials are trained, not at start-up."""
    def call(*args, **kw):
        return getattr(importlib.import_module(module), name)(*args, **kw)
    return call


def each_seed(run_seed: Callable[[Context, int], list[dict]]) -> Callable[[Context], list[dict]]:
    """`run` for an experiment whose seeds are independent: `run_seed(ctx, seed)`'s rows, all seeds."""
    def run(ctx: Context) -> list[dict]:
        # a worker of N starts at its own seed (others' trials are waited for); rows in seed order
        rows = {seed: run_seed(ctx, seed) for seed in POLICY.order(range(ctx.cfg.seeds))}
        return [row for seed in range(ctx.cfg.seeds) for row in rows[seed]]
    return run


@dataclass(frozen=True)
class Experiment:
    """What an experiment fills in; `main` does the rest."""

    name: str
    doc: str
    for_scale: Callable[[str, str], Any]  # (scale, model) -> config with .setup and .seeds
    run: Callable[[Context], Any]  # trains the trials; returns what `report` needs
    report: Callable[[Context, Any], Path]  # writes results/<name>/<scale>/
    model: str | Mapping[str, str] = "lenet_300_100"  # default --model, or one per scale
    model_help: str = "a registered model"
    flags: Callable[[argparse.ArgumentParser], None] = lambda p: None  # its own flags
    configure: Callable[[Any, argparse.Namespace], Any] = lambda cfg, a: cfg  # apply them
    prune_flags: bool = False  # --rate-fc/--rate-conv/--rate-output/--scope
    packs: bool = False  # --pack: its trials train packed (experiments.packing)

    def parser(self) -> argparse.ArgumentParser:
        default = self.model if isinstance(self.model, str) else "; ".join(
            f"{scale}: {m}" for scale, m in self.model.items())
        p = base_parser(f"python -m experiments.{self.name}", self.doc,
                        f"{self.model_help} (default {default})")
        self.flags(p)
        add_train_args(p)
        launch.add_launch_args(p)
        dashboard.add_args(p)
        if self.prune_flags:
            add_prune_args(p)
        if self.packs:
            p.add_argument("--pack", type=int, default=0,
                           help="trials of one architecture trained together as one stacked model: "
                                "0 (default) packs all that can be, in packs of up to 16 (on a CPU, "
                                "fewer for a conv net: as many as keep its activations within 16 MB), "
                                "1 trains each alone")
        return p

    def parse(self, argv: Sequence[str] | None = None) -> tuple[Any, str, torch.device]:
        """(validated config, scale, device), or exit 2 with one line naming the bad field."""
        return self.parse_args(argv)[:3]

    def parse_args(self, argv: Sequence[str] | None = None) -> tuple[Any, str, torch.device,
                                                                      argparse.Namespace]:
        """`parse`, plus the parsed flags (execution options such as --pack)."""
        a = self.parser().parse_args(argv)
        try:
            require(getattr(a, "pack", 0) >= 0, "pack", ">= 0", getattr(a, "pack", 0))
            launch.check_launch(a)
            if a.model is None:
                default = self.model
                a.model = default if isinstance(default, str) else default[check_scale(a.scale)]
            scale, cfg = preset(a, self.for_scale)
            return self.configure(cfg, a).validate(), scale, pick_device(a.device), a
        except ValueError as e:
            fail(str(e))

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Parse, load, run, report. Ctrl-C / SIGTERM, a full disk and damaged run files are
        handled here, once for every experiment (`experiments.faults`)."""
        cfg, scale, device, a = self.parse_args(argv)
        provenance.CURRENT.begin(self.name, scale, provenance.argv_of(argv), machine())
        clock = time.perf_counter()
        workers = a.launcher != "inline" and a.worker is None
        # a worker only trains; the launching process (and --report-only) only reports
        POLICY.train = not (workers or a.report_only)
        POLICY.worker = launch.worker_of(a.worker) if a.worker else (0, 1)
        with faults.guarded():
            if workers:
                launch.launch(self.name, scale, provenance.argv_of(argv), a)
            ctx = Context(self.name, cfg, scale, device, load_data(cfg.setup, device),
                          pack=getattr(a, "pack", 0), out_dir=a.out)
            if a.worker:
                faults.until_whole(lambda: self.run(ctx))
                print(f"worker {a.worker}: done in {time.perf_counter() - clock:.1f} s")
                return
            try:
                out = faults.until_whole(lambda: self.report(ctx, self.run(ctx)))
            except Missing as e:
                unfinished(e)
            dashboard.report_run(self.name, scale, out, a.wandb_artifacts)
        print(f"wrote {out}/trials.csv, table.md and plots in {time.perf_counter() - clock:.1f} s")


def unfinished(e: Missing) -> None:
    """No report over unfinished trials: one line for each, then exit 1."""
    for run, name in e.runs:
        print(f"missing: {name} ({run.dir}): {status(run)}", file=sys.stderr)
    print(f"error: report not written: {len(e.runs)} trials (and those that need them) are not "
          f"finished; rerun the command (without --report-only) to train them", file=sys.stderr)
    raise SystemExit(1)


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


def load_data(setup: Setup, device: torch.device) -> Splits:
    """The splits `setup` names (dataset, val_size, limits), on `device`; a missing dataset
    exits with the loader's one-line hint."""
    try:
        return datasets.load(setup.dataset, val_size=setup.val_size,
                             train_limit=setup.train_limit or None,
                             test_limit=setup.test_limit or None).to(device)
    except (datasets.DataError, ValueError) as e:
        fail(str(e))
