"""Which invocations produced a results folder, how long they took, and on what machine.

A table's footer must say how its trials were made, not how long the last (perhaps report-only)
rerun took. So every invocation that trains at least one trial keeps a small record under
`runs/[smoke/]<experiment>/invocations/` (command, machine, wall time so far, hashes of the trials
it trained), rewritten after each trial it finishes: a killed invocation keeps the time it spent
up to its last finished trial. At report time the records whose trials appear in the table are
gathered into `results/<experiment>/<scale>/run.json`, and the footer prints their sum.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lib.runs import atomic_write_json, runs_root

FILE = "run.json"


class Invocation:
    """This process's record: created on the first trial it trains, updated after each one."""

    def __init__(self):
        self.experiment = self.scale = ""
        self.command, self.machine = "", ""
        self.started = time.perf_counter()
        self.trained: list[str] = []
        self.path: Path | None = None

    def begin(self, experiment: str, scale: str, argv: list[str], machine: str) -> None:
        """Name the experiment this process runs (before any trial)."""
        self.experiment, self.scale, self.machine = experiment, scale, machine
        self.command = shlex.join(["python", "-m", f"experiments.{experiment}", *argv])
        self.started, self.trained, self.path = time.perf_counter(), [], None

    def trained_trial(self, run_hash: str) -> None:
        """A trial was computed (not reused) by this process: note it and its time."""
        if not self.experiment:
            return  # a library call outside an experiment's main (tests): nothing to record
        self.trained.append(run_hash)
        if self.path is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            base = runs_root() / ("smoke" if self.scale == "smoke" else "") / self.experiment
            self.path = base / "invocations" / f"{stamp}-{os.getpid()}.json"
        atomic_write_json(self.path, self.record())

    def record(self) -> dict:
        return {"command": self.command, "machine": self.machine,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_s": round(time.perf_counter() - self.started, 1), "trained": self.trained}


CURRENT = Invocation()


def gather(experiment: str, scale: str, run_hashes: set[str], out_dir: Path) -> dict:
    """Write `out_dir/run.json` from the invocation records that trained any of `run_hashes`.

    With no such record on this machine (the trials were reused from runs made elsewhere), an
    existing run.json is kept when its invocations still cover the table."""
    folder = runs_root() / ("smoke" if scale == "smoke" else "") / experiment / "invocations"
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged record costs its footer line, never the report
        if run_hashes & set(rec.get("trained", ())):
            records.append({**rec, "trained": len(rec["trained"])})
    if not records:
        return read(out_dir)
    data = {"experiment": experiment, "scale": scale, "invocations": records,
            "wall_s": round(sum(r["wall_s"] for r in records), 1),
            "trials_trained": sum(r["trained"] for r in records)}
    atomic_write_json(out_dir / FILE, data)
    return data


def read(out_dir: Path) -> dict:
    """run.json of `out_dir`, or {} when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out_dir) / FILE).read_text())
    except (OSError, ValueError):
        return {}


def footer_line(prov: dict) -> str:
    """One sentence: the wall time, command(s) and machine(s) of the invocations that trained."""
    runs = prov.get("invocations") or []
    if not runs:
        return ("Wall time of the producing run: not recorded (no run.json; these results "
                "predate it).")
    commands = sorted({r["command"] for r in runs})
    machines = sorted({r["machine"] for r in runs})
    return (f"Produced by {len(runs)} invocation{'s' * (len(runs) > 1)} that trained "
            f"{prov['trials_trained']} trials, {prov['wall_s']:.0f} s wall in all "
            f"({'; '.join(f'`{c}`' for c in commands)}). Machine: {'; '.join(machines)}.")


def argv_of(argv: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)
