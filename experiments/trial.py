"""Running one trial: train it (or evaluate it) unless its run folder says it is done.

The done marker is written last, so a trial killed anywhere before it resumes from its
checkpoint; a finished trial is read back and never recomputed.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from experiments import provenance
from lib.data import Splits
from lib.log import TrialLog
from lib.runs import Run, flat_config
from lib.train import Hook, TrainConfig, TrainResult, evaluate, train


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
    if run.done:
        return run.result()
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
    if run.done:
        return run.result()
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
