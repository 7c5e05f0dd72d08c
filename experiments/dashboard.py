"""The experiment on the wandb dashboard, not only its trials: one `report` run per invocation
that writes a report (same group as the trials), carrying what results/<name>/<scale>/ holds.

- `trials`: trials.csv as a wandb.Table;
- `means` (`means_2`, ... for further tables): the tables of means ± sd of table.md;
- `plots/<name>`: every PNG as a wandb.Image;
- `claims`: claims.csv, when the experiment judges claims;
- with `--wandb-artifacts` (off by default: size), the trials' final.pt and mask.pt as one
  `model` artifact.

Read back from the files the report wrote, so it is the same for every experiment. Offline by
default like every run (`make sync` uploads it); a wandb failure is one warning line.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from lib.log import PROJECT
from lib.runs import runs_root


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb-artifacts", action="store_true",
                   help="also upload the trials' final weights and masks as a wandb artifact")


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every pipe table in a markdown text."""
    tables, lines = [], [ln.strip() for ln in text.splitlines()]
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
            header, rows, i = cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def report_run(experiment: str, scale: str, out: Path, artifacts: bool = False) -> None:
    """Log results/<experiment>/<scale>/ (`out`) as one wandb run of job type `report`."""
    os.environ.setdefault("WANDB_MODE", "offline")
    if os.environ["WANDB_MODE"] == "disabled":
        return
    try:
        import pandas as pd
        import wandb

        stamp = time.strftime("%Y%m%dT%H%M%S")
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), group=experiment,
                         job_type="report", tags=[scale], name=f"{experiment}-{scale}-report",
                         id=f"{experiment}-{scale}-report-{stamp}-{os.getpid()}",
                         dir=os.environ.get("WANDB_DIR", "."), reinit="create_new",
                         settings=wandb.Settings(console="off", silent=True))
        trials = pd.read_csv(out / "trials.csv")
        logged = {"trials": wandb.Table(dataframe=trials)}
        for k, (header, rows) in enumerate(markdown_tables((out / "table.md").read_text())):
            logged["means" if k == 0 else f"means_{k + 1}"] = wandb.Table(columns=header, data=rows)
        logged.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in sorted(out.glob("*.png"))})
        if (out / "claims.csv").exists():
            logged["claims"] = wandb.Table(dataframe=pd.read_csv(out / "claims.csv"))
        run.log(logged)
        if artifacts:
            art = wandb.Artifact(f"{experiment}-{scale}-trials", type="model")
            runs = runs_root() / ("smoke" if scale == "smoke" else "") / experiment
            for h in trials.get("run", []):
                for name in ("final.pt", "mask.pt"):
                    if (runs / str(h) / name).exists():
                        art.add_file(str(runs / str(h) / name), name=f"{h}/{name}")
            run.log_artifact(art)
        run.finish()
    except Exception as e:  # noqa: BLE001 - the dashboard never costs the report
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"warning: wandb: report run failed ({type(e).__name__}: {first}); results/ has "
              f"everything", file=sys.stderr)
