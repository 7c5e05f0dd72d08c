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
