"""Ctrl-C (SIGINT) and a pre-empting cluster (SIGTERM) during a trial: one line with the count
of trials done and "rerun the same command to resume", exit 130 / 143, the trial's last
checkpoint intact; the rerun finishes with the numbers of an uninterrupted run, in the same
wandb run (id from the trial's hash; rows the interrupted run logged are not logged again)."""
from __future__ import annotations

import re
import signal
import time

import pytest
import torch

import faultkit
from faultkit import baseline  # noqa: F401 - the fixture
from wandb_records import offline_runs

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("sig,ignored", [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["SIGINT", "SIGINT-started-ignored", "SIGTERM"])
def test_interrupt_during_a_trial(sig, ignored, baseline, tmp_path):
    # the level-1 pack, right after its first checkpoint: the dense trial is done. A command
    # started with SIGINT ignored (& from a script, as CI may) still stops on it
    action = "sigint" if sig == signal.SIGINT else "sigterm"
    res = faultkit.run(tmp_path, fault={"site": "checkpoint.pt", "nth": 5, "action": action,
                                        "sigint_ignored": ignored})
    assert res.code == 128 + sig and "Traceback" not in res.output, res.output
    assert len(res.stderr_lines) == 1, res.output
    line = res.stderr_lines[0]
    name = "Ctrl-C (SIGINT)" if sig == signal.SIGINT else "SIGTERM"
    assert re.fullmatch(rf"interrupted by {re.escape(name)}: 1 trials done so far \(in this invocation: "
                        r"1 trained, 0 reused; 2 stopped mid-training, kept at their last checkpoint\); "
                        r"rerun the same command to resume", line), line
    checkpoints = list(tmp_path.glob("runs/smoke/lottery_ticket/*/checkpoint.pt"))
    assert len(checkpoints) == 2
    assert {torch.load(c, weights_only=False)["step"] for c in checkpoints} == {40}
    res = faultkit.run(tmp_path)
    assert res.code == 0, res.output
    assert faultkit.outcome(tmp_path) == baseline[1]


def test_a_resumed_trial_is_one_wandb_run(tmp_path):
    one = ["--scale", "smoke", "--levels", "0", "--seeds", "1"]  # one trial: evaluations 0, 40, 80, 120
    res = faultkit.run(tmp_path, one, fault={"site": "checkpoint.pt", "nth": 2, "action": "sigterm"},
                       wandb=True)
    assert res.code == 143, res.output
    time.sleep(1.0)  # wandb names offline folders by the second: a rerun is never that quick
    assert faultkit.run(tmp_path, one, wandb=True).code == 0
    first, second = offline_runs(tmp_path)  # in the order they ran
    assert first["run"].run_id == second["run"].run_id
    assert re.fullmatch(r"lottery_ticket-smoke-[0-9a-f]{12}", first["run"].run_id)
    steps = lambda rec: [h["_step"] for h in rec["history"]]  # noqa: E731
    assert steps(first) == [0, 40, 80]  # logged before the interrupt
    assert steps(second) == [120]  # resumed from the checkpoint of step 80: nothing replayed
    assert second["summary"]["test_acc"] > 0.5
    metrics = next(tmp_path.glob("runs/smoke/lottery_ticket/*/metrics.csv")).read_text()
    assert [ln.split(",")[0] for ln in metrics.splitlines()[1:]] == ["0", "40", "80", "120"]
