"""A worker killed mid-trial (issue #15): its claim is left behind; `--report-only` lists the
trial as unfinished, one line, and writes no table; the rerun takes the stale claim over (a
dead process of this host: at once), resumes the trial from its checkpoint, and the grid ends
with the numbers of an uninterrupted run. (Another worker takes over the same way:
tests/test_launchers.py.)"""
from __future__ import annotations

import json

import pytest
import torch

import faultkit
from faultkit import baseline  # noqa: F401 - the fixture

pytestmark = pytest.mark.smoke
MARK = 1000.0  # added to the checkpoint's wall time: found in the result only if resumed from it


def test_a_killed_workers_trial_is_taken_over_from_its_checkpoint(baseline, tmp_path):
    res = faultkit.run(tmp_path, [*faultkit.GRID, "--worker", "0/2"],
                       fault={"site": "checkpoint.pt", "nth": 1, "action": "after"})
    assert res.killed, res.output
    runs = tmp_path / "runs" / "smoke" / "lottery_ticket"
    (trial,) = [p.parent for p in runs.glob("*/claim")]
    owner = json.loads((trial / "claim").read_text())
    state = torch.load(trial / "checkpoint.pt", weights_only=False)
    state["wall_s"] += MARK
    torch.save(state, trial / "checkpoint.pt")

    res = faultkit.run(tmp_path, [*faultkit.GRID, "--report-only"])
    assert res.code == 1, res.output
    missing = [ln for ln in res.output.splitlines() if ln.startswith("missing:")]
    assert len(missing) == 1 and trial.name in missing[0], res.output
    assert f"stopped at step {state['step']}, stale claim of {owner['host']}:{owner['pid']}" in missing[0]
    assert not (tmp_path / "results").exists()

    res = faultkit.run(tmp_path)  # the rerun (packs as the uninterrupted run: same numbers)
    assert res.code == 0 and "is stale" in res.output, res.output
    assert json.loads((trial / "result.json").read_text())["train_wall_s"] > MARK
    assert not list(runs.glob("*/claim"))  # every claim released
    faultkit.same(faultkit.outcome(tmp_path), baseline[1])
