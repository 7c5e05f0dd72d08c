"""One call site for logging a trial: a wandb run (offline by default) and a local metrics.csv.

The local files are the source of truth for every table: a wandb failure prints one warning and
the trial goes on. `WANDB_MODE` chooses online/offline/disabled (default offline), `WANDB_DIR`
where runs are written (default: the working directory), `WANDB_PROJECT` the project.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

from lib.runs import atomic_write_text

PROJECT = "compression-lab"


def _warn(msg: str) -> None:
    print(f"warning: wandb: {msg}; the local CSV still has everything", file=sys.stderr)


def rows_to_csv(rows: list[dict]) -> str:
    """Rows (dicts) as CSV text; the header is the union of keys in first-seen order."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def wandb_run_id(experiment: str, scale: str, config_hash: str) -> str:
    """A trial's wandb run id: the same for every invocation that works on the trial, so a
    resumed trial continues its run instead of leaving a partial duplicate."""
    return f"{experiment}-{scale}-{config_hash}"


class TrialLog:
    """Logs one trial. Use as a context manager; `log(row)` (or call it) per evaluation,
    `replay(rows)` for the rows a resumed trial restored, `finish(summary)`.

    The wandb run's id comes from the trial's hash (`resume="allow"`): a killed trial's rerun
    continues the same run. Restored rows go to wandb only when its run is new (the run that
    was interrupted logged them already); metrics.csv always gets them all."""

    def __init__(self, run_dir: Path, *, experiment: str, stage: str, scale: str, name: str,
                 config: dict, config_hash: str):
        self.run_dir, self.rows, self.wb, self.resumed = Path(run_dir), [], None, False
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        run_id = wandb_run_id(experiment, scale, config_hash)
        root = Path(os.environ.get("WANDB_DIR", "."))
        try:
            import wandb

            # offline, wandb cannot know the run exists: an earlier offline folder says so
            earlier = any((root / "wandb").glob(f"offline-run-*-{run_id}"))
            self.wb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT), group=experiment,
                job_type=stage, tags=[scale], name=name, dir=str(root),
                config={**config, "config_hash": config_hash}, reinit="create_new",
                id=run_id, resume="allow", settings=wandb.Settings(console="off", silent=True))
            self.resumed = bool(getattr(self.wb, "resumed", False)) or earlier
        except Exception as e:  # noqa: BLE001 - any wandb failure must not cost the trial
            _warn(f"init failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def __enter__(self) -> "TrialLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, row: dict) -> None:
        self.log(row)

    def replay(self, rows: list[dict]) -> None:
        """The evaluation rows a resumed trial restored from its checkpoint."""
        for row in rows:
            self.log(row, wandb=not self.resumed)

    def log(self, row: dict, wandb: bool = True) -> None:
        self.rows.append(row)
        if self.wb is not None and wandb:
            try:
                # curves live under curve/*, so a trial's summary (test_acc at early stop)
                # is never overwritten by the last logged point
                self.wb.log({f"curve/{k}": v for k, v in row.items() if k != "step"},
                            step=int(row["step"]))
            except Exception as e:  # noqa: BLE001
                _warn(f"log failed ({type(e).__name__})")
                self.wb = None

    def finish(self, summary: dict) -> None:
        """Write metrics.csv and push the trial's summary numbers."""
        if self.rows:
            atomic_write_text(self.run_dir / "metrics.csv", rows_to_csv(self.rows))
        if self.wb is not None:
            try:
                self.wb.summary.update(summary)
            except Exception as e:  # noqa: BLE001
                _warn(f"summary failed ({type(e).__name__})")

    def close(self) -> None:
        if self.wb is not None:
            try:
                self.wb.finish()
            except Exception as e:  # noqa: BLE001
                _warn(f"finish failed ({type(e).__name__})")
            self.wb = None
