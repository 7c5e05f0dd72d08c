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
import threading
from collections import deque
from pathlib import Path
from typing import Callable

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
    was interrupted logged them already); metrics.csv always gets them all.

    wandb works off the critical path: its calls run in order on one background thread
    (`_submit`), so its import and `init` (~1.2 s for a process's first run) overlap training;
    `close()` waits for them, so a closed trial's wandb run is complete."""

    def __init__(self, run_dir: Path, *, experiment: str, stage: str, scale: str, name: str,
                 config: dict, config_hash: str):
        self.run_dir, self.rows, self.wb, self.resumed = Path(run_dir), [], None, False
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        self.enabled = os.environ["WANDB_MODE"] != "disabled"  # then wandb is not even imported
        init = dict(project=os.environ.get("WANDB_PROJECT", PROJECT), group=experiment,
                    job_type=stage, tags=[scale], name=name,
                    config={**config, "config_hash": config_hash},
                    id=wandb_run_id(experiment, scale, config_hash))
        self._submit(lambda: self._init(Path(os.environ.get("WANDB_DIR", ".")), init))

    def _submit(self, call: Callable[[], None]) -> None:
        if self.enabled:
            _submit(call)

    def _init(self, root: Path, init: dict) -> None:
        try:
            import wandb

            # offline, wandb cannot know the run exists: an earlier offline folder says so
            earlier = any((root / "wandb").glob(f"offline-run-*-{init['id']}"))
            self.wb = wandb.init(**init, dir=str(root), reinit="create_new", resume="allow",
                                 settings=wandb.Settings(console="off", silent=True))
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
        self.rows += rows
        rows = [dict(r) for r in rows]
        self._submit(lambda: None if self.resumed else [self._log(r) for r in rows])

    def log(self, row: dict, wandb: bool = True) -> None:
        self.rows.append(row)
        if wandb:
            row = dict(row)
            self._submit(lambda: self._log(row))

    def _log(self, row: dict) -> None:
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
        summary = dict(summary)
        self._submit(lambda: self._summary(summary))

    def _summary(self, summary: dict) -> None:
        if self.wb is not None:
            try:
                self.wb.summary.update(summary)
            except Exception as e:  # noqa: BLE001
                _warn(f"summary failed ({type(e).__name__})")

    def close(self) -> None:
        """Finish the wandb run and wait until everything submitted so far has run."""
        self._submit(self._close)
        flush()

    def _close(self) -> None:
        if self.wb is not None:
            try:
                self.wb.finish()
            except Exception as e:  # noqa: BLE001
                _warn(f"finish failed ({type(e).__name__})")
            self.wb = None


# ----------------------------------------------------------------------------- the wandb thread

_jobs: deque[Callable[[], None]] = deque()
_lock = threading.Lock()
_worker: threading.Thread | None = None


def _submit(call: Callable[[], None]) -> None:
    """Run `call` on the wandb thread, after every call submitted before it."""
    global _worker
    with _lock:
        _jobs.append(call)
        if _worker is None or not _worker.is_alive():  # it lives while it has work
            _worker = threading.Thread(target=_drain, name="wandb-log")
            _worker.start()


def _drain() -> None:
    global _worker
    while True:
        with _lock:
            if not _jobs:
                _worker = None
                return
            call = _jobs.popleft()
        try:
            call()
        except Exception as e:  # noqa: BLE001 - a failure its own guard missed: keep draining
            _warn(f"{type(e).__name__}: {e}")


def _forget_after_fork() -> None:
    """A forked child has no wandb thread (and no wandb runs of its own): start afresh."""
    global _worker, _lock
    _jobs.clear()
    _worker, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def flush() -> None:
    """Wait until every wandb call submitted so far has run."""
    while True:
        with _lock:
            worker = _worker
        if worker is None or worker is threading.current_thread() or not worker.is_alive():
            return
        worker.join()
