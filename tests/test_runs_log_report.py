"""Run folders, atomic writes, wandb offline records, and the aggregated tables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd
import pytest

from lib import log as lablog
from lib.report import aggregate, markdown, mean_sd_table
from lib.runs import Run, atomic_write_text, config_hash, non_default
from wandb_records import read_run


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1


@dataclass(frozen=True)
class Cfg:
    seed: int = 0
    name: str = "a"
    inner: Inner = field(default_factory=Inner)


def test_hash_depends_only_on_non_default_fields():
    assert non_default(Cfg()) == {}
    assert non_default(Cfg(seed=2, inner=Inner(lr=0.5))) == {"seed": 2, "inner.lr": 0.5}
    assert config_hash(Cfg()) == config_hash(Cfg(seed=0))
    assert config_hash(Cfg(seed=1)) != config_hash(Cfg(seed=2))
    assert config_hash(Cfg(inner=Inner(0.2))) != config_hash(Cfg())


def test_run_folder_and_done_marker(tmp_path):
    run = Run("exp", Cfg(seed=4), root=tmp_path)
    assert run.dir == tmp_path / "exp" / config_hash(Cfg(seed=4)) and not run.done
    run.start()
    assert (run.dir / "config.json").exists() and not run.done
    run.finish({"test_acc": 0.5})
    assert run.done and run.result() == {"test_acc": 0.5}


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    class Boom(str):
        def encode(self, *a):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_text(target, Boom("new"))
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_wandb_offline_run_records_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    with lablog.TrialLog(tmp_path / "run", experiment="exp", stage="prune", scale="smoke",
                         name="s0-L1", config={"lr": 0.1, "seed": 0}, config_hash="abc123") as t:
        for step in (0, 10, 20):
            t.log({"step": step, "val_acc": step / 100})
        t.finish({"test_acc": 0.77})
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    rec = read_run(run_dirs[0])
    assert rec["run"].run_group == "exp" and rec["run"].job_type == "prune"
    assert list(rec["run"].tags) == ["smoke"] and rec["run"].project == lablog.PROJECT
    assert rec["config"]["config_hash"] == "abc123" and rec["config"]["lr"] == 0.1
    assert [h["curve/val_acc"] for h in rec["history"]] == [0.0, 0.1, 0.2]
    assert rec["summary"]["test_acc"] == 0.77
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == [0, 10, 20]


def test_wandb_failure_never_loses_the_trial(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    with lablog.TrialLog(tmp_path, experiment="e", stage="train", scale="smoke", name="n",
                         config={}, config_hash="h") as t:
        t.log({"step": 0, "val_acc": 0.5})
        t.finish({"test_acc": 0.5})
    assert "wandb: init failed (ConnectionError" in capsys.readouterr().err
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,val_acc", "0,0.5"]


def test_wandb_runs_off_the_critical_path(tmp_path, monkeypatch):
    """wandb.init blocked: the trial logs and writes metrics.csv meanwhile; wandb's calls run
    in order on its own thread, and close() waits for them."""
    import threading

    import wandb

    release, calls = threading.Event(), []

    class FakeRun:
        summary = {}

        def log(self, row, step):
            calls.append(("log", step))

        def finish(self):
            calls.append(("finish", threading.current_thread().name))

    def slow_init(**kw):
        calls.append(("init", threading.current_thread().name))
        assert release.wait(30)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", slow_init)
    t = lablog.TrialLog(tmp_path, experiment="e", stage="train", scale="smoke", name="n",
                        config={}, config_hash="h")
    t.log({"step": 0, "val_acc": 0.5})
    t.log({"step": 10, "val_acc": 0.6})
    t.finish({"test_acc": 0.6})  # while wandb.init has not returned
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["0,0.5", "10,0.6"]
    release.set()
    t.close()
    assert calls == [("init", "wandb-log"), ("log", 0), ("log", 10), ("finish", "wandb-log")]
    assert FakeRun.summary == {"test_acc": 0.6}


def test_aggregate_mean_sd_n():
    df = pd.DataFrame({"level": [0, 0, 0, 1, 2], "acc": [0.5, 0.7, 0.9, 0.4, 0.3],
                       "loss": [1.0, 2.0, 3.0, 4.0, float("nan")]})  # level 2: a trial with no loss
    agg = aggregate(df, ["level"], ["acc", "loss"])
    row0 = agg[agg.level == 0].iloc[0]
    assert row0.acc_mean == pytest.approx(0.7) and row0.acc_sd == pytest.approx(0.2) and row0.acc_n == 3
    assert pd.isna(agg[agg.level == 1].iloc[0].acc_sd)
    table = mean_sd_table(agg, ["level"], ["acc", "loss"], digits={"acc": 1, "loss": 1}, scale={"acc": 100})
    assert table.acc.tolist() == ["70.0 ± 20.0", "40.0", "30.0"] and table.n.tolist() == [3, 1, 1]
    assert table.loss.tolist() == ["2.0 ± 1.0", "4.0", ""]
    table = table[table.level < 2].drop(columns="loss")
    md = markdown(table)
    assert md.splitlines()[0] == "| level | acc | n |" and "| 0 | 70.0 ± 20.0 | 3 |" in md


def test_footer_counts_trials_still_learning():
    import pandas as pd

    from lib.report import footer

    trials = pd.DataFrame({"train_wall_s": [10.0, 20.0, 0.0], "selected_last": [True, False, None]})
    text = footer(trials, "Produced by 1 invocation.")
    assert "Trials: 3; summed training time 30 s." in text
    assert "1 of 2 trained trials were selected at their last evaluation" in text
    assert text.rstrip().endswith("Produced by 1 invocation.")


def test_summary_says_whether_the_last_evaluation_was_selected():
    from lib.train import TrainResult

    rows = [dict(step=s, val_loss=v, val_acc=0.5, test_acc=0.5) for s, v in ((0, 2.0), (10, 1.0), (20, 0.5))]
    assert TrainResult(history=rows).summary()["selected_last"] is True
    rows[-1]["val_loss"] = 1.5
    summary = TrainResult(history=rows).summary()
    assert summary["selected_last"] is False and (summary["early_stop_iter"], summary["final_step"]) == (10, 20)
