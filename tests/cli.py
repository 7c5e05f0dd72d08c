"""Running experiments from tests: in a subprocess (the real command line; a module's smoke run,
its report, its reuse) or in-process (fast checks of bad input), with every output under one
folder."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def lab_env(base: Path, wandb: bool = True) -> dict:
    """Environment that sends runs, results and wandb files under `base`. With `wandb` False
    no wandb run is opened (WANDB_MODE=disabled: ~0.15 s saved per trial); the tests that read
    offline wandb records (tests/wandb_records.py) keep it on."""
    env = {**os.environ, "LAB_RUNS_DIR": str(base / "runs"),
           "LAB_RESULTS_DIR": str(base / "results"), "WANDB_DIR": str(base)}
    return env if wandb else {**env, "WANDB_MODE": "disabled"}


def run_experiment(name: str, *args: str, base: Path, check: bool = True,
                   wandb: bool = True) -> subprocess.CompletedProcess:
    """`python -m experiments.<name> *args`, output captured."""
    return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT,
                          env=lab_env(base, wandb), capture_output=True, text=True, check=check)


class Smoke(NamedTuple):
    """A finished smoke run: its base folder (runs, results, wandb), its results folder
    `base/results/<name>/smoke`, and that folder's trials.csv."""
    base: Path
    out: Path
    trials: pd.DataFrame


def smoke_run(tmp_path_factory, name: str, *args: str, wandb: bool = False) -> Smoke:
    """Run `python -m experiments.<name> --scale smoke *args` under a fresh temp folder (for a
    module-scoped fixture) and read its results (wandb off unless `wandb`)."""
    base = tmp_path_factory.mktemp(name)
    run_experiment(name, "--scale", "smoke", *args, base=base, wandb=wandb)
    out = base / "results" / name / "smoke"
    return Smoke(base, out, pd.read_csv(out / "trials.csv"))


def smoke_fixture(name: str, *args: str, wandb: bool = False):
    """A test module's `smoke` fixture: `smoke = smoke_fixture("<name>")` runs the experiment
    at smoke scale once for the module (`smoke_run`) and gives every test its `Smoke`."""
    @pytest.fixture(scope="module", name="smoke")
    def fixture(tmp_path_factory) -> Smoke:
        return smoke_run(tmp_path_factory, name, *args, wandb=wandb)
    return fixture


def assert_report(out: Path, name: str, trained: int | None, *pngs: str) -> str:
    """The smoke report in `out`: table.md's footer names the one invocation that trained the
    trials (`trained` of them; any number when None), its command and its machine; each of
    `pngs` is a drawn figure (over 10 kB). Returns table.md's text."""
    table = (out / "table.md").read_text()
    count = r"\d+" if trained is None else str(trained)
    assert re.search(rf"Produced by 1 invocation that trained {count} trials, \d+ s wall", table), table
    assert f"`python -m experiments.{name} --scale smoke`" in table and "Machine:" in table, table
    for png in pngs:
        assert (out / png).stat().st_size > 10_000, png
    return table


def assert_rejected(name: str, args: tuple[str, ...] | list[str], msg: str, base: Path,
                    capsys) -> None:
    """In-process: `experiments.<name>` with `--scale smoke *args` stops before any compute:
    SystemExit 2, one stderr line `error: ...` containing `msg`, nothing written under `base`."""
    experiment = importlib.import_module(f"experiments.{name}.__main__").EXPERIMENT
    env = {k: v for k, v in lab_env(base).items() if k.startswith(("LAB_", "WANDB_DIR"))}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            experiment.main(["--scale", "smoke", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert msg in err, err
    assert not (base / "results").exists() and not (base / "runs").exists()


def assert_rejected_subprocess(name: str, args: tuple[str, ...] | list[str], msg: str,
                               base: Path) -> None:
    """The same check through the real command line: exit status 2, one line, nothing written."""
    proc = run_experiment(name, "--scale", "smoke", *args, base=base, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert msg in proc.stderr
    assert not (base / "results").exists() and not (base / "runs").exists()


def done_markers(base: Path) -> dict[Path, int]:
    """Every trial's done marker under `base/runs` with its modification time (ns)."""
    return {p: p.stat().st_mtime_ns for p in sorted((base / "runs").rglob("done"))}


def invocation_records(base: Path) -> list[Path]:
    """The provenance records of invocations that trained something (experiments.provenance)."""
    return sorted((base / "runs").rglob("invocations/*.json"))


def assert_reused(name: str, base: Path, *args: str) -> subprocess.CompletedProcess:
    """Rerun the finished smoke experiment under `base`: it must train nothing. No done marker is
    rewritten, no trial's wandb run is opened, no invocation record is added; the table is
    rewritten (and logged as one more `report` run)."""
    def trial_runs() -> list[Path]:
        return sorted(p for p in (base / "wandb").glob("offline-run-*") if "-report-" not in p.name)

    done, records, wandb_runs = done_markers(base), invocation_records(base), trial_runs()
    assert done, f"no finished trials under {base}"
    proc = run_experiment(name, "--scale", "smoke", *args, base=base)
    assert done_markers(base) == done
    assert invocation_records(base) == records
    assert trial_runs() == wandb_runs
    return proc
