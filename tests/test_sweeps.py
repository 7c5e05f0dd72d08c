"""The wandb sweep YAMLs (issue #15) drive the experiment CLI: every value of every parameter
is accepted by the experiment's parser, as the agent passes it (`--name=value`). Sweeps need
the wandb service, so only this much is testable offline."""
from __future__ import annotations

import importlib

import pytest
import yaml

from cli import ROOT

SWEEPS = ["lottery_ablation", "logit_kd"]


def agent_argvs(params: dict) -> list[list[str]]:
    """One command line per value of each parameter (the others at their first value)."""
    values = {k: v["values"] if "values" in v else [v["value"]] for k, v in params.items()}
    first = {k: vs[0] for k, vs in values.items()}
    return [[f"--{k.replace('_', '-')}={v}" for k, v in {**first, name: value}.items()]
            for name, vs in values.items() for value in vs]


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_parameters_are_accepted_by_the_cli(name):
    sweep = yaml.safe_load((ROOT / "experiments" / name / "sweep.yaml").read_text())
    assert sweep["command"][2:4] == ["-m", f"experiments.{name}"] and "${args}" in sweep["command"]
    experiment = importlib.import_module(f"experiments.{name}.__main__").EXPERIMENT
    argvs = agent_argvs(sweep["parameters"])
    assert len(argvs) >= 5
    for argv in argvs:
        experiment.parse(argv)  # exits 2 with one line on any value the CLI refuses
