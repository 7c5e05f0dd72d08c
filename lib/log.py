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


class TrialLog:
    """Logs one trial. Use as a context manager; `log(row)` per evaluation, `finish(summary)`."""

    def __init__(self, run_dir: Path, *, experiment: str, stage: str, scale: str, name: str,
                 config: dict, config_hash: str):
        self.run_dir, self.rows, self.wb = Path(run_dir), [], None
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self.wb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT), group=experiment,
                job_type=stage, tags=[scale], name=name, dir=os.environ.get("WANDB_DIR", "."),
                config={**config, "config_hash": config_hash}, reinit="create_new",
                settings=wandb.Settings(console="off", silent=True))
        except Exception as e:  # noqa: BLE001 - any wandb failure must not cost the trial
            _warn(f"init failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def __enter__(self) -> "TrialLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, row: dict) -> None:
        self.rows.append(row)
        if self.wb is not None:
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
