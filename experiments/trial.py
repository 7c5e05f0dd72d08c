"""Running one trial: train it (or evaluate it) unless its run folder says it is done.

The done marker is written last, so a trial killed anywhere before it resumes from its
checkpoint; a finished trial is read back and never recomputed. A trial is trained only under
its claim (`lib.runs.Claim`): a trial another live worker has claimed is waited for, a stale
claim is taken over, so several workers (or two commands in one checkout) never train it twice.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

from torch import nn

from experiments import provenance
from lib.data import Splits
from lib.log import TrialLog
from lib.runs import CLAIMS, Claim, Run, flat_config, read_checkpoint, stale_after
from lib.train import Hook, TrainConfig, TrainResult, evaluate, train


class Missing(RuntimeError):
    """`--report-only` (or the report after the workers) met trials that are not finished."""

    def __init__(self, runs: Sequence[tuple[Run, str]]):
        super().__init__(f"{len(runs)} trials not finished")
        self.runs = list(runs)


class Policy:
    """Whether this process may train (False: `--report-only`, and the launcher's report), and
    which worker of how many it is (`--launcher local|slurm`: each takes its share first)."""

    train: bool = True
    worker: tuple[int, int] = (0, 1)

    def order(self, items: Sequence) -> list:
        """`items` starting at this worker's offset (worker k of n: at k/n of the list)."""
        start = self.worker[0] * len(items) // self.worker[1]
        return list(items[start:]) + list(items[:start])

    def share(self, items: Sequence, take: Callable[[Any], bool]) -> list:
        """What this worker takes of `items` now: about 1/n of them, tried from its offset on,
        each kept when `take(item)` (its claim) succeeds; in the order of `items`."""
        quota, got = -(-len(items) // self.worker[1]), []
        for item in self.order(items):
            if len(got) == quota:
                break
            if take(item):
                got.append(item)
        pos = {id(item): i for i, item in enumerate(items)}
        return sorted(got, key=lambda item: pos[id(item)])


POLICY = Policy()


def status(run: Run) -> str:
    """Why `run` is not finished, in words: claimed (by whom, last heartbeat), stopped at a
    checkpoint, or never started."""
    info = Claim(run.dir).owner()
    if info is not None and not Claim.is_stale(info):
        return f"training by {info.get('host')}:{info.get('pid')} (heartbeat {info['age_s']:.0f} s ago)"
    state = read_checkpoint(run.path("checkpoint.pt"), "cpu") if run.dir.exists() else None
    where = f"stopped at step {state['step']}" if state else (
        "started, no checkpoint" if run.dir.exists() else "not started")
    return where + (f", stale claim of {info.get('host')}:{info.get('pid')}" if info else "")


def claimed(run: Run, name: str, work: Callable[[], dict]) -> dict:
    """`work()` (which trains `run` and returns its result) under the trial's claim; a trial
    claimed by another live worker is waited for (its done marker polled), a stale claim taken
    over, and a finished trial read back."""
    said = False
    while True:
        if run.done:
            return run.result()
        if not POLICY.train:
            raise Missing([(run, name)])
        with CLAIMS.hold(run.dir) as mine:
            if mine:
                return run.result() if run.done else work()
        if not said:
            print(f"waiting for {name}: {status(run)}", file=sys.stderr, flush=True)
            said = True
        time.sleep(min(0.2, stale_after() / 4))  # a stat per poll: cheap, NFS included


def run_trial(run: Run, *, experiment: str, stage: str, scale: str, name: str, seed: int,
              data: Splits, train_cfg: TrainConfig, build: Callable[[], nn.Module],
              hooks_for: Callable[[nn.Module], Sequence[Hook]] = lambda m: (),
              criterion: Callable | None = None, keep_best: bool = False,
              after: Callable[[nn.Module, TrainResult], dict | None] | None = None) -> dict:
    """Train one trial unless it is done; return its result dict.

    `build()` makes the model in its starting state (init, rewound weights, mask applied);
    `hooks_for(model)` gives the loop hooks; `criterion(x, y, logits)` replaces the loop's
    cross-entropy; with `keep_best` the result carries the weights of the selected evaluation
    (`res.best_state`); `after(model, result)` saves artefacts and may add entries to the
    result. The done marker is written last, so a trial killed anywhere before it resumes from
    its checkpoint.
    """
    args = dict(locals())
    return claimed(run, name, lambda: _train(**args))


def _train(run, experiment, stage, scale, name, seed, data, train_cfg, build, hooks_for,
           criterion, keep_best, after) -> dict:
    run.start()
    model = build()
    hooks = hooks_for(model)
    with TrialLog(run.dir, experiment=experiment, stage=stage, scale=scale, name=name,
                  config=flat_config(run.cfg), config_hash=run.hash) as tlog:
        res = train(model, data, train_cfg, seed=seed, hooks=hooks, criterion=criterion,
                    keep_best=keep_best, checkpoint=run.path("checkpoint.pt"), log=tlog,
                    desc=name)
        summary = res.summary()
        summary.update((after(model, res) if after else None) or {})
        tlog.finish(summary)
    run.finish({**summary, "run": run.hash})
    run.path("checkpoint.pt").unlink(missing_ok=True)  # optimiser state is not needed any more
    provenance.CURRENT.trained_trial(run.hash)
    return run.result()


def run_eval(run: Run, *, experiment: str, scale: str, name: str, data: Splits,
             build: Callable[[], nn.Module], extra: dict | None = None,
             stage: str = "evaluate") -> dict:
    """An untrained trial (e.g. a supermask at init): evaluate once, log, mark done."""
    args = dict(locals())
    return claimed(run, name, lambda: _evaluate(**args))


def _evaluate(run, experiment, scale, name, data, build, extra, stage) -> dict:
    run.start()
    model = build()
    val_loss, val_acc = evaluate(model, data.val_x, data.val_y)
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    row = dict(step=0, val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc)
    result = dict(val_acc=val_acc, test_acc=test_acc, final_test_acc=test_acc, early_stop_iter=0,
                  train_wall_s=0.0, **(extra or {}))
    with TrialLog(run.dir, experiment=experiment, stage=stage, scale=scale, name=name,
                  config=flat_config(run.cfg), config_hash=run.hash) as tlog:
        tlog.log(row)
        tlog.finish(result)
    run.finish({**result, "run": run.hash})
    provenance.CURRENT.trained_trial(run.hash)
    return run.result()
