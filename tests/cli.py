"""Run an experiment's command line in a subprocess with its outputs under one folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lab_env(base: Path) -> dict:
    """Environment that sends runs, results and wandb files under `base`."""
    return {**os.environ, "LAB_RUNS_DIR": str(base / "runs"),
            "LAB_RESULTS_DIR": str(base / "results"), "WANDB_DIR": str(base)}


def run_experiment(name: str, *args: str, base: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m experiments.<name> *args`, output captured."""
    return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT,
                          env=lab_env(base), capture_output=True, text=True, check=check)


def assert_rejected(name: str, args: tuple[str, ...], msg: str, base: Path) -> None:
    """The smoke run with `args` stops before any compute: exit 2, one stderr line
    `error: ...` containing `msg`, and no results or runs written under `base`."""
    proc = run_experiment(name, "--scale", "smoke", *args, base=base, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert msg in proc.stderr
    assert not (base / "results").exists() and not (base / "runs").exists()
